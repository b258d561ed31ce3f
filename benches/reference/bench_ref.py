"""PyTorch side of `cargo bench --bench step`: times the reference MAE of pretext_ref.py.

The model, batch and optimizer come from `--config` (JSON), which `benches/step.rs` builds from
its constants, so both sides run the same model on the same images. The timing protocol is the
same as the Rust side's: a fixed batch (the first `batch` training images, normalised with the
given mean/std), fresh masking noise every step, and per round the wall time of N consecutive
steps (train: forward + backward + AdamW update; infer: the encoder on full images under
`torch.no_grad()`).

Two modes:
  --serve   (used by the Rust bench) read commands from stdin, one per line, and answer each
            with one JSON line on stdout, so the bench can alternate Rust and PyTorch rounds:
              train N | infer N   -> {"cmd": ..., "steps": N, "seconds": s, "loss": l}
              stats               -> {"max_rss_kb": ..., "baseline_rss_kb": ...}
              quit
            The first line printed is {"ready": true, ...} once the model and data are loaded.
  default   run the protocol alone and print one JSON summary, e.g.
              python3 benches/reference/bench_ref.py --threads 2
"""

import argparse
import gzip
import json
import os
import resource
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pretext_ref  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def _enc(dim, depth, heads, mlp_dim):
    return {
        "dim": dim,
        "depth": depth,
        "heads": heads,
        "mlp_dim": mlp_dim,
        "norm": "pre",
        "activation": "gelu",
        "norm_eps": 1e-6,
        "qkv_bias": True,
        "dropout": 0.0,
        "attention_dropout": 0.0,
    }


# Only for running this script alone; the Rust bench always passes --config.
DEFAULT_CONFIG = {
    "model": {
        "geometry": {"size": 28, "channels": 1, "patch": 4},
        "encoder": _enc(128, 4, 4, 512),
        "decoder": _enc(64, 2, 4, 256),
        "mask_ratio": 0.75,
        "norm_pix_loss": True,
    },
    "batch": 128,
    "data": "data/fashion-mnist-sample/train-images-idx3-ubyte.gz",
    "mean": [0.2860],
    "std": [0.3530],
    "optimizer": {"lr": 1.5e-3, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.05},
    "seed": 0,
    "protocol": {"warmup": 3, "rounds": 7, "train_steps": 8, "infer_warmup": 2, "infer_steps": 8},
}


def read_idx_images(path, n):
    """The first n images of an IDX3 u8 file (gzip or raw) -> uint8 [n, rows, cols]."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    magic, count, rows, cols = np.frombuffer(raw[:16], dtype=">u4")
    if magic != 0x803:
        raise ValueError(f"{path}: not an IDX3 u8 image file (magic {magic:#x})")
    if n > count:
        raise ValueError(f"{path}: asked for {n} images, file has {count}")
    return np.frombuffer(raw[16 : 16 + n * rows * cols], dtype=np.uint8).reshape(n, rows, cols)


def vm_status_kb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


class Bench:
    def __init__(self, cfg, threads):
        torch.set_num_threads(threads)
        self.cfg = cfg
        gen = torch.Generator().manual_seed(cfg["seed"])
        torch.manual_seed(cfg["seed"])
        self.model = pretext_ref.Mae(cfg["model"])
        pretext_ref.init_like_pretext_(self.model, gen)
        g = cfg["model"]["geometry"]
        b = cfg["batch"]
        path = cfg["data"] if os.path.isabs(cfg["data"]) else os.path.join(REPO, cfg["data"])
        px = read_idx_images(path, b).astype(np.float32) / 255.0
        px = px.reshape(b, g["channels"], g["size"], g["size"])
        mean = np.asarray(cfg["mean"], np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(cfg["std"], np.float32).reshape(1, -1, 1, 1)
        self.imgs = torch.from_numpy((px - mean) / std).contiguous()
        self.num_patches = (g["size"] // g["patch"]) ** 2
        o = cfg["optimizer"]
        self.opt = torch.optim.AdamW(
            self.model.parameters(),
            lr=o["lr"],
            betas=(o["beta1"], o["beta2"]),
            eps=o["eps"],
            weight_decay=o["weight_decay"],
        )
        self.threads = threads
        self.baseline_rss_kb = vm_status_kb("VmRSS")

    def train(self, n):
        self.model.train()
        b = self.imgs.shape[0]
        loss = None
        t0 = time.perf_counter()
        for _ in range(n):
            noise = torch.rand(b, self.num_patches)
            loss, _, _, _ = self.model(self.imgs, noise)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        seconds = time.perf_counter() - t0
        return {"cmd": "train", "steps": n, "seconds": seconds, "loss": loss.detach().item()}

    def infer(self, n):
        self.model.eval()
        t0 = time.perf_counter()
        with torch.no_grad():
            for _ in range(n):
                out = self.model.vit(self.imgs)
        seconds = time.perf_counter() - t0
        return {"cmd": "infer", "steps": n, "seconds": seconds, "checksum": float(out.mean())}

    def stats(self):
        return {
            "max_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,  # KiB on Linux
            "baseline_rss_kb": self.baseline_rss_kb,
        }


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def serve(bench):
    emit(
        {
            "ready": True,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "params": sum(p.numel() for p in bench.model.parameters()),
        }
    )
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "train":
            emit(bench.train(int(parts[1])))
        elif parts[0] == "infer":
            emit(bench.infer(int(parts[1])))
        elif parts[0] == "stats":
            emit(bench.stats())
        elif parts[0] == "quit":
            break
        else:
            emit({"error": f"unknown command {line.strip()!r}"})


def standalone(bench):
    p = bench.cfg["protocol"]
    b = bench.cfg["batch"]
    bench.train(p["warmup"])
    train = [bench.train(p["train_steps"]) for _ in range(p["rounds"])]
    bench.infer(p["infer_warmup"])
    infer = [bench.infer(p["infer_steps"]) for _ in range(p["rounds"])]
    emit(
        {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "train_samples_per_s": statistics.median(r["steps"] * b / r["seconds"] for r in train),
            "infer_samples_per_s": statistics.median(r["steps"] * b / r["seconds"] for r in infer),
            "final_loss": train[-1]["loss"],
            **bench.stats(),
        }
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", help="JSON config (default: the quickstart model)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--serve", action="store_true", help="answer commands on stdin")
    args = ap.parse_args()
    cfg = json.loads(args.config) if args.config else DEFAULT_CONFIG
    bench = Bench(cfg, args.threads)
    if args.serve:
        serve(bench)
    else:
        standalone(bench)


if __name__ == "__main__":
    main()
