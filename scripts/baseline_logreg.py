#!/usr/bin/env python3
"""Logistic-regression baseline on raw pixels for an IDX train/test pair.

Usage:
    python3 scripts/baseline_logreg.py TRAIN_IMAGES TRAIN_LABELS TEST_IMAGES TEST_LABELS
    python3 scripts/baseline_logreg.py --dir data/fashion-mnist-sample

Files may be gzip-compressed or raw IDX. Pixels are scaled to [0, 1]; the model is scikit-learn's
multinomial LogisticRegression (lbfgs, C=1.0) with enough iterations to converge.
Prints the test accuracy. Needs numpy and scikit-learn.
"""

import argparse
import gzip
import os
import struct
import sys
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression


def read_idx(path, expected_magic):
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    (magic,) = struct.unpack(">I", data[:4])
    if magic != expected_magic:
        sys.exit(f"{path}: bad magic number: expected 0x{expected_magic:08x}, found 0x{magic:08x}")
    ndim = magic & 0xFF
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        sys.exit(f"{path}: expected {int(np.prod(dims))} bytes of data, found {body.size}")
    return body.reshape(dims)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="*", help="TRAIN_IMAGES TRAIN_LABELS TEST_IMAGES TEST_LABELS")
    p.add_argument("--dir", help="directory holding the four files under their upstream names")
    p.add_argument("--max-iter", type=int, default=5000)
    p.add_argument("--C", type=float, default=1.0, help="inverse L2 strength (default 1.0)")
    p.add_argument("--label-fraction", type=float, default=1.0,
                   help="train on a stratified draw of this fraction of the training split (seed 0)")
    args = p.parse_args()

    if args.dir:
        if args.files:
            p.error("give either --dir or four files, not both")
        names = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
        files = [os.path.join(args.dir, n) for n in names]
    elif len(args.files) == 4:
        files = args.files
    else:
        p.error("expected four files (train images, train labels, test images, test labels) or --dir")

    xtr = read_idx(files[0], 0x803)
    ytr = read_idx(files[1], 0x801)
    xte = read_idx(files[2], 0x803)
    yte = read_idx(files[3], 0x801)
    xtr = xtr.reshape(len(xtr), -1).astype(np.float64) / 255.0
    xte = xte.reshape(len(xte), -1).astype(np.float64) / 255.0
    if len(xtr) != len(ytr) or len(xte) != len(yte):
        sys.exit("image and label counts differ")

    if args.label_fraction < 1.0:
        from sklearn.model_selection import train_test_split
        xtr, _, ytr, _ = train_test_split(xtr, ytr, train_size=args.label_fraction,
                                          stratify=ytr, random_state=0)

    clf = LogisticRegression(max_iter=args.max_iter, C=args.C)
    t0 = time.time()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(xtr, ytr)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    secs = time.time() - t0
    train_acc = clf.score(xtr, ytr)
    acc = clf.score(xte, yte)
    print(f"train n={len(xtr)} test n={len(xte)} iterations={int(np.max(clf.n_iter_))} "
          f"converged={converged} fit={secs:.1f}s train_acc={100 * train_acc:.2f}%")
    print(f"test accuracy: {100 * acc:.2f}%")


if __name__ == "__main__":
    main()
