#!/usr/bin/env python
"""GPU check: the CUDA tests, then training-step, inference and memory benchmarks, as JSON.

Meant for one short session on a CUDA machine (about 5-8 minutes on one H200):

1. ``pytest -m cuda`` (the tests that need a GPU; skipped elsewhere), result and output
   tail recorded;
2. **training step**: for VGG16 (CIFAR-10 shapes 3x32x32), LeNet5 (1x28x28) and ResNet18
   (3x32x32) at batch 128, one full step (``zero_grad``, forward, backward, optimizer step)
   of the dense model with ``torch.optim.SGD`` (momentum 0.9) against the same model with
   every convolution in Tucker form at >= 90 % conv eval compression, trained by
   :class:`tucker_dlra.nn.TDLRT` (momentum 0.9, ``integrator="bug"``, ranks capped at the
   initial ones).  Timed with CUDA events, variants interleaved, medians; the optimizer
   step alone is timed too.  Also: peak GPU memory of one step
   (``torch.cuda.max_memory_allocated`` above the memory held before it), the
   :func:`tucker_dlra.nn.memory_report` figures, and the ATen ops / host syncs of one
   optimizer step (:class:`tucker_dlra.nn._profiling.OpCounter`, on the GPU);
3. **inference**: eval-mode forward under ``torch.no_grad`` at batch 128 of the dense model
   against the Tucker model at conv eval compressions 80/90/95/98 %, with
   ``forward_mode="auto"`` (the measured per-layer choice) and ``"factorized"``; the paths
   ``auto`` chose are recorded.

Targets (ratios in one run): TDLRT step <= 1.5x the dense SGD step (stretch <= 1.0x);
compressed inference >= 1.0x dense at every compression and >= 1.5x at >= 95 %.  The JSON
(``gpu_check.json`` in ``--out``) holds every median, ratio and a ``targets`` section with
pass/fail per figure.  At the end (unless ``--skip-fig2-left``) the paper's Figure 2 (left) is
measured on the same device by ``validation/fig2_left.py`` (JSON and PNG in ``<out>/../fig2_left``).

``--smoke`` runs a tiny version on any device (LeNet5, batch 8, one compression, two
repeats, no pytest) to check the script itself.

Usage::

    python validation/gpu_check.py [--out DIR] [--repeats 15] [--smoke] [--skip-tests]
        [--models vgg16 lenet5 resnet18] [--compressions 0.8 0.9 0.95 0.98]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_step_ops import SHAPES, compress  # noqa: E402
from tucker_dlra.app.models import build_model  # noqa: E402
from tucker_dlra.nn import TDLRT, compression_report, is_tucker_layer, memory_report  # noqa: E402
from tucker_dlra.nn import layers as tucker_layers_mod  # noqa: E402
from tucker_dlra.nn._profiling import OpCounter  # noqa: E402

STEP_TARGET, STEP_STRETCH = 1.5, 1.0
INFER_TARGET, INFER_HIGH, INFER_HIGH_FROM = 1.0, 1.5, 0.95


# ------------------------------------------------------------------ timing
class _Clock:
    """Marks on a device timeline: CUDA events on CUDA, ``perf_counter`` elsewhere."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def mark(self) -> Any:
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def seconds(self, a: Any, b: Any) -> float:
        if self.cuda:
            b.synchronize()
            return a.elapsed_time(b) * 1e-3
        return b - a


def interleaved(fns: dict[str, Callable[[Callable[[], Any]], Any]], repeats: int, warmup: int,
                device: torch.device) -> dict[str, dict[str, list[float]]]:
    """Run every ``fn(mark)`` ``warmup`` times, then ``repeats`` rounds, one call of each
    variant per round (interleaved).  ``fn`` calls ``mark()`` at the points it wants timed;
    returned: per variant, per segment ``"total"`` (first to last mark) and ``"tail"``
    (second-to-last to last mark), the seconds of every round."""
    clock = _Clock(device)
    for _ in range(warmup):
        for fn in fns.values():
            fn(lambda: None)
    if device.type == "cuda":
        torch.cuda.synchronize()
    out: dict[str, dict[str, list[float]]] = {k: {"total": [], "tail": []} for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            marks: list[Any] = []
            fn(lambda marks=marks: marks.append(clock.mark()))
            out[k]["total"].append(clock.seconds(marks[0], marks[-1]))
            out[k]["tail"].append(clock.seconds(marks[-2], marks[-1]))
    return out


def _median(v: list[float]) -> float:
    return statistics.median(v) if v else float("nan")


# ------------------------------------------------------------------ models
def dense_and_tucker(name: str, target: float, device: torch.device
                     ) -> tuple[nn.Module, nn.Module, tuple[int, int, int], float]:
    shape = SHAPES[name]
    torch.manual_seed(0)
    dense = build_model(name, in_channels=shape[0], num_classes=10, image_size=shape[1:])
    tucker, _ = compress(dense, target)
    comp = compression_report(tucker).eval_compression_conv
    return dense.to(device), tucker.to(device), shape, comp


def _paths(model: nn.Module) -> dict[str, int]:
    """How many Tucker layers' last measured choice was each path (per selector key)."""
    sel = tucker_layers_mod.PATH_SELECTOR
    counts: Counter[str] = Counter()
    for m in model.modules():
        if is_tucker_layer(m):
            keys = [k for k in sel.choices if k[0] == type(m).__name__
                    and k[1] == m.kernel_shape and k[2] == m.ranks]
            for k in keys:
                counts[sel.choices[k]] += 1
    return dict(counts)


def bench_step(name: str, batch: int, repeats: int, warmup: int, target: float, tau: float,
               device: torch.device) -> dict[str, Any]:
    dense, tucker, shape, comp = dense_and_tucker(name, target, device)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, *shape, generator=g).to(device)
    y = torch.randint(0, 10, (batch,), generator=g).to(device)
    loss_fn = nn.CrossEntropyLoss()
    tucker_cl = copy.deepcopy(tucker)
    variants = {
        "dense-sgd": (dense, torch.optim.SGD(dense.parameters(), lr=0.01, momentum=0.9)),
        "tdlrt-bug": (tucker, TDLRT(tucker.parameters(), lr=0.01, momentum=0.9, tau=tau)),
        # the same step with channels-last training outputs on this device (the CPU
        # default of tucker_dlra.nn.layers.TRAIN_CHANNELS_LAST), to decide the GPU default
        "tdlrt-bug-train-cl": (tucker_cl, TDLRT(tucker_cl.parameters(), lr=0.01,
                                                 momentum=0.9, tau=tau)),
    }

    def make(model: nn.Module, opt: torch.optim.Optimizer) -> Callable:
        cl = model is tucker_cl

        def step(mark: Callable[[], Any]) -> None:
            saved = tucker_layers_mod.TRAIN_CHANNELS_LAST
            tucker_layers_mod.TRAIN_CHANNELS_LAST = (device.type,) if cl else tuple(
                t for t in saved if t != device.type)
            try:
                model.train()
                mark()
                opt.zero_grad(set_to_none=True)
                loss_fn(model(x), y).backward()
                mark()
                opt.step()
                mark()
            finally:
                tucker_layers_mod.TRAIN_CHANNELS_LAST = saved
        return step

    times = interleaved({k: make(*v) for k, v in variants.items()}, repeats, warmup, device)
    res: dict[str, Any] = {"model": name, "batch": batch, "conv_eval_compression": comp}
    for k, (model, opt) in variants.items():
        r: dict[str, Any] = {"median_step_s": _median(times[k]["total"]),
                             "median_optimizer_step_s": _median(times[k]["tail"])}
        # peak memory of one more step, above what is held before it
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            make(model, opt)(lambda: None)
            torch.cuda.synchronize()
            r["peak_step_bytes_above_held"] = torch.cuda.max_memory_allocated(device) - base
            r["held_bytes_both_models"] = base
        r["memory_report"] = {kk: v for kk, v in memory_report(model, opt).to_dict().items()
                              if kk != "layers"}
        model.train()
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        with OpCounter() as c:
            opt.step()
        r["optimizer_step_ops"] = c.ops
        r["optimizer_step_syncs"] = c.syncs
        r["optimizer_step_syncs_by_kind"] = dict(c.sync_by_kind)
        res[k] = r
    res["final_ranks"] = [list(m.ranks) for m in tucker.modules() if is_tucker_layer(m)]
    d, t = res["dense-sgd"], res["tdlrt-bug"]
    res["step_ratio"] = t["median_step_s"] / d["median_step_s"]
    res["step_ratio_train_channels_last"] = (res["tdlrt-bug-train-cl"]["median_step_s"]
                                             / d["median_step_s"])
    res["optimizer_step_ratio"] = t["median_optimizer_step_s"] / d["median_optimizer_step_s"]
    if "peak_step_bytes_above_held" in d:
        res["peak_memory_ratio"] = (t["peak_step_bytes_above_held"]
                                    / max(d["peak_step_bytes_above_held"], 1))
    return res


def bench_inference(name: str, batch: int, repeats: int, warmup: int, target: float,
                    device: torch.device) -> dict[str, Any]:
    dense, tucker, shape, comp = dense_and_tucker(name, target, device)
    fact = copy.deepcopy(tucker)
    for m in fact.modules():
        if is_tucker_layer(m):
            m.forward_mode = "factorized"
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(2)).to(device)
    models = {"dense": dense, "tdlrt-auto": tucker, "tdlrt-factorized": fact}
    for m in models.values():
        m.eval()

    def make(model: nn.Module) -> Callable:
        def fwd(mark: Callable[[], Any]) -> None:
            with torch.no_grad():
                mark()
                model(x)
                mark()
        return fwd

    times = interleaved({k: make(m) for k, m in models.items()}, repeats, warmup, device)
    med = {k: _median(v["total"]) for k, v in times.items()}
    with torch.no_grad():
        err = float((tucker(x) - fact(x)).abs().max())
    return {"model": name, "batch": batch, "target": target, "conv_eval_compression": comp,
            "median_s": med,
            "speedup_vs_dense": {k: med["dense"] / med[k] for k in med if k != "dense"},
            "auto_paths": _paths(tucker), "auto_vs_factorized_max_abs_diff": err}


# ------------------------------------------------------------------ tests
def run_cuda_tests(timeout: int) -> dict[str, Any]:
    files = sorted(str(f) for f in (HERE.parent / "tests").glob("test_*.py")
                   if "pytest.mark.cuda" in f.read_text())  # collect only these
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", *files]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           cwd=HERE.parent)
        rc, out = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        rc, out = 124, (e.stdout or "") if isinstance(e.stdout, str) else ""
    return {"command": " ".join(cmd), "returncode": rc,
            "seconds": time.perf_counter() - t0, "output_tail": out[-4000:]}


def targets(step: list[dict], infer: list[dict]) -> dict[str, Any]:
    out: dict[str, Any] = {"step": {}, "inference": {}}
    for r in step:
        out["step"][r["model"]] = {"ratio": r["step_ratio"],
                                   "target_<=1.5x": r["step_ratio"] <= STEP_TARGET,
                                   "stretch_<=1.0x": r["step_ratio"] <= STEP_STRETCH}
    for r in infer:
        s = r["speedup_vs_dense"]["tdlrt-auto"]
        need = INFER_HIGH if r["target"] >= INFER_HIGH_FROM - 1e-9 else INFER_TARGET
        out["inference"][f"{r['model']}@{r['target']:.2f}"] = {
            "speedup": s, "required": need, "pass": s >= need}
    checks = [v["target_<=1.5x"] for v in out["step"].values()]
    checks += [v["pass"] for v in out["inference"].values()]
    out["all_pass"] = bool(checks) and all(checks)
    return out


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.environ.get("OUT") or str(HERE / "out"),
                   help="folder of gpu_check.json (default $OUT, else validation/out)")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--models", nargs="+", default=None, choices=sorted(SHAPES))
    p.add_argument("--compressions", type=float, nargs="+", default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--step-target", type=float, default=0.9,
                   help="conv eval compression of the step benchmark (default 0.9)")
    p.add_argument("--tau", type=float, default=0.1)
    p.add_argument("--skip-tests", action="store_true", help="do not run pytest -m cuda")
    p.add_argument("--test-timeout", type=int, default=240)
    p.add_argument("--smoke", action="store_true", help="tiny run on any device")
    p.add_argument("--no-cudnn-benchmark", action="store_true")
    p.add_argument("--skip-fig2-left", action="store_true",
                   help="do not run validation/fig2_left.py on the device at the end")
    a = p.parse_args(argv)
    dev = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda given but torch.cuda.is_available() is False")
    smoke = a.smoke
    models = a.models or (["lenet5"] if smoke else ["vgg16", "lenet5", "resnet18"])
    comps = a.compressions or ([0.9] if smoke else [0.8, 0.9, 0.95, 0.98])
    batch = a.batch or (8 if smoke else 128)
    repeats = a.repeats or (2 if smoke else 15)
    warmup = a.warmup if a.warmup is not None else (1 if smoke else 3)
    for name, v, lo in (("--batch", batch, 1), ("--repeats", repeats, 1),
                        ("--warmup", warmup, 0)):
        if v < lo:
            p.error(f"{name} must be >= {lo}; got {v}")
    for c in comps + [a.step_target]:
        if not 0.0 < c < 1.0:
            p.error(f"compressions must lie in (0, 1); got {c}")
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = not a.no_cudnn_benchmark
    env = {"torch": torch.__version__, "device": str(dev), "smoke": smoke,
           "cuda": torch.version.cuda, "cudnn_benchmark": torch.backends.cudnn.benchmark,
           "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
           "threads": torch.get_num_threads()}
    result: dict[str, Any] = {"env": env, "settings": vars(a) | {
        "models": models, "compressions": comps, "batch": batch, "repeats": repeats,
        "warmup": warmup}}
    out = Path(a.out) / "gpu_check.json"
    t_start = time.perf_counter()
    if not a.skip_tests and not smoke:
        print("pytest -m cuda ...", flush=True)
        result["cuda_tests"] = run_cuda_tests(a.test_timeout)
        print(f"  returncode {result['cuda_tests']['returncode']} "
              f"({result['cuda_tests']['seconds']:.0f} s)", flush=True)
        _write(out, result)
    step_rows: list[dict] = []
    for name in models:
        r = bench_step(name, batch, repeats, warmup, a.step_target, a.tau, dev)
        step_rows.append(r)
        result["step"] = step_rows
        _write(out, result)
        mem = r.get("peak_memory_ratio")
        print(f"step  {name:8s} @ {r['conv_eval_compression']:.1f} %: dense "
              f"{1e3 * r['dense-sgd']['median_step_s']:.2f} ms, tdlrt "
              f"{1e3 * r['tdlrt-bug']['median_step_s']:.2f} ms -> {r['step_ratio']:.2f}x "
              f"(optimizer only {r['optimizer_step_ratio']:.2f}x; syncs "
              f"{r['tdlrt-bug']['optimizer_step_syncs']}, ops "
              f"{r['tdlrt-bug']['optimizer_step_ops']}"
              + (f"; peak memory {mem:.2f}x)" if mem is not None else ")"), flush=True)
    infer_rows: list[dict] = []
    for name in models:
        for c in comps:
            r = bench_inference(name, batch, repeats, warmup, c, dev)
            infer_rows.append(r)
            result["inference"] = infer_rows
            _write(out, result)
            s = r["speedup_vs_dense"]
            print(f"infer {name:8s} @ {r['conv_eval_compression']:.1f} %: auto "
                  f"{s['tdlrt-auto']:.2f}x, factorized {s['tdlrt-factorized']:.2f}x dense "
                  f"(paths {r['auto_paths']})", flush=True)
    result["targets"] = targets(step_rows, infer_rows)
    if not a.skip_fig2_left and not smoke:  # the paper's Figure 2 (left) on this device
        import fig2_left

        print("fig2_left ...", flush=True)
        try:
            fig2_left.main(["--device", str(dev), "--batch", "1024" if dev.type == "cuda"
                            else "128", "--repeats", "20" if dev.type == "cuda" else "5",
                            "--out", str(Path(out).parent / "fig2_left")])
            result["fig2_left"] = "fig2_left/"
        except Exception as e:  # noqa: BLE001 - the benchmarks above stay written
            result["fig2_left"] = f"failed: {type(e).__name__}: {e}"
    result["seconds"] = time.perf_counter() - t_start
    _write(out, result)
    print(f"all targets met: {result['targets']['all_pass']}; written to {out} "
          f"({result['seconds']:.0f} s)")
    return result


if __name__ == "__main__":
    main()
