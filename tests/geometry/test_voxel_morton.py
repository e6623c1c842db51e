"""Morton codes: worked examples, round trip, uniqueness, locality, range errors."""

import itertools

import pytest
import torch

from geometry.voxel.morton import cell_ids, id_cells, morton_decode, morton_encode


def test_docstring_examples():
    cells = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1], [2, 0, 0]])
    assert morton_encode(cells).tolist() == [1, 2, 4, 7, 8]
    assert morton_decode(torch.tensor(7)).tolist() == [1, 1, 1]


def test_unique_per_cell_and_round_trip():
    grid = torch.tensor(list(itertools.product(range(16), repeat=3)))
    codes = morton_encode(grid)
    assert codes.unique().numel() == grid.shape[0]
    assert torch.equal(morton_decode(codes), grid)
    big = torch.tensor([[2**21 - 1, 0, 2**21 - 1], [123456, 654321, 1]])
    assert torch.equal(morton_decode(morton_encode(big)), big)
    signed = torch.tensor([[-5, 3, -(2**20)], [0, 0, 0], [2**20 - 1, -1, 7]])
    assert torch.equal(id_cells(cell_ids(signed)), signed)
    assert int(cell_ids(torch.tensor([-(2**20)] * 3))) == 0


def test_locality_blocks_are_contiguous_code_ranges():
    """Every aligned 2^k block of an 8^3 grid fills one contiguous range of 8^k codes (Z-order)."""
    for k in (1, 2):
        side = 2**k
        for corner in itertools.product(range(0, 8, side), repeat=3):
            block = torch.tensor(list(itertools.product(*(range(c, c + side) for c in corner))))
            codes = morton_encode(block).sort().values
            assert codes[-1] - codes[0] == side**3 - 1
            assert int(codes[0]) % side**3 == 0


def test_locality_neighbours_closer_than_random_pairs():
    torch.manual_seed(0)
    cells = torch.randint(0, 64, (2000, 3))
    near = (cells + torch.randint(0, 2, (2000, 3))).clamp_max(63)
    far = torch.randint(0, 64, (2000, 3))
    d_near = (morton_encode(cells) - morton_encode(near)).abs().float().median()
    d_far = (morton_encode(cells) - morton_encode(far)).abs().float().median()
    assert d_near * 100 < d_far


def test_out_of_range_raises():
    with pytest.raises(ValueError, match="cells must lie"):
        morton_encode(torch.tensor([[2**21, 0, 0]]))
    with pytest.raises(ValueError, match="cells must lie"):
        cell_ids(torch.tensor([[0, -(2**20) - 1, 0]]))
    with pytest.raises(ValueError, match=r"\[\.\.\., 3\]"):
        morton_encode(torch.zeros(4, 2, dtype=torch.long))
