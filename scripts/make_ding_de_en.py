"""Extracts German-English sentence pairs from Debian's `trans-de-en` dictionary into data/ding_de_en/.

Source: /usr/share/trans/de-en (Debian package trans-de-en; Frank Richter's Ding dictionary, GPL-2+).
Each line is "german | german ... :: english | english ..."; the i-th "|" part on each side translates the other.
We keep aligned parts where both sides are sentences: start upper-case, end in . ! or ?, at least 4 words, with
annotations ({n}, [ugs.]) removed and no ";" alternatives. Pairs are deduplicated (by German side), and split
deterministically by a hash of the German text into test (~1000), valid (~1000) and train (the rest).

Usage: apt-get install trans-de-en && python scripts/make_ding_de_en.py [--src FILE] [--out data/ding_de_en]
"""
from __future__ import annotations

import argparse
import hashlib
import re
from pathlib import Path

_ANNOT = re.compile(r"\s*(\{[^}]*\}|\[[^\]]*\])")
_SENT = re.compile(r"^[A-ZÄÖÜ\"'].*[.!?]$")


def clean(text: str) -> str:
    return re.sub(r"\s+", " ", _ANNOT.sub("", text)).strip()


def is_sentence(text: str) -> bool:
    return bool(_SENT.match(text)) and len(text.split()) >= 4 and ";" not in text and "\t" not in text


def extract(lines: list[str]) -> list[tuple[str, str]]:
    pairs, seen = [], set()
    for line in lines:
        if line.startswith("#") or " :: " not in line:
            continue
        de_side, en_side = line.rstrip("\n").split(" :: ", 1)
        de_parts, en_parts = de_side.split(" | "), en_side.split(" | ")
        if len(de_parts) != len(en_parts):
            continue
        for de, en in zip(de_parts, en_parts):
            de, en = clean(de), clean(en)
            if is_sentence(de) and is_sentence(en) and de not in seen:
                seen.add(de)
                pairs.append((de, en))
    return pairs


def split_of(de: str, n_eval: int, total: int) -> str:
    h = int(hashlib.sha256(de.encode()).hexdigest(), 16) % total
    return "test" if h < n_eval else "valid" if h < 2 * n_eval else "train"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", default="/usr/share/trans/de-en")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "data" / "ding_de_en"))
    ap.add_argument("--eval-size", type=int, default=1000)
    args = ap.parse_args()
    src = Path(args.src)
    if not src.exists():
        raise SystemExit(f"{src} not found: install it with `apt-get install trans-de-en`")
    pairs = extract(src.read_text(encoding="utf-8").splitlines())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    splits: dict[str, list[tuple[str, str]]] = {"train": [], "valid": [], "test": []}
    for de, en in pairs:
        splits[split_of(de, args.eval_size, len(pairs))].append((de, en))
    for name, rows in splits.items():
        with open(out / f"{name}.tsv", "w", encoding="utf-8") as f:
            for de, en in rows:
                f.write(f"{de}\t{en}\n")
        print(f"{name}: {len(rows)} pairs")


if __name__ == "__main__":
    main()
