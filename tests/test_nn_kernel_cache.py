"""The Tucker layers' dense-kernel cache and the measured (benchmark-mode) path choice.

The cache must never hand out a stale kernel: every way core or factors can change (in-place
updates, optimizer steps, ``set_tucker``, ``load_state_dict``, ``.to()``) is checked against
the kernel rebuilt from scratch.  The measured choice is tested with an injected timer, so
the chosen path is deterministic.
"""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from tucker_dlra.nn import TDLRT, LowRankLinear, TuckerConv2d
from tucker_dlra.nn import layers as L

from tucker_dlra import hosvd, valid_rank

DT = torch.float64


def _conv(**kw) -> TuckerConv2d:
    torch.manual_seed(0)
    return TuckerConv2d(4, 6, 3, padding=1, rank=(3, 2, 2, 2), dtype=DT, **kw)


def _linear(**kw) -> LowRankLinear:
    torch.manual_seed(0)
    return LowRankLinear(7, 5, rank=3, dtype=DT, **kw)


def _x(layer) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    shape = (3, 4, 6, 6) if isinstance(layer, TuckerConv2d) else (3, 7)
    return torch.randn(shape, generator=g, dtype=DT)


def _reference(layer, x) -> torch.Tensor:
    """The layer's function computed from scratch (kernel rebuilt, plain F.conv/F.linear)."""
    with torch.no_grad():
        w = L.TuckerTensor(layer.core.clone(), [f.clone() for f in layer.factors]).full()
        if isinstance(layer, TuckerConv2d):
            return F.conv2d(x, w, layer.bias, layer.stride, 1)
        return F.linear(x, w, layer.bias)


class _Count:
    """Counts the layer's kernel builds (wraps ``weight_full``)."""

    def __init__(self, layer):
        self.n = 0
        inner = layer.weight_full

        def wrapped():
            self.n += 1
            return inner()

        layer.weight_full = wrapped


def _infer(layer, x) -> torch.Tensor:
    with torch.no_grad():
        return layer(x)


MAKERS = [pytest.param(_conv, id="conv"), pytest.param(_linear, id="linear")]


@pytest.mark.parametrize("make", MAKERS)
def test_cache_reuses_the_kernel_until_a_factor_changes_in_place(make):
    layer = make(forward_mode="dense").eval()
    x = _x(layer)
    count = _Count(layer)
    y1 = _infer(layer, x)
    y2 = _infer(layer, x)
    assert count.n == 1  # second forward: no rebuild
    torch.testing.assert_close(y1, _reference(layer, x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y2, y1, rtol=0, atol=0)
    with torch.no_grad():
        layer.factors[0][:, 0].mul_(3.0)  # in place: version counter bumped
    y3 = _infer(layer, x)
    assert count.n == 2
    assert not torch.allclose(y3, y1)
    torch.testing.assert_close(y3, _reference(layer, x), rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        layer.core.add_(0.5)
    y4 = _infer(layer, x)
    assert count.n == 3
    torch.testing.assert_close(y4, _reference(layer, x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("make", MAKERS)
def test_set_tucker_same_shape_and_load_state_dict_invalidate(make):
    layer = make(forward_mode="dense").eval()
    x = _x(layer)
    _infer(layer, x)
    other = make(forward_mode="dense")
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(-1.5)
    # set_tucker writes through p.data (no version bump): must still invalidate
    layer.set_tucker(other.tucker())
    torch.testing.assert_close(_infer(layer, x), _reference(layer, x), rtol=1e-12, atol=1e-12)
    # a checkpoint with other ranks (parameters resized on load)
    other2 = make(forward_mode="dense")
    t = hosvd(other2.weight_full().detach(),
              rank=valid_rank([max(1, r - 1) for r in other2.ranks]))
    other2.set_tucker(t)
    layer.load_state_dict(other2.state_dict())
    assert layer.ranks == other2.ranks
    torch.testing.assert_close(_infer(layer, x), _reference(other2, x), rtol=1e-12, atol=1e-12)
    # and back to a same-shaped checkpoint (other's factors were scaled: the load says so and
    # re-orthonormalises them, keeping the kernel)
    with pytest.warns(UserWarning, match="loaded Tucker factors are not orthonormal"):
        layer.load_state_dict(other.state_dict())
    torch.testing.assert_close(_infer(layer, x), _reference(other, x), rtol=1e-12, atol=1e-12)


def test_cache_follows_tdlrt_and_sgd_steps():
    layer = _conv(forward_mode="dense")
    x = _x(layer)
    target = torch.randn(3, 6, 6, 6, dtype=DT)
    opt = TDLRT(layer.parameters(), lr=0.1, tau=0.0)
    for _ in range(3):
        layer.eval()
        before = _infer(layer, x)
        layer.train()
        opt.zero_grad()
        ((layer(x) - target) ** 2).mean().backward()
        opt.step()
        layer.eval()
        after = _infer(layer, x)
        assert not torch.allclose(after, before)
        torch.testing.assert_close(after, _reference(layer, x), rtol=1e-12, atol=1e-12)
    # a plain Euclidean optimizer on core and factors (autograd gradients)
    lin = _linear(forward_mode="dense")
    lin.param_grads = True
    sgd = torch.optim.SGD(lin.parameters(), lr=0.1)
    xl = _x(lin)
    before = _infer(lin.eval(), xl)
    lin.train()
    lin(xl).square().sum().backward()
    sgd.step()
    after = _infer(lin.eval(), xl)
    assert not torch.allclose(after, before)
    torch.testing.assert_close(after, _reference(lin, xl), rtol=1e-12, atol=1e-12)


def test_step_generation_invalidates_writes_through_data():
    """An optimizer writing through ``p.data`` bumps no version counter: the global step
    hook still invalidates every cache."""

    class DataWriter(torch.optim.Optimizer):
        def __init__(self, params):
            super().__init__(params, {})

        @torch.no_grad()
        def step(self, closure=None):
            for g in self.param_groups:
                for p in g["params"]:
                    p.data.mul_(2.0)

    layer = _conv(forward_mode="dense").eval()
    x = _x(layer)
    y1 = _infer(layer, x)
    versions = [p._version for p in layer.parameters()]
    DataWriter(layer.parameters()).step()
    assert [p._version for p in layer.parameters()] == versions
    y2 = _infer(layer, x)
    torch.testing.assert_close(y2, _reference(layer, x), rtol=1e-12, atol=1e-12)
    assert not torch.allclose(y2, y1)


def test_training_autograd_unaffected_by_the_cache():
    """A kernel cached by an inference forward is never part of a training graph: plain
    autograd gradients and the kernel-only capture equal those of a cache-free layer."""
    for param_grads in (True, False):
        a = _conv(forward_mode="dense")
        b = copy.deepcopy(a)
        b.cache_kernel = False
        x = _x(a)
        a.param_grads = b.param_grads = param_grads
        a.eval()
        with torch.inference_mode():
            a(x)  # an inference-mode entry (inference tensors must not leak into training)
        for m in (a, b):
            m.train()
            (m(x) ** 2).sum().backward()
        torch.testing.assert_close(a.grad_full, b.grad_full, rtol=1e-12, atol=1e-12)
        for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
            if pb.grad is None:
                assert pa.grad is None
            else:
                torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-12, atol=1e-12)
        _infer(a.eval(), x)  # a no-grad entry, then training again
        a.train()
        a.zero_grad()
        (a(x) ** 2).sum().backward()
        torch.testing.assert_close(a.grad_full, b.grad_full, rtol=1e-12, atol=1e-12)


def test_copies_drop_the_cache_and_to_clears_it():
    layer = _conv(forward_mode="dense").eval()
    x = _x(layer)
    _infer(layer, x)
    assert layer._kcache is not None
    assert copy.deepcopy(layer)._kcache is None
    assert pickle.loads(pickle.dumps(layer))._kcache is None
    layer.float()
    assert layer._kcache is None
    y = _infer(layer, x.float())
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, _reference(layer, x.float()), rtol=1e-5, atol=1e-5)


def test_cache_off_rebuilds_every_time():
    layer = _conv(forward_mode="dense").eval()
    layer.cache_kernel = False
    count = _Count(layer)
    x = _x(layer)
    _infer(layer, x)
    _infer(layer, x)
    assert count.n == 2 and layer._kcache is None


# ---------------------------------------------------------------- measured path choice
class FakeTimer:
    """Deterministic timer: fixed seconds per path; counts calls."""

    def __init__(self, seconds: dict[str, float]):
        self.seconds = seconds
        self.calls: list[str] = []

    def __call__(self, path, fn, device):
        fn()
        self.calls.append(path)
        return self.seconds[path]


@pytest.fixture
def selector(monkeypatch):
    def install(seconds, repeats=3):
        timer = FakeTimer(seconds)
        sel = L.PathSelector(devices=("cpu",), repeats=repeats, timer=timer)
        monkeypatch.setattr(L, "PATH_SELECTOR", sel)
        return sel, timer
    return install


@pytest.mark.parametrize("make", MAKERS)
@pytest.mark.parametrize("faster", ["dense", "factorized"])
def test_measured_choice_picks_the_faster_path_once_per_shape(make, faster, selector):
    slower = "factorized" if faster == "dense" else "dense"
    sel, timer = selector({faster: 1e-3, slower: 2e-3})
    layer = make(forward_mode="auto").eval()
    x = _x(layer)
    seen = []
    real_choose = layer._choose
    layer._choose = lambda t: seen.append(real_choose(t)) or seen[-1]
    y = _infer(layer, x)
    assert seen == [faster]
    assert timer.calls.count("dense") == 3 and timer.calls.count("factorized") == 3
    assert sel.timings[next(iter(sel.choices))] == {faster: 1e-3, slower: 2e-3}
    torch.testing.assert_close(y, _reference(layer, x), rtol=1e-12, atol=1e-12)
    _infer(layer, x)
    assert len(timer.calls) == 6  # cached: no new measurement
    _infer(copy.deepcopy(layer), x)  # process-wide: another layer of the same configuration
    assert len(timer.calls) == 6
    _infer(layer, x[:2])  # another input shape: measured again
    assert len(timer.calls) == 12 and len(sel.choices) == 2


def test_measured_choice_ties_keep_dense_and_graph_forwards_use_the_flop_rule(selector):
    sel, timer = selector({"dense": 1.0, "factorized": 1.0})
    layer = _conv(forward_mode="auto").eval()
    x = _x(layer)
    _infer(layer, x)
    assert list(sel.choices.values()) == ["dense"]
    n = len(timer.calls)
    layer(x).sum().backward()  # eval with a graph (no capture): FLOP rule, no timing
    layer.train()
    layer.capture_grad = False
    layer(x).sum().backward()  # training without capture: likewise
    with torch.no_grad():
        layer.eval()
        layer.forward_mode = "factorized"  # explicit modes are never measured
        layer(x[:1])
    assert len(timer.calls) == n


def test_selector_defaults_and_validation():
    assert L.PATH_SELECTOR.devices == frozenset({"cuda"})
    assert not L.PATH_SELECTOR.enabled(torch.device("cpu"))
    with pytest.raises(ValueError, match="repeats"):
        L.PathSelector(repeats=0)
    sel = L.PathSelector(devices=("cpu",), repeats=1)
    assert sel.choose(("k",), {"a": lambda: None, "b": lambda: None},
                      torch.device("cpu")) in ("a", "b")
    sel.clear()
    assert not sel.choices and not sel.timings


def test_cpu_flop_rule_unchanged_without_selector():
    """On CPU the default selector is off: ``auto`` follows the FLOP rule."""
    layer = TuckerConv2d(64, 64, 3, padding=1, rank=(6, 6, 3, 3)).eval()
    x = torch.randn(2, 64, 16, 16)
    assert layer._choose(x) == layer._flop_choice(x) == "factorized"
    small = nn.Conv2d(1, 2, 3)  # a dense layer is untouched by any of this
    assert small(torch.randn(1, 1, 5, 5)).shape == (1, 2, 3, 3)


@pytest.mark.parametrize("param_grads", [True, False])
@pytest.mark.parametrize("faster", ["dense", "factorized"])
def test_measured_training_choice_leaves_the_layer_untouched(param_grads, faster, selector):
    """Training forwards time forward + backward on a private copy: the layer's gradients
    (``grad_full``, ``.grad``) are those of one backward pass, whichever path won."""
    slower = "factorized" if faster == "dense" else "dense"
    sel, timer = selector({faster: 1.0, slower: 2.0}, repeats=2)
    layer = _conv(forward_mode="auto")
    layer.param_grads = param_grads
    ref = copy.deepcopy(layer)
    ref.forward_mode = "dense"
    x = _x(layer).requires_grad_(True)
    xr = x.detach().clone().requires_grad_(True)
    (layer(x) ** 2).sum().backward()
    (ref(xr) ** 2).sum().backward()
    assert len(timer.calls) == 4
    (key,) = sel.choices
    assert key[:3] == ("train", not param_grads, True) and sel.choices[key] == faster
    assert layer._choose(x) == faster
    torch.testing.assert_close(layer.grad_full, ref.grad_full, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(x.grad, xr.grad, rtol=1e-10, atol=1e-10)
    for pa, pb in zip(layer.parameters(), ref.parameters(), strict=True):
        if pb.grad is None:
            assert pa.grad is None
        else:
            torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-10, atol=1e-10)
    layer(x.detach()).sum().backward()  # the input needs no gradient: another key
    assert len(sel.choices) == 2 and len(timer.calls) == 8
