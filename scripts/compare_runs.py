#!/usr/bin/env python3
"""Compares two folders of runs written by scripts/refactor-invariant.sh.

Equal means: summary.json equal except for timings and paths; metrics.jsonl equal except
for timings (a log that gained fields is equal when every field both write agrees: noted); every checkpoint's and fine-tuned classifier's tensors equal bit for bit.
Prints each difference and exits 1 if there is any."""
import hashlib
import json
import struct
import sys
from pathlib import Path

TIMING = {"samples_per_s", "pretrain_seconds", "data_wait_seconds", "seconds", "elapsed_s",
          "run_dir", "model_dir"}


def strip(v):
    if isinstance(v, dict):
        return {k: strip(x) for k, x in v.items() if k not in TIMING}
    if isinstance(v, list):
        return [strip(x) for x in v]
    return v


def tensors(path):
    """name -> (dtype, shape, sha256 of the bytes) of a safetensors file."""
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    body = raw[8 + n:]
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        out[k] = (v["dtype"], tuple(v["shape"]), hashlib.sha256(body[a:b]).hexdigest())
    return out


def main(a, b):
    a, b = Path(a), Path(b)
    diffs = []
    for run in sorted(p for p in a.iterdir() if p.is_dir()):
        other = b / run.name
        if not other.is_dir():
            diffs.append(f"{run.name}: missing in {b}")
            continue
        s1 = strip(json.loads((run / "summary.json").read_text()))
        s2 = strip(json.loads((other / "summary.json").read_text()))
        if s1 != s2:
            diffs.append(f"{run.name}/summary.json differs:\n  {s1}\n  {s2}")
        for rel in sorted(p.relative_to(run) for p in run.rglob("*.jsonl")):
            l1 = [strip(json.loads(x)) for x in (run / rel).read_text().splitlines()]
            f2 = other / rel
            l2 = [strip(json.loads(x)) for x in f2.read_text().splitlines()] if f2.exists() else None
            if l1 != l2:
                shared = l2 is not None and len(l1) == len(l2) and all(
                    {k: x[k] for k in x if k in y} == {k: y[k] for k in y if k in x}
                    for x, y in zip(l1, l2))
                if shared:
                    added = sorted({k for y in l2 for k in y} - {k for x in l1 for k in x})
                    print(f"note: {run.name}/{rel}: equal on the fields both write; {b} adds {added}")
                else:
                    diffs.append(f"{run.name}/{rel} differs")
        for rel in sorted(p.relative_to(run) for p in run.rglob("*.safetensors")):
            f2 = other / rel
            if not f2.exists():
                diffs.append(f"{run.name}/{rel}: missing in {b}")
                continue
            t1, t2 = tensors(run / rel), tensors(f2)
            for k in sorted(set(t1) | set(t2)):
                if t1.get(k) != t2.get(k):
                    diffs.append(f"{run.name}/{rel}: tensor {k} differs")
        print(f"{run.name}: compared")
    for d in diffs:
        print(d)
    print("equal" if not diffs else f"{len(diffs)} differences")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
