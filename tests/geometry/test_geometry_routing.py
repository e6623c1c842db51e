"""Routing: stage boundaries, reshapes, and which tokens frame attention lets a change reach."""

import pytest
import torch

from geometry.aggregator import Aggregator
from geometry.config import make_config
from geometry.routing import layer_routing, route, stage_boundaries, unroute


def test_stage_boundaries_scale_8_10_6():
    assert stage_boundaries(24) == (8, 18)
    assert stage_boundaries(12) == (4, 9)
    assert stage_boundaries(6) == (2, 4)
    assert stage_boundaries(6, (0, 3)) == (0, 3)


def test_layer_routing_stages():
    r = layer_routing(24, legacy=False)
    assert r == ["multiview"] * 8 + ["temporal"] * 13 + ["multiview"] * 3
    assert layer_routing(6, legacy=False) == ["multiview", "multiview", "temporal", "temporal", "temporal", "multiview"]
    assert layer_routing(6, legacy=True) == ["frame"] * 6


def test_route_groups_match_docstring_example():
    B, T, V, N, C = 1, 2, 3, 5, 1
    # value = 100*t + 10*v + n identifies each token
    t = torch.arange(T).view(1, T, 1, 1, 1) * 100 + torch.arange(V).view(1, 1, V, 1, 1) * 10 + torch.arange(N).view(1, 1, 1, N, 1)
    t = t.expand(B, T, V, N, C).float()
    mv = route(t, "multiview")
    assert mv.shape == (2, 15, 1)
    assert set((mv[1, :, 0] // 100).tolist()) == {1.0}  # row t=1 holds only time 1
    assert ((mv[1, :, 0] % 100) // 10).tolist() == [0] * 5 + [1] * 5 + [2] * 5
    tp = route(t, "temporal")
    assert tp.shape == (3, 10, 1)
    assert set(((tp[2, :, 0] % 100) // 10).tolist()) == {2.0}  # row v=2 holds only view 2
    assert (tp[2, :, 0] // 100).tolist() == [0] * 5 + [1] * 5
    for mode in ("frame", "multiview", "temporal"):
        assert torch.equal(unroute(route(t, mode), mode, B, T, V), t)
    with pytest.raises(ValueError, match="routing mode"):
        route(t, "diagonal")


def _changed_frames(model, images, perturbed, layer):
    a = model(images, output_layers=(layer,)).layers[layer]
    b = model(perturbed, output_layers=(layer,)).layers[layer]
    B, T, V = images.shape[:3]
    diff = (a - b).abs().amax(dim=(-1, -2)).reshape(B, T, V)[0]
    return diff > 1e-6


@torch.no_grad()
def test_frame_attention_alone_respects_routing():
    torch.manual_seed(0)
    images = torch.rand(1, 3, 4, 3, 32, 32)
    perturbed = images.clone()
    perturbed[0, 1, 2] = torch.rand(3, 32, 32)
    # Default boundaries: stage 1 (multi-view) ends at layer 2 -> only time step 1 changes.
    cfg = make_config("tiny", aa_order=("frame",), view_mixer=False, dynamics_mask=False)
    model = Aggregator(cfg).eval()
    changed = _changed_frames(model, images, perturbed, layer=1)
    assert changed[1].all() and not changed[0].any() and not changed[2].any()
    # No stage 1: stage 2 (temporal) spreads the change only along view 2.
    cfg2 = make_config("tiny", aa_order=("frame",), view_mixer=False, dynamics_mask=False, stage_boundaries=(0, 4))
    model2 = Aggregator(cfg2).eval()
    changed = _changed_frames(model2, images, perturbed, layer=3)
    assert changed[:, 2].all() and not changed[:, [0, 1, 3]].any()
    # Stage 3 ends multi-view: at the last layer everything has been reached.
    assert _changed_frames(model2, images, perturbed, layer=5).all()


@torch.no_grad()
def test_global_attention_mixes_all_frames():
    torch.manual_seed(0)
    images = torch.rand(1, 3, 4, 3, 32, 32)
    perturbed = images.clone()
    perturbed[0, 1, 2] = torch.rand(3, 32, 32)
    model = Aggregator(make_config("tiny", view_mixer=False)).eval()
    assert _changed_frames(model, images, perturbed, layer=0).all()
