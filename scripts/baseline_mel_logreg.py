#!/usr/bin/env python3
"""Logistic-regression baseline on log-mel statistics for the spoken-word set.

Usage:
    python3 scripts/baseline_mel_logreg.py [--dir data/words] [--C 0.1 1 10]
    python3 scripts/baseline_mel_logreg.py --dir data/words-sample     # the committed sample

Needs numpy and scikit-learn (scipy comes with it). Without root:
    python3 -m venv .venv && .venv/bin/pip install numpy scikit-learn
    .venv/bin/python scripts/baseline_mel_logreg.py
or `python3 -m pip install --user scikit-learn`.

Features (numpy only, no librosa): each 16 kHz clip is framed with n_fft 400 (25 ms), hop 160
(10 ms), periodic Hann window, no centring padding (a clip shorter than 400 samples is zero-padded
to one frame); power spectrum |rfft|^2; 40 triangular HTK-mel filters from 0 Hz to 8000 Hz (no
area normalisation); ln(mel + 1e-6). Per clip: the mean and the standard deviation over frames
of each band, 80 features. Features are standardised with the mean/std of the training subset.

Model: scikit-learn LogisticRegression (multinomial, lbfgs, max_iter 5000) for each C. Trained on
10% of the train clips (stratified per word, `numpy.random.default_rng(0)` permutation per word,
round(10% of that word's clips)) and on 100%, evaluated on all test clips (unseen voices).
Prints a table: C, fraction, n_train, test accuracy.
"""

import argparse
import csv
import os
import time
import warnings
import wave

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

SR, N_FFT, HOP, N_MELS = 16000, 400, 160, 40


def hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(sr=SR, n_fft=N_FFT, n_mels=N_MELS, fmin=0.0, fmax=None):
    fmax = sr / 2 if fmax is None else fmax
    freqs = np.arange(n_fft // 2 + 1) * sr / n_fft
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    fb = np.zeros((n_mels, len(freqs)))
    for i in range(n_mels):
        lo, mid, hi = edges[i], edges[i + 1], edges[i + 2]
        up = (freqs - lo) / (mid - lo)
        down = (hi - freqs) / (hi - mid)
        fb[i] = np.maximum(0.0, np.minimum(up, down))
    return fb


FB = mel_filterbank()
WINDOW = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic Hann


def read_wav(path):
    with wave.open(path) as w:
        if w.getframerate() != SR or w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16 kHz mono 16-bit")
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return x.astype(np.float64) / 32768.0


def log_mel(x):
    if len(x) < N_FFT:
        x = np.pad(x, (0, N_FFT - len(x)))
    n = 1 + (len(x) - N_FFT) // HOP
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n)[:, None]
    power = np.abs(np.fft.rfft(x[idx] * WINDOW, axis=1)) ** 2
    return np.log(power @ FB.T + 1e-6)  # (frames, 40)


def features(path):
    m = log_mel(read_wav(path))
    return np.concatenate([m.mean(axis=0), m.std(axis=0)])


def load(root):
    with open(os.path.join(root, "manifest.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    words = []
    for r in rows:
        if r["label"] not in words:
            words.append(r["label"])
    out = {}
    for split in ("train", "test"):
        sel = [r for r in rows if r["split"] == split]
        X = np.stack([features(os.path.join(root, r["path"])) for r in sel])
        y = np.array([words.index(r["label"]) for r in sel])
        out[split] = (X, y)
    return out, words


def stratified_subset(y, fraction, seed=0):
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(y):
        idx = np.nonzero(y == c)[0]
        k = max(1, int(round(fraction * len(idx))))
        keep.append(idx[rng.permutation(len(idx))[:k]])
    return np.sort(np.concatenate(keep))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default="data/words")
    ap.add_argument("--C", type=float, nargs="+", default=[0.1, 1.0, 10.0])
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.1, 1.0])
    args = ap.parse_args()

    t0 = time.time()
    data, words = load(args.dir)
    (Xtr, ytr), (Xte, yte) = data["train"], data["test"]
    print(f"{args.dir}: {len(ytr)} train / {len(yte)} test clips, {len(words)} words, "
          f"{Xtr.shape[1]} features ({time.time() - t0:.1f} s to extract)")
    print(f"{'C':>6} {'fraction':>8} {'n_train':>7} {'test acc':>8}")
    for C in args.C:
        for frac in args.fractions:
            sub = stratified_subset(ytr, frac) if frac < 1.0 else np.arange(len(ytr))
            mu, sd = Xtr[sub].mean(axis=0), Xtr[sub].std(axis=0) + 1e-8
            clf = LogisticRegression(C=C, max_iter=5000)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                clf.fit((Xtr[sub] - mu) / sd, ytr[sub])
            acc = (clf.predict((Xte - mu) / sd) == yte).mean()
            print(f"{C:>6g} {frac:>8.0%} {len(sub):>7d} {acc:>8.1%}")
    print(f"total {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
