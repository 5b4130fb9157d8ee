"""A smoke run: a random 2-layer BERT-shaped model (hidden 32) on the built-in DE-EN pairs, for tests and a first look.

    python -m dlm_jax.train --config configs/tiny.py --workdir /tmp/tiny

It uses the bundled BERT's tokenizer with the vocabulary pruned to the ~1,800 ids of its 256 training pairs, trains
20 steps of 8 sequences (about 20 s on 2 CPU cores, most of it start-up and compilation; loss per response token
~1.4 throughout) and checkpoints at steps 10 and 20. It learns nothing useful: it checks that every stage (data,
training, checkpoints, evaluation, generation) runs. configs/demo.py is the run that learns.
"""
import ml_collections

from configs.common import base_config, no_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    no_arg(arg)
    c = base_config()
    c.num_train_steps = 20
    c.batch_size = 8
    c.log_every_steps = 5
    c.checkpoint_every_steps = 10
    c.model.init = "random"
    c.model.name = "bert-tiny"
    c.model.tokenizer = "bundled"
    c.model.overrides = ml_collections.ConfigDict(dict(hidden_size=32, num_layers=2, num_heads=4,
                                                       intermediate_size=37, max_positions=64))
    c.model.prune_vocab = True
    c.data.task = "ding_de_en"
    c.data.max_length = 48
    c.data.train_limit = 256
    c.data.eval_examples = 16
    c.optimizer.lr = 1e-3
    c.optimizer.warmup_steps = 5
    c.sampler.steps = 4
    return c
