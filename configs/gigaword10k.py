"""Gigaword-10K summarisation finetuning (the paper's Table 3 hyperparameters).

    python -m dlm_jax.train --config configs/gigaword10k.py:base --workdir runs/gigaword10k_base
    variants: base, large, xl, xxl (paper Table 3); add `,scratch` for the from-scratch baseline (label smoothing 0.1)
    `transformer_base` (Transformer-BASE, AR): Table 1's baseline

Paper (length beam 10 / oracle length), ROUGE-L: base 27.52 / 28.83, large 30.11 / 31.33, xl 31.42 / 31.72, xxl 31.54 / 32.57; from scratch (base) 10.01
"""
import ml_collections

from configs.common import task_finetune

TABLE3 = {"base": (16_000, 5e-5, 30_000), "large": (16_000, 5e-5, 10_000), "xl": (16_000, 5e-5, 5_000), "xxl": (16_000, 5e-5, 1_000)}


def get_config(arg: str | None = "base") -> ml_collections.ConfigDict:
    return task_finetune(arg, task="gigaword_10k", table=TABLE3, mean_tokens=64)
