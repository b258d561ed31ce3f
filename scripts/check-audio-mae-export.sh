#!/usr/bin/env bash
# Audio-MAE export against an independent PyTorch implementation (part of scripts/check-hf.sh,
# CI tier 2): a tiny Audio-MAE run on data/words-sample (a few steps), `pretext export RUN
# --format hf`, `pretext forward` on the export with real clips as input_values (rows longer
# than the 0.95 s clip, centre-cropped; rows shorter, zero-padded), and
# scripts/audio_mae_reference.py (torch + torchaudio + safetensors, following
# docs/audio-mae-export.md) must compute the same spectrogram and last_hidden_state
# (max|a-e|/max|e| < 1e-4). `forward` on the run itself must equal `forward` on the export.
#
#   scripts/check-audio-mae-export.sh [PRETEXT_BINARY]     (default: target/release/pretext)
#
# torchaudio: an installed one, else the pure-Python one in $TORCHAUDIO_SITE (default
# ~/.cache/pretext/torchaudio-2.11.1, from `pip install --no-deps --target DIR torchaudio`).
set -euo pipefail
cd "$(dirname "$0")/.."
pretext="${1:-target/release/pretext}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
if ! python3 -c 'import torchaudio' 2>/dev/null; then
    export PYTHONPATH="${TORCHAUDIO_SITE:-$HOME/.cache/pretext/torchaudio-2.11.1}${PYTHONPATH:+:$PYTHONPATH}"
fi

"$pretext" run recipes/audio-mae-words-sample.toml --out "$out/run" \
    --set device=cpu --set train.steps=4 --set train.batch_size=16 \
    --set train.checkpoint_every=4 --set train.schedule.warmup_steps=1 --set train.log_every=1 \
    --set model.dim=32 --set model.depth=2 --set model.heads=4 --set model.mlp_dim=64 \
    --set objective.decoder.dim=16 --set objective.decoder.heads=2 --set 'downstream=[]' \
    > /dev/null
"$pretext" export "$out/run" --format hf --out "$out/export"

python3 - "$out" <<'PY'
import glob, sys, wave
import numpy as np, torch
from safetensors.torch import save_file

def clip(path):
    with wave.open(path) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2), path
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768

clips = [clip(p) for p in sorted(glob.glob("data/words-sample/test/*/*.wav"))]
# 1.5 s rows (longer than the 15200-sample clip: centre-cropped), clips end to end.
longer = [np.concatenate(clips[i:i + 6])[:24000] for i in (0, 6)]
assert all(len(x) == 24000 for x in longer)
# 0.5 s rows (shorter: zero-padded at the end).
shorter = [c[:8000] for c in clips if len(c) >= 8000][:3]
assert len(shorter) == 3
for name, rows in [("longer", longer), ("shorter", shorter)]:
    save_file({"input_values": torch.from_numpy(np.stack(rows))}, f"{sys.argv[1]}/{name}.safetensors")
PY

for case in longer shorter; do
    "$pretext" forward --model "$out/export" --inputs "$out/$case.safetensors" \
        --out "$out/$case.pretext.safetensors"
    "$pretext" forward --model "$out/run" --inputs "$out/$case.safetensors" \
        --out "$out/$case.run.safetensors"
    cmp "$out/$case.pretext.safetensors" "$out/$case.run.safetensors" \
        || { echo "forward on the run and on its export differ ($case)"; exit 1; }
    python3 scripts/audio_mae_reference.py --model "$out/export" \
        --inputs "$out/$case.safetensors" --outputs "$out/$case.pretext.safetensors"
done
echo "check-audio-mae-export: the export matches the PyTorch reference"
