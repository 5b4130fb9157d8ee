"""The inference object: a model, its params and its vocabulary turned into responses, scores and choices.

`Generator` runs the jitted sampler over params (oracle, fixed or beam-predicted lengths), Monte Carlo ELBO scoring
and rank classification, in ids of the original vocabulary (a pruned model's ids are mapped in and out here).
Train-time evaluation, `evaluate` and `generate` all decode through it.

On a device `mesh` (the params' own), every input goes onto the mesh as a global array (rows split over its
`data` axis where they divide) and every output comes back replicated, so the same calls run in one or many JAX
processes (a pod host each, or `launch/local_multiprocess.py`), each process holding the same prompts and
reading the same whole result.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from dlm_jax.diffusion import SamplerConfig, build_inputs, elbo_nll, sample, select_best, top_lengths
from dlm_jax.data.vocab import HFVocabulary
from dlm_jax.errors import ConfigError
from dlm_jax.model.prune import VocabMap


@dataclasses.dataclass
class Generator:
    """Everything needed to turn prompts (token ids, original vocabulary) into responses.

    `vocab_map` (optional) maps original ids to a pruned model's ids and back. `mesh`: the device mesh the params
    live on (None: plain jit of host arrays, one process).
    """

    model: Any
    params: Any
    _: dataclasses.KW_ONLY
    bos_id: int
    eos_id: int
    pad_id: int
    mask_id: int
    max_length: int
    vocab_map: VocabMap | None = None
    length_model: Any = None
    length_params: Any = None
    mesh: Mesh | None = None

    def __post_init__(self) -> None:
        self._jitted: dict[tuple, Callable] = {}  # (SamplerConfig, max_response), ("score", samples), ("length",)

    @classmethod
    def with_vocab(cls, model: Any, params: Any, vocab: HFVocabulary, max_length: int, *,
                   vocab_map: VocabMap | None = None, length_model: Any = None, length_params: Any = None,
                   mesh: Mesh | None = None) -> "Generator":
        """A generator whose special ids are `vocab`'s (the tokenizer's)."""
        return cls(model, params, bos_id=vocab.bos_id, eos_id=vocab.eos_id, pad_id=vocab.pad_id,
                   mask_id=vocab.mask_id, max_length=max_length, vocab_map=vocab_map, length_model=length_model,
                   length_params=length_params, mesh=mesh)

    def _jit(self, fn: Callable) -> Callable:
        """`jax.jit`; on a mesh with the outputs replicated, so every process can read the whole result."""
        if self.mesh is None:
            return jax.jit(fn)
        return jax.jit(fn, out_shardings=NamedSharding(self.mesh, PartitionSpec()))

    def _put(self, *arrays: np.ndarray) -> list[jax.Array]:
        """Host arrays (the same in every process) as arrays on the mesh: rows split over its `data` axis where
        they divide, else replicated. In several processes `jax.device_put` also checks that they are the same."""
        if self.mesh is None:
            return [jnp.asarray(a) for a in arrays]
        ways = dict(self.mesh.shape).get("data", 1)
        return [jax.device_put(a, NamedSharding(self.mesh, PartitionSpec("data") if a.ndim and a.shape[0] % ways == 0
                                                else PartitionSpec())) for a in arrays]

    def _key(self, rng: jax.Array, offset: int) -> jax.Array:
        """`fold_in(rng, offset)` as raw key data on the mesh (a host value every process computes alike); the
        jitted functions wrap it back into a key."""
        key = jax.random.fold_in(rng, offset)
        data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
        return self._put(np.asarray(data))[0]

    def _fn(self, config: SamplerConfig, max_response: int) -> Callable:
        """The jitted sampler for `config`; the head is evaluated at `max_response` positions per row only."""
        key = (config, max_response)
        if key not in self._jitted:
            model = self.model
            mask_id = self._m(self.mask_id)

            def run(params, tokens, response, attn, key_data):
                def logits_fn(t, positions):
                    return model.apply({"params": params}, t, attention_mask=attn, output_positions=positions)
                return sample(logits_fn, tokens, response, jax.random.wrap_key_data(key_data), config,
                              mask_id=mask_id, max_response=max_response)

            self._jitted[key] = self._jit(run)
        return self._jitted[key]

    def _batch_inputs(self, prompts: Sequence[Sequence[int]], lengths: Sequence[int], batch_size: int, *,
                      pad_batch: bool, fixed_eos: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`build_inputs` cut to a bucketed width (bounds recompiles); with `pad_batch` the last row is repeated up
        to `batch_size` rows, so a last partial batch reuses the compiled shape. `fixed_eos`: each response's last
        slot holds `</s>` and is not generated (the released canvas)."""
        tokens, resp, attn = build_inputs(prompts, lengths, bos_id=self.bos_id, pad_id=self.pad_id,
                                          mask_id=self.mask_id, max_len=self.max_length)
        if fixed_eos:
            last = np.asarray([len(p) + int(n) for p, n in zip(prompts, lengths)])  # <s> + prompt + n - 1
            tokens[np.arange(len(last)), last] = self.eos_id
            resp[np.arange(len(last)), last] = False
        width = _bucket(int(attn.sum(1).max()), self.max_length)
        arrays = [tokens[:, :width], resp[:, :width], attn[:, :width]]
        pad_rows = batch_size - len(prompts) if pad_batch else 0
        if pad_rows:
            arrays = [np.concatenate([a, np.repeat(a[-1:], pad_rows, 0)]) for a in arrays]
        return arrays[0], arrays[1], arrays[2]

    def _m(self, old_id: int) -> int:
        return int(self.vocab_map.old_to_new[old_id]) if self.vocab_map is not None else old_id

    def generate(self, prompts: Sequence[Sequence[int]], lengths: Sequence[int], config: SamplerConfig,
                 rng: jax.Array, *, batch_size: int = 64) -> dict[str, np.ndarray]:
        """Decodes each prompt with a response of the given length (incl. `</s>`), in batches.

        Returns dict(tokens [N, L] original ids, response_mask, scores, num_evals, trajectory [S, N, L] or None).
        """
        outs: list[dict[str, np.ndarray]] = []
        for start in range(0, len(prompts), batch_size):
            p = prompts[start:start + batch_size]
            tokens, resp, attn = self._batch_inputs(p, lengths[start:start + batch_size], batch_size,
                                                    pad_batch=len(prompts) > batch_size, fixed_eos=config.fixed_eos)
            mtok = self.vocab_map.to_new(tokens) if self.vocab_map is not None else tokens
            max_response = _bucket(int(resp.sum(1).max()), tokens.shape[1])
            out = self._fn(config, max_response)(self.params, *self._put(mtok, resp, attn), self._key(rng, start))
            k = len(p)
            got = np.asarray(out.tokens)[:k]
            traj = None if out.trajectory is None else np.asarray(out.trajectory)[:, :k]
            if self.vocab_map is not None:
                got = self.vocab_map.to_old(got)
                traj = None if traj is None else self.vocab_map.to_old(traj)
            outs.append(dict(tokens=_pad_to(got, self.max_length, self.pad_id), response_mask=_pad_to(resp[:k],
                             self.max_length, False), scores=_pad_to(np.asarray(out.scores)[:k], self.max_length, 0.0),
                             num_evals=np.asarray(out.num_evals)[:k],
                             trajectory=None if traj is None else _pad_to(traj, self.max_length, self.pad_id)))
        merged = {k: np.concatenate([o[k] for o in outs], axis=1 if k == "trajectory" else 0)
                  for k in outs[0] if outs[0][k] is not None}
        merged.setdefault("trajectory", None)
        return merged

    def predict_lengths(self, prompts: Sequence[Sequence[int]], beam: int) -> np.ndarray:
        """Top-`beam` response lengths per prompt from the length predictor, [N, beam]."""
        if self.length_model is None:
            raise ConfigError("no length predictor is loaded: train one (configs/length_predictor.py) or use the "
                             "oracle length")
        tokens, _, attn = build_inputs(prompts, [0] * len(prompts), bos_id=self.bos_id, pad_id=self.pad_id,
                                       mask_id=self.mask_id, max_len=self.max_length)
        mtok = self.vocab_map.to_new(tokens) if self.vocab_map is not None else tokens
        if ("length",) not in self._jitted:
            model, head = self.model, self.length_model

            def run(params, length_params, tokens, attn):
                hidden = model.apply({"params": params}, tokens, attention_mask=attn, method=type(model).encode)
                return head.apply({"params": length_params}, hidden, attn)
            self._jitted[("length",)] = self._jit(run)
        logits = self._jitted[("length",)](self.params, self.length_params, *self._put(mtok, attn))
        max_resp = self.max_length - 1 - np.asarray([len(p) for p in prompts]).max()
        return top_lengths(np.asarray(logits), beam, max_length=max_resp)

    def generate_with_beam(self, prompts: Sequence[Sequence[int]], beam: int, config: SamplerConfig,
                           rng: jax.Array, *, batch_size: int = 64) -> dict[str, np.ndarray]:
        """Length beam: decode the top-`beam` lengths of each prompt in one batch, keep the best candidate."""
        lengths = self.predict_lengths(prompts, beam)  # [N, beam]
        flat_prompts = [p for p in prompts for _ in range(beam)]
        out = self.generate(flat_prompts, lengths.reshape(-1).tolist(), config, rng, batch_size=batch_size * beam)
        best = np.asarray(select_best(jnp.asarray(out["scores"]), jnp.asarray(out["response_mask"]), beam))
        rows = np.arange(len(prompts)) * beam + best
        res = {k: v[rows] for k, v in out.items() if k != "trajectory" and v is not None}
        res["trajectory"] = None if out["trajectory"] is None else out["trajectory"][:, rows]
        res["lengths"] = lengths[np.arange(len(prompts)), best]
        return res

    def score(self, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], rng: jax.Array, *,
              num_samples: int = 8, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Monte Carlo negative ELBO (nats) of each response (ids without `</s>`; `</s>` is appended and scored)
        given its prompt, and its standard error, both [N]. See `dlm_jax.diffusion.elbo_nll`."""
        nll, se = [], []
        fn = self._score_fn(num_samples)
        for start in range(0, len(prompts), batch_size):
            r = responses[start:start + batch_size]
            tokens, resp, attn = self._batch_inputs(prompts[start:start + batch_size], [len(x) + 1 for x in r],
                                                    batch_size, pad_batch=len(prompts) > batch_size)
            tokens[resp[:len(r)].nonzero()] = np.concatenate([[*x, self.eos_id] for x in r])  # the responses
            mtok = self.vocab_map.to_new(tokens) if self.vocab_map is not None else tokens
            m, s = fn(self.params, *self._put(mtok, resp, attn), self._key(rng, start))
            nll.append(np.asarray(m)[:len(r)])
            se.append(np.asarray(s)[:len(r)])
        return np.concatenate(nll), np.concatenate(se)

    def _score_fn(self, num_samples: int) -> Callable:
        key = ("score", num_samples)
        if key not in self._jitted:
            model, mask_id = self.model, self._m(self.mask_id)

            def run(params, tokens, response, attn, key_data):
                logits_fn = lambda t: model.apply({"params": params}, t, attention_mask=attn)  # noqa: E731
                return elbo_nll(logits_fn, tokens, response, jax.random.wrap_key_data(key_data), mask_id=mask_id,
                                num_samples=num_samples)
            self._jitted[key] = self._jit(run)
        return self._jitted[key]

    def rank_options(self, prompts: Sequence[Sequence[int]], options: Sequence[Sequence[Sequence[int]]],
                     rng: jax.Array, *, num_samples: int = 8, batch_size: int = 64) -> np.ndarray:
        """Rank classification: index of the option with the lowest negative-ELBO estimate per prompt, [N]."""
        flat_p = [p for p, opts in zip(prompts, options) for _ in opts]
        flat_o = [o for opts in options for o in opts]
        nll, _ = self.score(flat_p, flat_o, rng, num_samples=num_samples, batch_size=batch_size)
        out, i = [], 0
        for opts in options:
            out.append(int(np.argmin(nll[i:i + len(opts)])))
            i += len(opts)
        return np.asarray(out, np.int64)


def _bucket(n: int, cap: int) -> int:
    """n rounded up to a multiple of 8, at most `cap`: few distinct shapes, so few recompiles."""
    return min(cap, -(-n // 8) * 8)


def _pad_to(x: np.ndarray, width: int, value: Any) -> np.ndarray:
    pad = width - x.shape[-1]
    if pad <= 0:
        return x
    cfg = [(0, 0)] * (x.ndim - 1) + [(0, pad)]
    return np.pad(x, cfg, constant_values=value)


def prompts_of(rows: dict[str, np.ndarray]) -> list[list[int]]:
    """The prompt ids of laid-out rows (between `<s>` and the response)."""
    return [list(t[1:p]) for t, p in zip(rows["tokens"], rows["prompt_length"])]


def decode_responses(tokenizer: Any, out: dict[str, np.ndarray], eos_id: int) -> list[str]:
    """Generated texts of `Generator.generate` output, each up to its first `</s>`."""
    return [tokenizer.decode(ids, skip_special_tokens=True).strip()
            for ids in response_ids(out["tokens"], out["response_mask"], eos_id)]


def response_ids(tokens: np.ndarray, response_mask: np.ndarray, eos_id: int) -> list[list[int]]:
    """The generated ids of each row, up to (excluding) the first `</s>`."""
    out = []
    for t, r in zip(tokens, response_mask):
        ids = [int(i) for i in t[r.astype(bool)]]
        out.append(ids[:ids.index(eos_id)] if eos_id in ids else ids)
    return out
