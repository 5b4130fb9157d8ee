"""Gigaword-10K summarisation finetuning (the paper's Table 3 hyperparameters).

    python -m dlm_jax.train --config configs/gigaword10k.py:base --workdir runs/gigaword10k_base
    variants: base, large, xl, xxl (paper Table 3); add `,scratch` for the from-scratch baseline (label smoothing 0.1)

Paper (length beam 10 / oracle length), ROUGE-L: base 27.52 / 28.83, large 30.11 / 31.33, xl 31.42 / 31.72, xxl 31.54 / 32.57; from scratch (base) 10.01
"""
import ml_collections

from configs.common import paper_finetune, parse_arg

TABLE3 = {"base": (16_000, 5e-5, 30_000), "large": (16_000, 5e-5, 10_000), "xl": (16_000, 5e-5, 5_000), "xxl": (16_000, 5e-5, 1_000)}


def get_config(arg: str | None = "base") -> ml_collections.ConfigDict:
    a = parse_arg(arg or "base", variant="base")
    scratch = "scratch" in (arg or "")
    size = a.variant if a.variant != "scratch" else "base"
    tokens, lr, steps = TABLE3[size]
    c = paper_finetune(size, task="gigaword_10k", tokens_per_batch=tokens, mean_tokens=64, lr=lr, steps=steps)
    if scratch:
        c.model.init, c.model.tokenizer = "random", "FacebookAI/xlm-roberta-base"
        c.diffusion.label_smoothing = 0.1
    return c
