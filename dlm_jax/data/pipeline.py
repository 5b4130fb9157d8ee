"""From a seqio task / mixture to laid-out numpy batches for training and evaluation.

Training batches are global: every process computes global batch `step` as a function of (seed, step) alone and
feeds its slice of rows (`HostSlice`), so a run gives the same batches on any number of processes and a resumed run
continues exactly where it stopped:
- finite tasks that fit in memory (`cache=True`): tokenized once, then one seeded permutation per epoch;
- mixtures / large tasks: seqio's seeded shuffled stream, skipping the examples already consumed.
"""
from __future__ import annotations

import atexit
import dataclasses
import logging
import weakref
from typing import Any, Iterator

import jax
import numpy as np
from dlm_jax.quiet import import_tensorflow

import_tensorflow()  # before seqio: TensorFlow's start-up lines are captured
import seqio  # noqa: E402
import tensorflow as tf  # noqa: E402

from dlm_jax.data import features
from dlm_jax.data.registry import check_split, get_task_or_mixture, row_access
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
    task = get_task_or_mixture(name, vocab)
    check_split(name, task, split)
    ds = task.get_dataset(sequence_length=None, split=split, shuffle=False, shard_info=shard, num_epochs=1)
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


class EvalFeatureConverter(seqio.FeatureConverter):
    """The evaluation's feature converter for `seqio.Evaluator`: examples pass through whole (ids of any length,
    the `*_pretokenized` strings and the subtask); the evaluator's predict_fn lays them out itself."""

    TASK_FEATURES = {"inputs": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32),
                     "targets": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32)}
    MODEL_FEATURES = {**TASK_FEATURES, **{k: seqio.FeatureConverter.FeatureSpec(dtype=tf.string, rank=0)
                                          for k in ("inputs_pretokenized", "targets_pretokenized", "task")}}
    PACKING_FEATURE_DTYPES: dict = {}

    def __init__(self) -> None:
        super().__init__(pack=False, use_custom_packing_ops=False, apply_length_check=False)

    def _convert_features(self, ds: tf.data.Dataset, task_feature_lengths: dict[str, int]) -> tf.data.Dataset:
        return ds.map(lambda ex: {k: ex[k] for k in self.MODEL_FEATURES})

    def get_model_feature_lengths(self, task_feature_lengths: dict[str, int]) -> dict[str, int]:
        return {k: task_feature_lengths.get(k, 0) for k in self.MODEL_FEATURES}


@dataclasses.dataclass(frozen=True)
class HostSlice:
    """The rows of every global batch that this process feeds: [index * n, (index + 1) * n), n = global / count.

    Every process computes the same global batch (a function of (seed, step) alone) and keeps its slice, so the
    global batch does not depend on how many processes there are.
    """

    global_batch: int
    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.global_batch % self.count:
            raise InputError(f"batch_size={self.global_batch} is not divisible by the {self.count} processes; "
                             "choose a batch size that is")

    @classmethod
    def this_process(cls, global_batch: int) -> "HostSlice":
        return cls(global_batch, jax.process_index(), jax.process_count())

    @property
    def rows(self) -> slice:
        n = self.global_batch // self.count
        return slice(self.index * n, (self.index + 1) * n)


class _StepBatches:
    """Batches addressed by step: `batch(step)` is a pure function of (seed, step), so resuming is exact."""

    seed: int
    n: int
    host: HostSlice

    def global_rows(self, step: int) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def batch(self, step: int) -> dict[str, np.ndarray]:
        """This process's rows of global batch `step`."""
        return {k: v[self.host.rows] for k, v in self.global_rows(step).items()}

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The seeded permutation of the examples for `epoch`."""
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def iterate(self, start_step: int, position: dict[str, Any] | None = None) -> Iterator[dict[str, np.ndarray]]:
        step = start_step
        while True:
            yield self.batch(step)
            step += 1

    def position(self) -> dict[str, Any]:
        return {}  # the step is the whole state


class CachedBatches(_StepBatches):
    """Batches from an in-memory split (every process holds all of it); global batch `step` is the slice `step` of
    epoch e's seeded permutation."""

    def __init__(self, examples: Examples, host: HostSlice, seed: int):
        self.rows, self.host, self.seed = examples.rows, host, seed
        self.n = len(next(iter(self.rows.values())))
        if self.n < host.global_batch:
            raise InputError(f"only {self.n} training examples, fewer than the batch {host.global_batch}")
        self.per_epoch = self.n // host.global_batch

    def global_rows(self, step: int) -> dict[str, np.ndarray]:
        epoch, i = divmod(step, self.per_epoch)
        g = self.host.global_batch
        idx = self.epoch_order(epoch)[i * g:(i + 1) * g]
        return {k: v[idx] for k, v in self.rows.items()}


class PackedBatches(_StepBatches):
    """Like CachedBatches, but each row packs several examples (`features.pack`) with segment ids.

    Epoch e packs the examples in the seeded permutation of e; batch `step` is a function of (seed, step) only.
    """

    def __init__(self, examples: Examples, host: HostSlice, seed: int, max_length: int, pad_id: int):
        self.rows, self.host, self.seed = examples.rows, host, seed
        self.max_length, self.pad_id = max_length, pad_id
        self.n = len(next(iter(self.rows.values())))
        self._epochs: list[int] = []  # batches in each epoch so far
        self._cache: tuple[int, dict[str, np.ndarray]] | None = None
        if self.batches_in(0) < 1:
            raise InputError(f"{self.n} training examples pack into fewer rows than the batch {host.global_batch}; "
                             "lower batch_size or turn off data.pack")

    def _packed(self, epoch: int) -> dict[str, np.ndarray]:
        if self._cache is None or self._cache[0] != epoch:
            self._cache = (epoch, features.pack(self.rows, self.epoch_order(epoch), self.max_length, self.pad_id))
        return self._cache[1]

    def batches_in(self, epoch: int) -> int:
        while len(self._epochs) <= epoch:
            rows = self._packed(len(self._epochs))
            self._epochs.append(len(rows["tokens"]) // self.host.global_batch)
        return self._epochs[epoch]

    def global_rows(self, step: int) -> dict[str, np.ndarray]:
        epoch = 0
        while step >= self.batches_in(epoch):
            step -= self.batches_in(epoch)
            epoch += 1
        rows, g = self._packed(epoch), self.host.global_batch
        return {k: v[step * g:(step + 1) * g] for k, v in rows.items()}


class StreamedBatches:
    """Batches from seqio's seeded, shuffled, repeated stream (mixtures, large tasks).

    Every process reads the whole stream and keeps its rows of each global batch, so the global batch is the same
    whatever the process count (at the cost of every host tokenizing every example). Resuming at step s skips the
    s * global_batch examples already consumed inside tf.data, after the same length filter `features.layout`
    applies, so the stream continues exactly where it stopped without laying out (or handing to Python) what it
    skips. `counters` counts the examples that reached Python.
    """

    def __init__(self, name: str, spec: features.FeatureSpec, vocab: HFVocabulary, host: HostSlice, seed: int,
                 split: str = "train"):
        self.name, self.spec, self.vocab, self.host, self.seed = name, spec, vocab, host, seed
        self.split = split
        self.counters = features.Counters()

    def iterate(self, start_step: int, position: dict[str, Any] | None = None) -> Iterator[dict[str, np.ndarray]]:
        gen = self._iterate(start_step)
        _OPEN_STREAMS.add(gen)
        return gen

    def position(self) -> dict[str, Any]:
        return {"sampler": "seqio"}  # the step is the state; resuming re-reads the skipped examples

    def _iterate(self, start_step: int) -> Iterator[dict[str, np.ndarray]]:
        g = self.host.global_batch
        ds = get_task_or_mixture(self.name, self.vocab).get_dataset(
            sequence_length=None, split=self.split, shuffle=True, seed=self.seed, num_epochs=None)
        ds = ds.filter(lambda ex: features.fits_tf(ex, self.spec)).skip(start_step * g)
        it = features.convert(ds.as_numpy_iterator(), self.spec, self.counters)
        while True:
            rows = [next(it) for _ in range(g)]
            yield features.stack(rows[self.host.rows])


class IndexedBatches:
    """A mixture (or task) sampled by index, resumable in constant time, each host reading only its own rows.

    Row r of global batch `step` draws its task from the mixture's rates with a generator seeded by (seed, step)
    (seqio's rates, flattened over sub-mixtures) and takes the task's example at position `taken[task]` + (the rows
    of that task before r in the batch) of a seeded per-task, per-epoch permutation; after the batch each task's
    count has grown by its rows. Any row is thus a function of (seed, step) and the counts alone, whatever the
    number of processes, and a host reads and tokenizes only the rows it feeds. An example that does not fit
    (`features.layout`) is counted as skipped and replaced by a draw from the same task with a generator seeded by
    (seed, step, r). The only state is each task's count: `position()` is saved with every checkpoint,
    `iterate(step, position)` continues from it without reading anything it skips, so the time to the first
    batch does not grow with the step. Needs random access to every task's rows (`registry.row_access`: the
    Flan 2022 per-task files and every in-memory source; not TFDS).
    """

    MAX_REDRAWS = 100

    def __init__(self, name: str, spec: features.FeatureSpec, vocab: HFVocabulary, host: HostSlice, seed: int,
                 split: str = "train"):
        obj = get_task_or_mixture(name, vocab)
        tasks = obj.tasks if isinstance(obj, seqio.Mixture) else [obj]
        rates = np.asarray([obj.get_rate(t) if isinstance(obj, seqio.Mixture) else 1.0 for t in tasks], float)
        missing = [t.name for t in tasks if row_access(t.name) is None]
        if missing:
            raise InputError(f"{name}: no random access to {missing[:5]} (TFDS or preprocessed tasks); set "
                             "--config.data.stream=seqio")
        self.names = [t.name for t in tasks]
        self.probs = rates / rates.sum()
        self.spec, self.vocab, self.host, self.seed, self.split = spec, vocab, host, seed, split
        self._rows = [None] * len(tasks)
        self._orders: dict[tuple[int, int], np.ndarray] = {}
        self.taken = np.zeros(len(tasks), np.int64)
        self.counters = features.Counters()  # this host's rows only

    def rows(self, t: int) -> Any:
        if self._rows[t] is None:
            self._rows[t] = row_access(self.names[t])(self.split)
            if not len(self._rows[t]):
                raise InputError(f"task {self.names[t]} has no {self.split} examples")
        return self._rows[t]

    def _example(self, t: int, k: int) -> dict:
        """Task `t`'s k-th example overall: position k mod N of the seeded permutation of epoch k // N."""
        rows = self.rows(t)
        epoch, i = divmod(k, len(rows))
        if (t, epoch) not in self._orders:  # the last two epochs per task in memory (a batch may cross one)
            self._orders = {key: v for key, v in self._orders.items() if key[0] != t or key[1] >= epoch - 1}
            self._orders[(t, epoch)] = np.random.default_rng([self.seed, t, epoch]).permutation(len(rows))
        return rows[int(self._orders[(t, epoch)][i])]

    def _layout(self, exs: list[dict]) -> list[dict[str, np.ndarray] | None]:
        """Laid-out rows (None: does not fit), tokenized with one `encode_batch` call per feature."""
        return [features.layout(a, b, self.spec, self.counters)
                for a, b in zip(self.vocab.encode_batch([e["inputs"] for e in exs]),
                                self.vocab.encode_batch([e["targets"] for e in exs]))]

    def _redraw(self, t: int, step: int, r: int) -> dict[str, np.ndarray]:
        """A replacement for row r of `step` (task `t`) whose example did not fit: seeded by (seed, step, r)."""
        rng = np.random.default_rng([self.seed, step, r, 1])
        for _ in range(self.MAX_REDRAWS):
            row = self._layout([self.rows(t)[int(rng.integers(len(self.rows(t))))]])[0]
            if row is not None:
                return row
        raise InputError(f"task {self.names[t]}: {self.MAX_REDRAWS} examples in a row do not fit in "
                         f"max_length={self.spec.max_length}; raise --config.data.max_length or drop the task")

    def host_rows(self, step: int) -> dict[str, np.ndarray]:
        """This host's rows of global batch `step` (and every task's count advanced past the whole batch)."""
        picks = np.random.default_rng([self.seed, step]).choice(len(self.names), self.host.global_batch,
                                                                 p=self.probs)
        rank = np.zeros(len(picks), np.int64)  # rows of the same task before each row
        for t in np.unique(picks):
            at = np.flatnonzero(picks == t)
            rank[at] = np.arange(len(at))
        mine = np.arange(len(picks))[self.host.rows]
        out: dict[int, dict[str, np.ndarray]] = {}
        for t in np.unique(picks[mine]):
            rows = mine[picks[mine] == t]
            laid = self._layout([self._example(int(t), int(self.taken[t] + rank[r])) for r in rows])
            for r, row in zip(rows, laid):
                out[int(r)] = row if row is not None else self._redraw(int(t), step, int(r))
        self.taken += np.bincount(picks, minlength=len(self.names))
        if self.counters.skipped > 1000 and self.counters.skipped > self.counters.seen // 2:
            raise InputError(f"over half of the examples do not fit in max_length={self.spec.max_length}")
        return features.stack([out[int(r)] for r in mine])

    def position(self) -> dict[str, Any]:
        """What a checkpoint saves: each task's count of examples taken so far."""
        return {"sampler": "indexed", "taken": {n: int(c) for n, c in zip(self.names, self.taken)}}

    def iterate(self, start_step: int, position: dict[str, Any] | None = None) -> Iterator[dict[str, np.ndarray]]:
        if start_step and (not position or position.get("sampler") != "indexed"):
            raise InputError(f"resuming at step {start_step}, but the checkpoint has no indexed-stream position "
                             "(it was written with data.stream=seqio); resume with --config.data.stream=seqio")
        self.taken[:] = 0
        for i, n in enumerate(self.names):
            self.taken[i] = (position or {}).get("taken", {}).get(n, 0)
        step = start_step
        while True:
            yield self.host_rows(step)
            step += 1


# A tf.data iterator over a pipeline with py_function (the tokenizer) that is still open when the interpreter
# shuts down can deadlock it: close every open stream first.
_OPEN_STREAMS: "weakref.WeakSet[Iterator]" = weakref.WeakSet()


@atexit.register
def _close_open_streams() -> None:
    for gen in list(_OPEN_STREAMS):
        gen.close()
