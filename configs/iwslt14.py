"""IWSLT14 DE->EN task-specific finetuning (the paper's Table 3 hyperparameters).

    python -m dlm_jax.train --config configs/iwslt14.py:base --workdir runs/iwslt14_base
    variants: base, large, xl, xxl (paper Table 3); add `,scratch` for the from-scratch baseline (label smoothing 0.1)

Paper (length beam 10 / oracle length), SacreBLEU (13a): base 34.10 / 35.78, large 37.33 / 38.84, xl 38.54 / 40.11, xxl 38.57 / 40.65; from scratch (base) 28.79
"""
import ml_collections

from configs.common import paper_finetune, parse_arg

TABLE3 = {"base": (32_000, 5e-5, 150_000), "large": (32_000, 5e-5, 150_000), "xl": (32_000, 5e-5, 100_000), "xxl": (32_000, 5e-5, 30_000)}


def get_config(arg: str | None = "base") -> ml_collections.ConfigDict:
    a = parse_arg(arg or "base", variant="base")
    scratch = "scratch" in (arg or "")
    size = a.variant if a.variant != "scratch" else "base"
    tokens, lr, steps = TABLE3[size]
    c = paper_finetune(size, task="iwslt14_de_en", tokens_per_batch=tokens, mean_tokens=64, lr=lr, steps=steps)
    if scratch:
        c.model.init, c.model.tokenizer = "random", "FacebookAI/xlm-roberta-base"
        c.diffusion.label_smoothing = 0.1
    return c
