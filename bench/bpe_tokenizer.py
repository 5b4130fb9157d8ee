"""A small byte-level BPE tokenizer trained on ding_de_en's training pairs, for the laptop-scale decoder-LLM
experiment (bench/llm_adaptation_laptop.sh): LLaMA-like in what matters there, `<s>`, `</s>`, `<unk>` and a `<pad>`,
and no mask token, so the adaptation adds `<mask>` the released way (mean-initialised rows).

    python bench/bpe_tokenizer.py --out runs/llm_adapt/tokenizer [--vocab_size 4000]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

REPO = Path(__file__).resolve().parents[1]
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]


def train(vocab_size: int, source: Path) -> PreTrainedTokenizerFast:
    """BPE over both sides of every training pair, wrapped as an HF fast tokenizer."""
    lines = [side for row in source.read_text(encoding="utf-8").splitlines() for side in row.split("\t")]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", clean_up_tokenization_spaces=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--vocab_size", type=int, default=4000)
    p.add_argument("--source", type=Path, default=REPO / "data/ding_de_en/train.tsv")
    a = p.parse_args()
    tok = train(a.vocab_size, a.source)
    tok.save_pretrained(a.out)
    print(f"wrote {a.out}: {len(tok)} tokens; e.g. {tok.tokenize('Das Abendessen hat mir geschmeckt.')}")


if __name__ == "__main__":
    main()
