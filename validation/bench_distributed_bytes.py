#!/usr/bin/env python
"""Benchmark: bytes all-reduced per training step, data-parallel TDLRT against dense DDP.

Two gloo worker processes on 127.0.0.1 train, with plain ``DistributedDataParallel``,

* the dense model (``torch.optim.SGD``): DDP all-reduces every gradient; and
* the same model with Tucker convolutions (and, with ``--linear``, low-rank hidden linear
  layers) trained by TDLRT: DDP all-reduces the remaining dense parameters, and
  :mod:`tucker_dlra.nn.distributed` the Tucker layers' projections (round 1 in backward:
  core gradient and K-gradients; round 2 in the step: the C-gradient in the augmented
  bases) or, for a layer whose projections are not smaller, its dense kernel gradient.

Bytes are counted deterministically: DDP's by a communication hook that adds each bucket's
size before all-reducing it, the Tucker layers' by :func:`tucker_dlra.nn.distributed.
comm_bytes` (the payload of every all-reduce, including the fixed-size consistency checks).
Models: LeNet5 (28x28, conv 20 / 50 5x5, fc 500 / 10) and the VGG-style stack of
``bench_nn_step.py`` (32x32, 3 stages of 32 / 64 / 128 channels), float32, global batch 64,
TDLRT with tau = 0.2 from full rank (the first steps) and from the ranks the paper's Table 2
reports for about 90 % compression (channel ranks 10 % of the channels).  Output:
``validation/out/bench_distributed_bytes.json`` and a table.

Run: ``python validation/bench_distributed_bytes.py`` (about 2 min on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"


def _models():
    import torch
    from torch import nn
    from tucker_dlra.nn.models import build_model

    def vgg() -> nn.Module:
        layers, c = [], 3
        for w in (32, 64, 128):
            layers += [nn.Conv2d(c, w, 3, padding=1), nn.ReLU(), nn.Conv2d(w, w, 3, padding=1),
                       nn.ReLU(), nn.MaxPool2d(2)]
            c = w
        return nn.Sequential(*layers, nn.Flatten(), nn.Linear(128 * 16, 256), nn.ReLU(),
                             nn.Linear(256, 10))

    torch.manual_seed(0)
    return {"lenet5": (lambda: build_model("lenet5"), (1, 28, 28)),
            "vgg": (vgg, (3, 32, 32))}


def _worker(name: str, variant: str, steps: int, out: str) -> None:
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
    from torch.nn.parallel import DistributedDataParallel as DDP
    from tucker_dlra.nn import TDLRT, is_tucker_layer, tuckerize
    from tucker_dlra.nn.distributed import comm_bytes, reset_comm_bytes

    from tucker_dlra import hosvd

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    build, shape = _models()[name]
    torch.manual_seed(0)
    model = build()
    if variant != "dense":
        model = tuckerize(model, include=[torch.nn.Conv2d])
        if variant == "tdlrt-90":  # channel ranks 10 % of the channels, full spatial ranks
            for m in model.modules():
                if is_tucker_layer(m):
                    n = m.kernel_shape
                    r = [math.ceil(0.1 * n[0]), math.ceil(0.1 * n[1]), *n[2:]]
                    m.set_tucker(hosvd(m.weight_full().detach(), rank=r))
    state = {"bytes": 0}

    def counting(st, bucket):
        st["bytes"] += bucket.buffer().numel() * bucket.buffer().element_size()
        return default_hooks.allreduce_hook(None, bucket)

    ddp = DDP(model)
    ddp.register_comm_hook(state, counting)
    if variant == "dense":
        opt = torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9)
    else:
        opt = TDLRT(ddp.parameters(), lr=0.05, momentum=0.9, tau=0.2)
    g = torch.Generator().manual_seed(1)
    rows = []
    for step in range(steps):
        x = torch.randn(64, *shape, generator=g)
        y = torch.randint(0, 10, (64,), generator=g)
        x, y = x[rank * 32:(rank + 1) * 32], y[rank * 32:(rank + 1) * 32]
        state["bytes"] = 0
        reset_comm_bytes()
        opt.zero_grad()
        F.cross_entropy(ddp(x), y).backward()
        opt.step()
        ranks = [m.ranks for m in model.modules() if is_tucker_layer(m)]
        tucker = [m for m in model.modules() if is_tucker_layer(m)]
        rows.append({"step": step + 1, "ddp_bytes": state["bytes"],
                     "tucker_bytes": comm_bytes()["all_reduce"],
                     "check_bytes": comm_bytes()["checks"],
                     "tucker_calls": comm_bytes()["calls"], "ranks": ranks,
                     "tucker_dense_bytes": 4 * sum(math.prod(m.kernel_shape) for m in tucker)})
    if rank == 0:
        Path(out).write_text(json.dumps(rows))
    dist.destroy_process_group()


def _run(name: str, variant: str, steps: int, tmp: Path) -> list[dict]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp / f"{name}-{variant}.json"
    procs = [subprocess.Popen(
        [sys.executable, __file__, "--worker", name, variant, str(steps), str(out)],
        env=dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(r),
                 WORLD_SIZE="2", OMP_NUM_THREADS="1")) for r in range(2)]
    for p in procs:
        if p.wait(timeout=600) != 0:
            raise SystemExit(f"worker failed ({name}, {variant})")
    return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=3)
    a = ap.parse_args()
    if a.worker:
        _worker(a.worker[0], a.worker[1], int(a.worker[2]), a.worker[3])
        return
    OUT.mkdir(exist_ok=True)
    results = {}
    print(f"{'model':8s} {'variant':9s} {'step':>4s} {'DDP bytes':>10s} {'Tucker bytes':>12s} "
          f"{'(checks)':>8s} {'total':>10s} {'/ dense':>8s} {'Tucker / their dense':>20s}  ranks")
    for name in ("lenet5", "vgg"):
        dense = _run(name, "dense", a.steps, OUT)
        ref = dense[-1]["ddp_bytes"]
        results[name] = {"dense": dense}
        for variant in ("tdlrt", "tdlrt-90"):
            rows = _run(name, variant, a.steps, OUT)
            results[name][variant] = rows
            for r in rows:
                total = r["ddp_bytes"] + r["tucker_bytes"]
                r["ratio"] = total / ref
                r["payload_ratio"] = (total - r["check_bytes"]) / ref
                r["tucker_ratio"] = (r["tucker_bytes"] - r["check_bytes"]) / r[
                    "tucker_dense_bytes"]
                print(f"{name:8s} {variant:9s} {r['step']:4d} {r['ddp_bytes']:10d} "
                      f"{r['tucker_bytes']:12d} {r['check_bytes']:8d} {total:10d} "
                      f"{r['ratio']:8.4f} {r['tucker_ratio']:20.4f}  "
                      + " ".join(",".join(map(str, k)) for k in r["ranks"]))
                # the payload never exceeds dense DDP's (the checks add 64-96 bytes a step)
                assert r["payload_ratio"] <= 1.0, "more bytes than dense DDP"
        print(f"{name:8s} {'dense DDP':9s} {'':4s} {ref:10d} {0:12d} {0:8d} {ref:10d} "
              f"{1:8.4f}")
    (OUT / "bench_distributed_bytes.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
