"""python -m dlm_jax.data.show TASK_OR_MIXTURE [--split train] [-n 3] [--tokenizer DIR|bundled] [--max-length 512]

Prints decoded examples as the model will see them: the prompt, the response, their token counts, and how the row
is laid out. The first thing to run to check a data set.
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dlm_jax.data.show", description=__doc__.splitlines()[0])
    ap.add_argument("name")
    ap.add_argument("--split", default="train")
    ap.add_argument("-n", type=int, default=3)
    ap.add_argument("--tokenizer", default="bundled", help="HF model dir / hub id, or 'bundled' (the demo's BERT)")
    ap.add_argument("--max-length", type=int, default=512)
    args = ap.parse_args(argv)
    import dlm_jax
    from dlm_jax.data import features as F, pipeline, vocab as V
    from dlm_jax.data.tasks import MissingDataError
    try:
        tok = str(dlm_jax.bundled_bert_dir()) if args.tokenizer == "bundled" else args.tokenizer
        voc = V.set_active_tokenizer(tok)
        spec = F.FeatureSpec(max_length=args.max_length, bos_id=voc.bos_id, eos_id=voc.eos_id, pad_id=voc.pad_id)
        ex = pipeline.load_examples(args.name, args.split, spec, limit=args.n)
    except (MissingDataError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for i in range(len(ex.inputs)):
        toks, resp = ex.rows["tokens"][i], ex.rows["response_mask"][i]
        n = int(ex.rows["padding_mask"][i].sum())
        print(f"--- {args.name}/{args.split} #{i} (task {ex.tasks[i]})")
        print(f"prompt   ({int(ex.rows['prompt_length'][i]) - 1} tokens): {ex.inputs[i]}")
        print(f"response ({int(ex.rows['response_length'][i])} tokens incl. </s>): {ex.targets[i]}")
        print(f"row: {n} of {spec.max_length} positions; model input: "
              f"{voc.tokenizer.decode(toks[:n][~resp[:n]].tolist())} || {voc.tokenizer.decode(toks[resp].tolist())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
