"""Read GGUF files (llama.cpp's format: the weights and the tokenizer in one file) without torch.

A GGUF file is turned into what an HF directory gives: the config.json dict (from the metadata, by the family that
reads its `general.architecture`), the state dict under HF's keys in torch's layout (every tensor dequantized to
float32 by the `gguf` package, llama.cpp's Q / K row order undone) and the tokenizer (transformers builds it from
the file's vocabulary, merges, special ids and chat template). From there `hf_io` applies the same key table and
shape checks as for any HF checkpoint, so there is one mapping per family, not two.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from dlm_jax.errors import CheckpointMismatchError, ConfigError, ModelFilesError
from dlm_jax.model.family import family_for_gguf

INSTALL_HINT = "reading GGUF files needs the gguf package: pip install gguf (or pip install 'dlm_jax[gguf]')"


def _reader(path: Path) -> Any:
    try:
        import gguf
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    if not path.is_file():
        raise ModelFilesError(f"GGUF file {path} does not exist")
    try:
        return gguf.GGUFReader(str(path))
    except (ValueError, OSError) as e:
        raise ModelFilesError(f"{path} is not a readable GGUF file ({type(e).__name__}: {e})") from None


def metadata(reader: Any) -> dict[str, Any]:
    """The file's key-value metadata as Python values (strings, numbers, lists), plus `_tensors`: the tensor
    names."""
    out: dict[str, Any] = {}
    for name, field in reader.fields.items():
        value = field.contents()
        out[name] = value.tolist() if isinstance(value, np.ndarray) else value
    out["_tensors"] = [t.name for t in reader.tensors]
    return out


def supported_types() -> list[str]:
    """The tensor types the installed `gguf` package dequantizes (F32, F16, BF16, Q4_0 ... the K-quants)."""
    from gguf import quants
    return ["F32", "F16", *(t.name for t in getattr(quants, "_type_traits", {}))]  # the package's own table


def dequantize(tensor: Any) -> np.ndarray:
    """One tensor as float32 in torch's layout ([out, in]: GGUF lists dimensions fastest first)."""
    from gguf import GGMLQuantizationType, quants
    kind = tensor.tensor_type
    shape = tuple(int(n) for n in reversed(tensor.shape))
    if kind in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
        return np.asarray(tensor.data, np.float32).reshape(shape)
    try:
        return np.asarray(quants.dequantize(tensor.data, kind), np.float32).reshape(shape)
    except NotImplementedError:
        raise ModelFilesError(f"tensor {tensor.name} has type {kind.name}, which the gguf package cannot "
                              f"dequantize; supported: {', '.join(supported_types())}") from None


def hf_state(reader: Any, meta: dict[str, Any], hf_config: dict[str, Any]) -> dict[str, np.ndarray]:
    """The file's tensors under HF keys (torch layout, float32), by the family's GGUF name table; tensors no rule
    names are reported together, as `hf_io` reports unexpected HF keys."""
    fam = family_for_gguf(meta["general.architecture"])
    table = []
    for pattern, key, fix in fam.gguf_names(hf_config):
        layered = "{i}" in pattern
        table.append((re.compile(pattern.replace("{i}", r"(\d+)") + "$"), key, fix, layered))
    state, unknown = {}, []
    for tensor in reader.tensors:
        for pat, key, fix, layered in table:
            m = pat.match(tensor.name)
            if m:
                state[key.replace("{i}", m.group(1)) if layered else key] = fix(dequantize(tensor))
                break
        else:
            unknown.append(tensor.name)
    if unknown:
        raise CheckpointMismatchError(f"the GGUF file has tensors the {fam.name} family does not read "
                                      f"({len(unknown)}): {', '.join(unknown[:20])}")
    return state


def read_gguf(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
    """(HF config.json dict, HF state dict, metadata) of a GGUF file."""
    reader = _reader(Path(path).expanduser())
    meta = metadata(reader)
    fam = family_for_gguf(meta.get("general.architecture"))
    hf_config = fam.gguf_config(meta)
    return hf_config, hf_state(reader, meta, hf_config), meta


def load_tokenizer(path: str | Path) -> Any:
    """The file's tokenizer, built by transformers from its vocabulary, merges, special ids and chat template."""
    from transformers import AutoTokenizer
    p = Path(path).expanduser().resolve()
    try:
        return AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
    except (OSError, ValueError, KeyError) as e:
        raise ModelFilesError(f"could not build the tokenizer of {p} ({type(e).__name__}: {e})") from None
