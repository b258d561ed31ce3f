#!/usr/bin/env bash
# Data-parallel scaling on this machine: training throughput of the quickstart's MAE
# pretraining (global batch 128) at 1 and 2 ranks of one thread each, launched with mpirun,
# beside one process using 2 threads. The three are run in turn, REPEATS times, and the
# medians are reported with the 2-rank efficiency (samples/s at 2 ranks / (2 x at 1 rank)).
#
#     benches/scaling.sh [STEPS] [REPEATS]      # default 60 steps, 3 repeats
#
# Throughput is the median of the run's logged samples/s, leaving out the first window of
# 10 steps (start-up). Needs OpenMPI (Debian: openmpi-bin libopenmpi-dev libclang-dev); builds
# `--features mpi`. Run it with nothing else on the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-60}
repeats=${2:-3}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cargo build --release --features mpi --bin pretext >&2
bin=$PWD/target/release/pretext
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
args=(run recipes/quickstart.toml --unset downstream --set "train.steps=$steps"
    --set train.schedule.warmup_steps=5 --set train.log_every=10
    --set "train.checkpoint_every=$steps")

# throughput RUN_DIR: median samples/s over the logged windows after the first.
throughput() {
    python3 - "$1/metrics.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"{statistics.median(r['samples_per_s'] for r in rows[1:]):.1f}")
PY
}

declare -A results
for r in $(seq "$repeats"); do
    for setup in "1 rank x 1 thread" "2 ranks x 1 thread" "1 process x 2 threads"; do
        dir="$out/run-$r-${setup// /_}"
        case $setup in
        "1 rank x 1 thread") RAYON_NUM_THREADS=1 "$bin" "${args[@]}" --out "$dir" >/dev/null 2>&1 ;;
        "2 ranks x 1 thread") mpirun -np 2 --bind-to core -x RAYON_NUM_THREADS=1 "$bin" "${args[@]}" --out "$dir" >/dev/null 2>&1 ;;
        "1 process x 2 threads") RAYON_NUM_THREADS=2 "$bin" "${args[@]}" --out "$dir" >/dev/null 2>&1 ;;
        esac
        results[$setup]+="$(throughput "$dir") "
        echo "repeat $r, $setup: $(throughput "$dir") samples/s" >&2
    done
done

python3 - "${results["1 rank x 1 thread"]}" "${results["2 ranks x 1 thread"]}" "${results["1 process x 2 threads"]}" <<'PY'
import statistics, sys
names = ["1 rank x 1 thread", "2 ranks x 1 thread", "1 process x 2 threads"]
med = {n: statistics.median(float(v) for v in a.split()) for n, a in zip(names, sys.argv[1:])}
print("| setup | samples/s (median) | speed-up over 1 rank |")
print("|---|---:|---:|")
for n in names:
    print(f"| {n} | {med[n]:.0f} | {med[n] / med[names[0]]:.2f}x |")
eff = med[names[1]] / (2 * med[names[0]])
print(f"\n2-rank efficiency: {eff * 100:.0f} % (samples/s at 2 ranks / (2 x 1 rank))")
PY
