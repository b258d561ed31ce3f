#!/usr/bin/env python3
"""TF-IDF + logistic-regression baseline for a JSON-lines text classification split.

Usage:
    python3 scripts/baseline_tfidf.py --dir data/fortunes [--label-fraction 0.1] [--no-cv]

Reads DIR/train.jsonl and DIR/test.jsonl ({"text": ..., "label": ...} per line). Features:
scikit-learn's TfidfVectorizer with its defaults (lowercase, word unigrams, smooth idf, l2),
fitted on the training texts. Classifier: multinomial LogisticRegression (lbfgs), once with
C = 1 and once with C chosen by 5-fold stratified cross-validation (accuracy) on the training
set over C in {0.1, 0.3, 1, 3, 10, 30, 100}. Prints the test accuracy of each.

--label-fraction F keeps a stratified fraction F of the training set (seed 0), as a
low-label downstream run would. Needs numpy and scikit-learn.

Measured (scikit-learn 1.9.1) on the split of scripts/make_fortunes.py (3440 / 860):
    C=1 64.0 %; C tuned (C=10, CV 66.1 %) 65.8 %.
    --label-fraction 0.1 (344 train): C=1 39.1 %; C tuned (C=100) 45.8 %.
    data/fortunes-sample (601 / 150): C=1 40.7 %; C tuned (C=100) 47.3 %.
The issue's 60.5 % (C=1) / 67.5 % (tuned) were not reproduced by any obvious variant
(sklearn train_test_split(stratify, test_size=0.2, random_state=0) on the deduplicated list
gives 65.7 % / 68.6 %; sublinear tf, stop words, min_df=2, one-vs-rest liblinear: 63-68 %).
"""

import argparse
import json
import os
import sys
import time
import warnings


def read(path):
    texts, labels = [], []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            obj = json.loads(line)
            texts.append(obj["text"])
            labels.append(obj["label"])
    return texts, labels


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default="data/fortunes")
    ap.add_argument("--label-fraction", type=float, default=1.0)
    ap.add_argument("--no-cv", action="store_true", help="only C = 1")
    args = ap.parse_args()
    try:
        import numpy as np
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split
    except ImportError as e:
        sys.exit(f"baseline_tfidf: needs numpy and scikit-learn ({e})")
    warnings.filterwarnings("ignore")

    xtr, ytr = read(os.path.join(args.dir, "train.jsonl"))
    xte, yte = read(os.path.join(args.dir, "test.jsonl"))
    if args.label_fraction < 1.0:
        xtr, _, ytr, _ = train_test_split(
            xtr, ytr, train_size=args.label_fraction, stratify=ytr, random_state=0
        )
    print(f"train {len(xtr)} (label fraction {args.label_fraction}), test {len(xte)}")
    vec = TfidfVectorizer()
    a = vec.fit_transform(xtr)
    b = vec.transform(xte)
    yte = np.array(yte)

    t = time.time()
    m = LogisticRegression(C=1.0, max_iter=5000).fit(a, ytr)
    acc = (m.predict(b) == yte).mean()
    print(f"C=1: test accuracy {100 * acc:.1f} % ({time.time() - t:.1f} s)")
    if args.no_cv:
        return
    t = time.time()
    grid = GridSearchCV(
        LogisticRegression(max_iter=5000),
        {"C": [0.1, 0.3, 1, 3, 10, 30, 100]},
        cv=StratifiedKFold(5, shuffle=True, random_state=0),
        scoring="accuracy",
    ).fit(a, ytr)
    acc = (grid.predict(b) == yte).mean()
    c = grid.best_params_["C"]
    cv = grid.best_score_
    print(f"C={c} (5-fold CV accuracy {100 * cv:.1f} %): test accuracy {100 * acc:.1f} % ({time.time() - t:.1f} s)")


if __name__ == "__main__":
    main()
