"""Worker of the data-parallel tests (tests/test_nn_distributed.py): one gloo process.

Run as ``python tests/dist_worker.py SCENARIO OUT_DIR`` with ``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT`` set (2 processes).  Writes ``OUT_DIR/SCENARIO-RANK.pt``.
Shared with the single-process reference: :func:`make_model`, :func:`batch`, :func:`CONFIGS`.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.nn.functional as F
from torch import nn

D64 = torch.float64
GLOBAL_BATCH = 8
STEPS = 4

#: (name, TDLRT options): bug / parallel / fixed-rank, SGD with momentum and Adam
CONFIGS = {
    "bug-sgd": dict(lr=0.3, momentum=0.9, tau=0.15, integrator="bug"),
    "parallel-adam": dict(lr=0.05, descent="adam", tau=0.15, integrator="parallel"),
    "fixed-sgd": dict(lr=0.3, momentum=0.9, tau=0.15, adaptive=False),
    "bug-adam": dict(lr=0.05, descent="adam", tau=0.15, integrator="bug"),
    "parallel-fixed-sgd": dict(lr=0.3, momentum=0.5, adaptive=False, integrator="parallel"),
}


def make_model(lin_rank: int | None = None, tucker_only: bool = False) -> nn.Module:
    from tucker_dlra.nn import LowRankLinear, TuckerConv2d

    torch.manual_seed(0)
    if tucker_only:  # nothing left for DDP itself to average
        return nn.Sequential(
            TuckerConv2d(2, 6, 3, padding=1, bias=False, dtype=D64), nn.ReLU(),
            TuckerConv2d(6, 5, 3, bias=False, dtype=D64), nn.Flatten(),
            LowRankLinear(5 * 4 * 4, 3, bias=False, dtype=D64))
    return nn.Sequential(
        TuckerConv2d(2, 6, 3, padding=1, dtype=D64), nn.ReLU(),
        TuckerConv2d(6, 5, 3, rank=(5, 6, 3, 3), forward_mode="factorized", dtype=D64),
        nn.Flatten(), LowRankLinear(5 * 4 * 4, 12, rank=lin_rank, dtype=D64), nn.Tanh(),
        nn.Linear(12, 3, dtype=D64))


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch of a step (each worker takes its slice)."""
    g = torch.Generator().manual_seed(100 + step)
    x = torch.randn(GLOBAL_BATCH, 2, 6, 6, generator=g, dtype=D64)
    y = torch.randint(0, 3, (GLOBAL_BATCH,), generator=g)
    return x, y


def snapshot(model: nn.Module) -> dict:
    from tucker_dlra.nn import is_tucker_layer

    out = {}
    for name, m in model.named_modules():
        if is_tucker_layer(m):
            out[name + ".ranks"] = m.ranks
            out[name + ".W"] = m.weight_full().detach().clone()
    for name, p in model.named_parameters():
        out["p." + name] = p.detach().clone()
    return out


def train(model: nn.Module, opt: torch.optim.Optimizer, step_model: nn.Module, rank: int,
          world: int, steps: int = STEPS, clip: float | None = None,
          micro: int = 1, lib_clip: list | None = None) -> list[dict]:
    """``steps`` steps on each worker's slice of the global batches; snapshots after each.

    ``micro`` > 1: the slice is split in micro-batches, all but the last under
    ``no_sync()`` (loss divided by ``micro``).  ``lib_clip``: clip with
    ``tucker_dlra.nn.clip_grad_norm_`` instead of torch's, its norms appended there.
    """
    snaps = []
    per = GLOBAL_BATCH // world
    for step in range(steps):
        x, y = batch(step)
        x, y = x[rank * per:(rank + 1) * per], y[rank * per:(rank + 1) * per]
        opt.zero_grad()
        xs, ys = x.chunk(micro), y.chunk(micro)
        for k in range(micro):
            ctx = step_model.no_sync() if k < micro - 1 and hasattr(step_model, "no_sync") \
                else _null()
            with ctx:
                (F.cross_entropy(step_model(xs[k]), ys[k]) / micro).backward()
        if clip is not None and lib_clip is not None:
            from tucker_dlra.nn import clip_grad_norm_

            lib_clip.append(float(clip_grad_norm_(step_model, clip)))
        elif clip is not None:
            torch.nn.utils.clip_grad_norm_(step_model.parameters(), clip)
        opt.step()
        snaps.append(snapshot(model))
    return snaps


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: object) -> None:
        return None


def main() -> None:
    import torch.distributed as dist
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
    from torch.nn.parallel import DistributedDataParallel as DDP
    from tucker_dlra.nn import TDLRT
    from tucker_dlra.nn.distributed import comm_bytes, reset_comm_bytes

    scenario, out_dir = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    result: dict = {}
    try:
        if scenario == "all":
            for name, opts in CONFIGS.items():
                model = make_model()
                ddp = DDP(model)  # plain DDP, built before the optimizer (the usual order)
                opt = TDLRT(ddp.parameters(), **opts)
                result[name] = train(model, opt, ddp, rank, world)
            model = make_model(tucker_only=True)
            ddp = DDP(model)
            opt = TDLRT(ddp.parameters(), **CONFIGS["bug-sgd"])
            result["tucker-only"] = train(model, opt, ddp, rank, world, steps=3)
            # layers switched back to plain autograd gradients: averaged in the step
            model = make_model()
            ddp = DDP(model)
            opt = TDLRT(ddp.parameters(), **CONFIGS["bug-sgd"])
            for m in model:
                if hasattr(m, "param_grads"):
                    m.param_grads = True
            result["autograd"] = train(model, opt, ddp, rank, world, steps=3)
            import copy

            result["deepcopy"] = copy.deepcopy(model)[4].ranks == model[4].ranks
            model = make_model()
            opt = TDLRT(model.parameters(), **CONFIGS["bug-sgd"])  # optimizer first
            ddp = DDP(model)
            result["nosync"] = train(model, opt, ddp, rank, world, steps=3, micro=2)
            model = make_model()
            ddp = DDP(model)
            opt = TDLRT(ddp.parameters(), **CONFIGS["bug-sgd"])
            result["clip"] = train(model, opt, ddp, rank, world, steps=3, clip=0.05)
            model = make_model()
            ddp = DDP(model)
            opt = TDLRT(ddp.parameters(), **CONFIGS["bug-sgd"])
            result["libclip_norms"] = []
            result["libclip"] = train(model, opt, ddp, rank, world, steps=3, clip=0.05,
                                      lib_clip=result["libclip_norms"])
            # host syncs of one step under DDP (deterministic cost figures)
            from tucker_dlra.nn._profiling import count_step

            for integ in ("bug", "parallel"):
                model = make_model()
                ddp = DDP(model)
                opt = TDLRT(ddp.parameters(), **{**CONFIGS["bug-sgd"], "integrator": integ})
                train(model, opt, ddp, rank, world, steps=1)
                opt.zero_grad()
                x, y = batch(9)
                per = GLOBAL_BATCH // world
                F.cross_entropy(ddp(x[rank * per:(rank + 1) * per]),
                                y[rank * per:(rank + 1) * per]).backward()
                result[f"syncs-{integ}"] = count_step(opt).syncs
            model = make_model(lin_rank=3)
            ddp = DDP(model)
            hook_state = {"bytes": 0}

            def counting(st, bucket):  # noqa: ANN001, ANN202 (DDP checks annotations)
                st["bytes"] += bucket.buffer().numel() * bucket.buffer().element_size()
                return default_hooks.allreduce_hook(None, bucket)

            ddp.register_comm_hook(hook_state, counting)  # must survive the reducer rebuild
            opt = TDLRT(ddp.parameters(), **CONFIGS["bug-sgd"])
            train(model, opt, ddp, rank, world, steps=1)
            result["bytes_ranks"] = [m.ranks for m in model if hasattr(m, "ranks")]
            reset_comm_bytes()
            hook_state["bytes"] = 0
            train(model, opt, ddp, rank, world, steps=1)
            result["bytes"] = comm_bytes()
            result["ddp_bytes"] = hook_state["bytes"]
            # a worker that truncates differently: the clear error on every worker
            model = make_model()
            ddp = DDP(model)
            opts = dict(CONFIGS["bug-sgd"])
            opts["tau"] = 0.15 if rank == 0 else 0.45
            opt = TDLRT(ddp.parameters(), **opts)
            before = snapshot(model)
            try:
                train(model, opt, ddp, rank, world, steps=1)
                result["error"] = None
            except RuntimeError as exc:
                result["error"] = str(exc)
            result["unchanged"] = all(torch.equal(before[k], v) for k, v in
                                      snapshot(model).items() if k.startswith("p."))
            # a worker whose averaged C-gradient is off (as if its data differed): caught by
            # the checksum of the new cores and factors
            from tucker_dlra.nn import distributed

            model = make_model()
            ddp = DDP(model)
            opt = TDLRT(ddp.parameters(), **CONFIGS["bug-sgd"])
            real = distributed.reduce_c_gradients
            if rank == 1:
                distributed.reduce_c_gradients = lambda ls, cs: [
                    c * 1.001 for c in real(ls, cs)]
            try:
                train(model, opt, ddp, rank, world, steps=1)
                result["error2"] = None
            except RuntimeError as exc:
                result["error2"] = str(exc)
            distributed.reduce_c_gradients = real
            # FullyShardedDataParallel (flat parameters) and fully_shard (DTensors): refused
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import FullyShardedDataParallel, fully_shard

            result["fsdp"] = []
            for wrap in (lambda m: FullyShardedDataParallel(m, device_id=torch.device("cpu")),
                         lambda m: fully_shard(m, mesh=init_device_mesh("cpu", (world,)))):
                try:
                    TDLRT(wrap(make_model()).parameters(), lr=0.1)
                    result["fsdp"].append(None)
                except TypeError as exc:
                    result["fsdp"].append(str(exc))
    finally:
        torch.save(result, os.path.join(out_dir, f"{scenario}-{rank}.pt"))
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
