#!/usr/bin/env bash
# Installs what `--features mpi` builds and runs against, from Debian: OpenMPI (library,
# headers and mpirun) and libclang (the mpi crate generates its bindings with bindgen).
# Packages already installed are left alone; apt-get update runs only when one is missing.
set -euo pipefail
packages=(openmpi-bin libopenmpi-dev libclang-dev)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ "${#missing[@]}" -eq 0 ] && exit 0
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
echo "install-mpi: installing ${missing[*]}" >&2
as_root apt-get update -qq
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
