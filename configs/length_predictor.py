"""Second stage: train the length predictor on a finetuned model (backbone frozen).

    python -m dlm_jax.train --config configs/length_predictor.py:runs/iwslt14_base --workdir runs/iwslt14_length
    python -m dlm_jax.train --config configs/length_predictor.py:runs/demo,fast --workdir runs/demo_length
    python -m dlm_jax.evaluate --workdir runs/demo --length_beam 3 --length_workdir runs/demo_length

The argument is the diffusion-stage workdir; its task, tokenizer and pruned vocabulary carry over. The default is
the released recipe (scripts/task_train_length.sh, instruction_train_length.sh): lr 5e-5 after task finetuning,
1e-5 after instruction tuning (a streamed mixture), DeepSpeed's log warm-up over 1% then constant, AdamW (0.9,
0.98, eps 1e-8), 20,000 steps (the released runs used 16k-30k). `,fast` is a quick recipe for small runs and the
demo: lr 1e-3, cosine decay, 1,000 steps.
"""
import json
from pathlib import Path

import ml_collections

from configs.common import base_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    workdir, _, variant = (arg or "").partition(",")
    c = base_config()
    c.stage = "length"
    src = {}
    if workdir:
        f = Path(workdir) / "config.json"
        src = json.loads(f.read_text()) if f.exists() else {}
        c.model.init = f"workdir:{workdir}"
        data = src.get("data", {})
        c.data.task = data.get("task", c.data.task)
        c.data.max_length = data.get("max_length", c.data.max_length)
        c.data.cache = data.get("cache", c.data.cache)
        c.model.tokenizer = src.get("model", {}).get("tokenizer", "")
        c.model.name = src.get("model", {}).get("name", c.model.name)
    c.batch_size = 64
    c.log_every_steps = 100
    c.eval_every_steps = 0
    if variant == "fast":
        c.num_train_steps = 1000
        c.optimizer.lr = 1e-3
        c.optimizer.schedule = "warmup_cosine"
        c.optimizer.warmup_steps = 50
        return c
    if variant:
        raise ValueError(f"unknown variant {variant!r} in {arg!r}; use WORKDIR or WORKDIR,fast")
    c.num_train_steps = 20_000
    c.optimizer.lr = 1e-5 if src.get("data", {}).get("cache") is False else 5e-5
    c.optimizer.schedule = "log_warmup_constant"
    c.optimizer.warmup_ratio = 0.01
    c.optimizer.eps = 1e-8
    return c
