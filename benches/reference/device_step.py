"""One `cargo bench --bench step` workload in PyTorch on one device (e.g. a GPU), for the
comparison in docs/benchmarks.md ("GPU"): training steps (AdamW + gradient clipping) and
inference passes, samples/s as the median of rounds.

    python3 benches/reference/device_step.py benches/reference/mae-config.json cuda [fp32|bf16]

CONFIG is the JSON that benches/step.rs passes to bench_ref.py; mae-config.json is the one it
derives from benches/recipes/mae.toml (3,096,720 parameters, as pretext counts). fp32 leaves
TF32 off (PyTorch's default); bf16 runs the steps under torch.autocast. The model and the fixed
random batch are built on the CPU with the config's seed, as bench_ref.py builds them, then
moved to the device; the per-step masks are drawn on the device. STEPS (default 10) and
ROUNDS (default 5) set the timing, after 3 warm-up steps of each kind.
"""
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import workloads  # noqa: E402

cfg = json.load(open(sys.argv[1]))
dev = sys.argv[2]
prec = sys.argv[3] if len(sys.argv) > 3 else "fp32"
torch.manual_seed(cfg["seed"])
work = workloads.Workload(cfg, torch.Generator().manual_seed(cfg["seed"]))
work.model.to(dev)
work.inputs = work.inputs.to(dev)
torch.set_default_device(dev)
o = cfg["optimizer"]
opt = torch.optim.AdamW(work.model.parameters(), lr=o["lr"], betas=(o["beta1"], o["beta2"]),
                        eps=o["eps"], weight_decay=o["weight_decay"])
kind = dev.split(":")[0]
sync = torch.cuda.synchronize if kind == "cuda" else (lambda: None)


def autocast():
    return torch.autocast(device_type=kind, dtype=torch.bfloat16, enabled=prec == "bf16")


def train(n):
    work.model.train()
    for _ in range(n):
        with autocast():
            loss = work.loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.get("clip_grad_norm") is not None:
            torch.nn.utils.clip_grad_norm_(work.model.parameters(), cfg["clip_grad_norm"])
        opt.step()
    return loss


def infer(n):
    work.model.eval()
    with torch.no_grad(), autocast():
        for _ in range(n):
            work.infer()


steps, rounds, batch = int(os.environ.get("STEPS", 10)), int(os.environ.get("ROUNDS", 5)), cfg["batch"]
train(3)
infer(3)
sync()
tr, inf = [], []
for _ in range(rounds):
    t0 = time.perf_counter()
    loss = train(steps)
    sync()
    tr.append(batch * steps / (time.perf_counter() - t0))
    t0 = time.perf_counter()
    infer(steps)
    sync()
    inf.append(batch * steps / (time.perf_counter() - t0))
print(json.dumps({"torch": torch.__version__, "device": dev, "precision": prec,
                  "train_samples_per_s": statistics.median(tr),
                  "infer_samples_per_s": statistics.median(inf),
                  "train_rounds": [round(x, 1) for x in tr], "infer_rounds": [round(x, 1) for x in inf],
                  "last_loss": loss.item()}))
