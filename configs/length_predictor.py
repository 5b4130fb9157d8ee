"""Second stage: train the length predictor on a finetuned model (backbone frozen).

    python -m dlm_jax.train --config configs/length_predictor.py:runs/demo --workdir runs/demo_length
    python -m dlm_jax.evaluate --workdir runs/demo --length_beam 3 --length_workdir runs/demo_length

The argument is the diffusion-stage workdir; its task, tokenizer and pruned vocabulary carry over.
"""
import json
from pathlib import Path

import ml_collections

from configs.common import base_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = base_config()
    c.stage = "length"
    if arg:
        src = json.loads((Path(arg) / "config.json").read_text()) if (Path(arg) / "config.json").exists() else {}
        c.model.init = f"workdir:{arg}"
        data = src.get("data", {})
        c.data.task = data.get("task", c.data.task)
        c.data.max_length = data.get("max_length", c.data.max_length)
        c.model.tokenizer = src.get("model", {}).get("tokenizer", "")
        c.model.name = src.get("model", {}).get("name", c.model.name)
    c.num_train_steps = 1000
    c.batch_size = 64
    c.optimizer.lr = 1e-3
    c.optimizer.schedule = "warmup_cosine"
    c.optimizer.warmup_steps = 50
    c.log_every_steps = 100
    c.eval_every_steps = 0
    return c
