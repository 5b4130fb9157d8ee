"""Serving: a continuous-batching denoising engine (engine.py) and its AR counterpart (ar_engine.py), the OpenAI
request / response shapes (protocol.py), the engine's thread and the request handlers (server.py), the FastAPI app
(app.py) and its Prometheus metrics (metrics.py). FastAPI, uvicorn and prometheus_client (the `serve` extra) are
imported only by the app and the metrics when a server is built."""
from dlm_jax.serving.engine import Engine, Request, StaticBatcher, Update
from dlm_jax.serving.ar_engine import ArEngine
from dlm_jax.serving.metrics import Metrics
from dlm_jax.serving.protocol import APIError, GenerationParams, ServeContext, context_for, parse_request
from dlm_jax.serving.server import EngineLoop, ServerState

__all__ = ["APIError", "ArEngine", "Engine", "EngineLoop", "GenerationParams", "Metrics", "Request", "ServeContext",
           "context_for", "ServerState", "StaticBatcher", "Update", "parse_request"]
