"""PyTorch side of `cargo bench --bench step`: one workload's model (workloads.py) timed
with the same protocol as pretext's side.

`benches/step.rs` builds `--config` (JSON) from the recipe pretext runs, so both sides train
the same architecture at the same batch shape with the same optimizer settings: AdamW
(lr, betas, eps, weight decay) and, when the recipe clips, `clip_grad_norm_`. Inputs are a
fixed random batch of the recipe's shape (images, spectrograms, token ids); each training
step draws fresh masks, as pretext's does. Inference is the encoder over every token under
`torch.no_grad()`.

It runs as a server (`--serve`) reading one command per line on stdin and answering each
with one JSON line, so the bench can alternate the two sides round by round:
    train N | infer N   -> {"cmd": ..., "steps": N, "seconds": s, "loss": l}
    stats               -> {"max_rss_kb": ..., "baseline_rss_kb": ...}
    quit
The first line printed is {"ready": true, ...} once the model and batch are built.
"""

import argparse
import json
import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import workloads  # noqa: E402


def vm_status_kb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


class Bench:
    def __init__(self, cfg, threads):
        torch.set_num_threads(threads)
        torch.manual_seed(cfg["seed"])
        gen = torch.Generator().manual_seed(cfg["seed"])
        self.cfg = cfg
        self.work = workloads.Workload(cfg, gen)
        self.model = self.work.model
        o = cfg["optimizer"]
        self.opt = torch.optim.AdamW(
            self.model.parameters(),
            lr=o["lr"],
            betas=(o["beta1"], o["beta2"]),
            eps=o["eps"],
            weight_decay=o["weight_decay"],
        )
        self.clip = cfg.get("clip_grad_norm")
        self.baseline_rss_kb = vm_status_kb("VmRSS")

    def train(self, n):
        self.model.train()
        loss = None
        t0 = time.perf_counter()
        for _ in range(n):
            loss = self.work.loss()
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if self.clip is not None:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
            self.opt.step()
        seconds = time.perf_counter() - t0
        return {"cmd": "train", "steps": n, "seconds": seconds, "loss": loss.detach().item()}

    def infer(self, n):
        self.model.eval()
        t0 = time.perf_counter()
        with torch.no_grad():
            for _ in range(n):
                out = self.work.infer()
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, help="JSON workload config (from benches/step.rs)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    bench = Bench(json.loads(args.config), args.threads)
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


if __name__ == "__main__":
    main()
