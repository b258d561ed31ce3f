#!/usr/bin/env python3
"""Reference log-mel / mel power / Kaldi fbank features for tests/audio_features.rs.

Needs: python3 with torch and numpy; torchaudio's pure-Python code (this script puts
`--torchaudio-site` first on sys.path if given, so a `pip install --no-deps --target DIR
torchaudio` works even when no torchaudio build matches the installed torch: only
`transforms.MelSpectrogram`, `functional.melscale_fbanks` and `compliance.kaldi.fbank` are
used, none of which needs torchaudio's C++ extension); `espeak-ng` and the Debian package
`pocketsphinx-testdata` for the clips; `safetensors` (Python).

Writes into OUT_DIR:
  * `clip*.wav`: short 16-bit mono clips (espeak-ng speech resampled to 16 kHz, and excerpts
    of the real pocketsphinx recordings, one of them resampled to 8 kHz);
  * `mel_fixture.safetensors`: for each clip and config, `<clip>/<config>/{mel_power,log_mel}`
    ([n_mels, frames]) and `<clip>/<fbank config>/fbank` ([frames, bins]), float32, computed
    in float64 by torchaudio; the metadata key `fixture` holds JSON: the configs (in the
    field names of `MelConfig` / `FbankConfig`), the clips and which configs apply to each.

The mel reference is torchaudio run in float64 throughout (module built under
`torch.set_default_dtype(float64)`, so its filterbank and window are float64 too): it is exact
to ~1e-12 and measures our own error. torchaudio in its usual float32 differs from it by the
amounts printed (log-mel up to ~3e-4 in quiet bands). The fbank reference is
`kaldi.fbank` on a float64 waveform; torchaudio builds Kaldi's mel bins in float32 regardless,
and `fbank.rs` reproduces that rounding.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import wave

import numpy as np

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--out-dir", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "audio"))
ap.add_argument("--words", default="seven", help="espeak-ng text for the synthetic clip")
ap.add_argument("--voice", default="en+f3")
ap.add_argument("--sphinx16", default="cards/001.wav", help="pocketsphinx test file for the 16 kHz excerpt")
ap.add_argument("--sphinx8", default="librivox/sense_and_sensibility_01_austen_64kb-0870.wav",
                help="pocketsphinx test file for the excerpt resampled to 8 kHz")
ap.add_argument("--seed", type=int, default=0, help="picks the excerpt offsets")
ap.add_argument("--seconds", type=float, default=1.2)
ap.add_argument("--torchaudio-site", default=os.environ.get("TORCHAUDIO_SITE"))
args = ap.parse_args()

if args.torchaudio_site:
    sys.path.insert(0, args.torchaudio_site)
import torch  # noqa: E402
import torchaudio  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

SPHINX = "/usr/share/pocketsphinx/test/data"
os.makedirs(args.out_dir, exist_ok=True)
rng = random.Random(args.seed)


def read_i16(path):
    with wave.open(path, "rb") as w:
        assert w.getsampwidth() == 2, path
        ch, sr = w.getnchannels(), w.getframerate()
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64) / 32768.0
    return x.reshape(-1, ch).mean(axis=1), sr


def write_i16(path, x, sr):
    q = np.clip(np.round(np.asarray(x) * 32768.0), -32768, 32767).astype("<i2")
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(q.tobytes())
    return q.astype(np.float64) / 32768.0  # what read_wav gives back


def resample(x, sr, to):
    if sr == to:
        return x
    return torchaudio.functional.resample(torch.from_numpy(x), sr, to).numpy()


def excerpt(x, sr, seconds):
    n = int(seconds * sr)
    if len(x) <= n:
        return x
    # start somewhere in the middle half, where there is speech
    start = rng.randrange(len(x) // 4, max(len(x) // 4 + 1, min(len(x) - n, 3 * len(x) // 4)))
    return x[start:start + n]


clips = []  # (name, samples as read back, rate)
with tempfile.TemporaryDirectory() as tmp:
    raw = os.path.join(tmp, "speech.wav")
    subprocess.run(["espeak-ng", "-v", args.voice, "-w", raw, args.words], check=True)
    x, sr = read_i16(raw)
    x = resample(x, sr, 16000)
    x = 0.9 * x / max(1e-9, np.abs(x).max())
    clips.append(("clip_espeak_16k.wav", x, 16000))
x, sr = read_i16(os.path.join(SPHINX, args.sphinx16))
clips.append(("clip_sphinx_16k.wav", excerpt(resample(x, sr, 16000), 16000, args.seconds), 16000))
x, sr = read_i16(os.path.join(SPHINX, args.sphinx8))
clips.append(("clip_sphinx_8k.wav", excerpt(resample(x, sr, 8000), 8000, args.seconds), 8000))
clips = [(name, write_i16(os.path.join(args.out_dir, name), x, sr), sr) for name, x, sr in clips]

MEL = {
    "htk64": dict(sample_rate=16000, n_fft=400, win_length=None, hop_length=160, n_mels=64, f_min=0.0,
                  f_max=None, mel_scale="htk", slaney_norm=False, window="hann", center=True, power=2.0,
                  log_offset=1e-6),
    "slaney40": dict(sample_rate=16000, n_fft=512, win_length=400, hop_length=160, n_mels=40, f_min=50.0,
                     f_max=7600.0, mel_scale="slaney", slaney_norm=True, window="hamming", center=True,
                     power=2.0, log_offset=1e-6),
    "mag8k": dict(sample_rate=8000, n_fft=256, win_length=200, hop_length=80, n_mels=32, f_min=20.0,
                  f_max=None, mel_scale="htk", slaney_norm=False, window="hann", center=True, power=1.0,
                  log_offset=1e-4),
}
FBANK = {
    # AST / Audio-MAE: fbank(waveform * 32768, htk_compat=True, window_type='hanning', num_mel_bins=128)
    "ast128": dict(sample_rate=16000, num_mel_bins=128, frame_length_ms=25.0, frame_shift_ms=10.0,
                   window="hanning", preemphasis=0.97, remove_dc_offset=True, round_to_power_of_two=True,
                   low_freq=20.0, high_freq=0.0, use_log_fbank=True, use_power=True, waveform_scale=32768.0),
    # Kaldi's defaults (povey window, 23 bins), an offset high_freq, magnitude, no rounding
    "povey23": dict(sample_rate=16000, num_mel_bins=23, frame_length_ms=25.0, frame_shift_ms=10.0,
                    window="povey", preemphasis=0.97, remove_dc_offset=True, round_to_power_of_two=False,
                    low_freq=60.0, high_freq=-400.0, use_log_fbank=True, use_power=False,
                    waveform_scale=32768.0),
    "hamming8k": dict(sample_rate=8000, num_mel_bins=40, frame_length_ms=25.0, frame_shift_ms=10.0,
                      window="hamming", preemphasis=0.0, remove_dc_offset=False, round_to_power_of_two=True,
                      low_freq=0.0, high_freq=0.0, use_log_fbank=True, use_power=True, waveform_scale=1.0),
}


def mel_ref(x, c, dtype):
    # Built under the default dtype `dtype`, so that in float64 the filterbank (torch.linspace
    # inside melscale_fbanks) and the window are float64 too: `.to(float64)` alone would keep
    # the float32 rounding of the filter edges, which moves quiet bands by up to ~1e-4 in log.
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        t = torchaudio.transforms.MelSpectrogram(
            sample_rate=c["sample_rate"], n_fft=c["n_fft"], win_length=c["win_length"], hop_length=c["hop_length"],
            f_min=c["f_min"], f_max=c["f_max"], n_mels=c["n_mels"],
            window_fn={"hann": torch.hann_window, "hamming": torch.hamming_window}[c["window"]],
            power=c["power"], center=c["center"], pad_mode="reflect",
            norm="slaney" if c["slaney_norm"] else None, mel_scale=c["mel_scale"]).to(dtype)
    finally:
        torch.set_default_dtype(old)
    assert t.mel_scale.fb.dtype == dtype and t.spectrogram.window.dtype == dtype
    return t(torch.from_numpy(x).to(dtype)).to(torch.float64).numpy()


def fbank_ref(x, c, dtype):
    w = torch.from_numpy(x).to(dtype).unsqueeze(0) * c["waveform_scale"]
    return torchaudio.compliance.kaldi.fbank(
        w, num_mel_bins=c["num_mel_bins"], frame_length=c["frame_length_ms"], frame_shift=c["frame_shift_ms"],
        window_type={"hanning": "hanning", "hamming": "hamming", "povey": "povey"}[c["window"]],
        preemphasis_coefficient=c["preemphasis"], remove_dc_offset=c["remove_dc_offset"],
        round_to_power_of_two=c["round_to_power_of_two"], low_freq=c["low_freq"], high_freq=c["high_freq"],
        use_log_fbank=c["use_log_fbank"], use_power=c["use_power"], sample_frequency=c["sample_rate"],
        dither=0.0, snip_edges=True, htk_compat=False, use_energy=False).to(torch.float64).numpy()


tensors, meta_clips = {}, []
print(f"torch {torch.__version__}, torchaudio {torchaudio.__version__} (from {os.path.dirname(torchaudio.__file__)})")
for name, x, sr in clips:
    key = name[:-4]
    mels = [k for k, c in MEL.items() if c["sample_rate"] == sr]
    fbanks = [k for k, c in FBANK.items() if c["sample_rate"] == sr]
    for k in mels:
        c = MEL[k]
        p = mel_ref(x, c, torch.float64)
        p32 = mel_ref(x, c, torch.float32)
        tensors[f"{key}/{k}/mel_power"] = np.ascontiguousarray(p, dtype=np.float32)
        tensors[f"{key}/{k}/log_mel"] = np.ascontiguousarray(np.log(p + c["log_offset"]), dtype=np.float32)
        print(f"{key} {k}: mel {p.shape}; torchaudio float32 vs float64: rel {np.abs(p32 - p).max() / np.abs(p).max():.2e}, "
              f"log abs {np.abs(np.log(p32 + c['log_offset']) - np.log(p + c['log_offset'])).max():.2e}")
    for k in fbanks:
        f = fbank_ref(x, FBANK[k], torch.float64)
        f32 = fbank_ref(x, FBANK[k], torch.float32)
        tensors[f"{key}/{k}/fbank"] = np.ascontiguousarray(f, dtype=np.float32)
        print(f"{key} {k}: fbank {f.shape}; torchaudio float32 vs float64: abs {np.abs(f32 - f).max():.2e}")
    meta_clips.append(dict(name=key, wav=name, sample_rate=sr, samples=len(x), mel=mels, fbank=fbanks))

meta = dict(torch=torch.__version__, torchaudio=torchaudio.__version__, mel=MEL, fbank=FBANK, clips=meta_clips,
            args=dict(words=args.words, voice=args.voice, sphinx16=args.sphinx16, sphinx8=args.sphinx8,
                      seed=args.seed, seconds=args.seconds))
out = os.path.join(args.out_dir, "mel_fixture.safetensors")
save_file(tensors, out, metadata={"fixture": json.dumps(meta)})
print(f"wrote {out} ({os.path.getsize(out)} bytes)")
