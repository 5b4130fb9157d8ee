"""Writing a trained run as a HuggingFace masked-LM directory (config.json, model.safetensors, tokenizer) that
`transformers.AutoModelForMaskedLM` loads. A run with a pruned vocabulary is exported in the tokenizer's full
vocabulary (`model.prune.unprune_params`): the exported model computes what the pruned one computes. The entry
point `python -m dlm_jax.export` wraps `export_run`; tests and scripts call it in-process."""
from __future__ import annotations

from pathlib import Path

from dlm_jax import hf_io
from dlm_jax.errors import ConfigError, InputError
from dlm_jax.inference.restored import restore_run
from dlm_jax.model import family_of
from dlm_jax.model.prune import unprune_params
from dlm_jax.rundir import RunDir

EXPORT_FILES = ("config.json", "*.safetensors", "*.safetensors.index.json", "tokenizer*", "special_tokens_map.json",
                "vocab.txt", "sentencepiece.bpe.model", "generation_config.json")


def check_out(out: Path, overwrite: bool) -> None:
    """Refuses a non-empty `out` (stale shards of an earlier export would survive beside the new ones) unless
    `overwrite`, which removes the files an export writes first."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a folder for the HuggingFace model")
    if not out.exists() or not any(out.iterdir()):
        return
    if not overwrite:
        raise InputError(f"--out {out} is not empty; choose a new folder or pass --overwrite to replace an earlier "
                         "export there")
    for pattern in EXPORT_FILES:
        for f in out.glob(pattern):
            if f.is_file():
                f.unlink()


def export_run(workdir: str | Path, out: str | Path, *, step: int | None = None) -> Path:
    """Writes checkpoint `step` (default: the latest) of the run in `workdir` to `out`; returns `out`."""
    cfg = RunDir(workdir).read_model_config()
    if not family_of(cfg).exportable:
        raise ConfigError(f"{workdir} is a {family_of(cfg).description} model, which has no HuggingFace format to "
                          "export to; use its orbax checkpoint (evaluate / generate read it)")
    restored = restore_run(workdir, step=step)
    params, cfg = restored.params, restored.model.cfg
    if restored.vocab_map is not None:
        params, cfg = unprune_params(params, cfg, restored.vocab_map)
    return hf_io.save_hf(params, cfg.replace(dtype="float32"), out, tokenizer=restored.vocab.tokenizer)
