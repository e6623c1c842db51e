import gymnasium as gym
import mujoco
import numpy as np
import pytest

import envs
from envs.tabletop.cameras import project_points, unproject_depth
from envs.tabletop.env import MAX_TRANSLATION, TabletopEnv
from envs.tabletop.scene import CAMERAS, COLOURS, FIXED_CAMERAS, SHAPES


@pytest.fixture
def geo_env():
    env = TabletopEnv(task="reach", image_size=64, geometry=True)
    yield env
    env.close()


def _rollout(env, seed, actions):
    obs, _ = env.reset(seed=seed)
    trace = [obs]
    for action in actions:
        trace.append(env.step(action)[0])
    return trace


def _assert_obs_equal(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], dict):
            for cam in a[key]:
                np.testing.assert_array_equal(a[key][cam], b[key][cam], err_msg=f"{key}/{cam}")
        else:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_registered_with_gymnasium():
    env = gym.make(envs.TABLETOP_ID, task="pick", image_size=32)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert info["instruction"].startswith("pick up the ")
    env.close()


def test_same_seed_same_episode_images_included(geo_env):
    actions = np.random.default_rng(0).uniform(-1, 1, size=(5, 4)).astype(np.float32)
    first = _rollout(geo_env, 7, actions)
    second = _rollout(geo_env, 7, actions)
    for a, b in zip(first, second):
        _assert_obs_equal(a, b)
    other = _rollout(geo_env, 8, actions[:0])[0]
    assert not np.array_equal(other["pixels"]["front"], first[0]["pixels"]["front"])


def test_observation_contents(geo_env):
    obs, info = geo_env.reset(seed=3)
    assert geo_env.observation_space.contains(obs)
    assert set(obs["pixels"]) == set(CAMERAS)
    assert obs["pixels"]["front"].shape == (64, 64, 3) and obs["pixels"]["front"].dtype == np.uint8
    assert obs["depth"]["left"].dtype == np.float32 and (obs["depth"]["left"] > 0).all()
    np.testing.assert_allclose(obs["agent_pos"][:3], geo_env.ee_position(), atol=1e-6)
    assert obs["agent_pos"][3] == pytest.approx(1.0)  # starts open
    for cam in CAMERAS:
        rotation = obs["extrinsics"][cam][:, :3]
        np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-5)
        assert obs["intrinsics"][cam][0, 2] == 32 and obs["intrinsics"][cam][1, 2] == 32


def test_instruction_names_one_of_several_distinct_objects():
    env = TabletopEnv(task="reach", image_size=32)
    seen_targets = set()
    for seed in range(12):
        _, info = env.reset(seed=seed)
        colours = [name.split()[0] for name in info["objects"]]
        assert len(info["objects"]) == 3 and len(set(colours)) == 3
        assert all(c in COLOURS for c in colours)
        assert all(name.split()[1] in SHAPES for name in info["objects"])
        assert info["target"] in info["objects"]
        assert info["instruction"] == f"touch the {info['target']}"
        seen_targets.add(info["target"])
    assert len(seen_targets) > 3
    env.close()


@pytest.mark.parametrize(
    "action, message",
    [
        (np.zeros(3), "shape"),
        (np.zeros((1, 4)), "shape"),
        (np.array([0.0, np.nan, 0.0, 0.0]), "non-finite"),
        (np.array([0.0, 0.0, np.inf, 0.0]), "non-finite"),
    ],
)
def test_bad_actions_raise(action, message):
    env = TabletopEnv(image_size=32)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=message):
        env.step(action)
    env.close()


def test_a_renderer_that_mujoco_could_not_import_is_named_with_its_cause(monkeypatch):
    """mujoco leaves out ``Renderer`` without an error when PyOpenGL is missing."""
    monkeypatch.delattr(mujoco, "Renderer")
    env = TabletopEnv(image_size=32)
    with pytest.raises(RuntimeError, match="mujoco.Renderer is unavailable.*PyOpenGL"):
        env.reset(seed=0)
    env.close()


def test_out_of_range_actions_are_clipped():
    env = TabletopEnv(image_size=32)
    env.reset(seed=0)
    clipped = env.step(np.array([1.0, -1.0, 1.0, 1.0]))[0]
    env.reset(seed=0)
    large = env.step(np.array([50.0, -3.0, 7.0, 2.0]))[0]
    _assert_obs_equal(clipped, large)
    env.close()


def test_delta_action_moves_end_effector():
    env = TabletopEnv(image_size=32)
    env.reset(seed=0)
    start = env.ee_position()
    for _ in range(3):
        env.step(np.array([1.0, 0.0, 0.0, -1.0]))
    moved = env.ee_position() - start
    assert moved[0] == pytest.approx(3 * MAX_TRANSLATION, rel=0.25)
    assert abs(moved[1]) < 2e-3 and abs(moved[2]) < 2e-3
    env.close()


def test_truncates_at_limit():
    env = TabletopEnv(image_size=32, max_episode_steps=4)
    env.reset(seed=0)
    flags = [env.step(np.array([0.0, 0.0, 1.0, -1.0]))[2:4] for _ in range(4)]
    assert flags[:3] == [(False, False)] * 3 and flags[3] == (False, True)
    env.close()


def _segmentation(env, camera):
    renderer = mujoco.Renderer(env.model, env.height, env.width)
    renderer.enable_segmentation_rendering()
    renderer.update_scene(env.data, camera=camera)
    seg = renderer.render()
    renderer.close()
    return seg[..., 0], seg[..., 1]  # object id, object type


def test_projected_object_centres_land_on_their_pixels(geo_env):
    hits = checked = 0
    for seed in range(4):
        obs, _ = geo_env.reset(seed=seed)
        for cam in FIXED_CAMERAS:
            ids, types = _segmentation(geo_env, cam)
            for obj in geo_env.objects:
                centre = geo_env.object_position(obj)[None]
                uv, depth = project_points(centre, obs["intrinsics"][cam], obs["extrinsics"][cam])
                col, row = np.floor(uv[0]).astype(int)
                assert 0 <= row < 64 and 0 <= col < 64, f"{obj.name} projects outside {cam}"
                checked += 1
                geom = geo_env.model.geom(obj.slot).id
                is_obj = ids[row, col] == geom and types[row, col] == mujoco.mjtObj.mjOBJ_GEOM
                rendered = obs["depth"][cam][row, col]
                if is_obj:
                    hits += 1
                    # The surface seen at the centre's pixel lies between the centre and the camera.
                    assert depth[0] - 0.03 < rendered < depth[0] + 0.005
                else:
                    assert rendered < depth[0] - 0.01, f"{obj.name} in {cam}: pixel neither on it nor occluded"
    assert hits >= 0.8 * checked


def test_depth_back_projects_onto_the_table_in_every_camera(geo_env):
    obs, _ = geo_env.reset(seed=1)
    table = geo_env.model.geom("table_top").id
    for cam in CAMERAS:
        ids, types = _segmentation(geo_env, cam)
        on_table = (ids == table) & (types == mujoco.mjtObj.mjOBJ_GEOM)
        assert on_table.sum() > 100, cam
        points = unproject_depth(obs["depth"][cam], obs["intrinsics"][cam], obs["extrinsics"][cam])
        heights = points[on_table][:, 2]
        assert np.abs(heights).max() < 0.006, f"{cam}: table points off z=0 by {np.abs(heights).max():.4f} m"


def test_wrist_camera_moves_with_the_hand(geo_env):
    obs, _ = geo_env.reset(seed=0)
    for _ in range(3):
        moved, *_ = geo_env.step(np.array([1.0, 0.0, 0.0, -1.0]))
    np.testing.assert_array_equal(obs["extrinsics"]["front"], moved["extrinsics"]["front"])
    centre_before = -obs["extrinsics"]["wrist"][:, :3].T @ obs["extrinsics"]["wrist"][:, 3]
    centre_after = -moved["extrinsics"]["wrist"][:, :3].T @ moved["extrinsics"]["wrist"][:, 3]
    np.testing.assert_allclose(centre_after - centre_before, geo_env.ee_position() - obs["agent_pos"][:3], atol=1e-4)


@pytest.mark.parametrize("task", ["reach", "pick", "intercept"])
def test_scripted_expert_succeeds(task):
    """A short seeded set here; studies/eval_expert.py runs 100 episodes per family."""
    env = gym.make(envs.TABLETOP_ID, task=task, image_size=32, cameras=("front",))
    expert = envs.make_expert(env)
    successes = 0
    for seed in range(1000, 1010):
        obs, info = env.reset(seed=seed)
        done = False
        while not done:
            obs, _, terminated, truncated, info = env.step(expert(obs))
            done = terminated or truncated
        successes += info["is_success"]
    env.close()
    assert successes >= 9


def test_pick_needs_a_grasp_not_just_a_touch():
    """Reaching the target is not enough for pick; the object must leave the table."""
    env = gym.make(envs.TABLETOP_ID, task="pick", image_size=32, cameras=("front",))
    reach = envs.tabletop.ReachExpert(env.unwrapped)
    obs, info = env.reset(seed=5)
    for _ in range(40):
        obs, _, terminated, _, info = env.step(reach(obs))
    assert not info["is_success"] and not terminated
    env.close()


def _run(env, policy, seed: int, steps: int | None = None) -> tuple[bool, list[np.ndarray]]:
    """An episode of ``policy`` (or ``steps`` steps of it); success and the target's positions."""
    obs, info = env.reset(seed=seed)
    positions = [env.unwrapped.target_position()]
    for _ in range(steps or 10_000):
        obs, _, terminated, truncated, info = env.step(policy(obs))
        positions.append(env.unwrapped.target_position())
        if terminated or truncated:
            break
    return info["is_success"], positions


def test_intercept_objects_slide_straight_and_bounce_inside_the_arena():
    from envs.tabletop.env import ARENA, CONTROL_DT, SLIDE_SPEED, bounce

    env = gym.make(envs.TABLETOP_ID, task="intercept", image_size=16, cameras=("front",))
    base = env.unwrapped
    _, positions = _run(env, lambda obs: np.array([0.0, 0.0, 1.0, -1.0]), seed=3, steps=40)  # the hand stays up
    xy = np.stack(positions)[:, :2]
    steps = np.linalg.norm(np.diff(xy, axis=0), axis=1) / CONTROL_DT
    straight = steps[np.abs(xy[1:]).max(1) < ARENA - 0.03]  # away from the walls: constant speed
    np.testing.assert_allclose(straight, straight[0], rtol=1e-6)
    assert SLIDE_SPEED[0] <= straight[0] <= SLIDE_SPEED[1]
    assert np.abs(xy).max() <= ARENA + 1e-6 and np.abs(xy).max() > ARENA - 0.03  # it reached a wall, stayed in
    # The expert's preview is where the target gets to.
    env.reset(seed=3)
    ahead = base.target_position_in(10 * CONTROL_DT)
    for _ in range(10):
        env.step(np.array([0.0, 0.0, 1.0, -1.0]))
    np.testing.assert_allclose(base.target_position()[:2], ahead[:2], atol=1e-9)
    np.testing.assert_allclose(bounce(np.array([ARENA + 0.05, -ARENA - 0.01]), ARENA), [ARENA - 0.05, -ARENA + 0.01])
    env.close()


def test_intercept_needs_the_motion_chasing_the_target_falls_behind():
    """The expert, which knows where the target is going, against the reach expert aiming at where
    it is (what a policy that sees one frame can at best do) on the same seeds."""
    env = gym.make(envs.TABLETOP_ID, task="intercept", image_size=16, cameras=("front",))
    seeds = range(2000, 2030)
    intercepted = sum(_run(env, envs.make_expert(env), seed)[0] for seed in seeds)
    chased = sum(_run(env, envs.tabletop.ReachExpert(env.unwrapped), seed)[0] for seed in seeds)
    env.close()
    assert intercepted >= 27 and chased <= 20, (intercepted, chased)  # 296/300 and 152/300 on seeds 2000-2299
