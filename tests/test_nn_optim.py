"""The TDLRT optimizer against Algorithm 1 written out by hand, the core's integrators,
plain SGD/Adam, and its invariants (orthonormality, rank adaptation, atomic steps)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from tucker_dlra.nn import TDLRT, LowRankLinear, TuckerConv1d, TuckerConv2d, TuckerConv3d

from tucker_dlra import (
    TuckerTensor,
    augment_basis,
    c_gradient,
    galerkin_core,
    k_core,
    k_gradient,
    k_tensor,
    truncate,
)

D64 = torch.float64


def small_model(seed=0, dtype=D64, conv_rank=(4, 2, 3, 3), lin_rank=3):
    torch.manual_seed(seed)
    return nn.Sequential(
        TuckerConv2d(2, 6, 3, padding=1, rank=conv_rank, dtype=dtype),
        nn.Tanh(),
        nn.Flatten(),
        LowRankLinear(6 * 5 * 5, 4, rank=lin_rank, dtype=dtype),
    )


def batch(seed=1, dtype=D64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(8, 2, 5, 5, generator=g, dtype=dtype),
            torch.randn(8, 4, generator=g, dtype=dtype))


def loss_of(model, x, y):
    return F.mse_loss(model(x), y)


def tucker_layers_of(model):
    return [m for m in model.modules() if hasattr(m, "grad_full")]


def train(model, opt, steps, data=None):
    x, y = data or batch()
    for _ in range(steps):
        opt.zero_grad()
        loss_of(model, x, y).backward()
        opt.step()


@pytest.mark.parametrize("integrator", ["bug", "parallel"])
@pytest.mark.parametrize("adaptive", [True, False])
def test_zero_lr_zero_tau_leaves_outputs_unchanged(integrator, adaptive):
    model = small_model()
    x, y = batch()
    before = model(x).detach()
    opt = TDLRT(model.parameters(), lr=0.0, tau=0.0, momentum=0.9, integrator=integrator,
                adaptive=adaptive)
    for _ in range(2):
        opt.zero_grad()
        loss_of(model, x, y).backward()
        opt.step()
    torch.testing.assert_close(model(x).detach(), before, rtol=1e-12, atol=1e-12)


def test_fixed_bases_c_step_is_momentum_sgd_on_core():
    """Factors at lr 0, fixed rank: W follows plain momentum SGD on C with U fixed (the
    bases are rotated every step, so the core's momentum must be transported)."""
    model = small_model()
    ref = copy.deepcopy(model)
    layers, rlayers = tucker_layers_of(model), tucker_layers_of(ref)
    factors = [f for m in layers for f in m.factors]
    others = [p for p in model.parameters() if all(p is not f for f in factors)]
    opt = TDLRT([{"params": factors, "lr": 0.0}, {"params": others}], lr=0.1, momentum=0.9,
                adaptive=False, weight_decay=1e-3)
    for m in rlayers:
        m.capture_grad = False
        for f in m.factors:
            f.requires_grad_(False)
    ref_opt = torch.optim.SGD([p for p in ref.parameters() if p.requires_grad], lr=0.1,
                              momentum=0.9, weight_decay=1e-3)
    x, y = batch()
    for _ in range(3):
        for mod, o in ((model, opt), (ref, ref_opt)):
            o.zero_grad()
            loss_of(mod, x, y).backward()
            o.step()
    for m, r in zip(layers, rlayers, strict=True):
        assert m.ranks == r.ranks
        torch.testing.assert_close(m.weight_full(), r.weight_full(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(m.bias, r.bias, rtol=1e-12, atol=1e-12)
    # the bases did rotate (orth(K) != U), so the test exercised the transport
    assert not torch.allclose(layers[0].factors[0], rlayers[0].factors[0])


def _conv_problem(seed=0):
    torch.manual_seed(seed)
    layer = TuckerConv2d(3, 5, 3, padding=1, rank=(3, 2, 2, 2), dtype=D64, bias=False)
    x = torch.randn(4, 3, 6, 6, dtype=D64)
    target = torch.randn(4, 5, 6, 6, dtype=D64)
    loss_w = lambda w: ((F.conv2d(x, w, None, 1, 1) - target) ** 2).mean()  # noqa: E731
    return layer, x, target, loss_w


def test_one_pass_step_equals_two_pass_reference():
    """Algorithm 1 by hand with autograd: K-gradients through G_i x_i K x_{j!=i} U_j, then a
    second forward/backward at the augmented point C~ x_i U^_i for the C-step."""
    layer, x, target, loss_w = _conv_problem()
    lr, tau = 0.3, 0.05
    c = layer.core.detach().clone()
    us = [u.detach().clone() for u in layer.factors]
    k_new = []
    for i in range(4):
        g_i, s_i = k_core(c, i)
        k = (us[i] @ s_i).requires_grad_(True)
        (grad_k,) = torch.autograd.grad(loss_w(k_tensor(g_i, us, k, i).full()), k)
        k_new.append((k - lr * grad_k).detach())
    uhat = [augment_basis(u, k) for u, k in zip(us, k_new, strict=True)]
    c_tilde = galerkin_core(c, us, uhat).requires_grad_(True)
    (grad_c,) = torch.autograd.grad(loss_w(TuckerTensor(c_tilde, uhat).full()), c_tilde)
    ref = truncate(TuckerTensor((c_tilde - lr * grad_c).detach(), uhat), rtol=tau,
                   rule="per_mode")

    opt = TDLRT(layer.parameters(), lr=lr, tau=tau)
    ((layer(x) - target) ** 2).mean().backward()
    opt.step()
    assert layer.ranks == ref.rank
    torch.testing.assert_close(layer.weight_full(), ref.full(), rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("rule", ["per_mode", "split"])
def test_step_equals_core_ra_bug_euler(rule):
    """One TDLRT step (momentum 0) = the core's ra_bug with F = -grad L and one Euler substep."""
    from tucker_dlra.integrators import ra_bug

    layer, x, target, loss_w = _conv_problem(3)
    lr, tau = 0.5, 0.1

    def rhs(t, w):
        w = w.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(loss_w(w), w)
        return -g

    y1, info = ra_bug(rhs, 0.0, layer.tucker(), lr, substep="euler", rtol=tau, rule=rule)
    opt = TDLRT(layer.parameters(), lr=lr, tau=tau, rule=rule)
    ((layer(x) - target) ** 2).mean().backward()
    opt.step()
    assert layer.ranks == y1.rank
    torch.testing.assert_close(layer.weight_full(), y1.full(), rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(torch.tensor(opt.last_step_info[0]["error_bound"]),
                               torch.tensor(info.truncation.error_bound), rtol=1e-9, atol=1e-14)


def test_parallel_step_matches_hand_written_parallel_bug():
    """integrator='parallel': K-steps and the C-step from the old bases with the same G,
    the augmented core assembled as in the parallel BUG of Ceruti, Kusch, Lubich & Sulz -- checked
    against a dense assembly."""
    layer, x, target, loss_w = _conv_problem(5)
    lr, tau = 0.3, 0.0
    c = layer.core.detach().clone()
    us = [u.detach().clone() for u in layer.factors]
    w0 = layer.weight_full().detach().requires_grad_(True)
    (g,) = torch.autograd.grad(loss_w(w0), w0)
    ks = []
    for i in range(4):
        g_i, s_i = k_core(c, i)
        ks.append(us[i] @ s_i - lr * k_gradient(g, g_i, us, i))
    c_bar = c - lr * c_gradient(g, us)
    # dense assembly: W_old-part + sum_i (I - U_i U_i^T) K_i-part (blocks new in 1 mode)
    w_ref = TuckerTensor(c_bar, us).full()
    for i in range(4):
        g_i, _ = k_core(c, i)
        p_perp = torch.eye(us[i].shape[0], dtype=D64) - us[i] @ us[i].T
        w_ref = w_ref + k_tensor(g_i, us, p_perp @ ks[i], i).full()
    opt = TDLRT(layer.parameters(), lr=lr, tau=tau, integrator="parallel")
    ((layer(x) - target) ** 2).mean().backward()
    opt.step()
    torch.testing.assert_close(layer.weight_full(), w_ref, rtol=1e-10, atol=1e-12)


def test_momentum_transport_is_projection_of_ambient_momentum():
    """After a step with rank change, the stored momenta equal the new-coordinate
    projections (dense computation) of the ambient Tucker momenta."""
    layer, x, target, loss_w = _conv_problem(7)
    lr, tau = 0.4, 0.05
    c = layer.core.detach().clone()
    us = [u.detach().clone() for u in layer.factors]
    opt = TDLRT(layer.parameters(), lr=lr, tau=tau, momentum=0.9)
    ((layer(x) - target) ** 2).mean().backward()
    g = layer.grad_full.clone()
    opt.step()
    new_u = [u.detach() for u in layer.factors]
    new_c = layer.core.detach()
    assert layer.ranks == (4, 3, 3, 3)  # ranks grew, mode 0 truncated from 5
    ks, amb_k = [], []
    for i in range(4):
        g_i, s_i = k_core(c, i)
        buf = k_gradient(g, g_i, us, i)  # first step: buffer = gradient
        ks.append(us[i] @ s_i - lr * buf)
        amb_k.append(k_tensor(g_i, us, buf, i).full())
    uhat = [augment_basis(u, k) for u, k in zip(us, ks, strict=True)]
    amb_c = TuckerTensor(c_gradient(g, uhat), uhat).full()
    for i in range(4):
        g_new, _ = k_core(new_c, i)
        expected = k_gradient(amb_k[i], g_new, new_u, i)
        got = opt.state[layer.factors[i]]["momentum_buffer"]
        assert got.shape == layer.factors[i].shape
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    got_c = opt.state[layer.core]["momentum_buffer"]
    assert got_c.shape == layer.core.shape
    torch.testing.assert_close(got_c, c_gradient(amb_c, new_u), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("integrator", ["bug", "parallel"])
@pytest.mark.parametrize("descent", ["sgd", "adam"])
def test_factors_stay_orthonormal_float32(integrator, descent):
    model = small_model(dtype=torch.float32)
    opt = TDLRT(model.parameters(), lr=0.05 if descent == "sgd" else 1e-2, momentum=0.9,
                nesterov=True, tau=0.1, integrator=integrator, descent=descent)
    train(model, opt, 15, batch(dtype=torch.float32))
    for m in tucker_layers_of(model):
        for u in m.factors:
            dev = torch.linalg.matrix_norm(u.detach().T @ u.detach() - torch.eye(u.shape[1]))
            assert float(dev) <= 1e-5
        for p in [m.core, *m.factors]:
            for v in opt.state[p].values():
                if torch.is_tensor(v):
                    assert v.shape == p.shape
            if descent == "adam":
                assert float(opt.state[p]["exp_avg_sq"].min()) >= 0.0


def test_training_reduces_loss_and_larger_tau_gives_smaller_ranks():
    sizes = {}
    for tau in (0.02, 0.3):
        model = small_model(conv_rank=None, lin_rank=None)
        opt = TDLRT(model.parameters(), lr=0.1, momentum=0.5, tau=tau)
        x, y = batch()
        first = float(loss_of(model, x, y).detach())
        train(model, opt, 8, (x, y))
        assert float(loss_of(model, x, y).detach()) < first
        sizes[tau] = sum(m.core.numel() for m in tucker_layers_of(model))
    assert sizes[0.3] < sizes[0.02]


def test_rank_bounds_are_respected():
    model = small_model(conv_rank=2, lin_rank=2)
    opt = TDLRT(model.parameters(), lr=0.5, tau=0.0, max_rank=3, min_rank=2)
    train(model, opt, 3)
    for m in tucker_layers_of(model):
        assert all(2 <= r <= 3 for r in m.ranks) or any(n < 2 for n in m.kernel_shape)


@pytest.mark.parametrize("descent", ["sgd", "adam"])
def test_plain_parameters_follow_torch_optimizers(descent):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    ref = copy.deepcopy(net)
    if descent == "sgd":
        opt = TDLRT(net.parameters(), lr=0.1, momentum=0.8, nesterov=True, weight_decay=0.01)
        ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.8, nesterov=True,
                                  weight_decay=0.01)
    else:
        opt = TDLRT(net.parameters(), lr=0.01, descent="adam", weight_decay=0.01)
        ref_opt = torch.optim.Adam(ref.parameters(), lr=0.01, weight_decay=0.01)
    x, y = torch.randn(6, 5, dtype=D64), torch.randn(6, 2, dtype=D64)
    for _ in range(4):
        for mod, o in ((net, opt), (ref, ref_opt)):
            o.zero_grad()
            F.mse_loss(mod(x), y).backward()
            o.step()
    for p, q in zip(net.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(tau=-0.1), ValueError, "tau"),
    (dict(tau=float("nan")), ValueError, "tau"),
    (dict(lr=-1.0), ValueError, "lr"),
    (dict(lr=float("inf")), ValueError, "lr"),
    (dict(momentum=1.0), ValueError, "momentum"),
    (dict(integrator="rk4"), ValueError, "integrator"),
    (dict(rule="max"), ValueError, "rule"),
    (dict(descent="lbfgs"), ValueError, "descent"),
    (dict(nesterov=True), ValueError, "nesterov"),
    (dict(betas=(0.9, 1.0)), ValueError, "betas"),
    (dict(eps=0.0), ValueError, "eps"),
    (dict(adaptive="yes"), TypeError, "adaptive"),
    (dict(max_rank=0), ValueError, "max_rank"),
    (dict(nonfinite="ignore"), ValueError, "nonfinite"),
])
def test_bad_optimizer_arguments(kwargs, exc, match):
    model = small_model()
    args = dict(lr=0.1)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        TDLRT(model.parameters(), **args)
    if "nonfinite" not in kwargs:  # per-group options are checked as well
        with pytest.raises(exc, match=match):
            TDLRT([{"params": list(model.parameters()), **kwargs}], lr=0.1)


def test_partial_layer_and_missing_capture_errors():
    model = small_model()
    layer = tucker_layers_of(model)[0]
    with pytest.raises(ValueError, match="all factors"):
        opt = TDLRT([layer.core], lr=0.1)
        x, y = batch()
        loss_of(model, x, y).backward()
        opt.step()
    model.zero_grad()
    opt = TDLRT(model.parameters(), lr=0.1)
    model.eval()  # no capture in eval mode
    x, y = batch()
    loss_of(model, x, y).backward()
    with pytest.raises(RuntimeError, match="grad_full"):
        opt.step()


def _snapshot(model, opt):
    params = [p.detach().clone() for p in model.parameters()]
    state = {id(p): {k: (v.clone() if torch.is_tensor(v) else v) for k, v in s.items()}
             for p, s in opt.state.items()}
    return params, state


def _assert_same(snap, model, opt):
    params, state = snap
    for p, q in zip(model.parameters(), params, strict=True):
        assert p.shape == q.shape and torch.equal(p.detach(), q)
    assert {id(p) for p in opt.state} == set(state)
    for p, s in opt.state.items():
        for k, v in s.items():
            assert torch.equal(v, state[id(p)][k]) if torch.is_tensor(v) else v == state[id(p)][k]


@pytest.mark.parametrize("where", ["kernel", "plain", "loss", "update"])
def test_nonfinite_step_raises_and_leaves_everything_untouched(where):
    model = small_model()
    opt = TDLRT(model.parameters(), lr=0.1, momentum=0.9, tau=0.1)
    train(model, opt, 2)
    x, y = batch()
    snap = _snapshot(model, opt)
    opt.zero_grad()
    if where == "loss":
        with pytest.raises(FloatingPointError, match="non-finite"):
            opt.step(lambda: loss_of(model, x, y) * float("nan"))
    else:
        loss_of(model, x, y).backward()
        if where == "kernel":
            tucker_layers_of(model)[0].grad_full[0, 0, 0, 0] = float("inf")
        elif where == "plain":
            model[0].bias.grad[0] = float("nan")
        else:
            for g in opt.param_groups:
                g["lr"] = 1e308
        with pytest.raises(FloatingPointError, match="untouched"):
            opt.step()
    _assert_same(snap, model, opt)


def test_nonfinite_skip_mode_warns_and_skips():
    model = small_model()
    opt = TDLRT(model.parameters(), lr=0.1, momentum=0.9, nonfinite="skip")
    train(model, opt, 1)
    snap = _snapshot(model, opt)
    x, y = batch()
    opt.zero_grad()
    (loss_of(model, x, y) * float("nan")).backward()
    with pytest.warns(RuntimeWarning, match="skipped"):
        opt.step()
    assert opt.skipped_steps == 1
    _assert_same(snap, model, opt)


def test_named_parameters_name_the_step_info():
    model = small_model()
    opt = TDLRT(model.named_parameters(), lr=0.1, tau=0.2)
    train(model, opt, 1)
    assert set(opt.last_step_info) == {"0", "3"}
    for name, info in opt.last_step_info.items():
        assert info["ranks"] == model.get_submodule(name).ranks
        assert info["error_bound"] >= 0.0


def test_fixed_rank_step_with_closure_equals_core_bug_euler():
    """adaptive=False with a closure: the exact fixed-rank BUG (C-step gradient at the
    Galerkin point, second evaluation) = the core's bug with one Euler substep; other
    parameters use the first pass's gradients."""
    from tucker_dlra.integrators import bug

    layer, x, target, loss_w = _conv_problem(11)
    layer.bias = nn.Parameter(torch.randn(5, dtype=D64))
    b0 = layer.bias.detach().clone()
    lr = 0.4

    def rhs(t, w):
        w = w.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(((F.conv2d(x, w, b0, 1, 1) - target) ** 2).mean(), w)
        return -g

    y1, _ = bug(rhs, 0.0, layer.tucker(), lr, substep="euler")
    opt = TDLRT(layer.parameters(), lr=lr, adaptive=False)

    def closure():
        opt.zero_grad()
        loss = ((layer(x) - target) ** 2).mean()
        loss.backward()
        return loss

    b = layer.bias.detach().clone().requires_grad_(True)
    w0 = layer.weight_full().detach()
    (gb,) = torch.autograd.grad(((F.conv2d(x, w0, b, 1, 1) - target) ** 2).mean(), b)
    opt.step(closure)
    assert layer.ranks == (3, 2, 2, 2)
    torch.testing.assert_close(layer.weight_full(), y1.full(), rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(layer.bias, b - lr * gb, rtol=1e-12, atol=1e-13)
    # without a closure the one-pass variant differs from it at O(lr^2) only
    layer2, *_ = _conv_problem(11)
    layer2.bias = nn.Parameter(b0.clone())
    opt2 = TDLRT(layer2.parameters(), lr=lr, adaptive=False)
    ((layer2(x) - target) ** 2).mean().backward()
    opt2.step()
    diff = float(torch.linalg.vector_norm(layer2.weight_full().detach() - y1.full()))
    step = float(torch.linalg.vector_norm(y1.full() - w0))
    assert 0 < diff < 0.2 * step


@pytest.mark.parametrize("tau", [0.05, 0.2])
def test_parallel_step_equals_core_parallel_bug_euler(tau):
    """integrator='parallel' (momentum 0) = the core's parallel_bug with F = -grad L, one
    Euler substep and no step rejection (training never rejects a step)."""
    from tucker_dlra.integrators import parallel_bug

    layer, x, target, loss_w = _conv_problem(13)
    lr = 0.5

    def rhs(t, w):
        w = w.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(loss_w(w), w)
        return -g

    y1, _ = parallel_bug(rhs, 0.0, layer.tucker(), lr, substep="euler", rtol=tau,
                         rule="per_mode", rejection=False)
    opt = TDLRT(layer.parameters(), lr=lr, tau=tau, integrator="parallel")
    ((layer(x) - target) ** 2).mean().backward()
    opt.step()
    assert layer.ranks == y1.rank
    torch.testing.assert_close(layer.weight_full(), y1.full(), rtol=1e-11, atol=1e-12)


@settings(max_examples=15)
@given(n=st.sampled_from([0, 1, 2, 3]), groups=st.sampled_from([1, 2]),
       stride=st.integers(1, 2), frac=st.sampled_from([0.34, 0.5, 1.0]),
       lr=st.sampled_from([0.05, 0.5]), tau=st.sampled_from([0.02, 0.1, 0.3]),
       mode=st.sampled_from(["dense", "factorized"]), seed=st.integers(0, 100))
def test_random_layers_step_equals_core_ra_bug(n, groups, stride, frac, lr, tau, mode, seed):
    """Any Tucker layer (conv 1/2/3-d with groups and stride, or linear = n 0), either
    forward path: one TDLRT step = the core's ra_bug step (Euler, F = -grad L)."""
    from tucker_dlra.integrators import ra_bug

    torch.manual_seed(seed)
    if n == 0:
        layer = LowRankLinear(6, 4, rank=frac, forward_mode=mode, dtype=D64)
        x = torch.randn(5, 6, dtype=D64)
        apply_w = lambda w: F.linear(x, w, layer.bias.detach())  # noqa: E731
    else:
        cls = (TuckerConv1d, TuckerConv2d, TuckerConv3d)[n - 1]
        layer = cls(2 * groups, 3 * groups, 3, stride=stride, padding=1, groups=groups,
                    padding_mode="circular" if stride == 1 else "zeros", rank=frac,
                    forward_mode=mode, dtype=D64)
        x = torch.randn(2, 2 * groups, *([5] * n), dtype=D64)
        ref = layer.to_dense()
        apply_w = lambda w: ref._conv_forward(x, w, layer.bias.detach())  # noqa: E731
    target = torch.randn_like(apply_w(layer.weight_full().detach()))

    def rhs(t, w):
        w = w.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(((apply_w(w) - target) ** 2).sum(), w)
        return -g

    y1, _ = ra_bug(rhs, 0.0, layer.tucker(), lr, substep="euler", rtol=tau, rule="per_mode")
    params = [layer.core, *layer.factors]  # the bias stays fixed, as in rhs
    opt = TDLRT(params, lr=lr, tau=tau)
    ((layer(x) - target) ** 2).sum().backward()
    opt.step()
    assert layer.ranks == y1.rank
    torch.testing.assert_close(layer.weight_full().detach(), y1.full(), rtol=1e-9, atol=1e-11)


def test_adam_second_moment_in_new_directions_is_the_old_mean():
    """Transport into an augmented basis (old coordinates kept, new ones appended): the old
    block of Adam's second moment is carried over, the new coordinates start at the old
    mean (not 0, which made the first step there 3.2 lr whatever the gradient), and the
    first moment is zero-padded; the K-state likewise."""
    g = torch.Generator().manual_seed(0)
    v = torch.rand(2, 3, 2, generator=g, dtype=torch.float64) + 0.1
    m = torch.randn(2, 3, 2, generator=g, dtype=torch.float64)
    a = [torch.eye(4, 2, dtype=torch.float64), torch.eye(3, dtype=torch.float64),
         torch.eye(3, 2, dtype=torch.float64)]  # new x old: modes 0 and 2 grow
    (out,) = TDLRT._transport_cores([{"exp_avg": m, "exp_avg_sq": v, "step": 3}], [a])
    assert out["exp_avg_sq"].shape == (4, 3, 3)
    torch.testing.assert_close(out["exp_avg_sq"][:2, :, :2], v)
    new = torch.ones(4, 3, 3, dtype=torch.bool)
    new[:2, :, :2] = False
    torch.testing.assert_close(out["exp_avg_sq"][new], v.mean().expand(int(new.sum())))
    torch.testing.assert_close(out["exp_avg"][:2, :, :2], m)
    assert float(out["exp_avg"][new].abs().max()) == 0.0
    vk = torch.rand(5, 2, generator=g, dtype=torch.float64)
    b = torch.eye(2, 3, dtype=torch.float64)  # old x new: one new column
    (outk,) = TDLRT._transport_ks([{"exp_avg_sq": vk}], [b])
    torch.testing.assert_close(outk["exp_avg_sq"][:, :2], vk)
    torch.testing.assert_close(outk["exp_avg_sq"][:, 2], vk.mean().expand(5))
