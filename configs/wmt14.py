"""WMT14 EN->DE task-specific finetuning (the paper's Table 3 hyperparameters).

    python -m dlm_jax.train --config configs/wmt14.py:base --workdir runs/wmt14_base
    variants: base, large, xl, xxl (paper Table 3); add `,scratch` for the from-scratch baseline (label smoothing 0.1)

Paper (length beam 10 / oracle length), SacreBLEU (intl): base 26.72 / 26.65, large 29.04 / 30.22, xl 30.23 / 30.91, xxl 30.34 / 32.81
"""
import ml_collections

from configs.common import paper_finetune, parse_arg

TABLE3 = {"base": (128_000, 5e-5, 300_000), "large": (128_000, 5e-5, 300_000), "xl": (128_000, 5e-5, 150_000), "xxl": (128_000, 5e-5, 100_000)}


def get_config(arg: str | None = "base") -> ml_collections.ConfigDict:
    a = parse_arg(arg or "base", variant="base")
    scratch = "scratch" in (arg or "")
    size = a.variant if a.variant != "scratch" else "base"
    tokens, lr, steps = TABLE3[size]
    c = paper_finetune(size, task="wmt14_en_de", tokens_per_batch=tokens, mean_tokens=80, lr=lr, steps=steps)
    if scratch:
        c.model.init, c.model.tokenizer = "random", "FacebookAI/xlm-roberta-base"
        c.diffusion.label_smoothing = 0.1
    return c
