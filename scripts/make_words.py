#!/usr/bin/env python3
"""Synthesises a 20-word spoken-word classification set with espeak-ng.

Usage:
    python3 scripts/make_words.py --out data/words            # the full set (a few minutes)
    python3 scripts/make_words.py --out data/words-sample --sample   # the committed sample
    [--jobs N]  worker processes (default: all cores)

Needs python3, numpy and the `espeak-ng` binary (Debian package espeak-ng, 1.51 tested); nothing
else. `scripts/fetch-data.sh words` installs espeak-ng and runs this into data/words/.

Words (labels, in this order): zero one two three four five six seven eight nine yes no up down
left right on off stop go.

Voices: a voice is a base voice (an espeak-ng English accent, BASES) plus a variant (a timbre /
synthesiser setting, VARIANTS, each marked male or female), passed as `-v BASE+VARIANT`. The
MBROLA English voices that `espeak-ng --voices=en` lists are not used (they need the separate
mbrola binary and voice data).

Renderings: for every (voice, word) two distinct (speed, pitch) pairs are drawn from SPEEDS x
PITCHES with `random.Random(f"{SEED}/{voice}/{word}")` (SEED = 0), so the draw does not depend
on the order in which anything is processed.

Split, by variant: per gender, round(25%) of the variants are held out (shuffled with
random.Random(SEED), genders separately, so the test set has male and female variants). Every
voice built on a held-out variant (all bases) is a test voice, every other voice a train voice:
no test voice is heard in training, and no test timbre is heard with any accent. The split is
written to OUT/voices.json.

Audio: espeak-ng writes 22050 Hz 16-bit mono; each clip is resampled to 16000 Hz with a
band-limited FFT resampler (resample_fft below; the 22050 Hz clip starts and ends in silence, so
the periodic extension FFT resampling implies does no harm), trimmed of leading and trailing
silence (10 ms frames whose RMS is below max(peak frame RMS * 10^(-40/20), 30) are dropped
from both ends), given 30 ms of zero padding at each end, and cut to at most 1.0 s (clips stay
variable-length; see the `cut` count in the log). Peaks are left as espeak-ng wrote them.

Silence check: before synthesising, every voice says every word once at the default speed and
pitch (a probe); a voice with any probe clip shorter than 0.1 s after trimming, or with a peak
below 500 (of 32767), is dropped and reported (and listed under "excluded" in voices.json).

Layout:
    OUT/train/<word>/<base>+<variant>_s<speed>_p<pitch>.wav
    OUT/test/<word>/<base>+<variant>_s<speed>_p<pitch>.wav
    OUT/manifest.csv     header `path,label,split`, path relative to OUT, sorted by split
                         (train first), word order, then path
    OUT/voices.json      {"train": [...], "test": [...], "excluded": [...], settings...}

--sample writes the small committed subset: 4 train voices and 2 test voices (one male, one
female variant), one speed (175) and one pitch (50), all 20 words: 120 clips.
"""

import argparse
import concurrent.futures
import csv
import io
import json
import os
import random
import shutil
import subprocess
import sys
import time
import wave

import numpy as np

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
         "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]

# espeak-ng 1.51 English voices (gmw/*); `en` is British English (gmw/en).
BASES = ["en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
         "en-029", "en-us-nyc"]

# espeak-ng variant file names (voices/!v/*) with the gender espeak-ng gives them.
VARIANTS = {
    "m1": "M", "m2": "M", "m3": "M", "m4": "M", "m5": "M", "m6": "M", "m7": "M", "m8": "M",
    "klatt": "M", "klatt2": "M", "klatt3": "M", "klatt4": "M", "croak": "M", "whisper": "M",
    "grandpa": "M",
    "f1": "F", "f2": "F", "f3": "F", "f4": "F", "f5": "F", "whisperf": "F", "grandma": "F",
    "Alicia": "F", "Andrea": "F", "Annie": "F", "aunty": "F", "belinda": "F", "linda": "F",
    "steph": "F", "anika": "F",
}

SPEEDS = [130, 160, 190]   # words per minute (espeak-ng default 175)
PITCHES = [30, 50, 70]     # 0..99 (espeak-ng default 50)
RENDERINGS = 2             # (speed, pitch) pairs per (voice, word)
TEST_FRACTION = 0.25
SEED = 0

SAMPLE_SPEED, SAMPLE_PITCH = 175, 50
SAMPLE_TRAIN_VOICES, SAMPLE_TEST_VOICES = 4, 2

SR_IN, SR_OUT = 22050, 16000
MAX_SECONDS = 1.0
PAD_SECONDS = 0.03
FRAME = 160                # 10 ms at 16 kHz
TRIM_DB = 40.0
TRIM_FLOOR = 30.0          # absolute RMS floor (int16 units) for a frame to count as sound
MIN_SECONDS = 0.1          # probe: a clip shorter than this after trimming counts as silence
MIN_PEAK = 500


def synth(voice, word, speed, pitch):
    """Runs espeak-ng and returns its 22050 Hz int16 samples."""
    out = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", word],
        check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with wave.open(io.BytesIO(out.stdout)) as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise RuntimeError(f"{voice}: unexpected WAV format")
        if w.getframerate() != SR_IN:
            raise RuntimeError(f"{voice}: sample rate {w.getframerate()}, expected {SR_IN}")
        # espeak-ng --stdout writes a streaming header (length 0x7fffffff); read what is there.
        data = out.stdout[44:]
    return np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").astype(np.float64)


def resample_fft(x, sr_in, sr_out):
    """Band-limited resampling by zero-padding/truncating the spectrum (like scipy.signal.resample).

    The input is zero-padded to a multiple of sr_in / gcd so that the output length is exact; the
    output keeps round(len(x) * sr_out / sr_in) samples.
    """
    g = np.gcd(sr_in, sr_out)
    up, down = sr_out // g, sr_in // g
    n = len(x)
    n_pad = -(-n // down) * down
    xp = np.zeros(n_pad)
    xp[:n] = x
    m = n_pad * up // down
    spec = np.fft.rfft(xp)
    k = m // 2 + 1
    out_spec = np.zeros(k, dtype=complex)
    keep = min(k, len(spec))
    out_spec[:keep] = spec[:keep]
    if m % 2 == 0 and keep == k:
        # the output's Nyquist bin stands for both +fs/2 and -fs/2 of the input: keep its real
        # part only (halving it as scipy does when the input is longer than the output).
        out_spec[k - 1] = out_spec[k - 1].real * (0.5 if m < n_pad else 1.0)
    y = np.fft.irfft(out_spec, m) * (m / n_pad)
    return y[: int(round(n * up / down))]


def trim(y):
    """Drops leading/trailing 10 ms frames below the energy threshold; returns the kept span."""
    n_frames = len(y) // FRAME
    if n_frames == 0:
        return y[:0]
    frames = y[: n_frames * FRAME].reshape(n_frames, FRAME)
    rms = np.sqrt((frames ** 2).mean(axis=1))
    thresh = max(rms.max() * 10 ** (-TRIM_DB / 20), TRIM_FLOOR)
    loud = np.nonzero(rms >= thresh)[0]
    if len(loud) == 0:
        return y[:0]
    return y[loud[0] * FRAME: (loud[-1] + 1) * FRAME]


def render(voice, word, speed, pitch):
    """Returns (int16 clip at 16 kHz, trimmed length in samples before padding/cutting, cut?)."""
    x = synth(voice, word, speed, pitch)
    y = trim(resample_fft(x, SR_IN, SR_OUT))
    core = len(y)
    pad = np.zeros(int(PAD_SECONDS * SR_OUT))
    y = np.concatenate([pad, y, pad])
    max_len = int(MAX_SECONDS * SR_OUT)
    cut = len(y) > max_len
    if cut:
        # keep the middle second: the padding goes first, then speech from both ends equally
        start = (len(y) - max_len) // 2
        y = y[start: start + max_len]
    clip = np.clip(np.round(y), -32768, 32767).astype("<i2")
    return clip, core, cut


def write_wav(path, clip):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR_OUT)
        w.writeframes(clip.tobytes())


def probe(voice):
    """Returns None if the voice says every word audibly at default settings, else a reason."""
    for word in WORDS:
        try:
            clip, core, _ = render(voice, word, 175, 50)
        except Exception as e:  # noqa: BLE001 - report any failure of espeak-ng
            return f"{word}: {e}"
        if core < MIN_SECONDS * SR_OUT:
            return f"{word}: {core / SR_OUT:.3f} s of sound after trimming"
        if np.abs(clip.astype(np.int32)).max() < MIN_PEAK:
            return f"{word}: peak {np.abs(clip.astype(np.int32)).max()}"
    return None


def job(args):
    out, rel, voice, word, speed, pitch = args
    clip, core, cut = render(voice, word, speed, pitch)
    write_wav(os.path.join(out, rel), clip)
    return rel, len(clip), core, cut


def split_variants():
    rng = random.Random(SEED)
    test = []
    for gender in ("M", "F"):
        names = sorted(v for v, g in VARIANTS.items() if g == gender)
        rng.shuffle(names)
        test += names[: max(1, round(TEST_FRACTION * len(names)))]
    return [v for v in VARIANTS if v not in test], [v for v in VARIANTS if v in test]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--sample", action="store_true", help="write the small committed subset")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    if shutil.which("espeak-ng") is None:
        sys.exit("make_words: espeak-ng not found (apt-get install espeak-ng)")
    t0 = time.time()

    train_vars, test_vars = split_variants()
    train_voices = [f"{b}+{v}" for v in train_vars for b in BASES]
    test_voices = [f"{b}+{v}" for v in test_vars for b in BASES]
    if args.sample:
        rng = random.Random(SEED)
        train_voices = sorted(rng.sample(train_voices, SAMPLE_TRAIN_VOICES))
        m = [v for v in test_voices if VARIANTS[v.split("+")[1]] == "M"]
        f = [v for v in test_voices if VARIANTS[v.split("+")[1]] == "F"]
        test_voices = sorted([rng.choice(m), rng.choice(f)])

    with concurrent.futures.ProcessPoolExecutor(args.jobs) as pool:
        voices = train_voices + test_voices
        reasons = dict(zip(voices, pool.map(probe, voices)))
        excluded = {v: r for v, r in reasons.items() if r is not None}
        for v, r in excluded.items():
            print(f"make_words: excluding {v} (silent or failed probe: {r})", file=sys.stderr)
        train_voices = [v for v in train_voices if v not in excluded]
        test_voices = [v for v in test_voices if v not in excluded]

        tasks = []
        for split, vs in (("train", train_voices), ("test", test_voices)):
            for voice in vs:
                for word in WORDS:
                    if args.sample:
                        pairs = [(SAMPLE_SPEED, SAMPLE_PITCH)]
                    else:
                        grid = [(s, p) for s in SPEEDS for p in PITCHES]
                        pairs = sorted(random.Random(f"{SEED}/{voice}/{word}").sample(grid, RENDERINGS))
                    for s, p in pairs:
                        rel = f"{split}/{word}/{voice}_s{s}_p{p}.wav"
                        tasks.append((split, word, (args.out, rel, voice, word, s, p)))

        if os.path.isdir(args.out):
            for split in ("train", "test"):
                shutil.rmtree(os.path.join(args.out, split), ignore_errors=True)
        os.makedirs(args.out, exist_ok=True)
        results = list(pool.map(job, [t[2] for t in tasks], chunksize=16))

    rows = [(rel, word, split) for (split, word, _), (rel, *_rest) in zip(tasks, results)]
    order = {w: i for i, w in enumerate(WORDS)}
    rows.sort(key=lambda r: (r[2] != "train", order[r[1]], r[0]))
    with open(os.path.join(args.out, "manifest.csv"), "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["path", "label", "split"])
        w.writerows(rows)
    info = {
        "words": WORDS,
        "bases": BASES,
        "variants": VARIANTS,
        "speeds": [SAMPLE_SPEED] if args.sample else SPEEDS,
        "pitches": [SAMPLE_PITCH] if args.sample else PITCHES,
        "renderings_per_voice_word": 1 if args.sample else RENDERINGS,
        "sample_rate": SR_OUT,
        "seed": SEED,
        "train_variants": sorted({v.split("+")[1] for v in train_voices}),
        "test_variants": sorted({v.split("+")[1] for v in test_voices}),
        "train": train_voices,
        "test": test_voices,
        "excluded": excluded,
    }
    with open(os.path.join(args.out, "voices.json"), "w") as f:
        json.dump(info, f, indent=1)
        f.write("\n")

    lens = np.array([r[1] for r in results]) / SR_OUT
    n_cut = sum(r[3] for r in results)
    counts = {s: sum(1 for r in rows if r[2] == s) for s in ("train", "test")}
    print(f"make_words: {counts['train']} train clips ({len(train_voices)} voices), "
          f"{counts['test']} test clips ({len(test_voices)} voices), "
          f"{len(excluded)} voices excluded; clip length mean {lens.mean():.3f} s, "
          f"min {lens.min():.3f} s, max {lens.max():.3f} s, {n_cut} cut to {MAX_SECONDS} s; "
          f"{time.time() - t0:.1f} s -> {args.out}")


if __name__ == "__main__":
    main()
