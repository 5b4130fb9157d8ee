"""From a seqio task / mixture to laid-out numpy batches for training and evaluation.

Training reads a per-host shard (`seqio.ShardInfo`) and yields host-local batches in a deterministic order that is a
function of (seed, step) only, so a resumed run continues exactly where it stopped:
- finite tasks that fit in memory (`cache=True`): tokenized once, then one seeded permutation per epoch;
- mixtures / large tasks: seqio's seeded shuffled stream, skipping the examples already consumed.
"""
from __future__ import annotations

import atexit
import dataclasses
import logging
import weakref
from typing import Iterator

import jax
import numpy as np
import seqio

from dlm_jax.data import features
from dlm_jax.data.registry import get_task_or_mixture
from dlm_jax.data.vocab import HFVocabulary
from dlm_jax.errors import InputError


@dataclasses.dataclass
class Examples:
    """Laid-out rows of a finite split, plus the texts (for evaluation) and what was skipped."""

    rows: dict[str, np.ndarray]
    inputs: list[str]
    targets: list[str]
    tasks: list[str]
    counters: features.Counters


def load_examples(name: str, split: str, spec: features.FeatureSpec, vocab: HFVocabulary, *,
                  limit: int | None = None, shard: seqio.ShardInfo | None = None) -> Examples:
    """Tokenizes (with `vocab`) and lays out a whole (finite) split of a task or mixture."""
    ds = get_task_or_mixture(name, vocab).get_dataset(sequence_length=None, split=split, shuffle=False,
                                               shard_info=shard, num_epochs=1)
    if limit:
        ds = ds.take(limit)
    counters = features.Counters()
    rows, ins, tgts, tasks = [], [], [], []
    for ex in ds.as_numpy_iterator():
        row = features.layout(ex["inputs"], ex["targets"], spec, counters)
        if row is None:
            continue
        rows.append(row)
        ins.append(ex["inputs_pretokenized"].decode("utf-8"))
        tgts.append(ex["targets_pretokenized"].decode("utf-8"))
        tasks.append(ex["task"].decode("utf-8") if "task" in ex else name)
    if not rows:
        raise InputError(f"{name}/{split}: no example fits in max_length={spec.max_length} "
                         f"({counters.skipped} skipped)")
    if counters.skipped:
        logging.info("%s/%s: skipped %d of %d examples longer than %d tokens", name, split, counters.skipped,
                     counters.seen, spec.max_length)
    return Examples(features.stack(rows), ins, tgts, tasks, counters)


def host_shard() -> seqio.ShardInfo:
    return seqio.ShardInfo(index=jax.process_index(), num_shards=jax.process_count())


class _StepBatches:
    """Batches addressed by step: `batch(step)` is a pure function of (seed, step), so resuming is exact."""

    seed: int
    n: int

    def batch(self, step: int) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The seeded permutation of the examples for `epoch`."""
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def iterate(self, start_step: int) -> Iterator[dict[str, np.ndarray]]:
        step = start_step
        while True:
            yield self.batch(step)
            step += 1


class CachedBatches(_StepBatches):
    """Host-local batches from an in-memory split; batch `step` depends only on (seed, step)."""

    def __init__(self, examples: Examples, host_batch: int, seed: int):
        self.rows, self.host_batch, self.seed = examples.rows, host_batch, seed
        self.n = len(next(iter(self.rows.values())))
        if self.n < host_batch:
            raise InputError(f"only {self.n} training examples on this host, fewer than its batch {host_batch}")
        self.per_epoch = self.n // host_batch

    def batch(self, step: int) -> dict[str, np.ndarray]:
        epoch, i = divmod(step, self.per_epoch)
        idx = self.epoch_order(epoch)[i * self.host_batch:(i + 1) * self.host_batch]
        return {k: v[idx] for k, v in self.rows.items()}



class PackedBatches(_StepBatches):
    """Like CachedBatches, but each row packs several examples (`features.pack`) with segment ids.

    Epoch e packs the examples in the seeded permutation of e; batch `step` is a function of (seed, step) only.
    """

    def __init__(self, examples: Examples, host_batch: int, seed: int, max_length: int, pad_id: int):
        self.rows, self.host_batch, self.seed = examples.rows, host_batch, seed
        self.max_length, self.pad_id = max_length, pad_id
        self.n = len(next(iter(self.rows.values())))
        self._epochs: list[int] = []  # batches in each epoch so far
        self._cache: tuple[int, dict[str, np.ndarray]] | None = None
        if self.batches_in(0) < 1:
            raise InputError(f"{self.n} training examples pack into fewer rows than the host batch {host_batch}; "
                             "lower batch_size or turn off data.pack")

    def _packed(self, epoch: int) -> dict[str, np.ndarray]:
        if self._cache is None or self._cache[0] != epoch:
            self._cache = (epoch, features.pack(self.rows, self.epoch_order(epoch), self.max_length, self.pad_id))
        return self._cache[1]

    def batches_in(self, epoch: int) -> int:
        while len(self._epochs) <= epoch:
            rows = self._packed(len(self._epochs))
            self._epochs.append(len(rows["tokens"]) // self.host_batch)
        return self._epochs[epoch]

    def batch(self, step: int) -> dict[str, np.ndarray]:
        epoch = 0
        while step >= self.batches_in(epoch):
            step -= self.batches_in(epoch)
            epoch += 1
        rows = self._packed(epoch)
        return {k: v[step * self.host_batch:(step + 1) * self.host_batch] for k, v in rows.items()}



class StreamedBatches:
    """Host-local batches from seqio's seeded, shuffled, repeated stream (mixtures, large tasks).

    Resuming at step s skips the s * host_batch examples already consumed inside tf.data, after the same length
    filter `features.layout` applies, so the stream continues exactly where it stopped without laying out (or
    handing to Python) what it skips. `counters` counts the examples that reached Python.
    """

    def __init__(self, name: str, spec: features.FeatureSpec, vocab: HFVocabulary, host_batch: int, seed: int,
                 split: str = "train"):
        self.name, self.spec, self.vocab, self.host_batch, self.seed = name, spec, vocab, host_batch, seed
        self.split = split
        self.counters = features.Counters()

    def iterate(self, start_step: int) -> Iterator[dict[str, np.ndarray]]:
        gen = self._iterate(start_step)
        _OPEN_STREAMS.add(gen)
        return gen

    def _iterate(self, start_step: int) -> Iterator[dict[str, np.ndarray]]:
        ds = get_task_or_mixture(self.name, self.vocab).get_dataset(
            sequence_length=None, split=self.split, shuffle=True, seed=self.seed, num_epochs=None,
            shard_info=host_shard())
        ds = ds.filter(lambda ex: features.fits_tf(ex, self.spec)).skip(start_step * self.host_batch)
        it = features.convert(ds.as_numpy_iterator(), self.spec, self.counters)
        while True:
            yield features.stack([next(it) for _ in range(self.host_batch)])


# A tf.data iterator over a pipeline with py_function (the tokenizer) that is still open when the interpreter
# shuts down can deadlock it: close every open stream first.
_OPEN_STREAMS: "weakref.WeakSet[Iterator]" = weakref.WeakSet()


@atexit.register
def _close_open_streams() -> None:
    for gen in list(_OPEN_STREAMS):
        gen.close()
