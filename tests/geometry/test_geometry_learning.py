"""Learning: training the tiny geometry model on depth + camera ground truth recorded from the
built-in tabletop task lowers depth AbsRel and pose error on held-out episodes.

The CI version is short (32-px images, front + wrist cameras, 200 steps of batch 2); the longer
run is `scripts/train_geometry.py`."""

import gymnasium
import torch

import envs
from geometry.config import make_config
from geometry.model import GeometryModel
from geometry.training import collect_frames, evaluate, train

CAMERAS = ("front", "wrist")  # a fixed camera and a moving one, so per-frame poses matter


def test_training_lowers_depth_and_pose_error():
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the CI machine's 2 cores are shared; more threads oversubscribe them
    try:
        _train_and_check()
    finally:
        torch.set_num_threads(threads)


def _train_and_check():
    env = gymnasium.make(envs.TABLETOP_ID, task="reach", image_size=32, geometry=True)
    expert = envs.make_expert(env)
    train_frames = collect_frames(env, expert, seeds=range(30), steps=30, every=3, cameras=CAMERAS)
    test_frames = collect_frames(env, expert, seeds=range(100, 104), steps=30, every=6, cameras=CAMERAS)
    env.close()
    assert train_frames["images"].shape[0] * len(CAMERAS) >= 150  # a few hundred frames
    model = GeometryModel(make_config("tiny", img_size=32, track_head=False, point_head=False))
    before = evaluate(model, test_frames)
    losses = train(model, train_frames, steps=200, batch_size=2, lr=1e-3)
    after = evaluate(model, test_frames)
    assert sum(losses[-20:]) < 0.5 * sum(losses[:20])
    assert after["abs_rel"] < 0.75 * before["abs_rel"], (before, after)
    assert after["delta_1.25"] > before["delta_1.25"] + 0.1, (before, after)
    assert after["pose_error_deg"] < 0.5 * before["pose_error_deg"], (before, after)
    assert after["pose_auc30"] > before["pose_auc30"] + 0.3, (before, after)
