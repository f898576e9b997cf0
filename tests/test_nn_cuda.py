"""The PyTorch adapter on a CUDA device: same results as on the CPU, device/dtype kept.

Runs only when ``torch.cuda.is_available()``; skipped (not failed) without a GPU.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from tucker_dlra.app.models import LeNet5
from tucker_dlra.nn import (
    LowRankLinear,
    TuckerConv1d,
    TuckerConv2d,
    TuckerConv3d,
    VanillaCPConv,
    VanillaMatrixConv,
    VanillaTuckerConv,
    compression_report,
    to_dense,
    tuckerize,
)
from tucker_dlra.nn.optim import TDLRT

pytestmark = pytest.mark.cuda  # skipped without a GPU by conftest

GPU = "cuda"
DT = torch.float64


def _on(module: nn.Module, device: str) -> nn.Module:
    return copy.deepcopy(module).to(device)


def _assert_on(module: nn.Module, device: str, dtype: torch.dtype) -> None:
    for name, p in module.named_parameters():
        assert p.device.type == device, name
        assert p.dtype == dtype, name


@pytest.mark.parametrize("make,shape", [
    (lambda: TuckerConv1d(4, 6, 3, padding=1, rank=(3, 2, 2), dtype=DT), (2, 4, 9)),
    (lambda: TuckerConv2d(4, 6, 3, stride=2, padding=1, rank=(3, 2, 2, 3), dtype=DT),
     (2, 4, 9, 9)),
    (lambda: TuckerConv2d(4, 6, 3, padding="same", padding_mode="reflect", groups=2,
                          dtype=DT), (2, 4, 7, 7)),
    (lambda: TuckerConv3d(3, 4, 3, rank=2, dtype=DT), (1, 3, 5, 5, 5)),
    (lambda: LowRankLinear(12, 7, rank=3, dtype=DT), (5, 12)),
    (lambda: VanillaTuckerConv(4, 6, 3, padding=1, rank=0.5, dtype=DT), (2, 4, 8, 8)),
    (lambda: VanillaCPConv(4, 6, 3, padding=1, rank=5, dtype=DT), (2, 4, 8, 8)),
    (lambda: VanillaMatrixConv(4, 6, 3, padding=1, rank=3, dtype=DT), (2, 4, 8, 8)),
])
def test_forward_paths_on_cuda_equal_cpu(make, shape):
    torch.manual_seed(0)
    cpu = make()
    gpu = _on(cpu, GPU)
    _assert_on(gpu, GPU, DT)
    x = torch.randn(shape, dtype=DT)
    for mode in ("dense", "factorized"):
        if mode == "factorized" and getattr(cpu, "groups", 1) != 1 and not hasattr(cpu, "core"):
            continue  # vanilla layers refuse the factorized path with groups
        cpu.forward_mode = gpu.forward_mode = mode
        y = gpu(x.to(GPU))
        assert y.device.type == GPU and y.dtype == DT
        torch.testing.assert_close(y.cpu(), cpu(x), rtol=1e-10, atol=1e-10)
    dense = gpu.to_dense()
    _assert_on(dense, GPU, DT)
    torch.testing.assert_close(dense(x.to(GPU)).cpu(), cpu(x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("integrator", ["bug", "parallel"])
def test_tdlrt_steps_on_cuda_equal_cpu(integrator):
    torch.manual_seed(1)
    cpu = tuckerize(LeNet5().to(DT), rank=(10, 1, 4, 4), exclude=nn.Linear)
    gpu = _on(cpu, GPU)
    opts = [TDLRT(m.parameters(), lr=0.05, momentum=0.9, tau=0.2, integrator=integrator)
            for m in (cpu, gpu)]
    x, y = torch.randn(32, 1, 28, 28, dtype=DT), torch.randint(0, 10, (32,))
    for _ in range(3):
        for model, opt, dev in ((cpu, opts[0], "cpu"), (gpu, opts[1], GPU)):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x.to(dev)), y.to(dev)).backward()
            opt.step()
    _assert_on(gpu, GPU, DT)
    for (name, a), (_, b) in zip(cpu.named_parameters(), gpu.named_parameters(), strict=True):
        assert a.shape == b.shape, name  # same ranks chosen
        if ".factors." not in name and not name.endswith(".core"):
            torch.testing.assert_close(b.cpu(), a, rtol=1e-7, atol=1e-9)
    # factors and cores are compared through the kernels they represent: column signs of
    # a QR or eigenvector basis differ between cuSOLVER and LAPACK (so compare full tensors
    # or projectors, never the factors)
    for m_cpu, m_gpu in ((cpu.conv1, gpu.conv1), (cpu.conv2, gpu.conv2)):
        torch.testing.assert_close(m_gpu.weight_full().detach().cpu(),
                                   m_cpu.weight_full().detach(), rtol=1e-7, atol=1e-9)
    for p in gpu.parameters():
        for v in opts[1].state[p].values():
            if torch.is_tensor(v) and v.dim() > 0:
                assert v.device.type == GPU
    torch.testing.assert_close(gpu(x.to(GPU)).cpu(), cpu(x), rtol=1e-7, atol=1e-8)


def test_float32_training_on_cuda_keeps_factors_orthonormal():
    torch.manual_seed(2)
    model = tuckerize(LeNet5(), exclude=nn.Linear).to(GPU)
    opt = TDLRT(model.parameters(), lr=0.05, momentum=0.9, tau=0.1)
    x, y = torch.randn(64, 1, 28, 28, device=GPU), torch.randint(0, 10, (64,), device=GPU)
    for _ in range(5):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    _assert_on(model, GPU, torch.float32)
    for m in (model.conv1, model.conv2):
        for u in m.factors:
            eye = torch.eye(u.shape[1], device=GPU)
            dev = u.detach().T @ u.detach() - eye
            # loss of orthogonality in the spectral norm (largest deviation of a singular
            # value of U from 1); the Frobenius norm adds ~r such terms
            assert float(torch.linalg.matrix_norm(dev, ord=2)) <= 1e-5


def test_conversion_and_report_on_cuda():
    torch.manual_seed(3)
    model = LeNet5().to(DT)
    gpu_model = _on(model, GPU)
    x = torch.randn(4, 1, 28, 28, dtype=DT)
    for kind in ("tdlrt", "vanilla-tucker", "vanilla-cp", "vanilla-matrix"):
        rank = 0.5 if kind != "tdlrt" else None
        t_gpu = tuckerize(gpu_model, rank=rank, kind=kind)
        t_cpu = tuckerize(model, rank=rank, kind=kind)
        _assert_on(t_gpu, GPU, DT)
        torch.testing.assert_close(t_gpu(x.to(GPU)).cpu(), t_cpu(x), rtol=1e-8, atol=1e-9)
        d = to_dense(t_gpu)
        _assert_on(d, GPU, DT)
        torch.testing.assert_close(d(x.to(GPU)).cpu(), t_cpu(x), rtol=1e-8, atol=1e-9)
        rep_gpu = compression_report(t_gpu, input_shape=(1, 28, 28))
        rep_cpu = compression_report(t_cpu, input_shape=(1, 28, 28))
        assert rep_gpu.to_dict() == rep_cpu.to_dict()


def test_measured_path_choice_on_cuda():
    """Graph-free ``auto`` forwards on CUDA time both paths once per configuration (CUDA
    events) and keep the faster; the output is the layer's function either way."""
    from tucker_dlra.nn import layers as L

    torch.manual_seed(4)
    layer = TuckerConv2d(64, 64, 3, padding=1, rank=(8, 8, 3, 3), device=GPU).eval()
    x = torch.randn(16, 64, 16, 16, device=GPU)
    key = layer._path_key(x)
    L.PATH_SELECTOR.choices.pop(key, None)
    with torch.no_grad():
        y = layer(x)
        ref = nn.functional.conv2d(x, layer.weight_full(), layer.bias, padding=1)
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4)
    t = L.PATH_SELECTOR.timings[key]
    assert set(t) == {"dense", "factorized"} and all(v > 0 for v in t.values())
    assert L.PATH_SELECTOR.choices[key] == min(t, key=t.get)
    n = len(L.PATH_SELECTOR.choices)
    with torch.no_grad():
        layer(x)
    assert len(L.PATH_SELECTOR.choices) == n
    # training: forward + backward timed on a private copy; gradients of one backward
    layer.train()
    ref = copy.deepcopy(layer)
    ref.forward_mode = "dense"
    layer(x).square().sum().backward()
    ref(x).square().sum().backward()
    assert any(k[0] == "train" for k in L.PATH_SELECTOR.choices)
    torch.testing.assert_close(layer.grad_full, ref.grad_full, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(layer.core.grad, ref.core.grad, rtol=1e-4, atol=1e-3)


def test_kernel_cache_follows_steps_on_cuda():
    torch.manual_seed(5)
    layer = TuckerConv2d(8, 16, 3, padding=1, rank=(4, 4, 3, 3), forward_mode="dense",
                         dtype=DT, device=GPU)
    opt = TDLRT(layer.parameters(), lr=0.1, tau=0.0)
    x = torch.randn(4, 8, 8, 8, dtype=DT, device=GPU)
    for _ in range(2):
        layer.eval()
        with torch.no_grad():
            before = layer(x)
        layer.train()
        opt.zero_grad()
        layer(x).square().mean().backward()
        opt.step()
        layer.eval()
        with torch.no_grad():
            after = layer(x)
            ref = nn.functional.conv2d(x, layer.weight_full(), layer.bias, padding=1)
        assert not torch.allclose(after, before)
        torch.testing.assert_close(after, ref, rtol=1e-10, atol=1e-10)
