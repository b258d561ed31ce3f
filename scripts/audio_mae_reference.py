#!/usr/bin/env python3
"""An independent PyTorch implementation of an exported pretext Audio-MAE encoder.

Follows docs/audio-mae-export.md only (no pretext code): loads `MODEL/config.json` and
`MODEL/model.safetensors`, computes `last_hidden_state` [B, 1 + L, D] (and the normalised
`spectrogram` [B, n_mels, frames]) for the `input_values` [B, S] of `--inputs` (waveforms at
the model's sample rate), and compares them with `pretext forward`'s `--outputs`:
max|a - e| / max|e| must be below `--tol` (default 1e-4), else exit status 1.

Needs torch, safetensors and torchaudio (only `transforms.MelSpectrogram`, pure Python: a
`pip install --no-deps --target DIR torchaudio` on PYTHONPATH is enough). Everything runs in
float64, so the measured error is pretext's own (it computes the spectrogram in f64 and the
transformer in f32).

    scripts/audio_mae_reference.py --model DIR --inputs X.safetensors --outputs Y.safetensors
"""

import argparse
import json
import math
import os
import sys

import torch
import torchaudio
from safetensors.torch import load_file

DT = torch.float64


def fit_length(x, n):
    """Centre crop to n samples (start = (len - n) // 2), or zero-pad at the end."""
    s = x.shape[-1]
    if s >= n:
        start = (s - n) // 2
        return x[..., start:start + n]
    return torch.nn.functional.pad(x, (0, n - s))


def log_mel(features, wave):
    """[B, S] waveforms at mel.sample_rate -> normalised log-mel [B, n_mels, frames]."""
    m = features["mel"]
    frames = features["frames"]
    clip_len = (frames - 1) * m["hop_length"] + (0 if m["center"] else m["n_fft"])
    window_fn = {"hann": torch.hann_window, "hamming": torch.hamming_window}[m["window"]]
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=m["sample_rate"],
        n_fft=m["n_fft"],
        win_length=m["win_length"],
        hop_length=m["hop_length"],
        f_min=m["f_min"],
        f_max=m["f_max"],
        pad=0,
        n_mels=m["n_mels"],
        window_fn=window_fn,
        power=m["power"],
        normalized=False,
        center=m["center"],
        pad_mode="reflect",
        norm="slaney" if m["slaney_norm"] else None,
        mel_scale=m["mel_scale"],
    ).to(DT)
    x = fit_length(wave.to(DT), clip_len)
    spec = torch.log(mel(x) + m["log_offset"])
    assert spec.shape[-1] == frames, (spec.shape, frames)
    return (spec - features["mean"]) / features["std"]


def held_frames(features, length):
    """Frames of a clip of `length` samples that hold it (the rest is padding)."""
    m = features["mel"]
    reach = length + (m["n_fft"] // 2 if m["center"] else 0)
    return min(max(-(-reach // m["hop_length"]), 1), features["frames"])


def token_mask(features, g, length):
    """[1 + L] bool: the class token, then each patch (time-major) that holds the clip."""
    gf, gt = g["n_mels"] // g["patch_freq"], g["frames"] // g["patch_time"]
    steps = -(-held_frames(features, length) // g["patch_time"])
    patches = (torch.arange(gt) < steps).repeat_interleave(gf)
    return torch.cat([torch.ones(1, dtype=torch.bool), patches])


def patchify(spec, g):
    """[B, n_mels, frames] -> [B, L, pf*pt]: time-major patches, each frequency-major."""
    b = spec.shape[0]
    gf, gt = g["n_mels"] // g["patch_freq"], g["frames"] // g["patch_time"]
    x = spec.reshape(b, gf, g["patch_freq"], gt, g["patch_time"])
    return x.permute(0, 3, 1, 2, 4).reshape(b, gt * gf, g["patch_freq"] * g["patch_time"])


def sincos_positions(dim, g):
    """[1 + L, dim]: zeros for the class token, then per patch (t, f) in time-major order
    [sin(f w), cos(f w), sin(t w), cos(t w)], w_i = 10000^(-i / (dim/4)), i < dim/4."""
    gf, gt = g["n_mels"] // g["patch_freq"], g["frames"] // g["patch_time"]
    q = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(q, dtype=DT) / q)
    t = torch.arange(gt, dtype=DT).repeat_interleave(gf)  # time index of patch t*gf + f
    f = torch.arange(gf, dtype=DT).repeat(gt)  # frequency index
    ft, tt = f[:, None] * omega, t[:, None] * omega
    pos = torch.cat([ft.sin(), ft.cos(), tt.sin(), tt.cos()], dim=1)
    return torch.cat([torch.zeros(1, dim, dtype=DT), pos])


def layer_norm(x, w, p, eps):
    return torch.nn.functional.layer_norm(x, (x.shape[-1],), w[p + ".weight"], w[p + ".bias"], eps)


def linear(x, w, p):
    return torch.nn.functional.linear(x, w[p + ".weight"], w.get(p + ".bias"))


def encoder(spec, w, cfg, g, keep):
    """`keep`: [1 + L] bool, the tokens attention may attend to."""
    dim, heads, eps = cfg["dim"], cfg["heads"], cfg["norm_eps"]
    assert cfg["norm"] == "pre", "the exported Audio-MAE encoder is pre-norm"
    act = {
        "gelu": lambda x: torch.nn.functional.gelu(x),
        "gelu-tanh": lambda x: torch.nn.functional.gelu(x, approximate="tanh"),
        "relu": torch.relu,
    }[cfg["activation"]]
    pos = sincos_positions(dim, g)
    stored = w["pos_embed"].reshape(-1, dim)
    assert (stored - pos).abs().max() < 1e-6, "pos_embed differs from the documented formula"
    x = linear(patchify(spec, g), w, "patch_embed") + pos[1:]
    cls = (w["cls_token"].reshape(1, 1, dim) + pos[:1]).expand(x.shape[0], 1, dim)
    x = torch.cat([cls, x], dim=1)
    b, t, _ = x.shape
    hd = dim // heads
    for i in range(cfg["depth"]):
        p = f"encoder.layers.{i}"
        h = layer_norm(x, w, p + ".norm1", eps)
        q, k, v = (
            linear(h, w, f"{p}.attn.{n}").reshape(b, t, heads, hd).transpose(1, 2)
            for n in "qkv"
        )
        bias = torch.where(keep, 0.0, torch.finfo(torch.float32).min).to(DT)
        probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + bias, dim=-1)
        ctx = (probs @ v).transpose(1, 2).reshape(b, t, dim)
        x = x + linear(ctx, w, p + ".attn.o")
        h = layer_norm(x, w, p + ".norm2", eps)
        x = x + linear(act(linear(h, w, p + ".mlp.fc1")), w, p + ".mlp.fc2")
    return layer_norm(x, w, "encoder.norm", eps)


def load(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    assert config["model_type"] == "pretext-audio-mae", config["model_type"]
    weights = {k: v.to(DT) for k, v in load_file(os.path.join(model_dir, "model.safetensors")).items()}
    return config, weights


def forward(config, weights, input_values):
    features, g = config["features"], config["geometry"]
    spec = log_mel(features, input_values)
    keep = token_mask(features, g, input_values.shape[-1])
    return encoder(spec, weights, config["encoder"], g, keep), spec


def max_rel(a, e):
    return ((a.to(DT) - e.to(DT)).abs().max() / e.to(DT).abs().max().clamp_min(1e-12)).item()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="exported directory")
    ap.add_argument("--inputs", required=True, help="safetensors with input_values [B, S]")
    ap.add_argument("--outputs", required=True, help="`pretext forward` outputs")
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()
    config, weights = load(args.model)
    x = load_file(args.inputs)["input_values"]
    hidden, spec = forward(config, weights, x)
    got = load_file(args.outputs)
    ok = True
    for name, ours in [("spectrogram", spec), ("last_hidden_state", hidden)]:
        theirs = got[name]
        if tuple(theirs.shape) != tuple(ours.shape):
            print(f"{name}: shape {tuple(theirs.shape)} from pretext, {tuple(ours.shape)} here")
            ok = False
            continue
        err = max_rel(theirs, ours)
        print(f"{args.model}: {name} {tuple(ours.shape)} max rel err {err:.3e}")
        ok &= err < args.tol
    if not ok:
        print(f"FAIL: error above {args.tol}")
        sys.exit(1)


if __name__ == "__main__":
    main()
