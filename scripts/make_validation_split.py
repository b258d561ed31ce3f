#!/usr/bin/env python3
"""Carves a validation split out of an IDX training set, so that settings are chosen without
looking at the test images.

Usage:
    python3 scripts/make_validation_split.py --dir data/fashion-mnist-sample --train 1600 --out DIR

Reads only DIR's train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz. Writes, in OUT,
the first N training examples as train-images-idx3-ubyte.gz / train-labels-idx1-ubyte.gz and
the rest as t10k-images-idx3-ubyte.gz / t10k-labels-idx1-ubyte.gz (the test names, so a
recipe's paths point at OUT unchanged). Standard library only.
"""

import argparse
import gzip
import os
import struct


def read(path, magic, header):
    with gzip.open(path, "rb") as f:
        head = f.read(4 * header)
        fields = struct.unpack(">" + "I" * header, head)
        if fields[0] != magic:
            raise SystemExit(f"{path}: magic {fields[0]}, expected {magic}")
        return fields, f.read()


def write(path, fields, body):
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">" + "I" * len(fields), *fields))
        f.write(body)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", required=True, help="folder holding the IDX training files")
    p.add_argument("--train", type=int, required=True, help="examples kept for training")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    (_, n, rows, cols), pixels = read(os.path.join(args.dir, "train-images-idx3-ubyte.gz"), 2051, 4)
    (_, m), labels = read(os.path.join(args.dir, "train-labels-idx1-ubyte.gz"), 2049, 2)
    if n != m or len(pixels) != n * rows * cols or len(labels) != n:
        raise SystemExit(f"{args.dir}: {n} images and {m} labels do not match their files")
    if not 0 < args.train < n:
        raise SystemExit(f"--train {args.train} must be between 1 and {n - 1}")
    k, size = args.train, rows * cols
    os.makedirs(args.out, exist_ok=True)
    for name, lo, hi in [("train", 0, k), ("t10k", k, n)]:
        write(os.path.join(args.out, f"{name}-images-idx3-ubyte.gz"),
              (2051, hi - lo, rows, cols), pixels[lo * size:hi * size])
        write(os.path.join(args.out, f"{name}-labels-idx1-ubyte.gz"), (2049, hi - lo), labels[lo:hi])
        counts = [labels[lo:hi].count(c) for c in range(max(labels) + 1)]
        print(f"{name}: {hi - lo} examples, per class {counts}")


if __name__ == "__main__":
    main()
