#!/usr/bin/env bash
# Installs the pieces of the CUDA toolkit that `cargo build --features cuda` needs, from PyPI
# (NVIDIA's `cuda-toolkit` wheels: nvcc, headers, cudart, nvrtc, cuBLAS, cuRAND; and NCCL for
# `--features nccl`), into one fixed
# folder, then prints the `export` lines that point the build at it:
#
#     eval "$(scripts/install-cuda.sh)"
#
# No GPU or driver is needed: the driver library (libcuda.so) that the binaries link against is
# replaced at link time by a stub built here from cuda.h, as the toolkit's own lib/stubs does; at
# run time the real driver's libcuda.so.1 is used. Idempotent: a second run only prints the lines.
#
# Environment (all optional):
#   PRETEXT_CUDA_DIR   where to install (default ~/.cache/pretext-cuda)
#   CUDA_COMPUTE_CAP   GPU architecture the kernels are compiled for (default 90: H100/H200)
set -euo pipefail

# cudarc 0.19.10 (candle-core 0.11's) knows CUDA 11.4 up to 13.4; the wheels lay 13.x out as one
# toolkit tree (nvidia/cu13/{bin,include,lib,nvvm}). CUDA 13 needs an NVIDIA driver >= 580 at run time.
CUDA_WHEELS_VERSION=13.0.2
EXTRAS=nvcc,nvvm,crt,cccl,cudart,nvrtc,cublas,curand
BASE="${PRETEXT_CUDA_DIR:-$HOME/.cache/pretext-cuda}"
DEST="$BASE/$CUDA_WHEELS_VERSION"
ROOT="$DEST/nvidia/cu13"
STAMP="$DEST/.installed-$EXTRAS"

log() { echo "install-cuda: $*" >&2; }

if [[ ! -f "$STAMP" ]]; then
    log "installing cuda-toolkit[$EXTRAS]==$CUDA_WHEELS_VERSION into $DEST"
    rm -rf "$DEST"
    mkdir -p "$BASE"
    tmp="$(mktemp -d "$BASE/.tmp.XXXXXX")"
    trap 'rm -rf "$tmp"' EXIT
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
        --target "$tmp" "cuda-toolkit[$EXTRAS]==$CUDA_WHEELS_VERSION" >&2
    troot="$tmp/nvidia/cu13"
    [[ -x "$troot/bin/nvcc" && -x "$troot/nvvm/bin/cicc" && -f "$troot/include/cuda.h" ]] || {
        log "the wheels did not lay out nvcc/cicc/cuda.h under $troot"; exit 1; }

    # The wheels ship only the versioned sonames; the linker's -lcublas etc. want the plain names.
    (cd "$troot/lib"
     for so in libcudart.so.* libcublas.so.* libcublasLt.so.* libcurand.so.* libnvrtc.so.*; do
         [[ -e "$so" ]] && ln -sf "$so" "${so%%.so.*}.so"
     done)

    # Link-time stand-in for the driver's libcuda.so.1: every cu* entry point declared in cuda.h
    # (after its #defines map e.g. cuMemAlloc to cuMemAlloc_v2, the names cudarc binds), with and
    # without per-thread default stream names, each an empty function.
    mkdir -p "$troot/lib/stubs"
    {
        gcc -E -P -I"$troot/include" "$troot/include/cuda.h"
        gcc -E -P -DCUDA_API_PER_THREAD_DEFAULT_STREAM -I"$troot/include" "$troot/include/cuda.h"
        grep -oE '^#define cu[A-Za-z0-9_]+ +cu[A-Za-z0-9_]+' "$troot/include/cuda.h" | awk '{print $2"(\n"$3"("}'
    } | grep -oE '\bcu[A-Z][A-Za-z0-9_]*\s*\(' | tr -d ' (\t' | sort -u \
      | awk '{print "void " $0 "(void) {}"}' > "$tmp/libcuda_stub.c"
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$troot/lib/stubs/libcuda.so" "$tmp/libcuda_stub.c"
    log "libcuda stub: $(wc -l < "$tmp/libcuda_stub.c") entry points"

    touch "$tmp/.installed-$EXTRAS"
    mv "$tmp" "$DEST"
    trap - EXIT
    log "installed ($(du -sh "$DEST" | cut -f1))"
fi

# NCCL (`--features nccl`, data-parallel training between GPUs) comes in a wheel of its own,
# laid out as nvidia/nccl/{include,lib}; its library is linked into the toolkit's lib/.
NCCL_VERSION=2.28.9
if [[ ! -f "$DEST/.installed-nccl-$NCCL_VERSION" ]]; then
    log "installing nvidia-nccl-cu13==$NCCL_VERSION into $DEST/nccl"
    rm -rf "$DEST/nccl"
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --no-deps \
        --target "$DEST/nccl" "nvidia-nccl-cu13==$NCCL_VERSION" >&2
    lib="$(echo "$DEST"/nccl/nvidia/nccl/lib/libnccl.so.*)"
    [[ -f "$lib" ]] || { log "the NCCL wheel did not lay out nvidia/nccl/lib/libnccl.so.*"; exit 1; }
    ln -sf "$lib" "$ROOT/lib/libnccl.so"
    ln -sf "$lib" "$ROOT/lib/$(basename "$lib")"
    touch "$DEST/.installed-nccl-$NCCL_VERSION"
fi

cat <<EOF
export CUDA_HOME='$ROOT'
export CUDA_ROOT='$ROOT'
export CUDA_PATH='$ROOT'
export NVCC='$ROOT/bin/nvcc'
export PATH='$ROOT/bin':"\$PATH"
export LD_LIBRARY_PATH='$ROOT/lib'"\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export CUDARC_CUDA_VERSION=13000
export CUDA_COMPUTE_CAP='${CUDA_COMPUTE_CAP:-90}'
EOF
