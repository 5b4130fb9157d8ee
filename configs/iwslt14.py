"""IWSLT14 DE->EN task-specific finetuning (the paper's Table 3 hyperparameters).

    python -m dlm_jax.train --config configs/iwslt14.py:base --workdir runs/iwslt14_base
    variants: base, large, xl, xxl (paper Table 3); add `,scratch` for the from-scratch baseline (label smoothing 0.1)
    `ar_decoder` (decoder-only AR, XLM-R-BASE shape, from scratch), `transformer_iwslt` (fairseq's encoder-decoder,
    AR) and `transformer_iwslt_rdm` (the same with RDM): Table 1's baselines (docs/FIDELITY.md B-rows)
    `large,pod=v4-16`: FSDP, remat and grad_accum measured to fit that TPU slice (configs/common.py POD_FITS)

Paper (length beam 10 / oracle length), SacreBLEU (13a): base 34.10 / 35.78, large 37.33 / 38.84, xl 38.54 / 40.11, xxl 38.57 / 40.65; from scratch (base) 28.79
"""
import ml_collections

from configs.common import task_finetune

TABLE3 = {"base": (32_000, 5e-5, 150_000), "large": (32_000, 5e-5, 150_000), "xl": (32_000, 5e-5, 100_000), "xxl": (32_000, 5e-5, 30_000)}


def get_config(arg: str | None = "base") -> ml_collections.ConfigDict:
    return task_finetune(arg, task="iwslt14_de_en", table=TABLE3, mean_tokens=64)
