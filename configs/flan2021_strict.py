"""Instruction finetuning on Flan 2021 with every German task removed (the paper's strict zero-shot DE->EN test).

    python -m dlm_jax.train --config configs/flan2021_strict.py:base --workdir runs/flan2021_strict_base
    variants: base, large, xl, xxl (paper Table 4: batch in sequences, lr, steps)

Paper: zero-shot IWSLT14 DE->EN is then evaluated with `python -m dlm_jax.evaluate --tasks iwslt14_de_en_prompt`.
"""
import ml_collections

from configs.common import paper_finetune, parse_arg

TABLE4 = {"base": (512, 5e-5, 5_000), "large": (512, 5e-5, 5_000), "xl": (512, 5e-5, 3_000), "xxl": (256, 5e-5, 1_000)}


def get_config(arg: str | None = "base") -> ml_collections.ConfigDict:
    a = parse_arg(arg or "base", variant="base")
    batch, lr, steps = TABLE4[a.variant]
    c = paper_finetune(a.variant, task="flan2021_strict", tokens_per_batch=batch, mean_tokens=1, lr=lr, steps=steps)
    c.batch_size = batch
    c.data.cache = False  # stream the mixture (seeded, resumable)
    c.data.overlong = "skip"  # examples over 512 tokens were skipped, as in the paper
    c.data.eval_split = ""
    c.eval_every_steps = 0
    return c
