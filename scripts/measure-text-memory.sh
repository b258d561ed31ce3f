#!/usr/bin/env bash
# Peak memory (RSS) and time to the first training step of a text pretraining run, on the
# Shakespeare corpus at 1x and 100x its size (issue 15: memory flat in the corpus size).
#
#   scripts/fetch-data.sh shakespeare
#   cargo build --release
#   scripts/measure-text-memory.sh [FACTOR...]          (default: 1 100)
#
# For each factor, the training plays are copied FACTOR times into $WORK/corpus-FACTORx/
# (never into the repository), and recipes/mlm-shakespeare.toml is copied with its training
# path pointed there, 3 steps, a metrics line every step and no downstream heads. The run is
# started twice: `cold` (a new token cache is built) and `warm` (the cache is reused; a binary
# without the cache tokenises again). Each run is timed by `/usr/bin/time -v`; "first step" is
# the time from its start to the first line of RUN/metrics.jsonl (step 1).
#
# Environment: BIN (default target/release/pretext), WORK (default pretext-text-memory in the
# temporary folder; its runs/, cache/ and recipes are replaced, its corpus copies reused),
# TIMEOUT (seconds a run may take, default 1800), MEM_LIMIT_KB (a `ulimit -v` for the runs; default none),
# RUNS (default "cold warm"). The token cache goes to $WORK/cache (PRETEXT_CACHE_DIR).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${BIN:-$ROOT/target/release/pretext}"
WORK="${WORK:-$(dirname "$(mktemp -u)")/pretext-text-memory}"
TIMEOUT="${TIMEOUT:-1800}"
RUNS="${RUNS:-cold warm}"
FACTORS=("$@")
[ "${#FACTORS[@]}" -gt 0 ] || FACTORS=(1 100)

die() { printf 'measure-text-memory: error: %s\n' "$*" >&2; exit 1; }

TRAIN="$ROOT/data/shakespeare/train"
TEST="$ROOT/data/shakespeare/test"
[ -d "$TRAIN" ] && [ -d "$TEST" ] || die "$TRAIN is missing: run scripts/fetch-data.sh shakespeare"
[ -x "$BIN" ] || die "$BIN is not built: run cargo build --release (or set BIN)"
case "$WORK" in "$ROOT"|"$ROOT"/*) die "WORK=$WORK is inside the repository; choose a folder outside it";; esac
if [ ! -x /usr/bin/time ]; then
    command -v apt-get >/dev/null || die "/usr/bin/time is missing; install GNU time"
    if [ "$(id -u)" -eq 0 ]; then apt-get install -y --no-install-recommends time; else sudo apt-get install -y --no-install-recommends time; fi
fi

mkdir -p "$WORK"
rm -rf "$WORK/runs" "$WORK/cache"
export PRETEXT_CACHE_DIR="$WORK/cache"

# corpus FACTOR : $WORK/corpus-FACTORx/ holding FACTOR copies of every training play.
corpus() {
    local f="$1" dir="$WORK/corpus-$1x" i p
    if [ ! -f "$dir/.complete" ]; then
        rm -rf "$dir"
        mkdir -p "$dir"
        for i in $(seq -w 1 "$f"); do
            for p in "$TRAIN"/*.txt; do
                cp -L "$p" "$dir/copy$i-$(basename "$p")"
            done
        done
        touch "$dir/.complete"
    fi
    printf '%s\n' "$dir"
}

# recipe FACTOR : a copy of recipes/mlm-shakespeare.toml reading that corpus, 3 steps.
recipe() {
    local f="$1" out="$WORK/mlm-shakespeare-$1x.toml"
    sed -e '/^\[\[downstream\]\]/,$d' \
        -e '/^labelled = /d' \
        -e "s|^name = .*|name = \"mlm-shakespeare-$f\"|" \
        -e "s|data/shakespeare/train|$(corpus "$f")|" \
        -e "s|data/shakespeare/test|$TEST|" \
        -e 's|^steps = .*|steps = 3|' \
        -e 's|^log_every = .*|log_every = 1|' \
        -e 's|warmup_steps = [0-9]*|warmup_steps = 1|' \
        -e 's|^checkpoint_every = .*|checkpoint_every = 1000|' \
        "$ROOT/recipes/mlm-shakespeare.toml" > "$out"
    printf '%s\n' "$out"
}

now() { date +%s.%N; }

printf 'cpu: %s, %s cores; binary: %s\n' "$(lscpu | sed -n 's/^Model name: *//p')" "$(nproc)" "$BIN"
printf '%-6s %-5s %12s %10s %14s %8s %s\n' factor run corpus_MiB peak_MiB first_step_s total_s exit
for f in "${FACTORS[@]}"; do
    rec="$(recipe "$f")"
    mib=$(du -smL "$WORK/corpus-${f}x" | cut -f1)
    for which in $RUNS; do
        run="$WORK/runs/$f-$which"
        log="$WORK/$f-$which.log"
        start=$(now)
        (
            [ -z "${MEM_LIMIT_KB:-}" ] || ulimit -v "$MEM_LIMIT_KB"
            exec /usr/bin/time -v -o "$WORK/$f-$which.time" \
                timeout "$TIMEOUT" "$BIN" run "$rec" --out "$run"
        ) > "$log" 2>&1 &
        pid=$!
        first=""
        while kill -0 "$pid" 2>/dev/null; do
            if [ -z "$first" ] && [ -s "$run/metrics.jsonl" ] && grep -q '"step"' "$run/metrics.jsonl"; then
                first=$(echo "$(now) - $start" | bc)
            fi
            sleep 0.1
        done
        set +e; wait "$pid"; rc=$?; set -e
        total=$(echo "$(now) - $start" | bc)
        if [ -z "$first" ] && [ -s "$run/metrics.jsonl" ]; then first="<$total"; fi
        peak_kb=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$WORK/$f-$which.time")
        printf '%-6s %-5s %12s %10s %14s %8.1f %s\n' "${f}x" "$which" "$mib" \
            "$(( ${peak_kb:-0} / 1024 ))" "${first:-none}" "$total" "$rc"
        [ "$rc" -eq 0 ] || printf '  (log: %s; last line: %s)\n' "$log" "$(tail -n 1 "$log")"
    done
done
