#!/usr/bin/env bash
# Builds pretext with `--features cuda` on a machine with no GPU: installs the CUDA toolkit from
# PyPI if needed (scripts/install-cuda.sh), then compiles the release binaries and the test
# executables (not run: they would need a GPU and its driver, libcuda.so.1). Uses its own target
# folder, target/cuda, so the normal CPU build is left alone. The tests are built with --release
# so that they reuse the release build of candle-kernels: its nvcc step (~8 min on 2 cores) would
# otherwise run a second time for the test profile.
#
#     scripts/build-cuda.sh            # release bins + `cargo test --no-run`
#     scripts/build-cuda.sh --bins     # release bins only
# Environment: CUDA_COMPUTE_CAP (default 90), PRETEXT_CUDA_DIR (see install-cuda.sh),
# PRETEXT_CUDA_FEATURES (default `cuda`; `nccl` adds data-parallel training between GPUs, and
# needs MPI: Debian `libopenmpi-dev openmpi-bin libclang-dev`).
set -euo pipefail
cd "$(dirname "$0")/.."

eval "$(scripts/install-cuda.sh)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target/cuda}"

t0=$SECONDS
features=${PRETEXT_CUDA_FEATURES:-cuda}
cargo build --release --features "$features" --bins
echo "build-cuda: release bins in $((SECONDS - t0)) s" >&2

if [[ "${1:-}" != --bins ]]; then
    t0=$SECONDS
    cargo test --release --features "$features" --no-run
    echo "build-cuda: test executables in $((SECONDS - t0)) s" >&2
fi
