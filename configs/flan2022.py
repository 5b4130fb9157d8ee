"""Instruction finetuning on the Flan 2022 mixture (FLAN's rates; `--config.data.task=flan2022_paper` for the paper's file ratios).

    python -m dlm_jax.train --config configs/flan2022.py:base --workdir runs/flan2022_base
    variants: base, large, xl, xxl (paper Table 4: batch in sequences, lr, steps); modernbert-base,
    modernbert-large (the base / large recipe, 2,048-token rows; `modernbert-large,max_length=8192` for the full context);
    llama-13b (the paper's LLaMA experiment: the released recipe on `flan2022_paper`), qwen2.5-0.5b, smollm2-135m
    (decoder LLMs on one GPU, the base recipe): bidirectional, `<mask>` added (configs/common.py llm_settings)
    `xxl,pod=v5p-128` / `xxl,pod=v5e-256` / `xxl,pod=v4-128`: FSDP, remat and grad_accum measured to fit that
    TPU slice (configs/common.py POD_FITS)

Paper: 0-shot MMLU base 31.28 -> xxl 42.13; BBH-nlp 41.86 -> 40.70; TyDiQA (OL) 44.68 -> 52.06; IWSLT14 (OL) 21.26 -> 29.59
"""
import ml_collections

from configs.common import instruction_finetune

TABLE4 = {"base": (512, 1e-5, 70_000), "large": (512, 1e-5, 30_000), "xl": (1024, 1e-5, 17_000), "xxl": (2048, 1e-5, 4_000),
          # the released LLaMA-13B run: 2,048 x 512 rows as the XLM-R runs, lr 1e-5, ~10k steps (its default
          # checkpoint path); the file ratios of the paper's Flan 2022 mix
          "llama-13b": (2048, 1e-5, 10_000)}


def get_config(arg: str | None = "base") -> ml_collections.ConfigDict:
    c = instruction_finetune(arg, task="flan2022_submix", table=TABLE4)
    if (arg or "").split(",")[0] == "llama-13b":
        c.data.task = "flan2022_paper"
    return c
