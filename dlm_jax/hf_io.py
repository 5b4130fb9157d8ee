"""Import HuggingFace masked-LM checkpoints into dlm_jax params, and export them back.

The mapping is a declarative table: (HF key regex, flax path template, transform). Every shape is checked, and every
missing, unexpected or mismatched key is reported together in one error. Arrays are placed straight into their
target shardings (one `device_put` per array) when a mesh is given.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from dlm_jax.errors import CheckpointMismatchError, ConfigError, ModelFilesError
from dlm_jax.model import family_of, to_hf_dict
from dlm_jax.model.axes import DEFAULT_RULES
from dlm_jax.model.configs import ModelConfig
from dlm_jax.model.factory import abstract_params
from dlm_jax.model.keys import INVERSE, Rule
from dlm_jax.parallel.sharding import logical_to_shardings

def key_table(cfg: ModelConfig) -> list[Rule]:
    """The HF <-> flax mapping of `cfg`'s family (`Family.key_table`)."""
    fam = family_of(cfg)
    if fam.key_table is None:
        raise ConfigError(f"model family {cfg.family!r} has no HuggingFace format")
    return fam.key_table(cfg)


# Keys that carry no extra information (tied copies, buffers, heads we do not use).
_IGNORED = [r".*\.rotary_emb\.inv_freq$", r"lm_head\.weight$",  # a tied LLM's copy
            r".*\.position_ids$", r".*pooler\..*", r"cls\.seq_relationship\..*", r".*predictions\.decoder\.(weight|bias)$",
            r"lm_head\.decoder\.(weight|bias)$", r".*embeddings\.token_type_ids$", r"decoder\.weight$"]




def _expand(rules: list[Rule], num_layers: int) -> list[tuple[re.Pattern[str], str, Rule]]:
    out = []
    for r in rules:
        if "{i}" in r.flax:
            for i in range(r.first_layer, num_layers):
                out.append((re.compile(r.hf.replace("{i}", str(i)) + "$"), r.flax.replace("{i}", str(i)), r))
        else:
            out.append((re.compile(r.hf + "$"), r.flax, r))
    return out


def convert_hf_state(state: dict[str, np.ndarray], cfg: ModelConfig) -> dict[str, np.ndarray]:
    """HF state dict (numpy) -> flat {flax path: array} for an unscanned model; raises listing every problem."""
    expected = {"/".join(k): v for k, v in traverse_util.flatten_dict(nn.unbox(abstract_params(cfg.replace(
        scan_layers=False)))).items()}
    table = _expand(key_table(cfg), cfg.num_layers)
    state = family_of(cfg).state_in(state)
    flat: dict[str, np.ndarray] = {}
    unexpected, mismatched, mismatched_paths = [], [], set()
    for key, value in state.items():
        for pat, path, rule in table:
            if pat.match(key):
                arr = rule.transform(np.asarray(value), cfg) if _reshapable(value, rule, cfg) else None
                want = expected[path].shape
                if arr is None or arr.shape != want:
                    mismatched.append(f"{key}: checkpoint shape {tuple(np.shape(value))} does not fit {path} {want}")
                    mismatched_paths.add(path)
                else:
                    flat[path] = arr
                break
        else:
            if not any(re.match(p, key) for p in _IGNORED):
                unexpected.append(key)
    missing = sorted(set(expected) - set(flat) - mismatched_paths)
    problems = []
    if missing:
        problems.append(f"missing ({len(missing)}): " + ", ".join(missing))
    if unexpected:
        problems.append(f"unexpected ({len(unexpected)}): " + ", ".join(unexpected))
    if mismatched:
        problems.append(f"shape mismatch ({len(mismatched)}): " + "; ".join(mismatched))
    if problems:
        raise CheckpointMismatchError(
            f"checkpoint does not match the {cfg.family} config (layers={cfg.num_layers}, hidden={cfg.hidden_size}, "
            f"vocab={cfg.vocab_size}):\n  " + "\n  ".join(problems)
            + "\nCheck that config.json belongs to these weights.")
    return flat


def _reshapable(value: Any, rule: Rule, cfg: ModelConfig) -> bool:
    try:
        rule.transform(np.asarray(value), cfg)
        return True
    except ValueError:
        return False


def stack_layers(flat: dict[str, np.ndarray], cfg: ModelConfig) -> dict[str, np.ndarray]:
    """layers_{i}/... entries -> the scanned layout: layers/... with a leading layer axis, or for ModernBERT
    layers_0/... plus groups/block_{j}/... with a leading group axis (`ModelConfig.scan_groups`)."""
    if family_of(cfg).grouped_scan:
        groups, size = cfg.scan_groups()
        out = {k: v for k, v in flat.items() if not k.startswith("layers_") or k.startswith("layers_0/")}
        names = {k.split("/", 1)[1] for k in flat if k.startswith("layers_1/")}
        for j in range(size):
            for n in names:
                out[f"groups/block_{j}/{n}"] = np.stack([flat[f"layers_{1 + g * size + j}/{n}"] for g in range(groups)])
        return out
    out = {k: v for k, v in flat.items() if not k.startswith("layers_")}
    names = {k.split("/", 1)[1] for k in flat if k.startswith("layers_")}
    for n in names:
        out[f"layers/{n}"] = np.stack([flat[f"layers_{i}/{n}"] for i in range(cfg.num_layers)])
    return out


def unstack_layers(flat: dict[str, np.ndarray], cfg: ModelConfig) -> dict[str, np.ndarray]:
    """The inverse of `stack_layers`."""
    out = {k: v for k, v in flat.items() if not k.startswith(("layers/", "groups/"))}
    for k, v in flat.items():
        if k.startswith("layers/"):
            for i in range(v.shape[0]):
                out[f"layers_{i}/{k.split('/', 1)[1]}"] = v[i]
        elif k.startswith("groups/"):
            _, block, name = k.split("/", 2)
            j, size = int(block.split("_")[1]), cfg.scan_groups()[1]
            for g in range(v.shape[0]):
                out[f"layers_{1 + g * size + j}/{name}"] = v[g]
    return out


# --- reading files -------------------------------------------------------------------------------------------
def read_state_dict(model_dir: Path) -> dict[str, np.ndarray]:
    """Reads `model.safetensors`, a sharded safetensors index, or `pytorch_model.bin` (torch, weights_only)."""
    from safetensors import safe_open

    single, index = model_dir / "model.safetensors", model_dir / "model.safetensors.index.json"
    files: list[Path] = []
    if single.exists():
        files = [single]
    elif index.exists():
        files = sorted({model_dir / f for f in json.loads(index.read_text())["weight_map"].values()})
    if files:
        state = {}
        for f in files:
            with safe_open(str(f), framework="numpy") as sf:
                for k in sf.keys():
                    state[k] = sf.get_tensor(k)
        return state
    bin_file = model_dir / "pytorch_model.bin"
    if bin_file.exists():
        try:
            import torch
        except ImportError as e:
            raise ModelFilesError(
                f"{model_dir} has only pytorch_model.bin; reading it needs torch (pip install torch), or convert it "
                "to model.safetensors") from e
        sd = torch.load(str(bin_file), map_location="cpu", weights_only=True)
        return {k: v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy() for k, v in sd.items()}
    raise ModelFilesError(
        f"no weights in {model_dir}: expected model.safetensors, model.safetensors.index.json (+ shards) or "
        f"pytorch_model.bin; found {sorted(p.name for p in model_dir.iterdir())}")


def resolve_model_dir(path_or_hub_id: str | os.PathLike[str]) -> Path:
    """A local directory, or a hub id downloaded with huggingface_hub (needs network)."""
    p = Path(path_or_hub_id).expanduser()
    if p.is_dir():
        if not (p / "config.json").exists():
            raise ModelFilesError(f"{p} has no config.json; point at a HuggingFace model directory")
        return p
    s = str(path_or_hub_id)
    looks_local = s.startswith((".", "/", "~")) or os.sep in s and s.count("/") != 1
    if looks_local or p.exists():
        raise ModelFilesError(f"model directory {p} does not exist")
    try:
        from huggingface_hub import snapshot_download
        return Path(snapshot_download(s, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"]))
    except Exception as e:  # offline, unknown id, auth
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ModelFilesError(
            f"{s!r} is not a local directory and could not be fetched from the HuggingFace Hub ({type(e).__name__}: "
            f"{first}); on a machine with network run `huggingface-cli download {s} --local-dir DIR` (or use an HF "
            "cache that has it) and pass DIR instead") from e


def place(flat: dict[str, np.ndarray], shardings: Any | None, dtype: Any) -> Any:
    """Nested params tree from a flat dict; each array goes straight to its sharding (or default device)."""
    tree = traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})
    if shardings is None:
        return jax.tree.map(lambda a: jnp.asarray(a, dtype), tree)
    return jax.tree.map(lambda a, s: jax.device_put(np.asarray(a, dtype), s), tree, shardings)


def load_params(model_dir: Path, cfg: ModelConfig, *, mesh: Any = None, rules: Any = DEFAULT_RULES) -> Any:
    """The params of an HF model directory (`read_state_dict`), checked and placed (`params_from_state`)."""
    return params_from_state(read_state_dict(model_dir), cfg, mesh=mesh, rules=rules)


def params_from_state(state: dict[str, np.ndarray], cfg: ModelConfig, *, mesh: Any = None,
                      rules: Any = DEFAULT_RULES) -> Any:
    """An HF state dict (HF keys, torch layout: from a directory or a GGUF file) as `cfg`'s params: every key and
    shape checked by the family's key table, layers stacked when scanned, each array placed in its sharding."""
    flat = convert_hf_state(state, cfg)
    if cfg.scan_layers:
        flat = stack_layers(flat, cfg)
    shardings = None
    if mesh is not None:
        shardings = logical_to_shardings(abstract_params(cfg), mesh, rules)
    return place(flat, shardings, jnp.dtype(cfg.param_dtype))


# --- export --------------------------------------------------------------------------------------------------
def export_state_dict(params: Any, cfg: ModelConfig) -> dict[str, np.ndarray]:
    """flax params -> HF state dict (numpy float32, torch layout, tied decoder omitted)."""
    flat = {"/".join(k): np.asarray(jax.device_get(v), np.float32)
            for k, v in traverse_util.flatten_dict(nn.unbox(params)).items()}
    if cfg.scan_layers:
        flat = unstack_layers(flat, cfg)
    out = {}
    for _, path, rule in _expand(key_table(cfg), cfg.num_layers):
        hf_key = rule.export_key()
        m = re.match(r"layers_(\d+)/", path)
        if m:
            hf_key = hf_key.replace("{i}", m.group(1))
        out[hf_key] = np.ascontiguousarray(INVERSE[rule.transform](flat[path], cfg))
    return family_of(cfg).state_out(out)


def save_hf(params: Any, cfg: ModelConfig, out_dir: str | os.PathLike[str], *, tokenizer: Any = None,
            hf_config_extra: dict[str, Any] | None = None) -> Path:
    """Writes config.json, model.safetensors (and the tokenizer) to `out_dir`, loadable by HF `from_pretrained`."""
    from safetensors.numpy import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(to_hf_dict(cfg, extra=hf_config_extra), indent=2))
    save_file(export_state_dict(params, cfg), str(out / "model.safetensors"), metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    return out
