"""One implementation of the logic the Tucker layers and the baselines share: the rank
parser, the valid-Tucker-rank rule and the multiply-accumulate model of a Tucker convolution
(``nn/_conv.py``, ``tucker_dlra.tucker``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from tucker_dlra.nn import TuckerConv2d, VanillaTuckerConv  # noqa: E402
from tucker_dlra.nn._conv import conv_macs, resolve_tucker_rank, tucker_conv_macs  # noqa: E402
from tucker_dlra.nn.layers import resolve_rank  # noqa: E402

from tucker_dlra.tucker import check_tucker_rank, max_tucker_rank, valid_rank  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("rank", [None, 1, 2, 5, 100, 0.1, 0.5, 1.0, (4, 1, 2, 2), (6, 3, 3, 2),
                                  (0.5, 0.5, 1.0, 1.0), (2, 0.4, 1.0, 0.3)])
def test_layer_and_baseline_parse_a_rank_the_same_way(rank):
    layer = TuckerConv2d(3, 6, 3, rank=rank)
    base = VanillaTuckerConv(3, 6, 3, rank=rank)
    assert layer.ranks == base.ranks == resolve_rank(rank, (6, 3, 3, 3))
    assert valid_rank(layer.ranks) == layer.ranks


def test_per_mode_fractions():
    """A fraction entry is ceil(kappa_i n_i) of its own mode; ints stay as given (Tucker-2:
    the channel modes compressed, the spatial modes whole)."""
    assert resolve_tucker_rank((0.1, 0.1, 1.0, 1.0), (50, 20, 5, 5)) == (5, 2, 5, 5)
    assert resolve_tucker_rank((0.1, 0.1, 1.0, 1.0), (20, 1, 5, 5)) == (2, 1, 5, 5)
    assert resolve_tucker_rank((5, 0.5, 1.0, 3), (50, 20, 5, 5)) == (5, 10, 5, 3)
    # a fraction may ask for more than the other modes allow: lowered, like a scalar fraction
    assert resolve_tucker_rank((1.0, 0.1, 0.2, 0.2), (50, 20, 5, 5)) == valid_rank((50, 2, 1, 1))
    with pytest.raises(ValueError, match=r"rank\[1\] = 0.0: a fraction of mode 1 must lie in"):
        resolve_tucker_rank((0.5, 0.0, 1.0, 1.0), (50, 20, 5, 5))
    with pytest.raises(ValueError, match=r"rank\[2\] = 1.5: a fraction"):
        resolve_tucker_rank((0.5, 0.5, 1.5, 1.0), (50, 20, 5, 5))
    with pytest.raises(TypeError, match=r"rank\[0\] must be an int in \[1, 50\] or a fraction"):
        resolve_tucker_rank(("a", 0.5, 1.0, 1.0), (50, 20, 5, 5))


def test_explicit_non_tucker_rank_is_refused_by_both_with_the_same_rule():
    with pytest.raises(ValueError, match=r"not a Tucker rank: rank\[0\] = 6 exceeds the product 4"):
        resolve_tucker_rank((6, 1, 2, 2), (6, 3, 3, 3))
    with pytest.raises(ValueError, match="not a Tucker rank"):
        TuckerConv2d(3, 6, 3, rank=(6, 1, 2, 2))
    with pytest.raises(ValueError, match=r"y0.rank\[0\] = 5 exceeds the product 2"):
        check_tucker_rank((5, 1, 2), "y0.rank")


def test_max_tucker_rank_is_the_dense_bound():
    assert max_tucker_rank((6, 3, 3, 3)) == (6, 3, 3, 3)
    assert max_tucker_rank((100, 2, 3)) == (6, 2, 3)  # 100 > 2 * 3
    assert max_tucker_rank((5, 0)) == (0, 0)


@pytest.mark.parametrize("padding,groups", [(0, 1), (1, 1), (1, 2)])
def test_layer_cost_model_is_conv_macs(padding, groups):
    """The layer's unfolded three-stage count equals conv_macs('tucker') at the padded input
    size, and the fold variants are the shared formula with a stage removed."""
    layer = TuckerConv2d(4, 6, 3, padding=padding, groups=groups, rank=(3, 2, 2, 2))
    lin = (8 + 2 * padding) ** 2
    side_out = 8 + 2 * padding - 2
    lout = side_out ** 2
    unfolded = conv_macs("tucker", layer.kernel_shape, layer.ranks, (8 + 2 * padding,) * 2,
                         (side_out,) * 2, groups)
    expect = 4 * 2 * lin + groups * 3 * 2 * 9 * lout + 6 * 3 * lout
    assert unfolded == expect
    dense, fact = layer.flops((4, 8, 8))
    assert dense == tucker_conv_macs(6, 4, groups, 3, 2, 9, lin, lout, True, True)
    variants = [tucker_conv_macs(6, 4, groups, 3, 2, 9, lin, lout, a, b)
                for a, b in ((False, False), (True, False), (False, True))]
    assert fact == min(variants) and expect in variants


def test_tucker_layers_do_not_import_the_baselines():
    files = sorted((ROOT / "nn" / "layers").glob("*.py"))  # the package tucker_dlra.nn.layers
    assert len(files) > 1
    mods = {n.module for f in files for n in ast.walk(ast.parse(f.read_text(encoding="utf-8")))
            if isinstance(n, ast.ImportFrom)}
    assert "vanilla" not in mods and "tucker_dlra.nn.vanilla" not in mods
    assert "_conv" in mods  # the shared helpers
