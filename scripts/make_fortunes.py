#!/usr/bin/env python3
"""Builds the fortunes topic-classification task from the Debian `fortunes` package.

Usage:
    python3 scripts/make_fortunes.py [--src /usr/share/games/fortunes] [--out data/fortunes]
    python3 scripts/make_fortunes.py --sample data/fortunes-sample   # the committed sample

Topics (labels): computers, men-women, politics, science, songs-poems, work. A topic file holds
fortunes separated by lines holding only `%`; each fortune is stripped of surrounding
whitespace, empty ones dropped.

Duplicates: a text that appears under two or more topics is dropped entirely (its label is
ambiguous); a text repeated within one topic is kept once (first occurrence). Order: topics in
the order above, fortunes in file order.

Split: stratified 80/20, seed 0. Per topic, the indices are shuffled with
`random.Random(0)` (one generator, topics in the order above) and the first
`round(0.2 * n)` go to test. Standard library only, so the split does not depend on the
installed numpy / scikit-learn versions. Each output is in topic order, then file order.

Writes OUT/train.jsonl and OUT/test.jsonl, one {"text": ..., "label": ...} per line.
With --sample DIR it also writes a small stratified subset (600 train / 150 test) of the real
split, for the fast tests.
"""

import argparse
import collections
import json
import os
import random
import sys

TOPICS = ["computers", "men-women", "politics", "science", "songs-poems", "work"]


def parse(path):
    with open(path, encoding="utf-8") as f:
        raw = f.read()
    out, cur = [], []
    for line in raw.split("\n"):
        if line.strip() == "%":
            out.append("\n".join(cur))
            cur = []
        else:
            cur.append(line)
    out.append("\n".join(cur))
    return [s.strip() for s in out if s.strip()]


def load(src):
    items = [(text, topic) for topic in TOPICS for text in parse(os.path.join(src, topic))]
    topics_of = collections.defaultdict(set)
    for text, topic in items:
        topics_of[text].add(topic)
    seen, kept = set(), []
    for text, topic in items:
        if len(topics_of[text]) > 1 or text in seen:
            continue
        seen.add(text)
        kept.append((text, topic))
    return items, kept


def split(items, test_fraction=0.2, seed=0):
    rng = random.Random(seed)
    train, test = [], []
    for topic in TOPICS:
        group = [it for it in items if it[1] == topic]
        idx = list(range(len(group)))
        rng.shuffle(idx)
        n_test = round(test_fraction * len(group))
        test_idx = set(idx[:n_test])
        for i, it in enumerate(group):
            (test if i in test_idx else train).append(it)
    return train, test


def subsample(items, n, seed=0):
    """Stratified subset of about n items (proportional per topic), in the input order."""
    rng = random.Random(seed)
    keep = set()
    for topic in TOPICS:
        idx = [i for i, it in enumerate(items) if it[1] == topic]
        k = round(n * len(idx) / len(items))
        keep.update(rng.sample(idx, k))
    return [it for i, it in enumerate(items) if i in keep]


def write(path, items):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for text, topic in items:
            f.write(json.dumps({"text": text, "label": topic}, ensure_ascii=False) + "\n")


def counts(items):
    c = collections.Counter(t for _, t in items)
    return ", ".join(f"{t} {c[t]}" for t in TOPICS)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", default="/usr/share/games/fortunes")
    ap.add_argument("--out", default="data/fortunes")
    ap.add_argument("--sample", help="also write a 600/150 sample into this folder")
    args = ap.parse_args()
    for topic in TOPICS:
        if not os.path.isfile(os.path.join(args.src, topic)):
            sys.exit(f"make_fortunes: {args.src}/{topic} is missing (install the Debian package fortunes)")
    raw, kept = load(args.src)
    train, test = split(kept)
    print(f"make_fortunes: {len(raw)} fortunes, {len(kept)} after removing duplicates ({counts(kept)})")
    print(f"make_fortunes: train {len(train)}, test {len(test)}")
    write(os.path.join(args.out, "train.jsonl"), train)
    write(os.path.join(args.out, "test.jsonl"), test)
    if args.sample:
        write(os.path.join(args.sample, "train.jsonl"), subsample(train, 600))
        write(os.path.join(args.sample, "test.jsonl"), subsample(test, 150))
        print(f"make_fortunes: sample in {args.sample}")


if __name__ == "__main__":
    main()
