"""TDLRT maps its Parameters to Tucker layers through the Parameters themselves
(``layers.layer_of``), not through a process-wide registry: copies, pickles and unrelated
layers cannot be confused with the layers it trains."""

from __future__ import annotations

import copy
import io

import pytest

torch = pytest.importorskip("torch")

from tucker_dlra.nn import TDLRT, TuckerConv2d  # noqa: E402
from tucker_dlra.nn import layers as L  # noqa: E402


def _layer(seed: int = 0) -> TuckerConv2d:
    torch.manual_seed(seed)
    return TuckerConv2d(3, 6, 3, rank=(4, 3, 3, 3), dtype=torch.float64)


def _step(layer: TuckerConv2d, opt: TDLRT) -> None:
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    opt.zero_grad()
    layer(x).square().sum().backward()
    opt.step()


def test_no_registry_of_live_layers():
    assert not hasattr(L, "_LAYERS") and not hasattr(L, "tucker_layers")


def test_params_point_to_their_layer():
    layer = _layer()
    for p in (layer.core, *layer.factors):
        assert L.layer_of(p) is layer
    assert L.layer_of(torch.nn.Parameter(torch.zeros(2))) is None


def test_deepcopy_trains_the_copy_not_the_original():
    layer = _layer()
    twin = copy.deepcopy(layer)
    assert all(L.layer_of(p) is twin for p in (twin.core, *twin.factors))
    assert all(L.layer_of(p) is layer for p in (layer.core, *layer.factors))
    core0 = layer.core.detach().clone()
    opt = TDLRT(twin.parameters(), lr=0.1, tau=0.3)
    _step(twin, opt)
    assert torch.equal(layer.core.detach(), core0)  # the original is untouched
    assert opt._layers(opt._index()) == [twin]
    assert not torch.equal(twin.core.detach(), core0) or twin.ranks != layer.ranks


def test_pickled_layer_is_tagged_and_trainable():
    layer = _layer()
    buf = io.BytesIO()
    torch.save(layer, buf)
    buf.seek(0)
    back = torch.load(buf, weights_only=False)
    assert all(L.layer_of(p) is back for p in (back.core, *back.factors))
    opt = TDLRT(back.parameters(), lr=0.1, tau=0.0)
    _step(back, opt)
    assert opt._layers(opt._index()) == [back]


def test_partial_layer_params_still_rejected():
    layer = _layer()
    with pytest.raises(ValueError, match="core and all factors"):
        TDLRT([layer.core, layer.factors[0]], lr=0.1)


def test_conversion_that_replaces_parameters_keeps_the_tags():
    layer = _layer()
    old_core = layer.core
    prev = torch.__future__.get_overwrite_module_params_on_conversion()
    torch.__future__.set_overwrite_module_params_on_conversion(True)
    try:
        layer.float()
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(prev)
    assert layer.core is not old_core and L.layer_of(old_core) is None
    assert all(L.layer_of(p) is layer for p in (layer.core, *layer.factors))
    opt = TDLRT(layer.parameters(), lr=0.1)
    assert opt._layers(opt._index()) == [layer]
