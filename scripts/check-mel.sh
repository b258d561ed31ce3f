#!/usr/bin/env bash
# Audio feature parity against live torchaudio, on clips other than the committed ones:
# regenerates the mel / fbank reference (scripts/make_mel_fixture.py) into a temporary
# directory from different espeak-ng words and voice, other pocketsphinx recordings and other
# excerpt offsets, then runs `cargo test --test audio_features` on it via PRETEXT_MEL_FIXTURE
# (plain `cargo test` checks the committed fixture in tests/fixtures/audio/).
#
# Needs: python3 with torch, numpy and safetensors; pip (torchaudio's pure-Python code is
# installed with `pip install --no-deps --target` into a cache directory, since torchaudio
# releases may lag the installed torch; only its MelSpectrogram / melscale_fbanks /
# compliance.kaldi code runs, which needs no C++ extension); espeak-ng and
# pocketsphinx-testdata (Debian: `apt-get install -y espeak-ng pocketsphinx-testdata`, done
# here when apt-get is available and they are missing).
#
#   scripts/check-mel.sh [SEED]
#
# Environment: TORCHAUDIO_VERSION (default 2.11.1), PRETEXT_CACHE (default ~/.cache/pretext).
set -euo pipefail
cd "$(dirname "$0")/.."
seed="${1:-1}"
version="${TORCHAUDIO_VERSION:-2.11.1}"
cache="${PRETEXT_CACHE:-$HOME/.cache/pretext}/torchaudio-$version"

if ! command -v espeak-ng >/dev/null || [ ! -d /usr/share/pocketsphinx/test/data ]; then
    if command -v apt-get >/dev/null; then
        apt-get update -qq && apt-get install -y -qq espeak-ng pocketsphinx-testdata >/dev/null
    else
        echo "check-mel: needs espeak-ng and pocketsphinx-testdata" >&2
        exit 1
    fi
fi
if python3 -c 'import torchaudio' 2>/dev/null; then
    site=""
else
    if [ ! -d "$cache/torchaudio" ]; then
        python3 -m pip install -q --no-deps --target "$cache" "torchaudio==$version"
    fi
    site="$cache"
fi

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
voices=(en+m3 en-us+f2 en+f4 en-gb+m1)
words=("forty two" "zero" "nine" "the quick fox")
sphinx16=(cards/003.wav cards/005.wav librivox/sense_and_sensibility_01_austen_64kb-0890.wav)
sphinx8=(librivox/sense_and_sensibility_01_austen_64kb-0920.wav librivox/sense_and_sensibility_01_austen_64kb-0930.wav cards/002.wav)
python3 scripts/make_mel_fixture.py --out-dir "$out" --seed "$seed" \
    --voice "${voices[$((seed % 4))]}" --words "${words[$((seed % 4))]}" \
    --sphinx16 "${sphinx16[$((seed % 3))]}" --sphinx8 "${sphinx8[$((seed % 3))]}" \
    ${site:+--torchaudio-site "$site"}
PRETEXT_MEL_FIXTURE="$out" cargo test --test audio_features -- --nocapture mel_matches fbank_matches 2>&1 |
    grep -E 'fixture|rel |abs |test result|panicked|error'
