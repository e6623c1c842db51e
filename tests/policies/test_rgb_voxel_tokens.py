"""Voxel tokens from the geometry model's own depth and cameras (``depth_source`` / ``camera_source``
``predicted``): what an observation must carry, that the predicted scene is exactly what the
heads give, that only the geometry loss trains the heads, and a policy that acts on plain RGB."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from geovla_helpers import CAMERAS, make_config, make_policy

from geometry.pose import pose_encoding_to_extri_intri
from policies.modeling_geovla import GeoVLAPolicy
from policies.rollout import env_factory

SOURCES = [("sensor", "given"), ("predicted", "given"), ("sensor", "predicted"), ("predicted", "predicted")]


@pytest.mark.parametrize(("depth_source", "camera_source"), SOURCES)
def test_scene_fields_are_what_the_observation_must_carry(dataset_meta, depth_source, camera_source):
    config = make_config(dataset_meta, spatial_tokens="voxel", depth_source=depth_source, camera_source=camera_source)
    expected = (("depth",) if depth_source == "sensor" else ()) + (
        ("intrinsics", "extrinsics") if camera_source == "given" else ())
    assert config.scene_fields == expected
    assert make_config(dataset_meta, spatial_tokens="patch").scene_fields == ()


def test_bad_sources_are_named(dataset_meta):
    with pytest.raises(ValueError, match="depth_source must be one of \\('sensor', 'predicted'\\), got 'lidar'"):
        make_config(dataset_meta, spatial_tokens="voxel", depth_source="lidar")
    with pytest.raises(ValueError, match="camera_source='predicted' feeds the voxel tokens; it needs spatial_tokens"):
        make_config(dataset_meta, camera_source="predicted")


def _inputs(batch, policy):
    images, _ = policy._images(batch, history=False)
    camera_mask = policy._camera_mask(batch, images)
    ids, mask = policy._instruction(batch)
    return images, camera_mask, ids, mask


@torch.no_grad()
def test_predicted_scene_is_the_heads_output_fed_as_if_sensed(dataset_meta, batch):
    policy = make_policy(dataset_meta, spatial_tokens="voxel", voxel_target=64, depth_source="predicted",
                         camera_source="predicted").eval()
    model = policy.model
    images, camera_mask, ids, mask = _inputs(batch, policy)
    predicted, agg, _ = model.embed_prefix(images, camera_mask, ids, mask, scene=None)

    heads = model.geometry.heads(agg, static_cameras=False)
    extrinsics, intrinsics = pose_encoding_to_extri_intri(heads["pose_enc"][:, -1], tuple(images.shape[-2:]))
    sensed_scene = {"depth": heads["depth"][:, -1], "intrinsics": intrinsics, "extrinsics": extrinsics}
    model.config.depth_source, model.config.camera_source = "sensor", "given"
    try:
        sensed, _, _ = model.embed_prefix(images, camera_mask, ids, mask, scene=sensed_scene)
    finally:
        model.config.depth_source, model.config.camera_source = "predicted", "predicted"
    torch.testing.assert_close(predicted.embeds, sensed.embeds, rtol=0, atol=0)


def _constant_depth(policy: GeoVLAPolicy, metres: float) -> None:
    """Make the depth head predict ``metres`` everywhere (its output goes through exp)."""
    last = policy.model.geometry.depth_head.scratch.output_conv2[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias[0] = float(np.log(metres))


@pytest.mark.parametrize("geometry_loss_weight", [0.0, 0.5])
def test_only_the_geometry_loss_trains_the_depth_head(dataset_meta, batch, geometry_loss_weight):
    policy = make_policy(dataset_meta, spatial_tokens="voxel", voxel_target=64, depth_source="predicted",
                         geometry_loss_weight=geometry_loss_weight)
    _constant_depth(policy, 0.6)  # inside the table's workspace from the task's cameras: voxels exist
    sensorless = {k: v for k, v in batch.items() if not k.startswith("observation.depth.")}
    loss, logs = policy.forward(batch if geometry_loss_weight else sensorless)
    loss.backward()
    depth_grads = [p.grad for p in policy.model.geometry.depth_head.parameters()]
    if geometry_loss_weight:
        assert "geometry_loss" in logs and any(g is not None and g.abs().sum() > 0 for g in depth_grads)
    else:  # the voxels read the predicted depth detached: the flow loss does not reach the head
        assert "geometry_loss" not in logs and all(g is None for g in depth_grads)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.model.voxels.xyz_embed.parameters())


def _rgb_observation(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"images": {c: rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for c in CAMERAS},
            "state": np.array([0.0, 0.0, 0.19, 1.0], np.float32), "instruction": "touch the red cube"}


def test_an_rgb_only_policy_acts_on_plain_cameras_and_survives_save_and_load(dataset_meta, tmp_path):
    # A box wide enough to hold whatever the untrained camera head predicts, so that voxels exist.
    policy = make_policy(dataset_meta, spatial_tokens="voxel", voxel_target=64, depth_source="predicted",
                         camera_source="predicted", voxel_workspace=(-1e3, -1e3, -1e3, 1e3, 1e3, 1e3))
    noise = torch.randn(1, 10, policy.config.max_action_dim, generator=torch.Generator().manual_seed(0))
    policy.reset()
    actions = policy.predict_action(_rgb_observation(), noise=noise)
    assert actions.shape == (10, 4) and np.isfinite(actions).all()

    # The depth head's output reaches the actions: a changed predicted depth moves the voxels.
    _constant_depth(policy, 0.6)
    policy.reset()
    moved = policy.predict_action(_rgb_observation(), noise=noise)
    _constant_depth(policy, 0.5)
    policy.reset()
    assert not np.allclose(policy.predict_action(_rgb_observation(), noise=noise), moved)

    policy.save_pretrained(tmp_path)
    loaded = GeoVLAPolicy.from_pretrained(tmp_path)
    assert (loaded.config.depth_source, loaded.config.camera_source) == ("predicted", "predicted")
    policy.reset(), loaded.reset()
    np.testing.assert_allclose(loaded.predict_action(_rgb_observation(), noise=noise),
                               policy.predict_action(_rgb_observation(), noise=noise), rtol=1e-5, atol=1e-6)
    make_env, _ = env_factory(loaded, "builtin", None)
    env = make_env()
    try:
        assert set(env.observation_space.spaces) == {"pixels", "agent_pos"}  # no depth rendered for it
    finally:
        env.close()


def test_a_policy_with_predicted_depth_still_needs_the_given_cameras(dataset_meta):
    policy = make_policy(dataset_meta, spatial_tokens="voxel", voxel_target=64, depth_source="predicted")
    with pytest.raises(ValueError, match=r"missing \['intrinsics', 'extrinsics'\]"):
        policy.predict_action(_rgb_observation())
