"""Data-parallel TDLRT: plain DistributedDataParallel on 2 gloo processes (127.0.0.1).

The workers (tests/dist_worker.py) run every scenario once (module fixture, bounded by a
timeout); the tests compare their snapshots with each other and with single-process
training on the concatenated batch, computed here.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import warnings

import pytest
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(__file__))
import dist_worker as W  # noqa: E402
from tucker_dlra.nn import TDLRT, TuckerConv2d  # noqa: E402
from tucker_dlra.nn.distributed import check_not_sharded  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(),
                                reason="torch.distributed not available")

TIMEOUT = 240


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: list[str], world: int, tmp: str, timeout: float = TIMEOUT) -> list[str]:
    """Run ``world`` worker processes (env:// rendezvous); return their outputs."""
    port = free_port()
    procs = []
    for rank in range(world):
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                   WORLD_SIZE=str(world), LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen([sys.executable, *args], env=env, cwd=tmp,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    outs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=timeout)
            outs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0, out[-3000:]
    return outs


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("ddp"))
    launch([os.path.join(os.path.dirname(__file__), "dist_worker.py"), "all", tmp], 2, tmp)
    return [torch.load(os.path.join(tmp, f"all-{r}.pt"), weights_only=False) for r in (0, 1)]


def _single(opts: dict, steps: int = W.STEPS, clip: float | None = None) -> list[dict]:
    model = W.make_model()
    opt = TDLRT(model.parameters(), **opts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return W.train(model, opt, model, 0, 1, steps=steps, clip=clip)


def _compare(snaps0: list[dict], snaps1: list[dict], ref: list[dict]) -> set:
    ranks = set()
    for s0, s1, r in zip(snaps0, snaps1, ref, strict=True):
        assert s0.keys() == r.keys()
        for k in r:
            if k.endswith(".ranks"):
                assert s0[k] == s1[k] == r[k], k  # identical ranks on all workers
                ranks.add((k, r[k]))
            else:
                assert torch.equal(s0[k], s1[k]), k  # workers bitwise identical
                err = float((s0[k] - r[k]).norm() / r[k].norm())
                assert err < 1e-6, (k, err)  # = single process on the concatenated batch
    return ranks


@pytest.mark.parametrize("name", list(W.CONFIGS))
def test_ddp_workers_identical_and_equal_single_process(results, name):
    ranks = _compare(results[0][name], results[1][name], _single(W.CONFIGS[name]))
    if W.CONFIGS[name].get("adaptive", True):
        initial = W.make_model()[4].ranks
        assert {r for k, r in ranks if k == "4.ranks"} - {initial}  # ranks changed


def test_model_of_tucker_layers_only(results):
    """No parameter left for DDP itself (it then skips its forward bookkeeping)."""
    model = W.make_model(tucker_only=True)
    opt = TDLRT(model.parameters(), **W.CONFIGS["bug-sgd"])
    ref = W.train(model, opt, model, 0, 1, steps=3)
    _compare(results[0]["tucker-only"], results[1]["tucker-only"], ref)


def test_no_sync_accumulation_equals_one_large_batch(results):
    _compare(results[0]["nosync"], results[1]["nosync"], _single(W.CONFIGS["bug-sgd"], steps=3))


def test_plain_autograd_gradients_are_averaged_in_the_step(results):
    """Tucker layers with param_grads=True (autograd .grad on core and factors): the step
    averages their K- and C-gradients itself; a DDP-trained model deep-copies."""
    model = W.make_model()
    opt = TDLRT(model.parameters(), **W.CONFIGS["bug-sgd"])
    for m in model:
        if hasattr(m, "param_grads"):
            m.param_grads = True
    ref = W.train(model, opt, model, 0, 1, steps=3)
    _compare(results[0]["autograd"], results[1]["autograd"], ref)
    assert results[0]["deepcopy"] and results[1]["deepcopy"]


def test_clip_grad_norm_under_ddp_equals_single_process(results):
    """All workers hold the same averaged .grad after backward, so clip_grad_norm_ computes
    the same factor everywhere, equal to the single-process one."""
    ref = _single(W.CONFIGS["bug-sgd"], steps=3, clip=0.05)
    _compare(results[0]["clip"], results[1]["clip"], ref)
    unclipped = _single(W.CONFIGS["bug-sgd"], steps=3)
    assert not torch.equal(ref[0]["0.W"], unclipped[0]["0.W"])  # the clip did act


def test_library_clip_under_ddp_identical_workers_and_an_upper_bound(results):
    """tucker_dlra.nn.clip_grad_norm_ under DDP: the same norm and step on every worker;
    layers that average projections count sqrt(mean of the workers' ||G_w||^2), at least
    the norm of the averaged G that a single process on the concatenated batch counts."""
    n0, n1 = results[0]["libclip_norms"], results[1]["libclip_norms"]
    assert n0 == n1 and len(n0) == 3
    for s0, s1 in zip(results[0]["libclip"], results[1]["libclip"], strict=True):
        for k in s0:
            assert s0[k] == s1[k] if k.endswith(".ranks") else torch.equal(s0[k], s1[k]), k
    model = W.make_model()
    opt = TDLRT(model.parameters(), **W.CONFIGS["bug-sgd"])
    single: list = []
    W.train(model, opt, model, 0, 1, steps=1, clip=0.05, lib_clip=single)
    assert n0[0] >= single[0] * (1 - 1e-12)
    assert 0.05 / n0[0] < 0.5  # the clip acted


def test_host_syncs_per_step_under_ddp(results):
    """BUG: the step's read-back, the fingerprint before the C-gradient all-reduce and the
    consistency check; parallel BUG: no C-gradient round.  (A single process: one.)"""
    for r in results:
        assert r["syncs-bug"] <= 3 and r["syncs-parallel"] <= 2, r


def test_bytes_per_step_are_the_projections(results):
    """Per layer: round 1 (core + K-gradients) and round 2 (the augmented core), or the dense
    kernel gradient where that is smaller (ranks near full); plus 3 fixed-size checks.
    Never more than dense DDP of the same kernels."""
    ranks = results[0]["bytes_ranks"]
    shapes = [(6, 2, 3, 3), (5, 6, 3, 3), (12, 80)]
    total, rounds2 = 0, 0
    for s, r in zip(shapes, ranks, strict=True):
        r1 = math.prod(r) + sum(n * k for n, k in zip(s, r, strict=True))
        r2 = math.prod(min(2 * k, n) for n, k in zip(s, r, strict=True))
        if r1 + r2 < math.prod(s):
            total, rounds2 = total + r1 + r2, 1
        else:
            total += math.prod(s)
    assert rounds2  # the low-rank layer sends projections
    expect = {"all_reduce": 8 * total + (2 + rounds2) * 32, "checks": (2 + rounds2) * 32,
              "calls": 3 + 2 * rounds2}
    assert results[0]["bytes"] == results[1]["bytes"] == expect
    dense = 8 * sum(math.prod(s) for s in shapes)
    assert 8 * total < dense
    # DDP (with the user's communication hook, kept) averages the other parameters only
    others = sum(p.numel() for n, p in W.make_model().named_parameters()
                 if not (n.endswith("core") or ".factors." in n))
    assert results[0]["ddp_bytes"] == 8 * others


def test_rank_disagreement_is_a_clear_error_on_every_worker(results):
    for res in results:
        assert res["error"] is not None and "disagree on the new Tucker ranks" in res["error"]
        assert res["unchanged"]  # nothing was written
        assert res["error2"] is not None and "checksums differ" in res["error2"]


def test_fsdp_is_refused_with_a_clear_error(results):
    for res in results:
        assert len(res["fsdp"]) == 2
        assert all(m is not None and "FullyShardedDataParallel" in m for m in res["fsdp"])


def test_fsdp_flat_parameters_are_refused():
    class FlatParameter(nn.Parameter):  # what FullyShardedDataParallel hands an optimizer
        pass

    with pytest.raises(TypeError, match="FullyShardedDataParallel"):
        check_not_sharded([FlatParameter(torch.zeros(3))])
    with pytest.raises(TypeError, match="FullyShardedDataParallel"):
        TDLRT([FlatParameter(torch.zeros(3))], lr=0.1)


def test_clip_grad_value_is_refused_and_clip_norm_scales_the_tucker_step():
    """Single process, against a dense model with the same kernel: clipping by norm scales
    the whole Tucker step by the clip factor s, i.e. TDLRT steps from s G as the dense layer
    steps from its clipped s' G; the counted norm differs (warned); clip_grad_value_ (not a
    common factor) is an error, not a silently unclipped step."""
    from tucker_dlra.nn import distributed

    x = torch.randn(4, 2, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def setup():
        torch.manual_seed(1)
        layer = TuckerConv2d(2, 4, 3, rank=(3, 2, 3, 3), dtype=torch.float64)
        opt = TDLRT(layer.parameters(), lr=0.5, tau=0.0)
        layer(x).square().mean().backward()
        return layer, opt

    base, opt = setup()
    dense = base.to_dense()
    dense(x).square().mean().backward()
    torch.testing.assert_close(base.grad_full, dense.weight.grad)  # the same G
    opt.step()
    layer, opt = setup()
    torch.nn.utils.clip_grad_value_(layer.parameters(), 1e-4)
    with pytest.raises(RuntimeError, match="clip_grad_value_"):
        opt.step()
    distributed._WARNED[0] = False
    clipped, opt = setup()
    norm = float(torch.nn.utils.clip_grad_norm_(clipped.parameters(), 1e-3))
    with pytest.warns(UserWarning, match="rescaled"):
        opt.step()
    s = 1e-3 / (norm + 1e-6)
    ref, opt = setup()  # TDLRT from the scaled kernel gradient s G, seen as unmodified
    ref.grad_full = ref.grad_full * s
    for p in ref.parameters():
        p.grad = p.grad * s
    distributed._record(ref)
    opt.step()
    torch.testing.assert_close(clipped.weight_full(), ref.weight_full(), rtol=1e-10,
                               atol=1e-13)
    assert torch.linalg.vector_norm(clipped.weight_full() - base.weight_full()) > 1e-3
    # the dense layer's clip counts ||G||, the Tucker layer's its .grad (warned above)
    assert float(dense.weight.grad.norm()) != pytest.approx(norm)


def test_kernel_only_gradients_accumulate_like_one_batch():
    torch.manual_seed(0)
    layer = TuckerConv2d(2, 4, 3, rank=(3, 2, 3, 3), dtype=torch.float64)
    TDLRT(layer.parameters(), lr=0.1)
    x = torch.randn(4, 2, 6, 6, dtype=torch.float64)
    layer(x).square().sum().backward()
    one = [p.grad.clone() for p in [layer.core, *layer.factors]]
    layer.zero_grad()
    layer(x[:2]).square().sum().backward()
    layer(x[2:]).square().sum().backward()
    for a, b in zip(one, [layer.core, *layer.factors], strict=True):
        torch.testing.assert_close(b.grad, a)


def test_cli_under_torchrun_resumes_a_single_process_run_and_writes_one_checkpoint(tmp_path):
    """``torchrun --nproc-per-node 2 -m tucker_dlra train --resume`` continues a checkpoint of
    a single-process run; rank 0 alone logs and writes; the result loads without
    torch.distributed (in this process) and resumes in a single process."""
    from tucker_dlra.nn.cli import main
    from tucker_dlra.nn.train import load_checkpoint, model_from_checkpoint

    out = tmp_path / "run"
    args = ["train", "--train-limit", "120", "--test-limit", "40", "--batch-size", "30",
            "--epochs", "3", "--max-steps", "3", "--no-plots", "--no-progress",
            "--threads", "1", "--device", "cpu", "--out", str(out)]
    assert main(args) == 0  # single process: epoch 1 (3 steps of global batch 30)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    base = [a for a in args[:-2] if a not in ("--max-steps", "3", "--epochs")]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
           "-m", "tucker_dlra", *base, "--epochs", "3", "--max-steps", "6",
           "--out", str(out), "--resume"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    log = proc.stdout
    assert log.count("resumed ") == 1 and log.count("test accuracy") == 1  # rank 0 only
    assert "per-worker batch 15, global batch 30" in log
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "metrics.csv",
                                                     "metrics.json", "report.txt"]
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["step"] == 6 and not torch.distributed.is_initialized()
    model = model_from_checkpoint(state)
    assert not any(k.startswith("module.") for k in state["model"])
    with torch.no_grad():
        assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert main([*base, "--epochs", "3", "--max-steps", "9", "--out", str(out),
                 "--resume"]) == 0  # and back to one process
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 9


def test_grad_scaler_unscale_gives_the_unscaled_step():
    """AMP's GradScaler multiplies the loss by 2^k and unscale_ divides the .grad: TDLRT
    takes the factor over to the C-step's grad_full (no warning: a power of two)."""
    x = torch.randn(4, 2, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def run(scaler):
        torch.manual_seed(1)
        layer = TuckerConv2d(2, 4, 3, rank=(3, 2, 3, 3), dtype=torch.float64)
        opt = TDLRT(layer.parameters(), lr=0.5, momentum=0.9, tau=0.1)
        for _ in range(2):
            opt.zero_grad()
            loss = layer(x).square().mean()
            if scaler is None:
                loss.backward()
                opt.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
        return layer

    ref = run(None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scaled = run(torch.amp.GradScaler("cpu", init_scale=2.0 ** 10))
    assert scaled.ranks == ref.ranks
    torch.testing.assert_close(scaled.weight_full(), ref.weight_full(), rtol=1e-12, atol=1e-14)
