"""Import HuggingFace masked-LM checkpoints into dlm_jax params, and export them back.

The mapping is a declarative table: (HF key regex, flax path template, transform). Every shape is checked, and every
missing, unexpected or mismatched key is reported together in one error. Arrays are placed straight into their
target shardings (one `device_put` per array) when a mesh is given.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from dlm_jax.errors import CheckpointMismatchError, ModelFilesError
from dlm_jax.model import configs as model_configs
from dlm_jax.model.axes import DEFAULT_RULES
from dlm_jax.model.configs import ModelConfig
from dlm_jax.model.factory import abstract_params
from dlm_jax.parallel.sharding import logical_to_shardings

_LN_W, _LN_B = r"(?:weight|gamma)", r"(?:bias|beta)"


# --- transforms: HF (torch layout) -> flax, and back ----------------------------------------------------------
def _ident(x: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    return x


def _linear(x: np.ndarray, cfg: ModelConfig) -> np.ndarray:  # torch [out, in] -> [in, out]
    return x.T


def _qkv_kernel(x: np.ndarray, cfg: ModelConfig) -> np.ndarray:  # [h*d, e] -> [e, h, d]
    return x.T.reshape(cfg.hidden_size, cfg.num_heads, cfg.head_dim)


def _qkv_bias(x: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    return x.reshape(cfg.num_heads, cfg.head_dim)


def _kv_kernel(x: np.ndarray, cfg: ModelConfig) -> np.ndarray:  # [kv*d, e] -> [e, kv, d] (grouped-query)
    return x.T.reshape(cfg.hidden_size, cfg.kv_heads, cfg.head_dim)


def _kv_bias(x: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    return x.reshape(cfg.kv_heads, cfg.head_dim)


def _out_kernel(x: np.ndarray, cfg: ModelConfig) -> np.ndarray:  # [e, h*d] -> [h, d, e]
    return x.T.reshape(cfg.num_heads, cfg.head_dim, cfg.hidden_size)


def _geglu_in(x: np.ndarray, cfg: ModelConfig) -> np.ndarray:  # Wi [2m, e] (input rows, then gate) -> [e, 2, m]
    return x.T.reshape(cfg.hidden_size, 2, cfg.intermediate_size)


_INVERSE: dict[Callable, Callable[[np.ndarray, ModelConfig], np.ndarray]] = {
    _geglu_in: lambda x, c: x.reshape(c.hidden_size, -1).T,
    _ident: lambda x, c: x,
    _linear: lambda x, c: x.T,
    _qkv_kernel: lambda x, c: x.reshape(c.hidden_size, -1).T,
    _qkv_bias: lambda x, c: x.reshape(-1),
    _out_kernel: lambda x, c: x.reshape(-1, c.hidden_size).T,
    _kv_kernel: lambda x, c: x.reshape(c.hidden_size, -1).T,
    _kv_bias: lambda x, c: x.reshape(-1),
}


@dataclasses.dataclass(frozen=True)
class Rule:
    hf: str  # regex over the HF key ({i} = layer index); canonical spelling first for export
    flax: str  # "/"-joined param path ({i} = layer index)
    transform: Callable[[np.ndarray, ModelConfig], np.ndarray] = _ident
    first_layer: int = 0  # layers below this one have no such parameter (ModernBERT's layer 0 attention norm)

    def export_key(self) -> str:
        """The canonical HF key (first alternative of each group)."""
        key = re.sub(r"\(\?:([^|)]*)[^)]*\)", r"\1", self.hf)
        return key.replace("\\.", ".")


def _modernbert_table() -> list[Rule]:
    """ModernBertForMaskedLM. The fused `attn.Wqkv` is split into q / k / v rows before matching (`_split_fused`)."""
    L = r"model\.layers\.{i}"
    rules = [Rule(r"model\.embeddings\.tok_embeddings\.weight", "word/embedding"),
             Rule(r"model\.embeddings\.norm\.weight", "embed_ln/scale"),
             Rule(rf"{L}\.attn_norm\.weight", "layers_{i}/attention_ln/scale", first_layer=1),
             *[Rule(rf"{L}\.attn\.Wqkv\.{n}\.weight", f"layers_{{i}}/attention/{n}/kernel", _qkv_kernel)
               for n in ("query", "key", "value")],
             Rule(rf"{L}\.attn\.Wo\.weight", "layers_{i}/attention/out/kernel", _out_kernel),
             Rule(rf"{L}\.mlp_norm\.weight", "layers_{i}/mlp_ln/scale"),
             Rule(rf"{L}\.mlp\.Wi\.weight", "layers_{i}/mlp/wi/kernel", _geglu_in),
             Rule(rf"{L}\.mlp\.Wo\.weight", "layers_{i}/mlp/wo/kernel", _linear),
             Rule(r"model\.final_norm\.weight", "final_ln/scale"),
             Rule(r"head\.dense\.weight", "head_dense/kernel", _linear),
             Rule(r"head\.norm\.weight", "head_ln/scale"),
             Rule(r"decoder\.bias", "head_bias")]
    return rules


_FUSED_QKV = re.compile(r"(model\.layers\.\d+\.attn\.Wqkv)\.weight$")


def _split_fused(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """ModernBERT's `Wqkv.weight` [3 e, e] -> `Wqkv.{query,key,value}.weight` [e, e] (rows in that order)."""
    out = {}
    for k, v in state.items():
        m = _FUSED_QKV.match(k)
        if m:
            for name, part in zip(("query", "key", "value"), np.split(np.asarray(v), 3, axis=0)):
                out[f"{m.group(1)}.{name}.weight"] = part
        else:
            out[k] = v
    return out


def _merge_fused(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The inverse of `_split_fused`, for export."""
    out = {k: v for k, v in state.items() if ".Wqkv." not in k}
    for k in state:
        if k.endswith(".Wqkv.query.weight"):
            stem = k[:-len(".query.weight")]
            out[f"{stem}.weight"] = np.concatenate([state[f"{stem}.{n}.weight"] for n in ("query", "key", "value")])
    return out


def _llama_table(cfg: ModelConfig) -> list[Rule]:
    """LlamaForCausalLM / Qwen2ForCausalLM (no `lm_head` when tied)."""
    L = r"model\.layers\.{i}"
    a = "layers_{i}/attention"
    rules = [Rule(r"model\.embed_tokens\.weight", "word/embedding"),
             Rule(rf"{L}\.input_layernorm\.weight", "layers_{i}/attention_ln/scale"),
             Rule(rf"{L}\.self_attn\.q_proj\.weight", f"{a}/query/kernel", _qkv_kernel),
             Rule(rf"{L}\.self_attn\.k_proj\.weight", f"{a}/key/kernel", _kv_kernel),
             Rule(rf"{L}\.self_attn\.v_proj\.weight", f"{a}/value/kernel", _kv_kernel),
             Rule(rf"{L}\.self_attn\.o_proj\.weight", f"{a}/out/kernel", _out_kernel),
             Rule(rf"{L}\.post_attention_layernorm\.weight", "layers_{i}/mlp_ln/scale"),
             *[Rule(rf"{L}\.mlp\.{n}_proj\.weight", f"layers_{{i}}/mlp/{n}/kernel", _linear)
               for n in ("gate", "up", "down")],
             Rule(r"model\.norm\.weight", "final_ln/scale")]
    if cfg.qkv_bias:
        rules += [Rule(rf"{L}\.self_attn\.q_proj\.bias", f"{a}/query/bias", _qkv_bias),
                  Rule(rf"{L}\.self_attn\.k_proj\.bias", f"{a}/key/bias", _kv_bias),
                  Rule(rf"{L}\.self_attn\.v_proj\.bias", f"{a}/value/bias", _kv_bias)]
    if cfg.out_bias:
        rules.append(Rule(rf"{L}\.self_attn\.o_proj\.bias", f"{a}/out/bias"))
    if cfg.mlp_bias:
        rules += [Rule(rf"{L}\.mlp\.{n}_proj\.bias", f"layers_{{i}}/mlp/{n}/bias") for n in ("gate", "up", "down")]
    if not cfg.tie_embeddings:
        rules.append(Rule(r"lm_head\.weight", "lm_head/kernel", _linear))
    return rules


def key_table(cfg: ModelConfig) -> list[Rule]:
    """The HF <-> flax mapping for `cfg.family`."""
    if cfg.family == "modernbert":
        return _modernbert_table()
    if cfg.family == "llama":
        return _llama_table(cfg)
    base = "bert" if cfg.family == "bert" else "roberta"
    e, L = rf"{base}\.embeddings", rf"{base}\.encoder\.layer\.{{i}}"
    rules = [
        Rule(rf"{e}\.word_embeddings\.weight", "word/embedding"),
        Rule(rf"{e}\.position_embeddings\.weight", "position/embedding"),
        Rule(rf"{L}\.attention\.self\.query\.weight", "layers_{i}/attention/query/kernel", _qkv_kernel),
        Rule(rf"{L}\.attention\.self\.query\.bias", "layers_{i}/attention/query/bias", _qkv_bias),
        Rule(rf"{L}\.attention\.self\.key\.weight", "layers_{i}/attention/key/kernel", _qkv_kernel),
        Rule(rf"{L}\.attention\.self\.key\.bias", "layers_{i}/attention/key/bias", _qkv_bias),
        Rule(rf"{L}\.attention\.self\.value\.weight", "layers_{i}/attention/value/kernel", _qkv_kernel),
        Rule(rf"{L}\.attention\.self\.value\.bias", "layers_{i}/attention/value/bias", _qkv_bias),
        Rule(rf"{L}\.attention\.output\.dense\.weight", "layers_{i}/attention/out/kernel", _out_kernel),
        Rule(rf"{L}\.attention\.output\.dense\.bias", "layers_{i}/attention/out/bias"),
        Rule(rf"{L}\.intermediate\.dense\.weight", "layers_{i}/mlp/wi/kernel", _linear),
        Rule(rf"{L}\.intermediate\.dense\.bias", "layers_{i}/mlp/wi/bias"),
        Rule(rf"{L}\.output\.dense\.weight", "layers_{i}/mlp/wo/kernel", _linear),
        Rule(rf"{L}\.output\.dense\.bias", "layers_{i}/mlp/wo/bias"),
    ]
    if cfg.type_vocab_size > 0:
        rules.append(Rule(rf"{e}\.token_type_embeddings\.weight", "token_type/embedding"))
    if cfg.family == "xlmr-xl":
        lns = [(rf"{L}\.attention\.self_attn_layer_norm", "layers_{i}/attention_ln"),
               (rf"{L}\.LayerNorm", "layers_{i}/mlp_ln"), (rf"{base}\.encoder\.LayerNorm", "final_ln")]
    else:
        lns = [(rf"{e}\.LayerNorm", "embed_ln"), (rf"{L}\.attention\.output\.LayerNorm", "layers_{i}/attention_ln"),
               (rf"{L}\.output\.LayerNorm", "layers_{i}/mlp_ln")]
    if cfg.family == "bert":
        h = r"cls\.predictions"
        head = [(rf"{h}\.transform\.dense", "head_dense"), (rf"{h}\.transform\.LayerNorm", "head_ln")]
        rules.append(Rule(rf"{h}\.bias", "head_bias"))
    else:
        head = [(r"lm_head\.dense", "head_dense"), (r"lm_head\.layer_norm", "head_ln")]
        rules.append(Rule(r"lm_head\.bias", "head_bias"))
    for hf, fl in lns + head[1:]:
        rules += [Rule(rf"{hf}\.{_LN_W}", f"{fl}/scale"), Rule(rf"{hf}\.{_LN_B}", f"{fl}/bias")]
    rules += [Rule(rf"{head[0][0]}\.weight", "head_dense/kernel", _linear),
              Rule(rf"{head[0][0]}\.bias", "head_dense/bias")]
    return rules


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
    if cfg.family == "modernbert":
        state = _split_fused(state)
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
    if cfg.family == "modernbert":
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
    flat = convert_hf_state(read_state_dict(model_dir), cfg)
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
        out[hf_key] = np.ascontiguousarray(_INVERSE[rule.transform](flat[path], cfg))
    return _merge_fused(out) if cfg.family == "modernbert" else out


def save_hf(params: Any, cfg: ModelConfig, out_dir: str | os.PathLike[str], *, tokenizer: Any = None,
            hf_config_extra: dict[str, Any] | None = None) -> Path:
    """Writes config.json, model.safetensors (and the tokenizer) to `out_dir`, loadable by HF `from_pretrained`."""
    from safetensors.numpy import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(model_configs.to_hf_dict(cfg, extra=hf_config_extra), indent=2))
    save_file(export_state_dict(params, cfg), str(out / "model.safetensors"), metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    return out
