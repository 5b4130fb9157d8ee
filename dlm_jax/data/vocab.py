"""A `seqio.Vocabulary` around a HuggingFace tokenizer (XLM-R sentencepiece, BERT WordPiece).

seqio's SentencePieceVocabulary assumes pad=0, eos=1, unk=2, which is wrong for XLM-R (`<s>`=0 `<pad>`=1 `</s>`=2
`<unk>`=3, `<mask>`=250001) and for BERT ([PAD]=0 [UNK]=100 [CLS]=101 [SEP]=102 [MASK]=103). This class takes
every id from the tokenizer itself. The registry (`dlm_jax.data.registry`) builds its tasks over the vocabulary it is
given, so one set of task definitions serves every model family.
"""
from __future__ import annotations

import functools

import os
from typing import Any, Mapping, Sequence

import numpy as np
from dlm_jax.quiet import import_tensorflow

import_tensorflow()  # before seqio: TensorFlow's start-up lines are captured
import seqio  # noqa: E402
import tensorflow as tf  # noqa: E402

from dlm_jax.errors import ConfigError

DEFAULT_TOKENIZER = os.environ.get("DLM_TOKENIZER", "FacebookAI/xlm-roberta-base")


class HFVocabulary(seqio.Vocabulary):
    """Wraps a HF tokenizer (object, directory or hub id; loaded lazily on first use).

    `mask_id`: the mask's id where the tokenizer cannot name it (an embedding row beyond the tokenizer, e.g. a padded
    Qwen row: `model.mask_token="id:N"`, saved as `ModelConfig.mask_token_id`); None: the tokenizer's mask token.
    """

    def __init__(self, tokenizer: Any = None, *, name: str | None = None, mask_id: int | None = None):
        super().__init__(extra_ids=0)
        self._tok = tokenizer if not isinstance(tokenizer, (str, os.PathLike)) else None
        self._source = tokenizer if isinstance(tokenizer, (str, os.PathLike)) else None
        self._name = name
        self._mask_id = mask_id

    # -- the tokenizer ---------------------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        if self._tok is None:
            from transformers import AutoTokenizer
            src = self._source or DEFAULT_TOKENIZER
            try:
                self._tok = AutoTokenizer.from_pretrained(str(src))
            except (OSError, ValueError) as e:
                raise ConfigError(
                    f"could not load the tokenizer {src!r} ({type(e).__name__}: {e}). Pass a local model directory "
                    "(e.g. --tokenizer DIR or model.init=DIR) or set DLM_TOKENIZER") from None
        return self._tok

    def _id(self, attr: str, fallback: str) -> int:
        tok = self.tokenizer
        v = getattr(tok, attr, None)
        if v is None:
            v = getattr(tok, fallback, None)
        if v is None:
            raise ValueError(f"tokenizer {type(tok).__name__} defines neither {attr} nor {fallback}")
        return int(v)

    # -- ids -------------------------------------------------------------------------------------------------
    @property
    def bos_id(self) -> int:  # <s> / [CLS]; [CLS] first: ModernBERT's tokenizer is GPT-NeoX's, whose bos is not it
        return self._id("cls_token_id", "bos_token_id")

    @property
    def eos_id(self) -> int:  # </s> / [SEP] ([SEP] first, as [CLS])
        return self._id("sep_token_id", "eos_token_id")

    @property
    def pad_id(self) -> int:
        return self._id("pad_token_id", "pad_token_id")

    @property
    def unk_id(self) -> int:
        return self._id("unk_token_id", "unk_token_id")

    @property
    def mask_id(self) -> int:
        if self.optional_mask_id is None:
            raise ConfigError(f"the tokenizer ({type(self.tokenizer).__name__}) has no mask token, which diffusion "
                              "needs: a decoder LLM gets one with --config.model.mask_token=new (added when the run "
                              "is built), or use a masked LM's tokenizer")
        return int(self.optional_mask_id)

    @property
    def optional_mask_id(self) -> int | None:
        """The mask id, or None for a tokenizer without one (a causal LM's: AR runs need none)."""
        v = self._mask_id if self._mask_id is not None else getattr(self.tokenizer, "mask_token_id", None)
        return None if v is None else int(v)

    @property
    def _base_vocab_size(self) -> int:
        return max(len(self.tokenizer), (self._mask_id or 0) + 1)

    # -- python side -----------------------------------------------------------------------------------------
    def _encode(self, s: str) -> Sequence[int]:
        """Text -> ids; special-token strings in the text (`[MASK]`, `<mask>`, `</s>`, ...) stay text: they are
        tokenized like any other characters, never turned into special ids (a prompt quoting "[MASK]" must not
        become a position the sampler never fills, or a `</s>` that ends the prompt)."""
        return self._as_text(self.tokenizer(s, add_special_tokens=False, split_special_tokens=True)["input_ids"])

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """`encode` of many strings in one tokenizer call (a fast tokenizer encodes them in Rust)."""
        if not texts:
            return []
        encoded = self.tokenizer(list(texts), add_special_tokens=False, split_special_tokens=True)["input_ids"]
        return [self._as_text(ids) for ids in encoded]

    def _as_text(self, ids: Sequence[int]) -> list[int]:
        """`split_special_tokens` keeps special strings away from the added-token pass, but a sentencepiece vocab
        (XLM-R's) holds `<s>`, `</s>`, `<pad>`, `<mask>` as pieces too; any such id here came from plain text and is
        spelled out as its characters' pieces (`<unk>` where a character is not one)."""
        special = self._special_ids
        if not special.intersection(ids):
            return list(ids)
        out: list[int] = []
        for i in ids:
            if i in special:
                out += self.tokenizer.convert_tokens_to_ids(list(self.tokenizer.convert_ids_to_tokens(int(i))))
            else:
                out.append(int(i))
        return out

    @functools.cached_property
    def _special_ids(self) -> frozenset[int]:
        unk = getattr(self.tokenizer, "unk_token_id", None)  # byte-level BPE (GPT-2, SmolLM2, Qwen2) has none
        return frozenset(int(i) for i in self.tokenizer.all_special_ids) - {unk}

    def _decode(self, ids: Sequence[int]) -> str:
        ids = [int(i) for i in ids if int(i) not in (self.pad_id, self.bos_id, self._mask_id)]
        if self.eos_id in ids:
            ids = ids[:ids.index(self.eos_id)]
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=True).strip()

    def decode(self, ids: Any) -> str:  # seqio's version maps ids >= vocab_size to unk; ours are all in range
        if isinstance(ids, tf.Tensor):
            ids = ids.numpy()
        return self._decode(list(np.asarray(ids).reshape(-1)))

    # -- TF side (tf.py_function around the Python tokenizer) ------------------------------------------------
    def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
        def enc(x):
            return np.asarray(self._encode(x.numpy().decode("utf-8")), np.int32)

        out = tf.py_function(enc, [s], tf.int32)
        out.set_shape([None])
        return out

    def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
        def dec(x):
            arr = x.numpy()
            if arr.ndim == 1:
                return np.asarray(self._decode(arr.tolist()).encode("utf-8"), object)
            return np.asarray([self._decode(r.tolist()).encode("utf-8") for r in arr.reshape(-1, arr.shape[-1])],
                              object).reshape(arr.shape[:-1])

        out = tf.py_function(dec, [ids], tf.string)
        out.set_shape(ids.shape[:-1])
        return out

    def decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
        return self._decode_tf(ids)

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, HFVocabulary):
            return False
        return self is other or (self._tok is not None and self._tok is other._tok)

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        return f"HFVocabulary({self._name or self._source or type(self._tok).__name__})"


def tokenize_in_batches(dataset: tf.data.Dataset, output_features: Mapping[str, seqio.Feature],
                        batch_size: int = 128) -> tf.data.Dataset:
    """`seqio.preprocessors.tokenize` (ids plus `*_pretokenized` copies, no EOS), `batch_size` examples a call.

    seqio's version calls the Python tokenizer once per example through `tf.py_function`; the per-call overhead
    (and the GIL) then dominates both input pipelines and tests. This one batches the strings, encodes them with
    one `encode_batch` call per feature, and unbatches, keeping the order and giving the same ids. Features that
    are not scalar strings, or vocabularies without `encode_batch`, fall back to seqio's preprocessor.
    """
    spec = dataset.element_spec
    keys = [k for k in output_features if k in spec]
    if not keys or any(spec[k].dtype != tf.string or spec[k].shape.rank != 0 for k in keys) or not all(
            hasattr(output_features[k].vocabulary, "encode_batch") for k in keys):
        return seqio.preprocessors.tokenize(dataset, output_features)
    vocabs = [output_features[k].vocabulary for k in keys]

    def encode(*columns: tf.Tensor) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for v, col in zip(vocabs, columns):
            ids = v.encode_batch([b.decode("utf-8") for b in col.numpy()])
            out.append(np.fromiter((i for row in ids for i in row), np.int32, sum(map(len, ids))))
            out.append(np.asarray([len(row) for row in ids], np.int64))
        return out

    def tokenize(batch: dict[str, tf.Tensor]) -> dict[str, Any]:
        flat = tf.py_function(encode, [batch[k] for k in keys], [tf.int32, tf.int64] * len(keys))
        out = dict(batch)
        for i, k in enumerate(keys):
            values, lengths = flat[2 * i], flat[2 * i + 1]
            values.set_shape([None])
            lengths.set_shape([None])
            out[f"{k}_pretokenized"] = batch[k]
            out[k] = tf.RaggedTensor.from_row_lengths(values, lengths)
        return out

    return dataset.ragged_batch(batch_size).map(tokenize).unbatch()
