"""MetaWorld in the project's convention: observation, upright corner cameras, geometry, seeding, experts."""

import json
from pathlib import Path

import lerobot
import mujoco
import numpy as np
import pytest

from envs.metaworld import MT10_TASKS, MetaWorldEnv, RenderSettings, make_metaworld_expert, task_description
from envs.metaworld.rendering import VISIBLE_GEOM_GROUPS, rotate_camera_180, rotate_image_180, simplify_mesh
from envs.recording import open_dataset, record_demos
from envs.tabletop.cameras import camera_extrinsics, project_points

SIZE = 32
CAMERAS = ("corner2", "topview")  # one of MetaWorld's rotated cameras, one that is upright
ARM_RGBA = (0.5, 0.1, 0.1, 1.0)  # the Sawyer's red links
DEPTH_TOLERANCE = 0.005  # metres between rendered depth and a ray cast through the pixel centre
SKYBOX_MIN_DEPTH = 50.0  # pixels that see no geom see MetaWorld's skybox, far beyond the scene


@pytest.fixture(scope="module")
def env():
    env = MetaWorldEnv("pick-place", image_size=SIZE, cameras=CAMERAS, geometry=True)
    yield env
    env.close()


def _rollout(env: MetaWorldEnv, seed: int, steps: int) -> dict:
    """The observation after ``steps`` expert steps of episode ``seed`` (the arm reaching for the puck)."""
    obs, _ = env.reset(seed=seed)
    expert = make_metaworld_expert(env)
    for _ in range(steps):
        obs, *_ = env.step(expert(obs))
    return obs


def _cast_rays(env: MetaWorldEnv, intrinsics: np.ndarray, extrinsics: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Depth along the optical axis and geom id (-1: none) that MuJoCo's ray casting finds at each pixel centre."""
    height, width = env.height, env.width
    v, u = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    pixels = np.stack([u, v, np.ones_like(u)], axis=-1).reshape(-1, 3)
    rotation, translation = extrinsics[:, :3].astype(np.float64), extrinsics[:, 3].astype(np.float64)
    # Rays with unit optical-axis component: the distance MuJoCo returns is the depth.
    directions = pixels @ np.linalg.inv(intrinsics.astype(np.float64)).T @ rotation
    count = len(directions)
    geom_ids, depth = np.zeros(count, dtype=np.int32), np.zeros(count)
    mujoco.mj_multiRay(env.render_model, env.render_data, -rotation.T @ translation, directions.ravel(),
                       VISIBLE_GEOM_GROUPS, 1, -1, geom_ids, depth, None, count, 1e3)
    return depth.reshape(height, width), geom_ids.reshape(height, width)


def _depth_agreement(env: MetaWorldEnv, depth: np.ndarray, intrinsics: np.ndarray, extrinsics: np.ndarray) -> float:
    """Fraction of pixels whose ray hits a geom where the rendered depth matches the ray's."""
    ray_depth, geom_ids = _cast_rays(env, intrinsics, extrinsics)
    hit = geom_ids >= 0
    return float((np.abs(depth - ray_depth) < DEPTH_TOLERANCE)[hit].mean())


def test_observation_follows_the_convention(env):
    obs, info = env.reset(seed=0)
    assert set(obs) == {"pixels", "agent_pos", "depth", "intrinsics", "extrinsics"}
    assert env.observation_space.contains(obs)
    for key in ("pixels", "depth", "intrinsics", "extrinsics"):
        assert set(obs[key]) == set(CAMERAS), key
    for cam in CAMERAS:
        assert obs["pixels"][cam].shape == (SIZE, SIZE, 3) and obs["pixels"][cam].dtype == np.uint8
        assert obs["depth"][cam].shape == (SIZE, SIZE) and obs["depth"][cam].dtype == np.float32
        assert obs["pixels"][cam].flags.c_contiguous and obs["depth"][cam].flags.c_contiguous
        rotation = obs["extrinsics"][cam][:, :3].astype(np.float64)
        np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-5)
        assert np.linalg.det(rotation) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_array_equal(obs["agent_pos"], env.state[:4].astype(np.float32))
    np.testing.assert_allclose(obs["agent_pos"][:3], env.data.body("hand").xpos, atol=1e-6)
    assert 0.0 <= obs["agent_pos"][3] <= 1.0
    assert info == {"is_success": False, "instruction": "Pick and place a puck to a goal", "task": "pick-place-v3"}
    assert env.task_description == "Pick and place a puck to a goal"

    obs, reward, terminated, truncated, info = env.step(np.array([2.0, 0.0, 0.0, 0.0]))  # clipped to 1
    assert env.observation_space.contains(obs)
    assert isinstance(reward, float) and terminated is False and truncated is False
    assert info["is_success"] is False


def test_task_descriptions_are_lerobots():
    config = Path(lerobot.__file__).parent / "envs" / "metaworld_config.json"
    descriptions = json.loads(config.read_text())["TASK_DESCRIPTIONS"]
    for task in MT10_TASKS:
        assert task_description(task) == descriptions[task]
    assert task_description("peg-insert-side") == "Insert a peg sideways"


def test_invalid_arguments_fail_clearly(env):
    with pytest.raises(ValueError, match="'pick-plaice'"):
        MetaWorldEnv("pick-plaice")
    with pytest.raises(ValueError, match="'front'"):
        MetaWorldEnv("reach", cameras=("front",))
    with pytest.raises(ValueError, match="501"):
        MetaWorldEnv("reach", max_episode_steps=501)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(3))
    with pytest.raises(ValueError, match="non-finite"):
        env.step(np.array([0.0, np.nan, 0.0, 0.0]))


@pytest.mark.parametrize("camera", CAMERAS)
def test_depth_and_camera_parameters_match_ray_casting(env, camera):
    obs = _rollout(env, seed=1, steps=25)
    depth, intrinsics, extrinsics = obs["depth"][camera], obs["intrinsics"][camera], obs["extrinsics"][camera]
    assert _depth_agreement(env, depth, intrinsics, extrinsics) > 0.97

    _, geom_ids = _cast_rays(env, intrinsics, extrinsics)
    assert depth[geom_ids < 0].min(initial=np.inf) > SKYBOX_MIN_DEPTH

    # The check can fail: the parameters of the other orientation do not fit this depth map.
    other = rotate_camera_180(intrinsics, extrinsics, SIZE, SIZE)
    assert _depth_agreement(env, depth, *other) < 0.5


@pytest.mark.parametrize("camera", CAMERAS)
def test_images_show_the_arm_where_the_geometry_puts_it(env, camera):
    """The red arm pixels of the image are the pixels whose rays hit the arm: colour is upright too."""
    obs = _rollout(env, seed=1, steps=25)
    _, geom_ids = _cast_rays(env, obs["intrinsics"][camera], obs["extrinsics"][camera])
    arm_geoms = np.all(np.isclose(env.render_model.geom_rgba, ARM_RGBA), axis=1)
    sees_arm = (geom_ids >= 0) & arm_geoms[geom_ids]
    rgb = obs["pixels"][camera].astype(np.int32)
    red = (rgb[..., 0] > 30) & (rgb[..., 0] > 1.8 * rgb[..., 1]) & (rgb[..., 0] > 1.8 * rgb[..., 2])
    assert sees_arm.mean() > 0.05
    assert (red == sees_arm).mean() > 0.97
    assert (rotate_image_180(red) == sees_arm).mean() < 0.9  # the image the other way up does not fit


@pytest.mark.parametrize("camera", ["corner", "corner2", "corner3"])
def test_corner_cameras_come_out_upright(camera):
    """World up points up in the image, as it does not in the camera MuJoCo defines."""
    env = MetaWorldEnv("pick-place", image_size=16, cameras=(camera,), geometry=True)
    obs, _ = env.reset(seed=0)
    hand = obs["agent_pos"][:3].astype(np.float64)
    points = np.stack([hand, hand + np.array([0.0, 0.0, 0.2])])
    (_, v_hand), (_, v_above) = project_points(points, obs["intrinsics"][camera], obs["extrinsics"][camera])[0]
    assert v_above < v_hand - 1.0
    mujoco_extrinsics = camera_extrinsics(env.data, env.model.camera(camera).id)
    (_, v_hand), (_, v_above) = project_points(points, obs["intrinsics"][camera], mujoco_extrinsics)[0]
    assert v_above > v_hand + 1.0
    env.close()


def test_reset_with_a_seed_repeats_the_episode(env):
    actions = np.random.default_rng(0).uniform(-1, 1, size=(8, 4))

    def episode(seed: int) -> list[tuple[np.ndarray, dict]]:
        obs, _ = env.reset(seed=seed)
        steps = [(env.state, obs)]
        for action in actions:
            obs = env.step(action)[0]
            steps.append((env.state, obs))
        return steps

    first, again, other = episode(5), episode(5), episode(6)
    for (state, obs), (state_again, obs_again) in zip(first, again):
        np.testing.assert_array_equal(state, state_again)
        for cam in CAMERAS:
            np.testing.assert_array_equal(obs["pixels"][cam], obs_again["pixels"][cam])
            np.testing.assert_array_equal(obs["depth"][cam], obs_again["depth"][cam])
    puck, goal = slice(4, 7), slice(36, 39)
    assert np.linalg.norm(first[0][0][puck] - other[0][0][puck]) > 1e-3
    assert np.linalg.norm(first[0][0][goal] - other[0][0][goal]) > 1e-3
    assert not np.array_equal(first[0][1]["pixels"]["topview"], other[0][1]["pixels"]["topview"])


def test_expert_picks_and_places_the_puck(env):
    obs, _ = env.reset(seed=0)
    expert = make_metaworld_expert(env)
    for step in range(150):
        obs, _, terminated, truncated, info = env.step(expert(obs))
        if terminated or truncated:
            break
    assert terminated and info["is_success"], f"no success after {step + 1} steps"


def _mesh_bounds(model: mujoco.MjModel, data: mujoco.MjData, geom: int) -> np.ndarray:
    """World-space bounding box ``[[min xyz], [max xyz]]`` of a mesh geom's vertices."""
    mesh = model.geom_dataid[geom]
    start, count = model.mesh_vertadr[mesh], model.mesh_vertnum[mesh]
    world = model.mesh_vert[start : start + count] @ data.geom_xmat[geom].reshape(3, 3).T + data.geom_xpos[geom]
    return np.stack([world.min(axis=0), world.max(axis=0)])


@pytest.mark.parametrize("mesh_cell", [None, 0.01])
def test_render_model_follows_the_simulation(mesh_cell):
    """Geoms sit where the simulation has them, also task bodies MetaWorld moves at reset."""
    env = MetaWorldEnv("peg-insert-side", image_size=16, cameras=("topview",),
                       render_settings=RenderSettings(mesh_cell=mesh_cell))
    simplified_meshes = np.flatnonzero(env.render_model.mesh_facenum < env.model.mesh_facenum)
    assert (len(simplified_meshes) > 0) == (mesh_cell is not None)
    is_mesh = env.model.geom_type == mujoco.mjtGeom.mjGEOM_MESH
    simplified = is_mesh & np.isin(env.model.geom_dataid, simplified_meshes)
    for seed in (0, 1):
        env.reset(seed=seed)
        for _ in range(3):
            env.step(np.array([0.5, -0.5, 0.5, 1.0]))
        error = np.linalg.norm(env.render_data.geom_xpos - env.data.geom_xpos, axis=1)
        assert error[~simplified].max() < 1e-9
        for geom in np.flatnonzero(simplified):  # simplified meshes have frames of their own
            bounds = _mesh_bounds(env.render_model, env.render_data, geom)
            assert np.abs(bounds - _mesh_bounds(env.model, env.data, geom)).max() < mesh_cell * np.sqrt(3)
        np.testing.assert_array_equal(env.render_data.site_xpos, env.data.site_xpos)
    env.close()


def test_simplified_mesh_stays_on_the_surface_and_keeps_its_outside():
    sphere = mujoco.MjSpec()
    sphere.add_mesh(name="ball").make_sphere(subdivision=4)  # 5120 faces of the unit sphere
    model = sphere.compile()
    vertices = model.mesh_vert.astype(np.float64) * 0.1  # radius 10 cm
    faces = model.mesh_face
    cell = 0.03
    simple_vertices, simple_faces = simplify_mesh(vertices, faces, cell)
    assert len(simple_faces) < len(faces) / 10
    radius = np.linalg.norm(simple_vertices, axis=1)
    assert np.abs(radius - 0.1).max() < cell * np.sqrt(3)
    corners = simple_vertices[simple_faces]
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    assert (np.einsum("ij,ij->i", normals, corners.mean(axis=1)) > 0).mean() > 0.95
    with pytest.raises(ValueError, match="-0.01"):
        simplify_mesh(vertices, faces, -0.01)


def test_recording_stores_metaworld_rate_robot_and_geometry(env, tmp_path):
    summary = record_demos(env, make_metaworld_expert(env), tmp_path / "ds", num_episodes=1, progress=False)
    dataset = open_dataset(tmp_path / "ds")
    assert summary["expert_success_rate"] == 1.0 and len(dataset) == summary["frames"]
    assert dataset.meta.fps == env.metadata["render_fps"] == round(1 / (env.model.opt.timestep * env.sim.frame_skip))
    assert dataset.meta.robot_type == "sawyer"
    obs, _ = env.reset(seed=0)
    first = dataset[0]
    assert first["task"] == "Pick and place a puck to a goal"
    np.testing.assert_array_equal(first["observation.state"].numpy(), obs["agent_pos"])
    for cam in CAMERAS:
        np.testing.assert_array_equal(first[f"observation.depth.{cam}"].numpy(), obs["depth"][cam])
        np.testing.assert_array_equal(first[f"observation.extrinsics.{cam}"].numpy(), obs["extrinsics"][cam])
