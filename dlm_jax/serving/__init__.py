"""Serving: a continuous-batching denoising engine (engine.py) and an OpenAI-compatible HTTP server over it."""
from dlm_jax.serving.engine import Engine, Request, Update

__all__ = ["Engine", "Request", "Update"]
