"""The server's Prometheus metrics (vLLM's names, `dlm_jax:` prefix) in a registry of its own: requests running
and waiting, slot utilisation, time to first token and end-to-end latency, prompt / generation tokens, model
evaluations, engine steps, finished requests by reason."""
from __future__ import annotations

from typing import Any

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Metrics:
    """The metrics of one server; `render()` is the /metrics body."""

    def __init__(self, slots: int):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        self.slots = slots
        self.registry = r = CollectorRegistry()
        self.running = Gauge("dlm_jax:num_requests_running", "Requests decoding in a slot.", registry=r)
        self.waiting = Gauge("dlm_jax:num_requests_waiting", "Requests waiting for a slot.", registry=r)
        self.utilisation = Gauge("dlm_jax:slot_utilization", "Fraction of the slots holding a request.", registry=r)
        self.ttft = Histogram("dlm_jax:time_to_first_token_seconds", "Arrival to the first returned text.",
                              buckets=LATENCY_BUCKETS, registry=r)
        self.e2e = Histogram("dlm_jax:e2e_request_latency_seconds", "Arrival to the last returned text.",
                             buckets=LATENCY_BUCKETS, registry=r)
        self.prompt_tokens = Counter("dlm_jax:prompt_tokens", "Prompt tokens of finished requests.", registry=r)
        self.generation_tokens = Counter("dlm_jax:generation_tokens", "Returned tokens.", registry=r)
        self.evaluations = Counter("dlm_jax:model_evaluations", "Denoising steps summed over requests.", registry=r)
        self.steps = Gauge("dlm_jax:engine_steps", "Pool steps the engine has run.", registry=r)
        self.success = Counter("dlm_jax:request_success", "Finished requests.", ["finished_reason"], registry=r)

    def engine_state(self, running: int, waiting: int, steps: int) -> None:
        self.running.set(running)
        self.waiting.set(waiting)
        self.utilisation.set(running / self.slots if self.slots else 0.0)
        self.steps.set(steps)

    def finished(self, *, prompt_tokens: int, completion_tokens: int, evaluations: int, ttft: float, e2e: float,
                 reason: str) -> None:
        self.prompt_tokens.inc(prompt_tokens)
        self.generation_tokens.inc(completion_tokens)
        self.evaluations.inc(evaluations)
        self.ttft.observe(ttft)
        self.e2e.observe(e2e)
        self.success.labels(finished_reason=reason).inc()

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def snapshot(self) -> dict[str, Any]:
        """A few values as numbers (for benches and tests)."""
        return {"running": self.running._value.get(), "waiting": self.waiting._value.get(),
                "slot_utilization": self.utilisation._value.get()}
