"""Instruction finetuning on the Flan 2022 mixture (FLAN's rates; `--config.data.task=flan2022_paper` for the paper's file ratios).

    python -m dlm_jax.train --config configs/flan2022.py:base --workdir runs/flan2022_base
    variants: base, large, xl, xxl (paper Table 4: batch in sequences, lr, steps)

Paper: 0-shot MMLU base 31.28 -> xxl 42.13; BBH-nlp 41.86 -> 40.70; TyDiQA (OL) 44.68 -> 52.06; IWSLT14 (OL) 21.26 -> 29.59
"""
import ml_collections

from configs.common import paper_finetune, parse_arg

TABLE4 = {"base": (512, 1e-5, 70_000), "large": (512, 1e-5, 30_000), "xl": (1024, 1e-5, 17_000), "xxl": (2048, 1e-5, 4_000)}


def get_config(arg: str | None = "base") -> ml_collections.ConfigDict:
    a = parse_arg(arg or "base", variant="base")
    batch, lr, steps = TABLE4[a.variant]
    c = paper_finetune(a.variant, task="flan2022_submix", tokens_per_batch=batch, mean_tokens=1, lr=lr, steps=steps)
    c.batch_size = batch
    c.data.cache = False  # stream the mixture (seeded, resumable)
    c.data.overlong = "skip"  # examples over 512 tokens were skipped, as in the paper
    c.data.eval_split = ""
    c.eval_every_steps = 0
    return c
