"""Inference on trained runs: the `Generator` (sampling, scoring, choices), restoring a run's params into a mesh,
and task evaluation."""
from dlm_jax.inference.evaluator import EvalRequest, Evaluator
from dlm_jax.inference.generator import Generator, decode_responses, prompts_of
from dlm_jax.inference.restored import RestoredRun, restore_pretrained, restore_run

__all__ = ["Generator", "decode_responses", "prompts_of", "RestoredRun", "restore_pretrained", "restore_run", "Evaluator", "EvalRequest"]
