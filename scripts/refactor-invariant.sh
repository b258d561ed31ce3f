#!/usr/bin/env bash
# Runs the sample recipes with a given pretext binary into OUT, so two builds can be
# compared run for run: `scripts/refactor-invariant.sh BIN OUT`, then
# `python3 scripts/compare_runs.py OUT_A OUT_B`. A refactor must leave summaries (bar
# timings), metrics and checkpoints equal.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "$1")
out=$2
mkdir -p "$out"
recipes=(quickstart simmim-fashion-mnist-sample mlm-shakespeare-sample audio-mae-words-sample wav2vec2-words-sample)
for r in "${recipes[@]}"; do
    rm -rf "${out:?}/$r"
    echo "== $r"
    "$bin" run "recipes/$r.toml" --out "$out/$r" > "$out/$r.log" 2>&1 || { cat "$out/$r.log"; exit 1; }
done
