#!/usr/bin/env python3
"""Builds an unlabelled English fortune corpus for MLM pretraining, free of every test fortune,
and a validation split of the labelled training fortunes for choosing head settings.

Usage:
    python3 scripts/make_fortune_corpus.py [--task data/fortunes] [--out data/fortune-corpus]
        [--val-out data/fortunes-val]

Sources: every English fortune file in Debian's `fortunes` package (all topics, the six
labelled ones included), `fortune-anarchism`, `fortunes-bofh-excuses`, `fortunes-debian-hints`
(the English file) and `tfortunes` (English epigrams, tags dropped). Fortunes are split on lines
holding only `%`, stripped, empty ones dropped; repeats (same normalised text) are kept once.

Excluded: every fortune of the labelled test split (TASK/test.jsonl), compared normalised
(lower case, letters and digits only), and also any corpus fortune that contains a test fortune
or is contained in one (40 normalised characters or more). The labelled training fortunes stay
in: pretraining on the unlabelled form of the training inputs is the usual semi-supervised
setting, and the heads never see the test texts before they are tested.

Writes OUT/train.jsonl (unlabelled `{"text": ...}`, in source order) and OUT/heldout.jsonl
(every 50th fortune, for held-out MLM perplexity; not in train.jsonl).

With --val-out DIR it also writes DIR/train.jsonl and DIR/test.jsonl: the labelled training
fortunes split 80/20, stratified, seed 1 (the test split is not touched), for choosing
fine-tuning settings without looking at the test split.
"""

import argparse
import json
import os
import random
import re
import sys

from make_fortunes import parse  # fortunes split on `%` lines, stripped, empty ones dropped

FORTUNES = "/usr/share/games/fortunes"
EXTRA = ["anarchism", "bofh-excuses", "debian-hints"]
TFORTUNES = "/usr/share/games/tfortunes/epigrams/en.tfortunes"


def read(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def fortune_files(src):
    """English fortune files in src: plain files without an extension (no .dat, .u8)."""
    names = []
    for name in sorted(os.listdir(src)):
        p = os.path.join(src, name)
        if "." in name or not os.path.isfile(p) or os.path.islink(p):
            continue
        if name.startswith("mario") or name == "ascii-art":
            continue  # Portuguese, or pictures
        names.append(name)
    return names


def tfortunes(path):
    """Entries end with a line `---- tag,tag`."""
    out, cur = [], []
    for line in read(path).split("\n"):
        if line.startswith("---- "):
            out.append("\n".join(cur).strip())
            cur = []
        else:
            cur.append(line)
    return [s for s in out if s]


def norm(text):
    return re.sub(r"[^a-z0-9]+", "", text.lower())


def load_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def validation_split(train, seed=1, fraction=0.2):
    rng = random.Random(seed)
    labels = sorted({r["label"] for r in train})
    fit, val = [], []
    for label in labels:
        idx = [i for i, r in enumerate(train) if r["label"] == label]
        rng.shuffle(idx)
        held = set(idx[: round(fraction * len(idx))])
        for i in sorted(idx):
            (val if i in held else fit).append(train[i])
    return fit, val


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="data/fortunes")
    ap.add_argument("--out", default="data/fortune-corpus")
    ap.add_argument("--val-out")
    args = ap.parse_args()

    test_path = os.path.join(args.task, "test.jsonl")
    if not os.path.isfile(test_path):
        sys.exit(f"make_fortune_corpus: {test_path} is missing (run scripts/fetch-data.sh fortunes)")
    test = [norm(r["text"]) for r in load_jsonl(test_path)]
    test_set = set(test)

    texts = []
    for name in fortune_files(FORTUNES):
        texts += parse(os.path.join(FORTUNES, name))
    for name in EXTRA:
        p = os.path.join(FORTUNES, name)
        if not os.path.isfile(p):
            sys.exit(f"make_fortune_corpus: {p} is missing (install fortune-anarchism, "
                     "fortunes-bofh-excuses, fortunes-debian-hints)")
        texts += parse(p)
    if not os.path.isfile(TFORTUNES):
        sys.exit(f"make_fortune_corpus: {TFORTUNES} is missing (install tfortunes)")
    texts += tfortunes(TFORTUNES)

    seen, kept, dropped_test = set(), [], 0
    for t in texts:
        n = norm(t)
        if not n or n in seen:
            continue
        seen.add(n)
        if n in test_set or any(
            (len(x) >= 40 and x in n) or (len(n) >= 40 and n in x) for x in test
        ):
            dropped_test += 1
            continue
        kept.append(t)

    heldout = kept[::50]
    train = [t for i, t in enumerate(kept) if i % 50 != 0]
    write(os.path.join(args.out, "train.jsonl"), [{"text": t} for t in train])
    write(os.path.join(args.out, "heldout.jsonl"), [{"text": t} for t in heldout])
    chars = sum(len(t) for t in train)
    print(f"make_fortune_corpus: {len(texts)} fortunes read, {len(seen)} distinct, "
          f"{dropped_test} dropped as test fortunes; train {len(train)} ({chars} characters), "
          f"held out {len(heldout)}; in {args.out}")

    if args.val_out:
        fit, val = validation_split(load_jsonl(os.path.join(args.task, "train.jsonl")))
        write(os.path.join(args.val_out, "train.jsonl"), fit)
        write(os.path.join(args.val_out, "test.jsonl"), val)
        print(f"make_fortune_corpus: validation split {len(fit)} / {len(val)} in {args.val_out}")


if __name__ == "__main__":
    main()
