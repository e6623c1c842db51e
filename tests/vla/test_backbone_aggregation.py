"""Aggregation tokens read the image; V cameras give V·K camera-major tokens."""

import torch

from vla.backbone import FiLMDualBackbone, backbone_config
from vla.backbone.aggregation import AggregationTokens

CFG = backbone_config("tiny")


def test_append_and_take_round_trip():
    torch.manual_seed(0)
    aggregation = AggregationTokens(num_tokens=3, dim=4)
    x = torch.randn(2, 5, 4)
    appended = aggregation.append(x)
    assert torch.equal(appended[:, :5], x)
    assert torch.equal(aggregation.take(appended), aggregation.tokens.expand(2, -1, -1))


def test_changing_one_patch_changes_the_aggregation_tokens():
    torch.manual_seed(0)
    backbone = FiLMDualBackbone(CFG).eval()
    # DINOv2's LayerScale starts at 1e-5, which hides any change in the residual stream; trained
    # models have scales of order 0.1-1.
    for name, parameter in backbone.dinov2.named_parameters():
        if name.endswith(".gamma"):
            torch.nn.init.constant_(parameter, 0.5)
    images = torch.rand(2, 3, 64, 64)
    changed = images.clone()
    changed[:, :, 8:16, 16:24] = torch.rand(2, 3, 8, 8)  # exactly one 8x8 patch of both ViTs
    language = torch.randn(2, CFG.llm_dim)
    with torch.no_grad():
        for encoder in (backbone.siglip, backbone.dinov2):
            before, after = encoder(images, language), encoder(changed, language)
            assert before.shape == (2, CFG.num_agg_tokens, encoder.dim)
            assert (before - after).abs().amax(dim=-1).min() > 1e-5, "every aggregation token must read the patch"


def test_each_camera_owns_k_consecutive_tokens():
    torch.manual_seed(0)
    backbone = FiLMDualBackbone(CFG).eval()
    k = CFG.num_agg_tokens
    images = {name: torch.rand(2, 3, 64, 64) for name in ("front", "left", "wrist")}
    language = torch.randn(2, CFG.llm_dim)
    with torch.no_grad():
        out = backbone(images, language)
        reordered = backbone({name: images[name] for name in ("wrist", "front", "left")}, language)
        alone = backbone({"left": images["left"]}, language)
    assert out.tokens.shape == (2, 3 * k, CFG.llm_dim)
    assert out.token_mask.shape == (2, 3 * k) and bool(out.token_mask.all())
    torch.testing.assert_close(out.tokens[:, k : 2 * k], alone.tokens, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(reordered.tokens[:, :k], out.tokens[:, 2 * k :], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(reordered.tokens[:, k:], out.tokens[:, : 2 * k], rtol=1e-5, atol=1e-5)
