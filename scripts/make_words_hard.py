#!/usr/bin/env python3
"""Synthesises a harder spoken-word set with espeak-ng: the 20 words of make_words.py, said by
about 800 voices, each at a random position, level, speed and pitch inside a fixed 1.0 s clip.

Usage:
    python3 scripts/make_words_hard.py --out data/words-hard --val-out data/words-hard-val
    python3 scripts/make_words_hard.py --out data/words-hard-sample --sample   # the committed sample
    [--jobs N]  worker processes (default: all cores)

Needs what make_words.py needs (python3, numpy, the `espeak-ng` binary, 1.51 tested) and imports
its synthesis, resampling and trimming; `scripts/fetch-data.sh words-hard` runs this into
data/words-hard/ and data/words-hard-val/.

Voices: a voice is one of make_words.BASES (8 English accents) plus one of VARIANTS (98 espeak-ng
1.51 variants: the 30 of make_words.py and 68 more), `-v BASE+VARIANT`: 784 voices. Three
variants espeak-ng lists are left out because they render exactly like another: fast (like no
variant), klatt6 and caleb (like klatt). A probe also drops, per base, any voice whose audio
equals the bare base voice's (a variant file missing from another espeak-ng build is ignored
silently) or an earlier voice's, and any voice make_words.probe finds silent.

Split, by family of variants (FAMILIES: variants whose files differ in a few settings, such as
Gene / Gene2, which differ only in pitch, are one family; other variants are their own family),
so no test voice, and no test timbre or a near copy of it, is heard in training, with any accent.
Families holding a training variant of make_words.py are pinned to train, those holding one of
its test variants to test, so the two sets can be combined either way without a test voice in
training. The other families are shuffled (random.Random(SEED), genders separately) and taken
into test while they fit, until round(TEST_FRACTION * variants of that gender) are test variants
(the pinned ones count). With espeak-ng 1.51: 77 train and 21 test variants, 616 and 168 voices.

Validation split (--val-out DIR): the same rule, applied to the training variants only (seed
f"{SEED}/val", VAL_FRACTION, no pinning), splits the training voices into val-train and
val-test; DIR/manifest.csv lists the training clips with split `train` or `test` and paths
relative to DIR (into OUT/train/), so a recipe or baseline points at DIR instead of OUT to
choose settings without the test voices. DIR holds no audio.

Clips: one per (voice, word), all drawn from random.Random(f"{SEED}/{voice}/{word}") (so the
draw does not depend on processing order, and the sample's clips equal the full set's): speed
uniform in SPEED_RANGE (words per minute), pitch uniform in PITCH_RANGE (espeak-ng 0..99), peak
level uniform in LEVEL_DB_RANGE (dB full scale, 0.1 dB steps), and a position. The 22050 Hz
output is resampled to 16 kHz and trimmed as make_words.py does, scaled so that its peak is the
drawn level (no clipping), and placed at a uniform offset within a 1.0 s (16000-sample) clip of
zeros, the whole word inside it. A word longer than 1.0 s at the drawn speed (with espeak-ng
1.51, 4 clips of the slow variant Marco near the low end of SPEED_RANGE) is said SPEED_STEP wpm
faster until it fits, never cut; the manifest's `speed` is the speed used.

Layout:
    OUT/train/<word>/<base>+<variant>.wav         16 kHz mono 16-bit, exactly 16000 samples
                                                  (a space in a variant name written as _)
    OUT/test/<word>/<base>+<variant>.wav
    OUT/manifest.csv   `path,label,split,voice,speed,pitch,level_db,offset,length` (offset and
                       length of the word in samples), sorted by split (train first), word
                       order, then path
    OUT/voices.json    {"train": [...], "test": [...], "excluded": {...}, settings...}
    DIR/manifest.csv, DIR/voices.json   the validation split (same columns, paths into OUT)

--sample writes the small committed subset: 2 train voices (one male, one female variant) and
1 test voice, all 20 words: 60 clips, identical to the full set's clips of those voices.
"""

import argparse
import concurrent.futures
import csv
import hashlib
import json
import os
import random
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_words  # noqa: E402  (synthesis, resampling, trimming, words, bases, easy split)
from make_words import BASES, SEED, SR_OUT, WORDS  # noqa: E402

# make_words.py's 30 variants plus 68 more of espeak-ng 1.51's voices/!v (gender as espeak-ng
# lists it); "Mr serious" is the variant's file name, space included.
VARIANTS = dict(make_words.VARIANTS)
VARIANTS.update({v: "M" for v in (
    "adam Alex Andy announcer antonio AnxiousAndy benjamin boris david Demonic Denis Diogo ed "
    "edward edward2 Gene Gene2 gustave Henrique Hugo iven iven2 iven3 iven4 Jacky john "
    "kaukovalta klatt5 Lee marcelo Marco Mario max Michael michel miguel Mike Nguyen norbert "
    "pablo paul pedro quincy RicishayMax RicishayMax2 RicishayMax3 rob robert robosoft robosoft2 "
    "robosoft3 robosoft4 robosoft5 robosoft6 robosoft7 robosoft8 sandro shelby Storm travis "
    "Tweaky UniRobot victor zac").split()})
VARIANTS["Mr serious"] = "M"
VARIANTS.update({v: "F" for v in ("anikaRobot", "steph2", "steph3")})

# Variants that are numbered copies of one another, or whose files share at least 70% of their
# non-name lines (joined transitively); each family is split as one. m1-m8, f1-f5 and the
# klatt modes stay separate variants, as in make_words.py.
FAMILIES = [
    ["steph", "steph2", "steph3"],
    ["anika", "anikaRobot"],
    ["iven", "iven2", "iven3", "iven4"],
    ["Gene", "Gene2"],
    ["edward", "edward2"],
    ["Andy", "AnxiousAndy"],
    ["Diogo", "Henrique", "Hugo", "michel", "miguel"],
    ["john", "Mr serious", "norbert", "Tweaky"],
    ["m8", "max", "RicishayMax", "RicishayMax2", "RicishayMax3", "robosoft", "robosoft2",
     "robosoft3", "robosoft4", "robosoft5", "robosoft6", "robosoft7", "robosoft8"],
]

SPEED_RANGE = (130, 230)       # words per minute, inclusive (espeak-ng default 175)
SPEED_STEP, MAX_SPEED = 10, 400  # a word longer than a clip is said SPEED_STEP wpm faster
PITCH_RANGE = (20, 80)         # inclusive, of 0..99 (default 50)
LEVEL_DB_RANGE = (-30.0, 0.0)  # peak, dB full scale (32767)
TEST_FRACTION = 0.2
VAL_FRACTION = 0.2
N = int(make_words.MAX_SECONDS * SR_OUT)   # 16000 samples per clip
PROBE_WORD = "seven"
SAMPLE_TRAIN_VOICES, SAMPLE_TEST_VOICES = 2, 1


def family_of():
    fam = {v: v for v in VARIANTS}
    for group in FAMILIES:
        for v in group:
            fam[v] = group[0]
    return fam


def split_families(variants, fraction, rng, pinned_train=(), pinned_test=()):
    """Splits `variants` (names) into (train, test) by family, genders separately: families
    holding a pinned variant go where it is pinned, the others are shuffled and taken into
    test while they fit under round(fraction * that gender's variants)."""
    fam = family_of()
    test = set()
    for gender in ("M", "F"):
        names = [v for v in variants if VARIANTS[v] == gender]
        families = {}
        for v in names:
            families.setdefault(fam[v], []).append(v)
        target = round(fraction * len(names))
        free = []
        for f, members in sorted(families.items()):
            if any(v in pinned_test for v in members):
                test.update(members)
            elif not any(v in pinned_train for v in members):
                free.append(f)
        rng.shuffle(free)
        for f in free:
            n_test = sum(1 for v in names if v in test)
            if n_test + len(families[f]) <= target:
                test.update(families[f])
    return [v for v in variants if v not in test], [v for v in variants if v in test]


def voice_file(voice):
    return voice.replace(" ", "_")


def draw(voice, word):
    """The clip's settings: (speed, pitch, level_db, u), u in [0, 1) placing the word."""
    rng = random.Random(f"{SEED}/{voice}/{word}")
    speed = rng.randint(*SPEED_RANGE)
    pitch = rng.randint(*PITCH_RANGE)
    level_db = round(rng.uniform(*LEVEL_DB_RANGE), 1) + 0.0  # + 0.0: never "-0.0"
    return speed, pitch, level_db, rng.random()


def make_clip(voice, word, speed, pitch, level_db, u):
    """Returns (int16 clip of N samples, speed used, offset, length of the word)."""
    while True:
        x = make_words.synth(voice, word, speed, pitch)
        y = make_words.trim(make_words.resample_fft(x, make_words.SR_IN, SR_OUT))
        if len(y) == 0:
            raise RuntimeError(f"{voice} {word} s{speed} p{pitch}: silent")
        if len(y) <= N:
            break
        if speed >= MAX_SPEED:
            raise RuntimeError(f"{voice} {word} p{pitch}: longer than {N} samples at {speed} wpm")
        speed += SPEED_STEP  # too long for the clip: say it faster rather than cut it
    y = y * (32767 * 10 ** (level_db / 20) / np.abs(y).max())
    offset = min(int(u * (N - len(y) + 1)), N - len(y))
    clip = np.zeros(N)
    clip[offset: offset + len(y)] = y
    return np.clip(np.round(clip), -32768, 32767).astype("<i2"), speed, offset, len(y)


def probe(voice):
    """Returns (reason or None, digest of PROBE_WORD at the default speed and pitch)."""
    reason = make_words.probe(voice)
    try:
        x = make_words.synth(voice, PROBE_WORD, 175, 50)
    except Exception as e:  # noqa: BLE001 - report any failure of espeak-ng
        return reason or f"{PROBE_WORD}: {e}", None
    return reason, hashlib.sha256(x.tobytes()).hexdigest()


def job(args):
    out, rel, voice, word, settings = args
    clip, speed, offset, length = make_clip(voice, word, *settings)
    make_words.write_wav(os.path.join(out, rel), clip)
    return speed, offset, length


def write_manifest(path, rows):
    order = {w: i for i, w in enumerate(WORDS)}
    rows = sorted(rows, key=lambda r: (r[2] != "train", order[r[1]], r[0]))
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["path", "label", "split", "voice", "speed", "pitch", "level_db", "offset",
                    "length"])
        w.writerows(rows)


def write_json(path, info):
    with open(path, "w") as f:
        json.dump(info, f, indent=1)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--val-out", help="also write the validation split of the training voices")
    ap.add_argument("--sample", action="store_true", help="write the small committed subset")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    if shutil.which("espeak-ng") is None:
        sys.exit("make_words_hard: espeak-ng not found (apt-get install espeak-ng)")
    if args.sample and args.val_out:
        sys.exit("make_words_hard: --val-out is for the full set, not --sample")
    t0 = time.time()

    easy_train, easy_test = make_words.split_variants()
    variants = list(VARIANTS)
    train_vars, test_vars = split_families(variants, TEST_FRACTION, random.Random(SEED),
                                           easy_train, easy_test)
    train_voices = [f"{b}+{v}" for v in train_vars for b in BASES]
    test_voices = [f"{b}+{v}" for v in test_vars for b in BASES]
    if args.sample:
        rng = random.Random(SEED)
        gender = lambda v: VARIANTS[v.split("+", 1)[1]]  # noqa: E731
        train_voices = sorted([rng.choice([v for v in train_voices if gender(v) == "M"]),
                               rng.choice([v for v in train_voices if gender(v) == "F"])])
        test_voices = sorted(rng.sample(test_voices, SAMPLE_TEST_VOICES))

    with concurrent.futures.ProcessPoolExecutor(args.jobs) as pool:
        voices = train_voices + test_voices
        bare = sorted({v.split("+", 1)[0] for v in voices})
        probes = dict(zip(bare + voices, pool.map(probe, bare + voices)))
        excluded, seen = {}, {}
        for b in bare:
            seen[(b, probes[b][1])] = f"the bare voice {b}"
        for v in variants:  # VARIANTS order decides which of two equal voices stays
            for b in BASES:
                voice = f"{b}+{v}"
                if voice not in probes:
                    continue
                reason, digest = probes[voice]
                if reason is None and (b, digest) in seen:
                    reason = f"{PROBE_WORD} renders exactly like {seen[(b, digest)]}"
                if reason is None:
                    seen[(b, digest)] = voice
                else:
                    excluded[voice] = reason
                    print(f"make_words_hard: excluding {voice} ({reason})", file=sys.stderr)
        train_voices = [v for v in train_voices if v not in excluded]
        test_voices = [v for v in test_voices if v not in excluded]

        tasks = []
        for split, vs in (("train", train_voices), ("test", test_voices)):
            for voice in vs:
                for word in WORDS:
                    rel = f"{split}/{word}/{voice_file(voice)}.wav"
                    tasks.append((split, word, voice, (args.out, rel, voice, word,
                                                       draw(voice, word))))
        if os.path.isdir(args.out):
            for split in ("train", "test"):
                shutil.rmtree(os.path.join(args.out, split), ignore_errors=True)
        os.makedirs(args.out, exist_ok=True)
        results = list(pool.map(job, [t[3] for t in tasks], chunksize=16))

    rows = []
    for (split, word, voice, (_, rel, _, _, (_, pitch, level_db, _))), (speed, offset, length) \
            in zip(tasks, results):
        rows.append((rel, word, split, voice, speed, pitch, level_db, offset, length))
    write_manifest(os.path.join(args.out, "manifest.csv"), rows)
    settings = {
        "words": WORDS,
        "bases": BASES,
        "variants": VARIANTS,
        "families": FAMILIES,
        "speed_range": SPEED_RANGE,
        "pitch_range": PITCH_RANGE,
        "level_db_range": LEVEL_DB_RANGE,
        "clip_samples": N,
        "sample_rate": SR_OUT,
        "seed": SEED,
    }
    write_json(os.path.join(args.out, "voices.json"), {
        **settings,
        "test_fraction": TEST_FRACTION,
        "pinned_train_variants": easy_train,
        "pinned_test_variants": easy_test,
        "train_variants": sorted({v.split("+", 1)[1] for v in train_voices}),
        "test_variants": sorted({v.split("+", 1)[1] for v in test_voices}),
        "train": train_voices,
        "test": test_voices,
        "excluded": excluded,
    })

    if args.val_out:
        kept = [v for v in train_vars if any(f"{b}+{v}" in train_voices for b in BASES)]
        fit_vars, val_vars = split_families(kept, VAL_FRACTION, random.Random(f"{SEED}/val"))
        val_set = set(val_vars)
        os.makedirs(args.val_out, exist_ok=True)
        rel_out = os.path.relpath(args.out, args.val_out)
        val_rows = [(os.path.join(rel_out, r[0]).replace(os.sep, "/"), r[1],
                     "test" if r[3].split("+", 1)[1] in val_set else "train", *r[3:])
                    for r in rows if r[2] == "train"]
        write_manifest(os.path.join(args.val_out, "manifest.csv"), val_rows)
        write_json(os.path.join(args.val_out, "voices.json"), {
            **settings,
            "source": rel_out,
            "val_fraction": VAL_FRACTION,
            "train_variants": sorted(fit_vars),
            "test_variants": sorted(val_vars),
            "train": [v for v in train_voices if v.split("+", 1)[1] not in val_set],
            "test": [v for v in train_voices if v.split("+", 1)[1] in val_set],
        })

    lengths = np.array([r[2] for r in results]) / SR_OUT
    n_faster = sum(r[0] != t[3][4][0] for r, t in zip(results, tasks))
    counts = {s: sum(1 for r in rows if r[2] == s) for s in ("train", "test")}
    print(f"make_words_hard: {counts['train']} train clips ({len(train_voices)} voices), "
          f"{counts['test']} test clips ({len(test_voices)} voices), {len(excluded)} voices "
          f"excluded; word length mean {lengths.mean():.3f} s, min {lengths.min():.3f} s, "
          f"max {lengths.max():.3f} s, {n_faster} said faster to fit {N / SR_OUT} s; "
          f"{time.time() - t0:.1f} s -> {args.out}")
    if args.val_out:
        n_val = sum(1 for r in val_rows if r[2] == "test")
        print(f"make_words_hard: validation split {len(val_rows) - n_val} train / {n_val} test "
              f"clips ({len(val_vars)} of {len(kept)} training variants held out) -> "
              f"{args.val_out}")


if __name__ == "__main__":
    main()
