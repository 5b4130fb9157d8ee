"""dlm_jax as an EleutherAI lm-evaluation-harness model, and lm-eval's own command line with it registered.

    python -m dlm_jax.lm_eval --model_args workdir=runs/demo,mc_samples=32 --tasks TASKS \\
        [--include_path DIR] [--batch_size 16] [--output_path OUT]   (any other lm-eval flag)

`@register_model("dlm_jax")` (importing this module registers it):
- `loglikelihood(context, continuation)` = minus the Monte Carlo negative ELBO of the continuation (and the `</s>`
  that ends it) given the context, `mc_samples` samples (default 32), the standard error logged per call; batched
  over requests (`--batch_size`) x samples; a score depends on (run, context, continuation, seed, mc_samples) alone.
  `is_greedy`: whether the run's sampler (argmax, the continuation's length) decodes exactly the continuation.
- `generate_until(context, gen_kwargs)`: the run's sampler through `inference.Generator` (the one inference path),
  batched; the response canvas is `max_gen_toks` long (cut to what fits the model) or, with `length=predictor`, the
  run's length predictor's length; the text stops at `</s>` and at the first of `until`.
- `loglikelihood_rolling`: an error (a diffusion LM has no left-to-right factorisation to roll).

Model args: workdir, checkpoint, mc_samples, steps, strategy, threshold, cache (none | prefix | dual: the sampler's
prefix cache, `inference/prefix_cache.py`), mesh (axes joined by "+", e.g.
`mesh=data=2+tensor=2`: lm-eval splits model args at commas), seed, micro_batch, max_gen_toks, length
(canvas | predictor) with length_workdir, truncation (error | left). In a multi-process launch every process runs
the same requests on its shards and process 0 alone prints and writes lm-eval's results.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import sys
from typing import Any, Sequence

import jax
import numpy as np

from dlm_jax import cli, parallel
from dlm_jax.diffusion import SamplerConfig
from dlm_jax.errors import ConfigError, InputError, UserError
from dlm_jax.inference import RestoredRun, restore_run
from dlm_jax.inference.generator import response_ids

try:
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
except ImportError:  # lm-eval is an optional extra: pip install -e ".[lmeval]"
    LM, register_model = object, None

log = logging.getLogger("lm_eval.models.dlm_jax")  # lm-eval's logger tree: shown at its level, with its lines
INSTALL_HINT = 'lm-eval is not installed; install it with pip install -e ".[lmeval]" (lm-eval==0.4.13)'


@dataclasses.dataclass(frozen=True)
class ModelArgs:
    """The `--model_args` of the dlm_jax model, checked once (unknown names and bad values are one-line errors)."""

    workdir: str
    checkpoint: int | None = None
    mc_samples: int = 32
    steps: int | None = None
    strategy: str | None = None
    threshold: float | None = None
    cache: str | None = None
    mesh: str | None = None
    seed: int = 0
    micro_batch: int = 8
    max_gen_toks: int = 256
    length: str = "canvas"
    length_workdir: str | None = None
    truncation: str = "error"
    batch_size: int = 1

    @classmethod
    def parse(cls, kwargs: dict[str, Any]) -> "ModelArgs":
        kwargs = {k: v for k, v in kwargs.items() if k not in ("device", "max_batch_size")}  # lm-eval's, unused
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise ConfigError(f"unknown dlm_jax model args: {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        if "workdir" not in kwargs:
            raise ConfigError("the dlm_jax model needs --model_args workdir=RUN_DIR (a trained run)")
        bs = kwargs.get("batch_size", 1)
        if bs is None or (isinstance(bs, str) and bs.startswith("auto")):
            bs = 16  # "auto" would probe memory with torch; a fixed batch changes speed only, never a score
        kwargs["batch_size"] = _positive("batch_size", bs)
        args = cls(**kwargs)
        args.check()
        return args

    def check(self) -> None:
        _positive("mc_samples", self.mc_samples)
        _positive("max_gen_toks", self.max_gen_toks)
        if self.micro_batch is None or int(self.micro_batch) < 0:
            raise ConfigError(f"micro_batch must be >= 0, got {self.micro_batch!r}")
        if self.length not in ("canvas", "predictor"):
            raise ConfigError(f"length must be canvas or predictor, got {self.length!r}")
        if self.length == "predictor" and not self.length_workdir:
            raise ConfigError("length=predictor needs length_workdir=DIR (a run of configs/length_predictor.py)")
        if self.truncation not in ("error", "left"):
            raise ConfigError(f"truncation must be error or left, got {self.truncation!r}")


def _positive(name: str, value: Any) -> int:
    try:
        v = int(value)
    except (TypeError, ValueError):
        v = 0
    if v < 1 or str(v) != str(value).strip():
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return v


def _sampler(run: RestoredRun, args: ModelArgs) -> SamplerConfig:
    """The run's sampler with the model args' steps / strategy / threshold / cache (`SamplerConfig` checks them)."""
    base = run.run.sampler
    strategy = args.strategy or base.strategy
    threshold = args.threshold if args.threshold is not None else (base.threshold if strategy == "adaptive"
                                                                     else None)
    return dataclasses.replace(base, steps=args.steps or base.steps, strategy=strategy, threshold=threshold,
                               cache=args.cache or base.cache, record_trajectory=False)


class DlmJaxLM(LM):
    """A trained dlm_jax run as an lm-eval model (see the module docstring)."""

    def __init__(self, **kwargs: Any):
        super().__init__()
        self.args = ModelArgs.parse(kwargs)
        parallel.initialize_distributed()
        mesh = cli.inference_mesh(self.args.mesh.replace("+", ",") if self.args.mesh else None)
        run = restore_run(self.args.workdir, step=self.args.checkpoint, mesh=mesh,
                          micro_batch=int(self.args.micro_batch))
        if self.args.length == "predictor":
            run = run.with_length_head(self.args.length_workdir)
        self.run, self.vocab = run, run.vocab
        self.generator = run.generator()
        self.sampler = _sampler(run, self.args)
        self.rng = jax.random.key(self.args.seed)
        self.last_stderr: np.ndarray | None = None
        self._device = jax_device()

    def get_model_info(self) -> dict[str, Any]:
        """Merged into the results' `config`: the run, its checkpoint and the JAX devices it ran on."""
        return {"dlm_jax_workdir": str(self.args.workdir), "dlm_jax_checkpoint_step": int(self.run.step),
                "jax_devices": jax.device_count(), "jax_backend": jax.default_backend()}

    # ---- tokens
    def _encode(self, text: str) -> list[int]:
        return [int(i) for i in self.vocab.encode(text)]

    def _fit(self, context: list[int], room: int, what: str) -> list[int]:
        """The context, left-truncated to `room` tokens when `truncation=left`, else an error if it does not fit."""
        if len(context) <= room:
            return context
        if self.args.truncation == "left" and room > 0:
            return context[len(context) - room:]
        raise InputError(f"a {what} request needs {len(context)} context tokens but the model takes "
                         f"{self.generator.max_length} in all (room for {max(room, 0)} with the continuation and "
                         "<s>); shorten the task's context or pass truncation=left in --model_args")

    # ---- lm-eval API
    def loglikelihood(self, requests: Sequence[Any]) -> list[tuple[float, bool]]:
        pairs = [(self._encode(c), self._encode(x)) for c, x in (r.args[:2] for r in requests)]
        limit = self.generator.max_length - 2  # <s> and the continuation's </s>
        prompts = [self._fit(c, limit - len(x), "loglikelihood") for c, x in pairs]
        conts = [x for _, x in pairs]
        nll, se = self.generator.score(prompts, conts, self.rng, num_samples=self.args.mc_samples,
                                       batch_size=self.args.batch_size)
        self.last_stderr = se
        log.info("loglikelihood: %d requests, %d Monte Carlo samples each, mean standard error %.4f nats",
                 len(requests), self.args.mc_samples, float(np.mean(se)) if len(se) else 0.0)
        greedy = self._is_greedy(prompts, conts)
        return [(-float(v), bool(g)) for v, g in zip(nll, greedy)]

    def _is_greedy(self, prompts: list[list[int]], conts: list[list[int]]) -> list[bool]:
        """Whether the run's sampler with argmax decodes each continuation exactly (at its length + `</s>`)."""
        config = dataclasses.replace(self.sampler, argmax=True, fixed_eos=False)
        out = self.generator.generate(prompts, [len(x) + 1 for x in conts], config, self.rng,
                                      batch_size=self.args.batch_size)
        got = response_ids(out["tokens"], out["response_mask"], self.vocab.eos_id)
        return [g == x for g, x in zip(got, conts)]

    def loglikelihood_rolling(self, requests: Sequence[Any]) -> list[float]:
        raise InputError("loglikelihood_rolling (perplexity tasks) is not defined for a diffusion LM: it has no "
                         "left-to-right factorisation; use loglikelihood (multiple-choice) or generate_until tasks")

    def generate_until(self, requests: Sequence[Any]) -> list[str]:
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(_generation_key(r.args[1] or {}, self.args.max_gen_toks), []).append(i)
        texts: list[str] = [""] * len(requests)
        for (max_toks, sample, temperature, until), idx in groups.items():
            config = dataclasses.replace(self.sampler, argmax=not sample, temperature=temperature or 1.0)
            prompts, lengths = self._canvases([self._encode(requests[i].args[0]) for i in idx], max_toks)
            out = self.generator.generate(prompts, lengths, config, self.rng, batch_size=self.args.batch_size)
            for i, ids in zip(idx, response_ids(out["tokens"], out["response_mask"], self.vocab.eos_id)):
                texts[i] = _cut(self.vocab.decode(ids), until)
        return texts

    def _canvases(self, contexts: list[list[int]], max_toks: int) -> tuple[list[list[int]], list[int]]:
        """Prompts and response lengths (incl. `</s>`): `max_toks` + 1 cut to what fits, or the predictor's."""
        limit = self.generator.max_length - 1
        prompts = [self._fit(c, limit - 2, "generate_until") for c in contexts]
        if self.args.length == "predictor":
            lengths = self.generator.predict_lengths(prompts, 1)[:, 0].tolist()
        else:
            lengths = [max_toks + 1] * len(prompts)
        return prompts, [max(2, min(n, limit - len(p))) for p, n in zip(prompts, lengths)]


def _generation_key(kwargs: dict[str, Any], default_max: int) -> tuple:
    """(max_gen_toks, do_sample, temperature, until) of a request's gen_kwargs; unknown keys are ignored as the
    harness's own models do."""
    until = kwargs.get("until") or []
    until = (until,) if isinstance(until, str) else tuple(until)
    temperature = float(kwargs.get("temperature", 0.0) or 0.0)
    sample = bool(kwargs.get("do_sample", False)) and temperature > 0
    max_toks = _positive("max_gen_toks", kwargs.get("max_gen_toks", default_max))
    return max_toks, sample, temperature if sample else 0.0, until


def _cut(text: str, until: Sequence[str]) -> str:
    for stop in until:
        if stop:
            text = text.split(stop)[0]
    return text


if register_model is not None:
    register_model("dlm_jax")(DlmJaxLM)


def main(argv: list[str]) -> int:
    """lm-eval's command line (`lm_eval run ...`) with `--model dlm_jax` as the default model."""
    if register_model is None:
        print(f"error: {INSTALL_HINT}", file=sys.stderr)
        return 2
    from lm_eval._cli import HarnessCLI
    from lm_eval.utils import setup_logging
    argv = list(argv)
    if "--model" not in argv:
        argv = ["--model", "dlm_jax", *argv]
    parallel.initialize_distributed()
    if jax.process_index() > 0:  # every process computes; process 0 prints and writes
        argv = _drop_outputs(argv)
        sys.stdout = open(os.devnull, "w")
    if not any(a == "--device" or a.startswith("--device=") for a in argv):  # lm-eval's default is "cuda:0"
        argv = ["--device", jax_device(), *argv]
    sys.argv = ["lm_eval", "run", *argv]
    setup_logging()
    try:
        parser = HarnessCLI()
        parser.execute(parser.parse_args())
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def jax_device() -> str:
    """What the results' `config.device` records: JAX's backend and device count (e.g. "cpu", "gpu x8"), not
    lm-eval's PyTorch default "cuda:0"; the model runs on every JAX device of the mesh whatever it says."""
    n = jax.device_count()
    return jax.default_backend() + (f" x{n}" if n > 1 else "")


def _drop_outputs(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--output_path", "-o"):
            skip = True
        elif not a.startswith(("--output_path=", "--log_samples")):
            out.append(a)
    return out


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
