#!/usr/bin/env bash
# Parity against live PyTorch: regenerate the fixtures with the installed torch into a
# temporary directory and run the Rust parity tests on them (the committed fixtures are
# checked by plain `cargo test`). Needs python3 with torch, numpy and safetensors.
#
#   scripts/check-parity.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
python3 tests/fixtures/make_fixtures.py --out "$out"
PRETEXT_FIXTURES="$out" cargo test --release --test parity
