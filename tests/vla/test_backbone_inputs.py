"""Camera inputs: stacked format equals the dict path, missing cameras contribute nothing, bad input is named."""

import pytest
import torch

from vla.backbone import FiLMDualBackbone, backbone_config
from vla.backbone.config import IMAGENET_MEAN, IMAGENET_STD
from vla.backbone.film import FiLM
from vla.backbone.inputs import split_stacked

CFG = backbone_config("tiny")


def _backbone():
    torch.manual_seed(0)
    backbone = FiLMDualBackbone(CFG).eval()
    for film in (m for m in backbone.modules() if isinstance(m, FiLM)):
        torch.nn.init.normal_(film.scale.weight, std=0.05)
    return backbone


def test_split_stacked_assigns_siglip_then_dinov2_channels_per_camera():
    pixel_values = torch.arange(12.0).view(1, 12, 1, 1).expand(2, 12, 64, 64)
    siglip, dinov2 = split_stacked(pixel_values, 64)
    assert siglip.shape == dinov2.shape == (2, 2, 3, 64, 64)
    assert siglip[0, :, :, 0, 0].tolist() == [[0, 1, 2], [6, 7, 8]]
    assert dinov2[0, :, :, 0, 0].tolist() == [[3, 4, 5], [9, 10, 11]]


def test_stacked_format_equals_dict_path():
    backbone = _backbone()
    images = {"front": torch.rand(2, 3, 64, 64), "wrist": torch.rand(2, 3, 64, 64)}
    language = torch.randn(2, CFG.llm_dim)
    stacked = torch.cat([images["front"], images["front"], images["wrist"], images["wrist"]], dim=1)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    normalised = torch.cat(
        [torch.cat([(im - 0.5) / 0.5, (im - mean) / std], dim=1) for im in images.values()], dim=1
    )
    with torch.no_grad():
        from_dict = backbone(images, language)
        from_stacked = backbone.forward_stacked(stacked, language)
        from_normalised = backbone.forward_stacked(normalised, language, normalized=True)
    assert torch.equal(from_stacked.tokens, from_dict.tokens)
    assert torch.equal(from_stacked.token_mask, from_dict.token_mask)
    torch.testing.assert_close(from_normalised.tokens, from_dict.tokens, rtol=1e-4, atol=1e-5)


def test_missing_camera_contributes_nothing():
    backbone = _backbone()
    k = CFG.num_agg_tokens
    images = {"front": torch.rand(2, 3, 64, 64), "wrist": torch.rand(2, 3, 64, 64)}
    mask = {"wrist": torch.tensor([True, False])}
    perturbed = dict(images, wrist=images["wrist"].clone())
    perturbed["wrist"][1] = float("nan")
    language = torch.randn(2, CFG.llm_dim)
    with torch.no_grad():
        out = backbone(images, language, mask)
        out_perturbed = backbone(perturbed, language, mask)
        unmasked = backbone(images, language)
    assert torch.equal(out.tokens, out_perturbed.tokens)
    assert out.token_mask[1].tolist() == [True] * k + [False] * k
    assert bool(out.token_mask[0].all())
    assert torch.equal(out.tokens[1, k:], torch.zeros(k, CFG.llm_dim))
    torch.testing.assert_close(out.tokens[0], unmasked.tokens[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.tokens[1, :k], unmasked.tokens[1, :k], rtol=1e-5, atol=1e-5)

    stacked = torch.cat([perturbed["front"]] * 2 + [perturbed["wrist"]] * 2, dim=1)
    with torch.no_grad():
        from_stacked = backbone.forward_stacked(stacked, language, torch.tensor([[True, True], [True, False]]))
    assert torch.equal(from_stacked.tokens, out.tokens)


def test_missing_camera_gets_no_gradient_and_keeps_gradients_finite():
    backbone = _backbone().train()
    images = {"front": torch.rand(2, 3, 64, 64), "wrist": torch.full((2, 3, 64, 64), float("nan"))}
    images["wrist"].requires_grad_(True)
    out = backbone(images, torch.randn(2, CFG.llm_dim), {"wrist": torch.tensor([False, False])})
    out.tokens.square().sum().backward()
    assert torch.equal(images["wrist"].grad, torch.zeros_like(images["wrist"]))
    assert all(torch.isfinite(p.grad).all() for p in backbone.parameters() if p.grad is not None)


@pytest.mark.parametrize(
    ("images", "language", "mask", "message"),
    [
        ({}, (2, 128), None, "at least one camera"),
        ({"front": (2, 3, 32, 32)}, (2, 128), None, r"images\['front'\] must be \[B, 3, 64, 64\]"),
        ({"front": (2, 4, 64, 64)}, (2, 128), None, r"images\['front'\]"),
        ({"front": (2, 3, 64, 64), "wrist": (3, 3, 64, 64)}, (2, 128), None, r"images\['wrist'\] has batch size 3"),
        ({"front": (2, 3, 64, 64)}, (2, 64), None, r"language must be \[B, D_llm\] = \[2, 128\]"),
        ({"front": (2, 3, 64, 64)}, (2, 128), {"side": (2,)}, r"camera_mask has cameras \['side'\]"),
        ({"front": (2, 3, 64, 64)}, (2, 128), {"front": (3,)}, r"camera_mask\['front'\] must be \[B\]"),
    ],
)
def test_bad_dict_input_raises_value_error_naming_it(images, language, mask, message):
    backbone = _backbone()
    images = {name: torch.rand(shape) for name, shape in images.items()}
    mask = None if mask is None else {name: torch.ones(shape, dtype=torch.bool) for name, shape in mask.items()}
    with pytest.raises(ValueError, match=message):
        backbone(images, torch.randn(language), mask)


def test_bad_stacked_input_and_integer_images_raise_value_error():
    backbone = _backbone()
    language = torch.randn(2, CFG.llm_dim)
    with pytest.raises(ValueError, match=r"\[B, 6\*V, H, W\]"):
        backbone.forward_stacked(torch.rand(2, 9, 64, 64), language)
    with pytest.raises(ValueError, match="64x64"):
        backbone.forward_stacked(torch.rand(2, 6, 32, 32), language)
    with pytest.raises(ValueError, match=r"camera_mask must be \[B, V\] = \[2, 1\]"):
        backbone.forward_stacked(torch.rand(2, 6, 64, 64), language, torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="pixel_values must be a float tensor"):
        backbone.forward_stacked(torch.zeros(2, 6, 64, 64, dtype=torch.uint8), language)
    with pytest.raises(ValueError, match="float"):
        backbone({"front": torch.zeros(2, 3, 64, 64, dtype=torch.uint8)}, language)
