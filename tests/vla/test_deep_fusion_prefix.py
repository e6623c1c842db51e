"""Prefix assembly: placeholder insertion, token scattering, and DeepFusionActionModel.embed_prefix."""

import pytest
import torch

from vla.action_model import DeepFusionActionModel
from vla.config import deep_fusion_preset
from vla.prefix import insert_placeholders, scatter_tokens


def test_insert_placeholders_example():
    ids, mask = insert_placeholders(torch.tensor([[5, 5, 7, 0]]), torch.tensor([[1, 1, 1, 0]]), 2, 9, 5)
    assert ids.tolist() == [[5, 5, 9, 9, 7, 0]]
    assert mask.tolist() == [[1, 1, 1, 1, 1, 0]]


def test_insert_placeholders_without_anchor_goes_before_first_valid_token():
    ids, mask = insert_placeholders(torch.tensor([[0, 0, 3, 4], [3, 5, 4, 0]]),
                                    torch.tensor([[0, 0, 1, 1], [1, 1, 1, 0]]), 1, 9, 5)
    assert ids.tolist() == [[0, 0, 9, 3, 4], [3, 5, 9, 4, 0]]
    assert mask.tolist() == [[0, 0, 1, 1, 1], [1, 1, 1, 1, 0]]


def test_scatter_tokens_example():
    embeds = torch.arange(4.0)[None, :, None].expand(1, 4, 2).clone()
    tokens = torch.tensor([[[10.0, 10.0], [11.0, 11.0]]])
    out, valid = scatter_tokens(embeds, torch.ones(1, 4, dtype=torch.bool), torch.tensor([[3, 9, 9, 4]]),
                                9, tokens, torch.tensor([[1, 0]]), "visual_tokens")
    assert out[0, :, 0].tolist() == [0.0, 10.0, 11.0, 3.0]
    assert valid.tolist() == [[True, True, False, True]]


def test_scatter_tokens_rejects_wrong_placeholder_count():
    with pytest.raises(ValueError, match="visual_tokens: each row of input_ids needs 2"):
        scatter_tokens(torch.zeros(1, 3, 2), torch.ones(1, 3, dtype=torch.bool), torch.tensor([[9, 1, 2]]),
                       9, torch.zeros(1, 2, 2), None, "visual_tokens")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return DeepFusionActionModel(deep_fusion_preset("tiny", action_horizon=3)).eval()


def test_embed_prefix_places_visual_then_spatial_then_text(model):
    enc = model.tokenizer(["<image><image>go", "<image><image>stop it"], padding=True, return_tensors="pt")
    visual = torch.randn(2, 2, 128)
    spatial = torch.randn(2, 3, 128)
    visual_mask = torch.tensor([[1, 1], [1, 0]])
    prefix = model.embed_prefix(enc["input_ids"], enc["attention_mask"], visual, visual_mask, spatial)
    text = model.fusion.llm.get_input_embeddings()(torch.tensor(model.tokenizer("go")["input_ids"]))
    # [<bos>, v0, v1, s0, s1, s2, g, o, pad...]
    assert prefix.embeds.shape == (2, enc["input_ids"].shape[1] + 3, 128)
    torch.testing.assert_close(prefix.embeds[:, 1:3], visual)
    torch.testing.assert_close(prefix.embeds[:, 3:6], spatial)
    torch.testing.assert_close(prefix.embeds[0, 6:8], text[1:])
    assert prefix.valid[0].tolist() == [True] * 8 + [False] * 5
    assert prefix.valid[1].tolist() == [True, True, False] + [True] * 10, "masked camera token is invalid"


def test_embed_prefix_uses_explicit_spatial_placeholders(model):
    enc = model.tokenizer(["go<spatial><image>"], return_tensors="pt")
    visual, spatial = torch.randn(1, 1, 128), torch.randn(1, 1, 128)
    prefix = model.embed_prefix(enc["input_ids"], enc["attention_mask"], visual, None, spatial)
    assert prefix.embeds.shape[1] == enc["input_ids"].shape[1]
    torch.testing.assert_close(prefix.embeds[0, 3], spatial[0, 0])
    torch.testing.assert_close(prefix.embeds[0, 4], visual[0, 0])


def test_embed_prefix_rejects_bad_inputs(model):
    enc = model.tokenizer(["<image>go"], return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    with pytest.raises(ValueError, match="visual_tokens contains NaN"):
        model.embed_prefix(ids, mask, torch.full((1, 1, 128), float("nan")))
    with pytest.raises(ValueError, match="visual_tokens must be"):
        model.embed_prefix(ids, mask, torch.zeros(1, 1, 64))
    with pytest.raises(ValueError, match="needs 2 placeholder"):
        model.embed_prefix(ids, mask, torch.zeros(1, 2, 128))
    with pytest.raises(ValueError, match="input_ids must lie in"):
        model.embed_prefix(ids + 10_000, mask)
    with pytest.raises(ValueError, match="attention_mask"):
        model.embed_prefix(ids, mask[:, :-1])
