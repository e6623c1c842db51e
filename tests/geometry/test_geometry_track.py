"""TrackHead: correlation sampling finds the matching feature; tracks start at the queries,
react to the frames and are refined over iterations."""

import pytest
import torch

from geometry.config import make_config
from geometry.heads.track_modules import correlation_pyramid, sample_correlation, sample_features
from geometry.model import GeometryModel


def test_sample_features_bilinear():
    fmap = torch.arange(12.0).reshape(1, 1, 3, 4)  # value = 4*y + x
    pts = torch.tensor([[[1.0, 1.0], [2.5, 0.0], [1.0, 1.5]]])
    torch.testing.assert_close(sample_features(fmap, pts)[0, :, 0], torch.tensor([5.0, 2.5, 7.0]))
    outside = torch.tensor([[[-0.5, 1.0], [5.0, 3.0]]])
    torch.testing.assert_close(sample_features(fmap, outside)[0, :, 0], torch.tensor([2.0, 0.0]))  # zero padding
    border = sample_features(fmap, outside, padding_mode="border")[0, :, 0]
    torch.testing.assert_close(border, torch.tensor([4.0, 11.0]))  # the nearest border pixel


def test_correlation_peaks_at_the_matching_location():
    C = 8
    fmap = torch.zeros(1, C, 9, 9)
    target = torch.randn(C)
    fmap[0, :, 4, 5] = target  # feature at (x=5, y=4)
    feats = target.view(1, 1, C)
    coords = torch.tensor([[[4.0, 4.0]]])  # one pixel left of the match
    corr = sample_correlation(correlation_pyramid(fmap, 1), feats, coords, radius=1)
    assert corr.shape == (1, 1, 9)
    assert corr[0, 0].argmax() == 7  # VGGT's x-major window: entry 3 * (dx + 1) + (dy + 1), dx=+1, dy=0
    torch.testing.assert_close(corr[0, 0, 7], target.pow(2).sum() / C ** 0.5)
    assert sample_correlation(correlation_pyramid(fmap, 3), feats, coords, radius=1).shape == (1, 1, 27)


@torch.no_grad()
def test_track_head_outputs():
    torch.manual_seed(0)
    model = GeometryModel(make_config("tiny")).eval()
    images = torch.rand(1, 2, 2, 3, 64, 64)
    queries = torch.tensor([[[10.0, 20.0], [40.5, 33.0], [60.0, 5.0]]])
    out = model(images, query_points=queries)
    assert out["track"].shape == (1, 4, 3, 2) and out["vis"].shape == (1, 4, 3)
    assert len(out["track_list"]) == model.config.track_iterations
    torch.testing.assert_close(out["track"][0, 0], queries[0])  # frame 0 stays at the queries
    assert ((out["vis"] > 0) & (out["vis"] < 1)).all() and ((out["track_conf"] > 0) & (out["track_conf"] < 1)).all()
    # refinement moves the other frames' estimates between iterations
    assert not torch.allclose(out["track_list"][0][0, 1:], out["track_list"][-1][0, 1:])
    perturbed = images.clone()
    perturbed[0, 1, 1] = torch.rand(3, 64, 64)
    assert not torch.allclose(model(perturbed, query_points=queries)["track"][0, 3], out["track"][0, 3])
    with pytest.raises(ValueError, match="query_points must be"):
        model(images, query_points=queries[0])
