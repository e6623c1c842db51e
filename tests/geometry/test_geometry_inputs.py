"""Bad inputs raise ValueError naming the problem."""

import pytest
import torch

from geometry.aggregator import Aggregator
from geometry.config import make_config
from geometry.inputs import camera_param_features


@pytest.fixture(scope="module")
def model():
    return Aggregator(make_config("tiny", max_views=4, max_time_steps=3)).eval()


@pytest.mark.parametrize("shape,match", [
    ((2, 3, 64, 64), "rank 4"),
    ((1, 2, 2, 3, 64, 60), "multiple of patch_size"),
    ((1, 2, 5, 3, 64, 64), "V=5 exceeds max_views=4"),
    ((1, 4, 2, 3, 64, 64), "T=4 exceeds max_time_steps=3"),
    ((1, 2, 4, 64, 64), "3 channels"),
])
def test_bad_shapes(model, shape, match):
    with pytest.raises(ValueError, match=match):
        model(torch.rand(*shape))


def test_nan_and_dtype(model):
    images = torch.rand(1, 2, 2, 3, 64, 64)
    images[0, 1, 1, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model(images)
    with pytest.raises(ValueError, match="floating point"):
        model(torch.zeros(1, 2, 2, 3, 64, 64, dtype=torch.uint8))


def test_bad_cameras(model):
    images = torch.rand(1, 2, 2, 3, 64, 64)
    with pytest.raises(ValueError, match=r"intrinsics must have shape \(1, 2, 2, 3, 3\)"):
        model(images, intrinsics=torch.eye(3).expand(1, 2, 3, 3))
    with pytest.raises(ValueError, match="extrinsics contain NaN"):
        model(images, extrinsics=torch.full((1, 2, 2, 3, 4), float("nan")))


def test_bad_output_layers(model):
    with pytest.raises(ValueError, match=r"output_layers=\[6\] must lie in \[0, depth=6\)"):
        model(torch.rand(1, 2, 2, 3, 64, 64), output_layers=(6,))


def test_bad_config():
    with pytest.raises(ValueError, match="not a multiple of patch_size"):
        make_config("tiny", img_size=60)
    with pytest.raises(ValueError, match="unknown geometry preset"):
        make_config("huge")


def test_camera_param_features_layout():
    f = camera_param_features(1, 1, 3, 64, 32)
    assert f[0, 0, :, 0].tolist() == [0.0, 0.5, 1.0]
    assert torch.equal(f[..., 1:], torch.zeros(1, 1, 3, 18))
    K = torch.tensor([[16.0, 0, 16], [0, 32, 32], [0, 0, 1]]).expand(1, 1, 3, 3, 3)
    f = camera_param_features(1, 1, 3, 64, 32, intrinsics=K)
    assert f[0, 0, 0, 1:6].tolist() == [1.0, 0.5, 0.5, 0.0, 0.0]
