"""The language vector: mean input embedding over the valid instruction tokens."""

import pytest
import torch

from vla.backbone import mean_instruction_embedding


def test_worked_example_ignores_padding_on_either_side():
    embeddings = torch.tensor([[[1.0, 1.0], [3.0, 3.0], [9.0, 9.0]], [[9.0, 9.0], [2.0, 4.0], [4.0, 8.0]]])
    mask = torch.tensor([[1, 1, 0], [0, 1, 1]])
    assert mean_instruction_embedding(embeddings, mask).tolist() == [[2.0, 2.0], [3.0, 6.0]]


def test_matches_mean_of_embedded_valid_token_ids():
    torch.manual_seed(0)
    embed = torch.nn.Embedding(50, 16)
    ids = torch.randint(1, 50, (3, 7))
    lengths = [7, 4, 1]
    mask = torch.arange(7)[None] < torch.tensor(lengths)[:, None]
    ids[~mask] = 0  # pad id
    result = mean_instruction_embedding(embed(ids), mask)
    for b, length in enumerate(lengths):
        torch.testing.assert_close(result[b], embed(ids[b, :length]).mean(dim=0))


def test_keeps_the_embedding_dtype():
    embeddings = torch.randn(2, 5, 8, dtype=torch.bfloat16)
    assert mean_instruction_embedding(embeddings, torch.ones(2, 5, dtype=torch.bool)).dtype == torch.bfloat16


def test_bad_input_raises_value_error():
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        mean_instruction_embedding(torch.randn(2, 3, 4), torch.tensor([[1, 0, 0], [0, 0, 0]]))
    with pytest.raises(ValueError, match=r"mask must be \[B, L\] = \(2, 3\)"):
        mean_instruction_embedding(torch.randn(2, 3, 4), torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"\[B, L, D\]"):
        mean_instruction_embedding(torch.randn(2, 3), torch.ones(2, 3))
