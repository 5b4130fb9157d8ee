"""python -m dlm_jax.data.show TASK_OR_MIXTURE [--split train] [--num_examples 3] [--tokenizer DIR|bundled]
   [--max_length 512]        |        python -m dlm_jax.data.show --list

Prints decoded examples as the model will see them: the prompt, the response, their token counts, and how the row
is laid out. The first thing to run to check a data set.
"""
from __future__ import annotations

import sys

from absl import app, flags

from dlm_jax.data import features, pipeline, registry
from dlm_jax.data.vocab import HFVocabulary
from dlm_jax.errors import InputError, UserError
from dlm_jax.model.bundled import resolve_bundled

flags.DEFINE_string("split", "train", "Split to show.")
flags.DEFINE_integer("num_examples", 3, "How many examples.")
flags.DEFINE_string("tokenizer", "bundled", "HF model dir / hub id, or 'bundled' (the demo's BERT).")
flags.DEFINE_integer("max_length", 512, "Row length.")
flags.DEFINE_bool("list", False, "List every registered task and mixture and exit.")
FLAGS = flags.FLAGS


def show(name: str, split: str, num_examples: int, tokenizer: str, max_length: int) -> None:
    vocab = HFVocabulary(resolve_bundled(tokenizer))
    spec = features.FeatureSpec(max_length=max_length, bos_id=vocab.bos_id, eos_id=vocab.eos_id,
                                pad_id=vocab.pad_id)
    ex = pipeline.load_examples(name, split, spec, vocab, limit=num_examples)
    for i in range(len(ex.inputs)):
        toks, resp = ex.rows["tokens"][i], ex.rows["response_mask"][i]
        n = int(ex.rows["padding_mask"][i].sum())
        print(f"--- {name}/{split} #{i} (task {ex.tasks[i]})")
        print(f"prompt   ({int(ex.rows['prompt_length'][i]) - 1} tokens): {ex.inputs[i]}")
        print(f"response ({int(ex.rows['response_length'][i])} tokens incl. </s>): {ex.targets[i]}")
        print(f"row: {n} of {spec.max_length} positions; model input: "
              f"{vocab.tokenizer.decode(toks[:n][~resp[:n]].tolist())} || "
              f"{vocab.tokenizer.decode(toks[resp].tolist())}")


def main(argv: list[str]) -> int:
    try:
        if FLAGS.list:
            registry.register_all(HFVocabulary(resolve_bundled(FLAGS.tokenizer)))
            print("\n".join(registry.registered_names()))
            return 0
        if len(argv) != 2:
            raise InputError("name one task or mixture: python -m dlm_jax.data.show ding_de_en")
        show(argv[1], FLAGS.split, FLAGS.num_examples, FLAGS.tokenizer, FLAGS.max_length)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    app.run(main)
