#!/usr/bin/env bash
# Fetch the data sets the recipes use into data/ (gitignored), from Debian packages.
#
#   scripts/fetch-data.sh [all|fashion-mnist]      (default: all)
#
# Meant for a fresh Debian (or Ubuntu) machine where only the package registries are reachable;
# run it as root, or as a user with sudo. It is idempotent: packages already installed are not
# reinstalled (and `apt-get update` runs only when something must be installed), links already in
# place are left alone. The small Fashion-MNIST sample in data/fashion-mnist-sample/ ships with
# the repository and needs nothing from here.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="$ROOT/data"

log() { printf 'fetch-data: %s\n' "$*"; }
die() { printf 'fetch-data: error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

deb_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

APT_UPDATED=0
# apt_install PACKAGE... : install the Debian packages that are not installed yet.
apt_install() {
    local missing=() pkg
    command -v dpkg-query >/dev/null 2>&1 || die "dpkg-query not found: this script needs Debian or Ubuntu"
    for pkg in "$@"; do
        if deb_installed "$pkg"; then
            log "Debian package $pkg is already installed"
        else
            missing+=("$pkg")
        fi
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "running apt-get update"
        as_root apt-get update
        APT_UPDATED=1
    fi
    log "installing Debian package(s): ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${missing[@]}"
}

# link_into SRC_DIR DEST_DIR FILE... : symlink each SRC_DIR/FILE as DEST_DIR/FILE.
link_into() {
    local src="$1" dest="$2" f
    shift 2
    mkdir -p "$dest"
    for f in "$@"; do
        [ -f "$src/$f" ] || die "$src/$f is missing after installing the package"
        if [ -L "$dest/$f" ] && [ "$(readlink "$dest/$f")" = "$src/$f" ]; then
            log "$dest/$f already links to $src/$f"
        elif [ -e "$dest/$f" ] && [ ! -L "$dest/$f" ]; then
            log "$dest/$f exists as a regular file; left as it is"
        else
            ln -sfn "$src/$f" "$dest/$f"
            log "linked $dest/$f -> $src/$f"
        fi
    done
}

# --- one function per data set ----------------------------------------------------------------

# Fashion-MNIST (Zalando, MIT): 60,000 train + 10,000 test 28x28 grey images, 10 classes,
# in the original IDX gzip files.
fetch_fashion_mnist() {
    local files=(
        train-images-idx3-ubyte.gz
        train-labels-idx1-ubyte.gz
        t10k-images-idx3-ubyte.gz
        t10k-labels-idx1-ubyte.gz
    )
    apt_install dataset-fashion-mnist
    link_into /usr/share/datasets/fashion-mnist "$DATA/fashion-mnist" "${files[@]}"
    log "fashion-mnist ready in $DATA/fashion-mnist"
}

usage() {
    cat <<EOF
usage: $0 [all|fashion-mnist]
  all            every data set below (default)
  fashion-mnist  Fashion-MNIST, full 60k/10k IDX files, into data/fashion-mnist/
EOF
}

main() {
    local what="${1:-all}"
    case "$what" in
        all)
            fetch_fashion_mnist
            ;;
        fashion-mnist)
            fetch_fashion_mnist
            ;;
        -h | --help | help)
            usage
            ;;
        *)
            usage >&2
            exit 2
            ;;
    esac
}

main "$@"
