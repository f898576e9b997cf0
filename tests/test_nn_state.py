"""Checkpoints and memory of Tucker models trained by TDLRT: state_dicts across rank
changes (model and optimizer), identical continuation, reallocation when ranks shrink."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from tucker_dlra.nn import TDLRT, LowRankLinear, TuckerConv2d

D64 = torch.float64


def model_with(rank, seed=0, dtype=D64):
    torch.manual_seed(seed)
    return nn.Sequential(
        TuckerConv2d(2, 6, 3, padding=1, rank=rank, dtype=dtype),
        nn.ReLU(),
        TuckerConv2d(6, 6, 3, padding=1, rank=rank, dtype=dtype),
        nn.Flatten(),
        LowRankLinear(6 * 5 * 5, 4, rank=rank if isinstance(rank, int) else None, dtype=dtype),
        nn.Linear(4, 3, dtype=dtype),
    )


def data(seed=1, dtype=D64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(8, 2, 5, 5, generator=g, dtype=dtype),
            torch.randint(0, 3, (8,), generator=g))


def step(model, opt, x, y):
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()


def ranks(model):
    return [m.ranks for m in model.modules() if hasattr(m, "ranks")]


def save_load(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("descent", ["sgd", "adam"])
@pytest.mark.parametrize("integrator", ["bug", "parallel"])
def test_checkpoint_round_trip_continues_identically(descent, integrator):
    opts = dict(lr=0.2 if descent == "sgd" else 0.1, momentum=0.9 if descent == "sgd" else 0,
                tau=0.15 if descent == "sgd" else 0.05, descent=descent, integrator=integrator)
    a = model_with(3)
    opt_a = TDLRT(a.parameters(), **opts)
    x, y = data()
    initial = ranks(a)
    for _ in range(4):
        step(a, opt_a, x, y)
    assert ranks(a) != initial  # the ranks changed during training
    model_sd, opt_sd = save_load(a.state_dict()), save_load(opt_a.state_dict())
    b = model_with(2, seed=5)  # other initial ranks and values
    b.load_state_dict(model_sd)
    opt_b = TDLRT(b.parameters(), **opts)
    opt_b.load_state_dict(opt_sd)
    assert ranks(b) == ranks(a)
    x2, y2 = data(2)
    for _ in range(2):
        step(a, opt_a, x2, y2)
        step(b, opt_b, x2, y2)
    assert ranks(b) == ranks(a)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        sa, sb = opt_a.state[p], opt_b.state[q]
        assert sa.keys() == sb.keys()
        for k in sa:
            if torch.is_tensor(sa[k]):
                torch.testing.assert_close(sa[k], sb[k], rtol=1e-12, atol=1e-14)


def test_optimizer_state_dict_reload_then_step():
    """A fresh optimizer loaded from a serialised state dict takes the very step the original
    takes; without the state (momentum lost) the step differs, so the check is not vacuous."""
    model = model_with(3)
    opt = TDLRT(model.parameters(), lr=0.1, momentum=0.9, tau=0.1)
    x, y = data()
    step(model, opt, x, y)
    step(model, opt, *data(3))
    assert all(float(opt.state[p]["momentum_buffer"].abs().max()) > 0 for p in model.parameters())
    sd = save_load(opt.state_dict())
    twin, fresh = copy.deepcopy(model), copy.deepcopy(model)
    opt_twin = TDLRT(twin.parameters(), lr=0.1, momentum=0.9, tau=0.1)
    opt_twin.load_state_dict(sd)
    opt_fresh = TDLRT(fresh.parameters(), lr=0.1, momentum=0.9, tau=0.1)
    x2, y2 = data(2)
    for m, o in ((model, opt), (twin, opt_twin), (fresh, opt_fresh)):
        step(m, o, x2, y2)
    assert ranks(twin) == ranks(model)
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(opt_twin.state[q]["momentum_buffer"],
                                   opt.state[p]["momentum_buffer"], rtol=1e-12, atol=1e-14)
    differs = [p.shape != q.shape or not torch.allclose(p, q, rtol=1e-6, atol=1e-9)
               for p, q in zip(model.parameters(), fresh.parameters(), strict=True)]
    assert any(differs)


def test_optimizer_state_loaded_into_wrong_ranks_is_a_clear_error():
    a = model_with(None)
    opt_a = TDLRT(a.parameters(), lr=0.2, momentum=0.9, tau=0.3)
    x, y = data()
    for _ in range(3):
        step(a, opt_a, x, y)
    b = model_with(None)  # the model's checkpoint is NOT loaded first
    opt_b = TDLRT(b.parameters(), lr=0.2, momentum=0.9, tau=0.3)
    opt_b.load_state_dict(opt_a.state_dict())
    F.cross_entropy(b(x), y).backward()
    with pytest.raises(ValueError, match="load the model's state_dict before"):
        opt_b.step()


def _bytes(model, opt):
    total = 0
    for p in model.parameters():
        total += p.untyped_storage().nbytes()
        assert p.untyped_storage().nbytes() == p.numel() * p.element_size()  # no padding
        for v in opt.state[p].values():
            if torch.is_tensor(v):
                assert v.untyped_storage().nbytes() == v.numel() * v.element_size()
                total += v.untyped_storage().nbytes()
    return total


def test_memory_falls_when_ranks_shrink():
    model = model_with(None, dtype=torch.float32)
    opt = TDLRT(model.parameters(), lr=0.1, momentum=0.9, tau=0.0)
    x, y = data(dtype=torch.float32)
    step(model, opt, x, y)
    full = _bytes(model, opt)
    for group in opt.param_groups:
        group["tau"] = 0.6
    for _ in range(2):
        step(model, opt, x, y)
    small = _bytes(model, opt)
    tucker = [m for m in model.modules() if hasattr(m, "ranks")]
    assert all(r < n for m in tucker for r, n in zip(m.ranks, m.kernel_shape, strict=True)
               if n > 1)
    assert small < 0.5 * full
    for m in tucker:
        assert m.parameter_bytes() == sum(p.numel() * p.element_size() for p in m.parameters())


def test_deepcopied_model_trains_like_the_original():
    a = model_with(3)
    b = copy.deepcopy(a)
    opt_a = TDLRT(a.parameters(), lr=0.1, momentum=0.9, tau=0.1)
    opt_b = TDLRT(b.parameters(), lr=0.1, momentum=0.9, tau=0.1)
    x, y = data()
    for _ in range(3):
        step(a, opt_a, x, y)
        step(b, opt_b, x, y)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


def test_pickled_model_and_optimizer_keep_training():
    a = model_with(3)
    opt = TDLRT(a.parameters(), lr=0.1, momentum=0.9, tau=0.1, nonfinite="skip")
    x, y = data()
    step(a, opt, x, y)
    buf = io.BytesIO()
    torch.save({"model": a, "opt": opt}, buf)
    buf.seek(0)
    obj = torch.load(buf, weights_only=False)
    b, opt_b = obj["model"], obj["opt"]
    step(a, opt, x, y)
    step(b, opt_b, x, y)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
    assert opt_b.nonfinite == "skip"


def test_loading_non_orthonormal_factors_restores_them_and_keeps_the_kernel():
    """A checkpoint whose factor has the right shape but is not orthonormal: the load warns,
    naming the factor, re-orthonormalises (kernel unchanged), and a TDLRT step at lr = 0 then
    leaves the kernel unchanged (with the raw factor it changed it by 1600 %)."""
    model = model_with(3)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(3)
    sd["2.factors.1"] = torch.randn(sd["2.factors.1"].shape, generator=g, dtype=D64)
    layer = model[2]
    from tucker_dlra import TuckerTensor, check_orthonormal

    want = TuckerTensor(sd["2.core"], [sd[f"2.factors.{i}"] for i in range(4)]).full()
    with pytest.warns(UserWarning, match=r"2\.factors\.1 .*not orthonormal|not orthonormal.*"
                      r"2\.factors\.1"):
        model.load_state_dict(sd)
    check_orthonormal([f.detach() for f in layer.factors])
    torch.testing.assert_close(layer.weight_full().detach(), want, rtol=1e-12, atol=1e-12)
    opt = TDLRT(model.parameters(), lr=0.0, momentum=0.0, tau=0.0)
    step(model, opt, *data())
    torch.testing.assert_close(layer.weight_full().detach(), want, rtol=1e-10, atol=1e-10)


def test_loading_orthonormal_factors_is_silent_and_exact():
    a, b = model_with(3), model_with(3, seed=4)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        b.load_state_dict(a.state_dict())
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
