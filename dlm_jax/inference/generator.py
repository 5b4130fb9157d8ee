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
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from dlm_jax.diffusion import (DecodeConfig, SamplerConfig, beam_search, build_inputs, elbo_nll, greedy_decode, sample,
                               select_best, top_lengths)
from dlm_jax.diffusion.autoregressive import prompt_rows
from dlm_jax.diffusion.fused_head import HeadParts
from dlm_jax.diffusion.rows import map_rows, row_keys, stable_hash
from dlm_jax.diffusion.sampler import check_sampler, initial_canvas
from dlm_jax.data.vocab import HFVocabulary
from dlm_jax.inference.prefix_cache import cached_logits_fn, live_positions, response_side
from dlm_jax.errors import ConfigError, InputError
from dlm_jax.model import model_for
from dlm_jax.model import family_of
from dlm_jax.model.prune import VocabMap


@dataclasses.dataclass
class Generator:
    """Everything needed to turn prompts (token ids, original vocabulary) into responses.

    `vocab_map` (optional) maps original ids to a pruned model's ids and back. `mesh`: the device mesh the params
    live on (None: plain jit of host arrays, one process). `micro_batch`: rows per model evaluation; each row's
    result is then bit-identical whatever its batch (0: the whole call at once, faster on large batches, equal to
    the last bits only).

    `decoding` (an AR run's, `objective="ar"`): `generate` decodes with a KV cache (greedy or beam search) and
    `score` is the exact negative log-likelihood; the diffusion sampler and the ELBO are for RDM runs. An
    encoder-decoder reads `<s> prompt </s> response </s>` (`prompt_separator`, from its family in `with_vocab`):
    prompts get their `</s>` here.
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
    micro_batch: int = 8
    decoding: DecodeConfig | None = None
    head_chunk: int = 0  # > 0: the head's argmax / log-sum-exp read the vocabulary this many rows at a time
    prompt_separator: bool = False  # prompts end with `</s>` (`Family.prompt_separator`)

    def __post_init__(self) -> None:
        self._jitted: dict[tuple, Callable] = {}  # (SamplerConfig, max_response), ("score", samples), ("length",)

    @classmethod
    def with_vocab(cls, model: Any, params: Any, vocab: HFVocabulary, max_length: int, *,
                   vocab_map: VocabMap | None = None, length_model: Any = None, length_params: Any = None,
                   mesh: Mesh | None = None, micro_batch: int = 8,
                   decoding: DecodeConfig | None = None, head_chunk: int = 0) -> "Generator":
        """A generator whose special ids are `vocab`'s (the tokenizer's)."""
        mask_id = vocab.mask_id if decoding is None or vocab.optional_mask_id is not None else -1  # AR: unused
        return cls(model, params, bos_id=vocab.bos_id, eos_id=vocab.eos_id, pad_id=vocab.pad_id,
                   mask_id=mask_id, max_length=max_length, vocab_map=vocab_map, length_model=length_model,
                   length_params=length_params, mesh=mesh, micro_batch=micro_batch, decoding=decoding,
                   head_chunk=head_chunk, prompt_separator=family_of(model.cfg).prompt_separator)

    def head(self, params: Any, tokens: jax.Array, attn: jax.Array, positions: jax.Array | None,
             side: jax.Array | None = None) -> Any:
        """The model's logits at `positions`, or with `head_chunk` its head's inputs (`HeadParts`): the sampler's
        argmax and the ELBO then read the vocabulary in chunks, never holding [rows, positions, vocab]. `side`:
        the rows' response side (`prefix_cache.response_side`), which the `prompt_prefix` layout hides from the
        prompt."""
        cfg = getattr(self.model, "cfg", None)  # (a stand-in model without one: tests' fixed logits)
        kw = {} if cfg is None else cfg.layout_kwargs(side)
        if not self.head_chunk:
            return self.model.apply({"params": params}, tokens, attention_mask=attn, output_positions=positions, **kw)
        out = self.model.apply({"params": params}, tokens, attention_mask=attn, output_positions=positions,
                               head_parts=True, **kw)
        return HeadParts(*out, chunk=self.head_chunk)

    def _prompts(self, prompts: Sequence[Sequence[int]]) -> list[list[int]]:
        """The prompts as the model reads them: with `</s>` appended for an encoder-decoder."""
        sep = [self.eos_id] if self.prompt_separator else []
        return [[*p, *sep] for p in prompts]

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

    def _fn(self, config: SamplerConfig, max_response: int, max_live: int) -> Callable:
        """The jitted sampler for `config`; the head is evaluated at `max_response` positions per row only, the
        model in micro-batches of `micro_batch` rows; with a cache (`config.cache`), each step over `max_live`
        live positions per row (`prefix_cache`)."""
        key = (config, max_response, max_live)
        if key not in self._jitted:
            micro = self.micro_batch
            mask_id = self.model_id(self.mask_id)

            def run(params, tokens, response, attn, side, live, key_data):
                def logits_fn(t, positions, rows=None):
                    a, sd = (attn, side) if rows is None else (attn[rows], side[rows])
                    return self.head(params, t, a, positions, sd)
                if config.cache != "none":  # filled from the canvas `sample` starts from
                    start = initial_canvas(tokens, response, mask_id).tokens
                    logits_fn = cached_logits_fn(self.cache_model(), params, start, attn, side, live, max_live,
                                                 self.head_chunk, micro)
                return sample(logits_fn, tokens, response, jax.random.wrap_key_data(key_data), config,
                              mask_id=mask_id, max_response=max_response, micro_batch=micro)

            self._jitted[key] = self._jit(run)
        return self._jitted[key]

    def cache_model(self) -> Any:
        """The model in decode mode (its keys and values in a "cache" collection), for the prefix cache."""
        if not hasattr(self.model, "prefix_logits"):
            raise ConfigError(f"sampler cache is for encoder and decoder-only models; {self.model.cfg.family!r} "
                              "decodes through its encoder-decoder (use --config.sampler.cache=none)", field="cache")
        return model_for(self.model.cfg, decode=True)

    def _inputs(self, prompts: Sequence[Sequence[int]], lengths: Sequence[int], *, fixed_eos: bool = False
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`build_inputs` at `max_length` width. `fixed_eos`: each response's last slot holds `</s>` and is not
        generated (the released canvas)."""
        tokens, resp, attn = build_inputs(prompts, lengths, bos_id=self.bos_id, pad_id=self.pad_id,
                                          mask_id=self.mask_id, max_len=self.max_length)
        tokens, resp, attn = (_pad_to(a, self.max_length, v) for a, v in ((tokens, self.pad_id), (resp, False),
                                                                          (attn, 0)))
        if fixed_eos:
            last = np.asarray([len(p) + int(n) for p, n in zip(prompts, lengths)])  # <s> + prompt + n - 1
            tokens[np.arange(len(last)), last] = self.eos_id
            resp[np.arange(len(last)), last] = False
        return tokens, resp, attn

    def _calls(self, attn: np.ndarray, resp: np.ndarray, batch_size: int, live: np.ndarray | None = None
               ) -> Iterator[tuple[np.ndarray, int, int, int, int]]:
        """The model calls for rows laid out at full width: (row indices, rows in the call, width, response
        positions, live positions (`live` [n, L], a cached decode's; else 0)). Each row's width and buckets are
        its own (`bucket` of its lengths), never its batch's, so a row is computed at the same shape whatever else
        is decoded with it; rows of one bucket share calls of `batch_size` (a single partial call is cut to the
        micro-batch multiple it needs)."""
        widths = np.asarray([bucket(int(n), self.max_length) for n in attn.sum(1)])
        resps = np.asarray([bucket(int(n), int(w)) for n, w in zip(resp.sum(1), widths)])
        lives = (np.zeros_like(resps) if live is None else
                 np.asarray([live_bucket(int(n), int(w), int(r)) for n, w, r in zip(live.sum(1), widths, resps)]))
        for w, r, lv in sorted(set(zip(widths.tolist(), resps.tolist(), lives.tolist()))):
            idx = np.flatnonzero((widths == w) & (resps == r) & (lives == lv))
            rows = batch_size if len(idx) > batch_size else -(-len(idx) // max(self.micro_batch, 1)) * max(
                self.micro_batch, 1)
            for start in range(0, len(idx), batch_size):
                yield idx[start:start + batch_size], rows, w, r, lv

    def model_id(self, old_id: int) -> int:
        """The id the model computes with for an id of the original vocabulary (a pruned model's own id)."""
        return int(self.vocab_map.old_to_new[old_id]) if self.vocab_map is not None else old_id

    def layout(self, prompts: Sequence[Sequence[int]], lengths: Sequence[int], *, fixed_eos: bool = False
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(tokens, response mask, attention) [n, max_length] of each prompt (original ids, without `<s>`) with a
        response of `lengths` positions, as `generate` lays its rows out (the serving engine's rows too)."""
        return self._inputs(self._prompts(prompts), lengths, fixed_eos=fixed_eos)

    def row_positions(self, prompt: Sequence[int]) -> int:
        """Positions a prompt takes in a row before its response: `<s>`, the prompt and an encoder-decoder's
        `</s>`."""
        return 1 + len(self._prompts([prompt])[0])

    def _call_arrays(self, idx: np.ndarray, rows: int, width: int, positions: Sequence[np.ndarray],
                     per_row: Sequence[np.ndarray] = ()) -> list[np.ndarray]:
        """Rows `idx` of each array, padded to `rows` rows by repeating the last: `positions` ([n, max_length]:
        tokens first, mapped into a pruned model's ids, then masks) cut to `width` columns, then `per_row` (e.g.
        the rows' keys) whole."""
        take = np.concatenate([idx, np.repeat(idx[-1:], rows - len(idx))])
        out = [a[take][:, :width] for a in positions] + [a[take] for a in per_row]
        if self.vocab_map is not None:
            out[0] = self.vocab_map.to_new(out[0])
        return out

    def row_keys(self, rng: jax.Array, seeds: Sequence[int]) -> np.ndarray:
        """[n, 2] raw key data `fold_in(rng, seed)` per row (what the jitted functions take)."""
        return np.asarray(jax.random.key_data(row_keys(rng, seeds)))

    def generate(self, prompts: Sequence[Sequence[int]], lengths: Sequence[int], config: SamplerConfig,
                 rng: jax.Array, *, batch_size: int = 64, seeds: Sequence[int] | None = None
                 ) -> dict[str, np.ndarray]:
        """Decodes each prompt with a response of the given length (incl. `</s>`), in batches.

        A row's output is a function of (params, prompt, length, rng, its seed, config) alone: its random numbers
        come from `fold_in(rng, seed)` (default seed: a stable hash of the prompt and length; pass `seeds`, e.g.
        request ids, to draw differently for equal prompts), its width is its own and the model runs on fixed
        micro-batches. Returns dict(tokens [N, L] original ids, response_mask, scores, num_evals, trajectory
        [S, N, L] or None, trajectory_scores [S, N, L] (log-probs, -inf where masked) or None).
        """
        if self.decoding is not None:
            return self.generate_ar(prompts, self.decoding, batch_size=batch_size, rng=rng, seeds=seeds)
        seeds = [stable_hash(p, n) for p, n in zip(prompts, lengths)] if seeds is None else seeds
        tokens, resp, attn = self._inputs(self._prompts(prompts), lengths, fixed_eos=config.fixed_eos)
        keys = self.row_keys(rng, seeds)
        if config.block_length:
            return {"response_mask": resp, **self._decode_blocks(tokens, resp, attn, keys, config, batch_size)}
        check_sampler(config, resp.sum(1))
        return {"response_mask": resp, **self._decode(tokens, resp, attn, keys, config, batch_size,
                                                      response_side(resp, attn))}

    def _decode_blocks(self, tokens: np.ndarray, resp: np.ndarray, attn: np.ndarray, keys: np.ndarray,
                       config: SamplerConfig, batch_size: int) -> dict[str, Any]:
        """Semi-autoregressive decoding (`config.block_length` B): block k holds each row's response positions
        k*B .. k*B + B - 1; it is decoded by `_decode` as the whole response would be (its own schedule over its
        positions; the row keys, folded with k after the first block, so B >= the response is the whole response
        at once, bit for bit) while earlier blocks are context as decoded and later ones stay masked. Every
        row takes every block's steps (a row with nothing left in a block is computed unchanged). Trajectories are
        the blocks' one after another."""
        size, rank, side = config.block_length, np.cumsum(resp, 1) - 1, response_side(resp, attn)
        check_sampler(config, np.minimum(resp.sum(1), size))
        out, frames = None, []
        for k in range(max(1, -(-int(resp.sum(1).max(initial=0)) // size))):
            block = resp & (rank // size == k)
            part = self._decode(tokens if out is None else out["tokens"], block, attn,
                                fold_keys(keys, k) if k else keys, config, batch_size, side)
            if part["trajectory"] is not None:
                before = out["scores"] if out is not None else np.zeros(resp.shape, np.float32)
                settled = np.where(resp & (rank // size < k), before, -np.inf)
                frames.append((part["trajectory"], np.where(block, part["trajectory_scores"],
                                                            np.where(resp, settled, part["trajectory_scores"]))))
            if out is not None:
                part["scores"] = np.where(block, part["scores"], out["scores"])
                part["num_evals"] = part["num_evals"] + out["num_evals"]
            out = part
        out["trajectory"] = np.concatenate([t for t, _ in frames]) if frames else None
        out["trajectory_scores"] = np.concatenate([s for _, s in frames]) if frames else None
        return out

    def _decode(self, tokens: np.ndarray, resp: np.ndarray, attn: np.ndarray, keys: np.ndarray,
                config: SamplerConfig, batch_size: int, side: np.ndarray) -> dict[str, Any]:
        """The sampler over laid-out rows (`_inputs`; `side`: their whole response side, `response_side`), in
        calls of one width bucket: tokens (original ids; the `resp` positions decoded), scores, num_evals,
        trajectory and trajectory_scores (or None)."""
        live = live_positions(side, resp, config.cache) if config.cache != "none" else None
        n = len(tokens)
        out = dict(tokens=tokens.copy(), scores=np.zeros(tokens.shape, np.float32),
                   num_evals=np.zeros((n,), np.int32))
        trajs: list[tuple[np.ndarray, np.ndarray]] = []
        traj_scores: list[tuple[np.ndarray, np.ndarray]] = []
        for idx, rows, width, max_response, max_live in self._calls(attn, resp, batch_size, live):
            cols = (tokens, resp, attn, side, side if live is None else live)
            res = self._fn(config, max_response, max_live)(self.params, *self._put(
                *self._call_arrays(idx, rows, width, cols, (keys,))))
            got = np.asarray(res.tokens)[:len(idx)]
            out["tokens"][idx, :width] = self.vocab_map.to_old(got) if self.vocab_map is not None else got
            out["scores"][idx, :width] = np.asarray(res.scores)[:len(idx)]
            out["num_evals"][idx] = np.asarray(res.num_evals)[:len(idx)]
            if res.trajectory is not None:
                traj = np.asarray(res.trajectory)[:, :len(idx)]
                trajs.append((idx, self.vocab_map.to_old(traj) if self.vocab_map is not None else traj))
                traj_scores.append((idx, np.asarray(res.trajectory_scores)[:, :len(idx)]))
        out["trajectory"] = _merge_trajectories(trajs, n, self.max_length, self.pad_id) if trajs else None
        out["trajectory_scores"] = (_merge_trajectories(traj_scores, n, self.max_length, -np.inf) if traj_scores
                                    else None)
        return out

    def predict_lengths(self, prompts: Sequence[Sequence[int]], beam: int) -> np.ndarray:
        """Top-`beam` response lengths per prompt from the length predictor, [N, beam]."""
        if self.length_model is None:
            raise ConfigError("no length predictor is loaded: train one (configs/length_predictor.py) or use the "
                             "oracle length")
        prompts = self._prompts(prompts)
        tokens, _, attn = build_inputs(prompts, [0] * len(prompts), bos_id=self.bos_id, pad_id=self.pad_id,
                                       mask_id=self.mask_id, max_len=self.max_length)
        mtok = self.vocab_map.to_new(tokens) if self.vocab_map is not None else tokens
        if ("length",) not in self._jitted:
            model, head = self.model, self.length_model

            def run(params, length_params, tokens, attn):
                hidden = model.apply({"params": params}, tokens, attention_mask=attn, method="encode")
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
        res = {k: v[rows] for k, v in out.items() if not k.startswith("trajectory") and v is not None}
        for k in ("trajectory", "trajectory_scores"):
            res[k] = None if out.get(k) is None else out[k][:, rows]
        res["lengths"] = lengths[np.arange(len(prompts)), best]
        return res

    def score(self, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], rng: jax.Array, *,
              num_samples: int = 8, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Monte Carlo negative ELBO (nats) of each response (ids without `</s>`; `</s>` is appended and scored)
        given its prompt, and its standard error, both [N]. See `dlm_jax.diffusion.elbo_nll`. For an AR run
        (`decoding`): the exact negative log-likelihood, standard error 0.

        A score is a function of (params, prompt, response, rng, num_samples) alone: the pair's key is
        `fold_in(rng, stable_hash(prompt, response))`, its width its own, and the model runs on fixed micro-batches
        of (pair, sample) rows; `batch_size` (pairs per call) changes the speed, never a score.
        """
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ConfigError(f"the number of Monte Carlo samples must be a positive integer, got {num_samples!r}")
        keys = self.row_keys(rng, [stable_hash(p, r) for p, r in zip(prompts, responses)])
        tokens, resp, attn = self._inputs(self._prompts(prompts), [len(x) + 1 for x in responses])
        tokens[resp.nonzero()] = np.concatenate([[*x, self.eos_id] for x in responses]).astype(tokens.dtype)
        nll, se = np.zeros((len(prompts),), np.float32), np.zeros((len(prompts),), np.float32)
        for idx, rows, width, max_response, _ in self._calls(attn, resp, batch_size):
            arrays = self._call_arrays(idx, rows, width, (tokens, resp, attn), (keys,))
            fn = self._ar_score_fn() if self.decoding is not None else self._score_fn(num_samples, max_response)
            m, s = fn(self.params, *self._put(*arrays))
            nll[idx], se[idx] = np.asarray(m)[:len(idx)], np.asarray(s)[:len(idx)]
        return nll, se

    def _score_fn(self, num_samples: int, max_response: int) -> Callable:
        key = ("score", num_samples, max_response)
        if key not in self._jitted:
            mask_id, micro = self.model_id(self.mask_id), self.micro_batch

            def run(params, tokens, response, attn, key_data):
                def logits_fn(t, a, positions, r):  # a scored response ends the row: it is the response side
                    return self.head(params, t, a, positions, r)
                return elbo_nll(logits_fn, tokens, response, attn, jax.random.wrap_key_data(key_data),
                                mask_id=mask_id, num_samples=num_samples, micro_batch=micro,
                                max_response=max_response)
            self._jitted[key] = self._jit(run)
        return self._jitted[key]

    def _ar_score_fn(self) -> Callable:
        """-sum log p(response token | everything before it) per row, one causal forward each (micro-batched)."""
        if ("ar-score",) not in self._jitted:
            model, micro = self.model, self.micro_batch

            def run(params, tokens, response, attn, key_data):
                def nll(t, r, a):
                    logp = jax.nn.log_softmax(model.apply({"params": params}, t, attention_mask=a)[:, :-1], -1)
                    got = jnp.take_along_axis(logp, t[:, 1:, None], -1)[..., 0]
                    return -jnp.where(r[:, 1:], got, 0.0).sum(-1)
                del key_data
                m = map_rows(nll, (tokens, response, attn), micro)
                return m, jnp.zeros_like(m)
            self._jitted[("ar-score",)] = self._jit(run)
        return self._jitted[("ar-score",)]

    def generate_ar(self, prompts: Sequence[Sequence[int]], config: DecodeConfig, *, batch_size: int = 64,
                    rng: jax.Array | None = None, seeds: Sequence[int] | None = None) -> dict[str, np.ndarray]:
        """KV-cache decoding of an AR run (`config.beam_size` 1: greedy, or sampled at `config.temperature` with
        row keys `fold_in(rng, seed)` as `generate`'s; else fairseq's beam search), rows grouped by width bucket as
        `generate`. Returns generate's dict (`scores` holds each row's sequence score at its response positions;
        `num_evals` the model calls of its batch; no trajectory)."""
        keys = self.row_keys(jax.random.key(0) if rng is None else rng,
                             [stable_hash(p, 0) for p in prompts] if seeds is None else seeds)
        tokens, resp, attn, limits = self.ar_layout(prompts, config)
        n = len(prompts)
        out = dict(tokens=tokens.copy(), response_mask=np.zeros_like(resp), scores=np.zeros(tokens.shape, np.float32),
                   num_evals=np.zeros((n,), np.int32), trajectory=None, trajectory_scores=None)
        out["tokens"][resp] = self.pad_id
        for idx, rows, width, max_new, _ in self._calls(attn, resp, batch_size):
            arrays = self._call_arrays(idx, rows, width, (tokens, resp, attn), (limits, keys))
            res = self._ar_fn(config, max_new)(self.params, *self._put(*arrays))
            got = np.asarray(res.tokens)[:len(idx)]
            got = self.vocab_map.to_old(got) if self.vocab_map is not None else got
            for j, row in enumerate(idx):
                start, ids = self.row_positions(prompts[row]), got[j, :limits[row]].tolist()
                ids = ids[:ids.index(self.eos_id) + 1] if self.eos_id in ids else ids
                out["tokens"][row, start:start + len(ids)] = ids
                out["response_mask"][row, start:start + len(ids)] = True
                out["scores"][row, start:start + len(ids)] = float(np.asarray(res.scores)[j])
            out["num_evals"][idx] = int(res.num_evals) + 1
        return out

    def ar_layout(self, prompts: Sequence[Sequence[int]], config: DecodeConfig
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(tokens, response mask, attention [n, max_length], limits [n]) of each prompt (original ids, without
        `<s>`) laid out for AR decoding with `config`: a response of its limit (`config.limit`, cut to the row's
        room). An `InputError` for a prompt that leaves no room. `generate_ar` and the serving engine's AR slots
        lay rows out here."""
        prompts = self._prompts(prompts)
        limits = np.asarray([min(config.limit(len(p)), self.max_length - 1 - len(p)) for p in prompts])
        if (limits < 1).any():
            i = int(np.argmin(limits))
            raise InputError(f"prompt {i} has {len(prompts[i])} tokens and leaves no room for a response in "
                             f"{self.max_length}; shorten it")
        return (*self._inputs(prompts, limits.tolist()), limits)

    def _ar_fn(self, config: DecodeConfig, max_new: int) -> Callable:
        """The jitted prefill + `lax.while_loop` decoder for rows of one width bucket."""
        # the limits are per-row inputs: configs that differ only in max_len_a / max_len_b share one compile
        key = ("ar", dataclasses.replace(config, max_len_a=0.0, max_len_b=1), max_new)
        if key not in self._jitted:
            eos, pad = self.model_id(self.eos_id), self.model_id(self.pad_id)

            def run(params, tokens, response, attn, limits, key_data):
                prefill, step = self.cached_decoder(params)
                t, prompt = prompt_rows(tokens, response, attn, pad)
                if config.beam_size == 1:
                    return greedy_decode(prefill, step, t, prompt, limits, max_new=max_new, eos_id=eos, pad_id=pad,
                                         temperature=config.temperature, keys=jax.random.wrap_key_data(key_data))
                return beam_search(prefill, step, t, prompt, limits, beam_size=config.beam_size, max_new=max_new,
                                   eos_id=eos, pad_id=pad, length_penalty=config.length_penalty)
            self._jitted[key] = self._jit(run)
        return self._jitted[key]

    def cached_decoder(self, params: Any) -> tuple[Callable, Callable]:
        """An AR model's KV-cache functions over `params` (traceable): `prefill(tokens, attention)` -> (next-token
        logits [B, V], cache) and `step(cache, token [B])` -> (logits, cache); every cache leaf has the rows on its
        first axis. `generate_ar` and the serving engine's AR slots both decode through them."""
        dec = model_for(self.model.cfg, decode=True)

        def prefill(t: jax.Array, a: jax.Array) -> tuple[jax.Array, Any]:
            logits, v = dec.apply({"params": params}, t, a, method=type(dec).prefill, mutable=["cache"])
            return logits, v["cache"]

        def step(cache: Any, tok: jax.Array) -> tuple[jax.Array, Any]:
            logits, v = dec.apply({"params": params, "cache": cache}, tok, method=type(dec).decode_step,
                                  mutable=["cache"])
            return logits, v["cache"]
        return prefill, step

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


def fold_keys(keys: np.ndarray, k: int) -> np.ndarray:
    """[n, 2] raw row keys, each folded with `k` (a block's own random numbers)."""
    typed = jax.random.wrap_key_data(jnp.asarray(keys))
    return np.asarray(jax.random.key_data(jax.vmap(lambda key: jax.random.fold_in(key, k))(typed)))


def bucket(n: int, cap: int) -> int:
    """n rounded up to a power of two (at least 8), at most `cap`: few distinct shapes, so few recompiles."""
    return min(cap, max(8, 1 << max(n - 1, 0).bit_length()))


def live_bucket(n_live: int, width: int, max_response: int) -> int:
    """Live slots of a cached decode (`prefix_cache`) for a row with `n_live` live positions whose response bucket
    is `max_response`: that bucket when they fit (a whole response, `dual`, or `prefix` without a fixed `</s>`),
    else their own `bucket` (a fixed `</s>`, later blocks), so a row's shapes are its own, never its batch's."""
    return max_response if n_live <= max_response else bucket(n_live, width)


def _merge_trajectories(parts: list[tuple[np.ndarray, np.ndarray]], n: int, width: int, pad_id: int
                        ) -> np.ndarray:
    """[steps, n, width] from each call's (row indices, [steps_i, rows, width_i]); a call with fewer steps (the
    adaptive strategy stops early) repeats its last frame."""
    steps = max(t.shape[0] for _, t in parts)
    out = np.full((steps, n, width), pad_id, parts[0][1].dtype)
    for idx, t in parts:
        t = np.concatenate([t, np.repeat(t[-1:], steps - t.shape[0], 0)]) if t.shape[0] < steps else t
        out[:, idx, :t.shape[2]] = t
    return out


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
