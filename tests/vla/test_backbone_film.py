"""FiLM: exact identity at init against timm's own forward, language dependence when non-zero."""

import copy

import pytest
import torch

from vla.backbone import FiLMDualBackbone, FiLMViTEncoder, backbone_config, build_vit
from vla.backbone.film import FiLM, film_block_forward

CFG = backbone_config("tiny")


def _normalise(images, encoder_config):
    mean = torch.tensor(encoder_config.mean).view(1, 3, 1, 1)
    std = torch.tensor(encoder_config.std).view(1, 3, 1, 1)
    return (images - mean) / std


def _randomise_film(module, std=0.05):
    for film in (m for m in module.modules() if isinstance(m, FiLM)):
        for linear in (film.scale, film.shift):
            torch.nn.init.normal_(linear.weight, std=std)
            torch.nn.init.normal_(linear.bias, std=std)


@pytest.mark.parametrize("stream", ["siglip", "dinov2"])
def test_zero_film_hidden_states_equal_timm_forward_intermediates(stream):
    encoder_config = getattr(CFG, stream)
    torch.manual_seed(0)
    vit = build_vit(encoder_config, CFG.image_size).eval()
    reference = copy.deepcopy(vit)
    encoder = FiLMViTEncoder(vit, CFG.llm_dim, CFG.num_agg_tokens, encoder_config.mean, encoder_config.std).eval()
    images = torch.rand(2, 3, CFG.image_size, CFG.image_size)
    language = torch.randn(2, CFG.llm_dim)

    ours = encoder.hidden_states(encoder.embed(images), language)
    theirs = reference.forward_intermediates(
        _normalise(images, encoder_config), norm=False, output_fmt="NLC", intermediates_only=True
    )
    depth = len(reference.blocks)
    assert len(ours) == depth - 1  # the last block is pruned
    prefix = reference.num_prefix_tokens
    for block, (mine, timm_tokens) in enumerate(zip(ours, theirs)):
        assert torch.equal(mine[:, prefix:], timm_tokens), f"block {block} differs from timm"


@pytest.mark.parametrize("stream", ["siglip", "dinov2"])
def test_output_is_aggregation_tokens_after_second_to_last_timm_block_without_norm(stream):
    encoder_config = getattr(CFG, stream)
    torch.manual_seed(1)
    vit = build_vit(encoder_config, CFG.image_size).eval()
    reference = copy.deepcopy(vit)
    encoder = FiLMViTEncoder(vit, CFG.llm_dim, CFG.num_agg_tokens, encoder_config.mean, encoder_config.std).eval()
    images = torch.rand(3, 3, CFG.image_size, CFG.image_size)

    x = reference.norm_pre(reference._pos_embed(reference.patch_embed(_normalise(images, encoder_config))))
    x = torch.cat([x, encoder.aggregation.tokens.expand(3, -1, -1)], dim=1)
    for block in reference.blocks[: len(reference.blocks) - 1]:
        x = block(x)
    expected = x[:, -CFG.num_agg_tokens :]

    out = encoder(images, torch.randn(3, CFG.llm_dim))
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    normed = reference.norm(expected)
    assert not torch.allclose(out, normed, atol=1e-3), "the final norm must not be applied"


def test_film_is_per_channel_and_the_same_for_every_token():
    torch.manual_seed(0)
    film = FiLM(lang_dim=6, vis_dim=4)
    _randomise_film(film, std=0.5)
    language = torch.randn(2, 6)
    x = torch.randn(2, 5, 4)
    x[:, 3] = x[:, 1]  # two identical tokens

    y = film(x, language)
    gamma = language @ film.scale.weight.T + film.scale.bias  # [2, 4]
    beta = language @ film.shift.weight.T + film.shift.bias
    for b in range(2):
        for n in range(5):
            torch.testing.assert_close(y[b, n], x[b, n] * (1 + gamma[b]) + beta[b])
    torch.testing.assert_close(y[:, 3], y[:, 1])
    # differences between tokens are scaled by the same per-channel factor for all token pairs
    torch.testing.assert_close(y[:, 0] - y[:, 2], (x[:, 0] - x[:, 2]) * (1 + gamma))


def test_film_zero_init_is_identity():
    film = FiLM(lang_dim=8, vis_dim=4)
    x = torch.randn(3, 7, 4)
    assert torch.equal(film(x, torch.randn(3, 8)), x)


def test_film_sits_between_attention_and_mlp():
    torch.manual_seed(0)
    vit = build_vit(CFG.dinov2, CFG.image_size).eval()
    block = vit.blocks[0]
    for scale in (block.ls1.gamma, block.ls2.gamma):
        torch.nn.init.normal_(scale, std=0.5)  # make both residual branches matter
    film = FiLM(CFG.llm_dim, vit.embed_dim)
    _randomise_film(film)
    x = torch.randn(2, 9, vit.embed_dim)
    language = torch.randn(2, CFG.llm_dim)

    after_attention = film(x + block.ls1(block.attn(block.norm1(x))), language)
    expected = after_attention + block.ls2(block.mlp(block.norm2(after_attention)))
    torch.testing.assert_close(film_block_forward(block, film, x, language), expected)
    film_after_mlp = film(block(x), language)
    assert not torch.allclose(film_block_forward(block, film, x, language), film_after_mlp, atol=1e-4)


def _backbone_with_film():
    torch.manual_seed(0)
    backbone = FiLMDualBackbone(CFG).eval()
    _randomise_film(backbone)
    return backbone


def test_language_changes_tokens_and_same_language_repeats():
    backbone = _backbone_with_film()
    images = {"front": torch.rand(1, 3, 64, 64)}
    first, second = torch.randn(2, 1, CFG.llm_dim)
    with torch.no_grad():
        a = backbone.siglip(images["front"], first)
        b = backbone.siglip(images["front"], second)
        a_again = backbone.siglip(images["front"], first)
        out_a = backbone(images, first).tokens
        out_b = backbone(images, second).tokens
        out_a_again = backbone(images, first).tokens
    assert (a - b).abs().max() > 1e-3
    assert torch.equal(a, a_again)
    assert (out_a - out_b).abs().max() > 1e-3
    assert torch.equal(out_a, out_a_again)


def test_each_sample_uses_its_own_language_vector():
    backbone = _backbone_with_film()
    images = {"front": torch.rand(1, 3, 64, 64), "wrist": torch.rand(1, 3, 64, 64)}
    language = torch.randn(2, CFG.llm_dim)
    with torch.no_grad():
        batched = backbone({name: image.expand(2, -1, -1, -1) for name, image in images.items()}, language).tokens
        single = [backbone(images, language[i : i + 1]).tokens for i in range(2)]
    torch.testing.assert_close(batched[0:1], single[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batched[1:2], single[1], rtol=1e-5, atol=1e-5)
    assert (batched[0] - batched[1]).abs().max() > 1e-3


def test_zero_film_encoder_ignores_language():
    torch.manual_seed(0)
    backbone = FiLMDualBackbone(CFG).eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        for encoder in (backbone.siglip, backbone.dinov2):
            assert torch.equal(encoder(images, torch.randn(2, CFG.llm_dim)), encoder(images, torch.randn(2, CFG.llm_dim)))
