"""Voxel spatial tokens: pixels lifted to the workspace, and the policy that reads them."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from geovla_helpers import CAMERAS, make_config, make_policy

import envs
from geometry.aggregator import AggregatorOutput
from policies.modeling_geovla import GeoVLAPolicy
from policies.voxel_tokens import VoxelSpatialTokens, fourier_features

WORKSPACE = (-0.3, -0.3, -0.02, 0.3, 0.3, 0.3)


@pytest.fixture(scope="module")
def scene():
    """One built-in reach scene at 32 px: camera inputs ``[1, V, ...]`` and the scene's objects."""
    env = gym.make(envs.TABLETOP_ID, task="reach", image_size=32, geometry=True)
    obs, _ = env.reset(seed=3)
    base = env.unwrapped
    stack = lambda field: torch.from_numpy(np.stack([obs[field][c] for c in CAMERAS]))[None]  # noqa: E731
    inputs = {
        "images": stack("pixels").permute(0, 1, 4, 2, 3).float() / 255,
        "depth": stack("depth"), "intrinsics": stack("intrinsics"), "extrinsics": stack("extrinsics"),
    }
    objects = {o.name: (np.array(base.model.geom_rgba[base.model.geom(o.slot).id][:3]), base.object_position(o))
               for o in base.objects}
    env.close()
    return inputs, objects


def _features(seed: int = 0) -> AggregatorOutput:
    generator = torch.Generator().manual_seed(seed)
    layer = torch.randn(1, 2 * len(CAMERAS), 5 + 16, 32, generator=generator)  # T=2, 5 special + 4x4 patches
    return AggregatorOutput(layers={5: layer}, patch_start_idx=5, num_times=2, num_views=len(CAMERAS), legacy=False,
                            grid=(4, 4), mask_logits=None)


def _tokens(module, scene_inputs, agg=None, camera_mask=None, **changes):
    inputs = {**scene_inputs, **changes}
    mask = torch.ones(1, len(CAMERAS), dtype=torch.bool) if camera_mask is None else camera_mask
    return module(agg or _features(), inputs["images"], inputs["depth"], inputs["intrinsics"], inputs["extrinsics"], mask)


def test_fourier_features_keep_the_input_and_add_sines():
    x = torch.tensor([[0.5, -0.25, 1.0]])
    out = fourier_features(x, 2)
    assert out.shape == (1, 15)
    torch.testing.assert_close(out[:, :3], x)
    torch.testing.assert_close(out[:, 3:9], torch.sin(torch.pi * torch.tensor([0.5, 1.0, -0.25, -0.5, 1.0, 2.0]))[None])


def test_the_named_object_has_a_voxel_of_its_colour_where_it_is(scene):
    inputs, objects = scene
    module = VoxelSpatialTokens(32, 16, target_voxels=256, workspace=WORKSPACE)
    agg = _features()
    voxels = module.lift(agg.layers[5][:, -len(CAMERAS):, 5:], agg.grid, inputs["images"], inputs["depth"],
                         inputs["intrinsics"], inputs["extrinsics"], torch.ones(1, len(CAMERAS), dtype=torch.bool))
    valid = voxels.valid[0, 0]
    assert 200 <= int(valid.sum()) <= 256
    rgb, xyz = voxels.rgb[0, 0][valid].numpy(), voxels.xyz[0, 0][valid].numpy()
    size = float(voxels.voxel_size[0])
    for name, (colour, position) in objects.items():
        # the voxel most like the object's colour sits on the object: within one voxel of its centre
        nearest = np.argmin(np.linalg.norm(rgb - colour, axis=1))
        assert np.linalg.norm(xyz[nearest] - position) < size, name


def test_pixels_outside_the_workspace_and_masked_cameras_add_nothing(scene):
    inputs, _ = scene
    torch.manual_seed(0)
    module = VoxelSpatialTokens(32, 16, target_voxels=128, workspace=WORKSPACE)
    reference, mask = _tokens(module, inputs)
    assert mask.any() and torch.isfinite(reference).all()

    outside = inputs["depth"] > 1.5  # the far wall and floor: beyond the table's workspace box
    assert outside.any()
    recoloured = torch.where(outside[:, :, None], 1.0 - inputs["images"], inputs["images"])
    same, _ = _tokens(module, inputs, images=recoloured)
    torch.testing.assert_close(same, reference)
    inside_changed, _ = _tokens(module, inputs, images=1.0 - inputs["images"])
    assert (inside_changed - reference).abs().max() > 1e-3

    without_wrist = torch.tensor([[True, True, True, False]])
    masked, _ = _tokens(module, inputs, camera_mask=without_wrist)
    other_wrist = inputs["images"].clone()
    other_wrist[:, 3] = torch.rand_like(other_wrist[:, 3])
    masked_again, _ = _tokens(module, inputs, camera_mask=without_wrist, images=other_wrist,
                              depth=inputs["depth"] * torch.tensor([1.0, 1.0, 1.0, 0.5])[:, None, None])
    torch.testing.assert_close(masked_again, masked)


def test_no_pixel_in_the_workspace_is_a_clear_error(scene, dataset_meta):
    inputs, _ = scene
    module = VoxelSpatialTokens(32, 16, target_voxels=64, workspace=(1.0, 1.0, 1.0, 2.0, 2.0, 2.0))
    with pytest.raises(ValueError, match="no valid point.*bounds"):
        _tokens(module, inputs)
    with pytest.raises(ValueError, match="workspace must be"):
        VoxelSpatialTokens(32, 16, target_voxels=64, workspace=(0.0, 0.0, 0.0, 1.0, -1.0, 1.0))
    with pytest.raises(ValueError, match=r"voxel_workspace must be .* got \(0.0, 0.0, 0.0, 1.0, 1.0\)"):
        make_config(dataset_meta, spatial_tokens="voxel", voxel_workspace=(0.0, 0.0, 0.0, 1.0, 1.0))


def test_positions_from_an_origin_camera_are_offsets_from_its_optical_centre(scene):
    inputs, _ = scene
    env = gym.make(envs.TABLETOP_ID, task="reach", image_size=32)
    env.reset(seed=3)
    base = env.unwrapped
    wrist_centre = torch.from_numpy(base.data.cam_xpos[base.model.camera("wrist").id].copy()).float()
    env.close()
    from_wrist = VoxelSpatialTokens(32, 16, target_voxels=64, workspace=WORKSPACE, origin_camera=CAMERAS.index("wrist"))
    offset = torch.tensor([0.3, -0.15, 0.08])
    points = torch.stack([wrist_centre, wrist_centre + offset])[None]
    extent = torch.tensor(WORKSPACE[3:]) - torch.tensor(WORKSPACE[:3])
    positions = from_wrist.positions(points, inputs["extrinsics"])
    torch.testing.assert_close(positions[0, 0], torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(positions[0, 1], 2 * offset / extent, atol=1e-5, rtol=1e-5)

    in_the_world = VoxelSpatialTokens(32, 16, target_voxels=64, workspace=WORKSPACE)
    corners = torch.tensor([WORKSPACE[:3], WORKSPACE[3:]])[None]
    torch.testing.assert_close(in_the_world.positions(corners, inputs["extrinsics"])[0],
                               torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))

    with pytest.raises(ValueError, match=r"voxel origin camera \(index 3\) is missing in samples \[0\]"):
        _tokens(from_wrist, inputs, camera_mask=torch.tensor([[True, True, True, False]]))


# ------------------------------------------------------------------------ the policy with voxel tokens
@pytest.fixture(scope="module")
def voxel_policy(dataset_meta) -> GeoVLAPolicy:
    return make_policy(dataset_meta, spatial_tokens="voxel", voxel_target=64)


def _robot_observation(scene_inputs, instruction="touch the red cube") -> dict:
    images = (scene_inputs["images"][0].permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
    per_camera = lambda name: {c: scene_inputs[name][0, i].numpy() for i, c in enumerate(CAMERAS)}  # noqa: E731
    return {"images": {c: images[i] for i, c in enumerate(CAMERAS)}, "state": np.array([0.0, 0.0, 0.19, 1.0], np.float32),
            "instruction": instruction, "depth": per_camera("depth"), "intrinsics": per_camera("intrinsics"),
            "extrinsics": per_camera("extrinsics")}


def test_voxel_policy_trains_and_its_loss_reaches_the_voxel_tokens(voxel_policy, batch):
    loss, logs = voxel_policy.forward(batch)
    loss.backward()
    grads = [p.grad for p in voxel_policy.model.voxels.xyz_embed.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    voxel_policy.zero_grad()
    missing = {k: v for k, v in batch.items() if not k.startswith("observation.depth.")}
    with pytest.raises(ValueError, match=r"spatial_tokens='voxel' with depth_source='sensor'.* needs \['depth'.*lacks .*observation\.depth\.front"):
        voxel_policy.forward(missing)


def test_voxel_policy_reads_depth_and_validates_it(voxel_policy, scene):
    inputs, _ = scene
    observation = _robot_observation(inputs)
    noise = torch.randn(1, 10, voxel_policy.config.max_action_dim, generator=torch.Generator().manual_seed(0))
    voxel_policy.reset()
    actions = voxel_policy.predict_action(observation, noise=noise)
    assert actions.shape == (10, 4) and np.isfinite(actions).all()
    nearer = {**observation, "depth": {c: d * 0.9 for c, d in observation["depth"].items()}}
    voxel_policy.reset()
    assert not np.allclose(voxel_policy.predict_action(nearer, noise=noise), actions)

    with pytest.raises(ValueError, match=r"missing \['depth'\]"):
        voxel_policy.predict_action({k: v for k, v in observation.items() if k != "depth"})
    bad_shape = {**observation, "intrinsics": {**observation["intrinsics"], "left": np.eye(4, dtype=np.float32)}}
    with pytest.raises(ValueError, match=r"observation\['intrinsics'\]\['left'\] must have shape \(3, 3\)"):
        voxel_policy.predict_action(bad_shape)
    nan_depth = {**observation, "depth": {**observation["depth"], "wrist": np.full((32, 32), np.nan, np.float32)}}
    with pytest.raises(ValueError, match=r"observation\['depth'\]\['wrist'\] contains NaN"):
        voxel_policy.predict_action(nan_depth)


def _saved_and_loaded(policy: GeoVLAPolicy, scene_inputs, directory) -> GeoVLAPolicy:
    """``policy`` saved and loaded again; the loaded one gives the same actions for the same noise."""
    observation = _robot_observation(scene_inputs)
    noise = torch.randn(1, 10, policy.config.max_action_dim, generator=torch.Generator().manual_seed(1))
    policy.reset()
    before = policy.predict_action(observation, noise=noise)
    policy.save_pretrained(directory)
    loaded = GeoVLAPolicy.from_pretrained(directory)
    loaded.reset()
    np.testing.assert_allclose(loaded.predict_action(observation, noise=noise), before, rtol=1e-5, atol=1e-6)
    return loaded


def test_voxel_policy_survives_save_and_load(voxel_policy, scene, tmp_path):
    loaded = _saved_and_loaded(voxel_policy, scene[0], tmp_path)
    assert loaded.config.spatial_tokens == "voxel" and loaded.config.voxel_workspace == voxel_policy.config.voxel_workspace


def test_voxel_origin_names_a_camera_and_is_saved(dataset_meta, scene, tmp_path):
    policy = make_policy(dataset_meta, spatial_tokens="voxel", voxel_target=64, voxel_origin="observation.images.wrist")
    assert policy.model.voxels.origin_camera == CAMERAS.index("wrist")
    loaded = _saved_and_loaded(policy, scene[0], tmp_path)
    assert loaded.config.voxel_origin == "observation.images.wrist" and loaded.model.voxels.origin_camera == 3

    assert make_config(dataset_meta, spatial_tokens="voxel", voxel_origin="wrist").voxel_origin_index == 3
    with pytest.raises(ValueError, match=r"voxel_origin 'gripper' is not one of the cameras \['front', 'left'"):
        make_config(dataset_meta, spatial_tokens="voxel", voxel_origin="gripper").validate_features()
    with pytest.raises(ValueError, match="voxel_origin='wrist' needs spatial_tokens='voxel'"):
        make_config(dataset_meta, voxel_origin="wrist")


def test_rollouts_give_a_voxel_policy_depth_and_cameras(voxel_policy):
    from policies.rollout import env_factory, evaluate_policy

    make_env, task = env_factory(voxel_policy, "builtin", None)
    results = evaluate_policy(voxel_policy, make_env, episodes=2, seed=100_000, max_steps=3, batch_size=2,
                              progress=False)
    assert task == "reach" and results["episodes"] == 2
    with pytest.raises(ValueError, match="needs depth and cameras"):
        env_factory(voxel_policy, "pusht", None)


def test_allow_empty_gives_a_sample_without_workspace_pixels_no_token(scene):
    inputs, _ = scene
    module = VoxelSpatialTokens(32, 16, target_voxels=64, workspace=WORKSPACE, allow_empty=True)
    batch = {name: torch.cat([value, value]) for name, value in inputs.items()}
    batch["depth"] = torch.stack([inputs["depth"][0], torch.full_like(inputs["depth"][0], 50.0)])  # far behind the box
    agg = AggregatorOutput(layers={5: torch.cat([_features().layers[5]] * 2)}, patch_start_idx=5, num_times=2,
                           num_views=len(CAMERAS), legacy=False, grid=(4, 4), mask_logits=None)
    tokens, valid = _tokens(module, batch, agg=agg, camera_mask=torch.ones(2, len(CAMERAS), dtype=torch.bool))
    alone, alone_valid = _tokens(module, inputs)
    assert not valid[1].any() and (tokens[1] == 0).all()
    torch.testing.assert_close(tokens[0, :alone.shape[1]][alone_valid[0]], alone[0][alone_valid[0]])
