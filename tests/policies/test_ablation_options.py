"""The switches the ablations turn: voxel tokens without aggregator features (the aggregator then
does not run), FiLM off, and the stream router's ``add`` mode."""

from __future__ import annotations

import pytest
import torch
from geovla_helpers import CAMERAS, make_config, make_policy

from geometry.aggregator import AggregatorOutput
from policies.voxel_tokens import VoxelSpatialTokens

WORKSPACE = (-0.3, -0.3, -0.02, 0.3, 0.3, 0.3)


def _scene(seed: int = 0) -> dict[str, torch.Tensor]:
    """A camera looking down from 0.5 m at the table, every pixel 0.5 m deep, random colours."""
    generator = torch.Generator().manual_seed(seed)
    V = len(CAMERAS)
    intrinsics = torch.tensor([[32.0, 0.0, 16.0], [0.0, 32.0, 16.0], [0.0, 0.0, 1.0]]).expand(1, V, 3, 3)
    down = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.5]])
    return {"images": torch.rand(1, V, 3, 32, 32, generator=generator), "depth": torch.full((1, V, 32, 32), 0.5),
            "intrinsics": intrinsics.clone(), "extrinsics": down.expand(1, V, 3, 4).clone()}


def test_voxel_tokens_without_features_equal_the_featured_ones_at_their_zero_start():
    scene, mask = _scene(), torch.ones(1, len(CAMERAS), dtype=torch.bool)
    featured = VoxelSpatialTokens(32, 16, target_voxels=64, workspace=WORKSPACE)
    plain = VoxelSpatialTokens(None, 16, target_voxels=64, workspace=WORKSPACE)
    plain.load_state_dict({k: v for k, v in featured.state_dict().items() if not k.startswith("feature_proj.")})
    agg = AggregatorOutput(layers={5: torch.randn(1, len(CAMERAS), 5 + 16, 32)}, patch_start_idx=5, num_times=1,
                           num_views=len(CAMERAS), legacy=False, grid=(4, 4), mask_logits=None)
    args = (scene["images"], scene["depth"], scene["intrinsics"], scene["extrinsics"], mask)
    with_features, valid = featured(agg, *args)
    without, plain_valid = plain(None, *args)
    assert plain.feature_proj is None and valid.any()
    torch.testing.assert_close(without, with_features)  # the feature projection starts at zero
    torch.testing.assert_close(plain_valid, valid)


def test_a_policy_without_voxel_features_runs_no_aggregator_and_trains(dataset_meta, batch):
    policy = make_policy(dataset_meta, spatial_tokens="voxel", voxel_target=64, voxel_features=False,
                         geometry_loss_weight=0.0)
    assert policy.model.geometry is None and policy.model.voxels.feature_proj is None
    loss, _ = policy.forward(batch)
    loss.backward()
    assert all(p.grad is not None for p in policy.model.voxels.xyz_embed.parameters())
    # The geometry loss or predicted depth bring the aggregator back.
    assert make_config(dataset_meta, spatial_tokens="voxel", voxel_features=False).runs_aggregator  # weight 0.1
    assert make_config(dataset_meta, spatial_tokens="voxel", voxel_features=False, geometry_loss_weight=0.0,
                       depth_source="predicted").runs_aggregator
    with pytest.raises(ValueError, match="voxel_features=False describes voxel tokens"):
        make_config(dataset_meta, voxel_features=False)


def _visual_tokens(policy, batch, seed: int) -> torch.Tensor:
    """The backbone's tokens of the batch's cameras under a random language vector."""
    images, _ = policy._images(batch, history=False)
    language = torch.randn(images.shape[0], policy.model.action_model.llm_width,
                           generator=torch.Generator().manual_seed(seed))
    current = images[:, -1]
    return policy.model.backbone.forward_streams(current, current, language,
                                                 policy._camera_mask(batch, images)).tokens


def test_film_off_keeps_the_vits_blind_to_the_instruction(dataset_meta, batch):
    policy = make_policy(dataset_meta, film=False, router="add")
    films = [p for encoder in (policy.model.backbone.siglip, policy.model.backbone.dinov2)
             for p in encoder.films.parameters()]
    assert not any(p.requires_grad for p in films)
    assert not {id(p) for p in films} & {id(p) for p in policy.get_optim_params()}
    assert not list(policy.model.backbone.router.parameters())  # "add" has no weights
    with torch.no_grad():
        torch.testing.assert_close(_visual_tokens(policy, batch, 0), _visual_tokens(policy, batch, 1))
        for p in films:  # the same network with FiLM trained away from zero reads the instruction
            p.normal_(0.0, 0.1)
        assert not torch.allclose(_visual_tokens(policy, batch, 0), _visual_tokens(policy, batch, 1))


def test_bad_router_is_named(dataset_meta):
    with pytest.raises(ValueError, match="router must be one of \\('moe', 'add'\\), got 'sum'"):
        make_config(dataset_meta, router="sum")
