#!/usr/bin/env python3
"""Cut the first N training and test examples out of Fashion-MNIST, keeping the IDX format.

Usage:
    python3 scripts/make_fashion_sample.py SOURCE_DIR OUT_DIR N_TRAIN N_TEST
    python3 scripts/make_fashion_sample.py SOURCE_DIR OUT_DIR N_TRAIN 0 --skip SKIP --images-only

SOURCE_DIR holds the four upstream files (e.g. /usr/share/datasets/fashion-mnist from the
Debian package `dataset-fashion-mnist`); OUT_DIR receives files with the same four names, each
holding the first N_TRAIN (train) or N_TEST (t10k) items with the count in the header rewritten.
With --skip SKIP the training items start at SKIP instead of 0; with --images-only only
train-images-idx3-ubyte.gz is written (an unlabelled set, e.g. the training images after the
sample's: --skip 2000).

Input may be gzip-compressed or raw IDX. Output is always gzip, written with mtime=0 and no file
name in the gzip header, so running the script twice gives byte-identical files.
Standard library only.
"""

import argparse
import gzip
import io
import os
import struct
import sys

FILES = {
    # name: (split, expected magic)
    "train-images-idx3-ubyte.gz": ("train", 0x00000803),
    "train-labels-idx1-ubyte.gz": ("train", 0x00000801),
    "t10k-images-idx3-ubyte.gz": ("test", 0x00000803),
    "t10k-labels-idx1-ubyte.gz": ("test", 0x00000801),
}


def read_maybe_gzip(path):
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return data


def cut(data, n, expected_magic, path, skip=0):
    """Return the IDX bytes of items skip..skip+n of `data`, with the header count set to n."""
    if len(data) < 4:
        sys.exit(f"{path}: file too short for an IDX header")
    (magic,) = struct.unpack(">I", data[:4])
    if magic != expected_magic:
        sys.exit(f"{path}: bad magic number: expected 0x{expected_magic:08x}, found 0x{magic:08x}")
    ndim = magic & 0xFF
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        sys.exit(f"{path}: truncated header")
    dims = list(struct.unpack(f">{ndim}I", data[4:header_len]))
    count = dims[0]
    if skip + n > count:
        sys.exit(f"{path}: asked for items {skip}..{skip + n} but the file holds only {count}")
    item = 1
    for d in dims[1:]:
        item *= d
    body_len = n * item
    if len(data) < header_len + count * item:
        sys.exit(f"{path}: truncated: expected {count * item} bytes of data, "
                 f"found {len(data) - header_len}")
    dims[0] = n
    header = struct.pack(">I", magic) + struct.pack(f">{ndim}I", *dims)
    start = header_len + skip * item
    return header + data[start:start + body_len]


def write_gzip(path, payload):
    buf = io.BytesIO()
    # filename="" keeps the original-name field out of the header; mtime=0 makes it reproducible.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(payload)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(buf.getvalue())
    os.replace(tmp, path)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source_dir")
    p.add_argument("out_dir")
    p.add_argument("n_train", type=int)
    p.add_argument("n_test", type=int)
    p.add_argument("--skip", type=int, default=0, help="training items to skip first")
    p.add_argument("--images-only", action="store_true", help="write the training images only")
    args = p.parse_args()
    if args.n_train < 0 or args.n_test < 0 or args.skip < 0:
        sys.exit("n_train, n_test and --skip must be non-negative")

    os.makedirs(args.out_dir, exist_ok=True)
    for name, (split, magic) in FILES.items():
        if args.images_only and name != "train-images-idx3-ubyte.gz":
            continue
        src = os.path.join(args.source_dir, name)
        if not os.path.exists(src):
            # Accept an already-decompressed copy too.
            raw = src[: -len(".gz")]
            if os.path.exists(raw):
                src = raw
            else:
                sys.exit(f"{src}: not found")
        n = args.n_train if split == "train" else args.n_test
        skip = args.skip if split == "train" else 0
        payload = cut(read_maybe_gzip(src), n, magic, src, skip)
        dst = os.path.join(args.out_dir, name)
        write_gzip(dst, payload)
        print(f"{dst}: {n} items, {len(payload)} bytes raw, {os.path.getsize(dst)} bytes gzip")


if __name__ == "__main__":
    main()
