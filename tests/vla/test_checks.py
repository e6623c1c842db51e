"""``vla.checks.check_finite`` finds every NaN and infinity wherever it sits, in any float dtype."""

import pytest
import torch

from vla.checks import check_finite


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_check_finite_finds_a_bad_value_at_any_position(dtype, bad):
    tensor = torch.rand(3, 5, 7, dtype=dtype)
    check_finite("images", tensor)
    for index in range(tensor.numel()):
        broken = tensor.clone()
        broken.view(-1)[index] = bad
        with pytest.raises(ValueError, match="images contains NaN or Inf"):
            check_finite("images", broken)


def test_check_finite_finds_one_nan_in_a_large_tensor_and_passes_extremes():
    tensor = torch.rand(1, 2, 3, 3, 64, 64)
    tensor.view(-1)[40_001] = float("nan")
    with pytest.raises(ValueError, match="state contains NaN or Inf"):
        check_finite("state", tensor)
    check_finite("state", torch.tensor([torch.finfo(torch.float32).max, torch.finfo(torch.float32).min]))
    check_finite("state", torch.empty(0, 4))
    check_finite("ids", torch.tensor([1, 2]))  # integers are never checked
