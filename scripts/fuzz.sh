#!/usr/bin/env bash
# Fuzzes every parser of untrusted input with cargo-fuzz (libFuzzer, AddressSanitizer) for a
# fixed budget each, starting from the seed corpus: tests/fuzz/seeds/<target>/ (hand-made
# seeds and regression cases, made by tests/fuzz/make_seeds.py) plus committed files of each
# kind (recipes, Hugging Face fixtures, audio clips). Fails on any crash, panic, timeout
# (10 s per input) or allocation over 1 GiB, leaving the input in $PRETEXT_FUZZ_OUT.
#
#   scripts/fuzz.sh [TARGET...]      targets: safetensors hf_config hf_model recipe idx wav tokenizer
#   PRETEXT_FUZZ_SECONDS=60          budget per target
#   PRETEXT_FUZZ_SEED=1              libFuzzer's seed (0: a random one each run); fixed by
#                                    default so that a CI run explores what the last one did
set -euo pipefail
cd "$(dirname "$0")/.."

budget=${PRETEXT_FUZZ_SECONDS:-60}
seed=${PRETEXT_FUZZ_SEED:-1}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(safetensors hf_config hf_model recipe idx wav tokenizer)
out=${PRETEXT_FUZZ_OUT:-$(mktemp -d -t pretext-fuzz.XXXXXX)}

if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null; then
    cargo install cargo-fuzz --locked --version 0.13.2
fi
# Outside the clone, so a later run on the same machine rebuilds only what changed.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pretext-fuzz/target}"
fuzz=(cargo +nightly fuzz)
"${fuzz[@]}" build --fuzz-dir tests/fuzz -O

seeds() {  # committed files of each target's kind, beside its own seeds
    case "$1" in
        safetensors) ls tests/fixtures/hf/bert_cls/model.safetensors tests/fixtures/hf/vit_model/model.safetensors ;;
        hf_config) ls tests/fixtures/hf/*/config.json ;;
        recipe) ls recipes/*.toml ;;
        wav) ls tests/fixtures/audio/clip_sphinx_8k.wav ;;
        tokenizer) ls tests/fixtures/hf/bert_model/tokenizer.json ;;
    esac
}

failed=()
for t in "${targets[@]}"; do
    corpus="$out/corpus/$t"
    mkdir -p "$corpus" "$out/crashes/$t"
    cp tests/fuzz/seeds/"$t"/* "$corpus"/ 2>/dev/null || true
    n=0
    for f in $(seeds "$t"); do n=$((n + 1)); cp "$f" "$corpus/committed-$n-$(basename "$f")"; done
    echo "== fuzz $t: ${budget} s from $(ls "$corpus" | wc -l) seeds"
    if ! "${fuzz[@]}" run --fuzz-dir tests/fuzz -O "$t" "$corpus" -- \
        -max_total_time="$budget" -seed="$seed" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
        -artifact_prefix="$out/crashes/$t/" -print_final_stats=1 2>"$out/$t.log"; then
        tail -40 "$out/$t.log"
        failed+=("$t")
    else
        grep -E "^stat::number_of_executed_units|^#[0-9]+ *DONE" "$out/$t.log" | tail -2
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzzing found crashes in: ${failed[*]}; the inputs are in $out/crashes/." >&2
    echo "Fix them, then add each input to tests/fuzz/seeds/<target>/ as regression-<what>." >&2
    exit 1
fi
echo "fuzzing: no crash in ${targets[*]} (${budget} s each)"
