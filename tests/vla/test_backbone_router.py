"""The router: softmax weights per sample, `add` is the plain sum, the backbone mixes its projectors."""

import pytest
import torch

from vla.backbone import FiLMDualBackbone, backbone_config
from vla.backbone.router import StreamRouter

CFG = backbone_config("tiny")


def test_moe_weights_are_positive_sum_to_one_and_mix_the_streams():
    torch.manual_seed(0)
    router = StreamRouter(llm_dim=16, mode="moe")
    language = torch.randn(5, 16) * 3
    first, second = torch.randn(2, 5, 3, 4, 16)
    mixed, weights = router((first, second), language)
    assert weights.shape == (5, 2)
    assert bool((weights > 0).all())
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(5))
    assert (weights[:, 0] - weights[0, 0]).abs().max() > 1e-4, "weights must depend on the language"
    for b in range(5):
        torch.testing.assert_close(mixed[b], weights[b, 0] * first[b] + weights[b, 1] * second[b])


def test_add_is_the_plain_sum_without_parameters():
    router = StreamRouter(llm_dim=16, mode="add")
    first, second = torch.randn(2, 3, 4, 16)
    mixed, weights = router((first, second), torch.randn(3, 16))
    assert weights is None
    assert torch.equal(mixed, first + second)
    assert not list(router.parameters())


def test_router_rejects_bad_mode_and_mismatched_streams():
    with pytest.raises(ValueError, match="mode"):
        StreamRouter(16, "mean")
    with pytest.raises(ValueError, match="equal shapes"):
        StreamRouter(16, "add")((torch.zeros(2, 3, 16), torch.zeros(2, 4, 16)), torch.zeros(2, 16))
    with pytest.raises(ValueError, match="no weights"):
        StreamRouter(16, "add").weights(torch.zeros(2, 16))


@pytest.mark.parametrize("mode", ["moe", "add"])
def test_backbone_output_is_the_routed_sum_of_projected_streams(mode):
    torch.manual_seed(0)
    backbone = FiLMDualBackbone(backbone_config("tiny", router=mode)).eval()
    images = torch.rand(2, 3, 64, 64)
    language = torch.randn(2, CFG.llm_dim)
    with torch.no_grad():
        out = backbone({"front": images}, language)
        siglip = backbone.siglip_projector(backbone.siglip(images, language))
        dinov2 = backbone.dinov2_projector(backbone.dinov2(images, language))
    if mode == "add":
        assert out.router_weights is None
        expected = siglip + dinov2
    else:
        w = out.router_weights
        torch.testing.assert_close(w.sum(dim=-1), torch.ones(2))
        expected = w[:, 0, None, None] * siglip + w[:, 1, None, None] * dinov2
    torch.testing.assert_close(out.tokens, expected, rtol=1e-5, atol=1e-5)
