"""WMT14 EN->DE task-specific finetuning (the paper's Table 3 hyperparameters).

    python -m dlm_jax.train --config configs/wmt14.py:base --workdir runs/wmt14_base
    variants: base, large, xl, xxl (paper Table 3); add `,scratch` for the from-scratch baseline (label smoothing 0.1)
    `transformer_base` (Transformer-BASE, AR) and `transformer_base_rdm`: Table 1's baselines

Paper (length beam 10 / oracle length), SacreBLEU (intl): base 26.72 / 26.65, large 29.04 / 30.22, xl 30.23 / 30.91, xxl 30.34 / 32.81
"""
import ml_collections

from configs.common import task_finetune

TABLE3 = {"base": (128_000, 5e-5, 300_000), "large": (128_000, 5e-5, 300_000), "xl": (128_000, 5e-5, 150_000), "xxl": (128_000, 5e-5, 100_000)}


def get_config(arg: str | None = "base") -> ml_collections.ConfigDict:
    return task_finetune(arg, task="wmt14_en_de", table=TABLE3, mean_tokens=80)
