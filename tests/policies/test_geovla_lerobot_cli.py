"""LeRobot's commands on the ``geovla`` plugin: ``lerobot-train --policy.type=geovla`` on the
recorded dataset writes a loadable checkpoint and evaluates it on ``--env.type=geovla_tabletop``;
``lerobot-eval --policy.path=...`` runs short episodes of a tiny geovla policy on PushT and on the
built-in task, and of LeRobot's own ACT on the built-in task."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.envs.utils import env_to_policy_features
from lerobot.policies.act.configuration_act import ACTConfig
from lerobot.policies.act.modeling_act import ACTPolicy
from lerobot.policies.factory import make_pre_post_processors

from envs.lerobot_env import TabletopEnvConfig
from policies.configuration_geovla import GeoVLAConfig
from policies.modeling_geovla import GeoVLAPolicy
from policies.processor_geovla import make_geovla_pre_post_processors

BIN = Path(sys.executable).parent
PUSHT_IMAGE = 96  # lerobot-eval renders PushT at this size (--env.observation_height/width)
TABLETOP_CAMERAS = ("front", "wrist")
TABLETOP_ENV = ["--env.type=geovla_tabletop", "--env.task=reach", "--env.image_size=32",
                "--env.cameras=[front,wrist]", "--env.episode_length=4"]


def _run(command: list[str], cwd: Path) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=400)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{command[0]} failed:\n{output[-4000:]}"
    return output


def test_lerobot_train_writes_a_geovla_checkpoint(dataset_root, tmp_path):
    out = tmp_path / "train"
    output = _run([
        str(BIN / "lerobot-train"), "--policy.type=geovla", f"--dataset.repo_id=local/{dataset_root.name}",
        f"--dataset.root={dataset_root}", "--dataset.video_backend=pyav", "--steps=2", "--batch_size=2",
        f"--output_dir={out}", "--policy.device=cpu", "--policy.push_to_hub=false", "--policy.image_size=32",
        "--save_freq=2", "--log_freq=1", "--wandb.enable=false", "--num_workers=0",
        "--env.type=geovla_tabletop", "--env.image_size=32", "--env.episode_length=3", "--env_eval_freq=2",
        "--eval.n_episodes=1", "--eval.batch_size=1",
    ], cwd=tmp_path)
    assert "step:2" in output and "loss:" in output
    assert "'task_group': 'geovla_tabletop'" in output and "'n_episodes': 1" in output
    assert list((out / "eval" / "videos_step_000002" / "geovla_tabletop_0").glob("*.mp4"))
    checkpoint = out / "checkpoints" / "000002"
    model_dir = checkpoint / "pretrained_model"
    for name in ("config.json", "model.safetensors", "policy_preprocessor.json", "policy_postprocessor.json"):
        assert (model_dir / name).exists(), name
    assert json.loads((checkpoint / "training_state" / "training_step.json").read_text())["step"] == 2
    config = json.loads((model_dir / "config.json").read_text())
    assert config["type"] == "geovla" and config["image_size"] == 32
    assert not any(k.startswith("observation.depth.") for k in config["input_features"])

    policy = GeoVLAPolicy.from_pretrained(model_dir)
    obs = {"images": {c: np.zeros((32, 32, 3), np.uint8) for c in ("front", "left", "right", "wrist")},
           "state": np.array([0.0, 0.0, 0.2, 1.0], np.float32), "instruction": "touch the red ball"}
    assert np.isfinite(policy.predict_action(obs)).all()


def test_lerobot_train_trains_geovla_under_a_cpu_bfloat16_autocast(dataset_root, tmp_path):
    """``--policy.use_amp=true``: LeRobot's accelerator autocasts to bfloat16 on the CPU; the
    policy keeps its attention, voxel unprojection and geometry losses in float32 and trains."""
    out = tmp_path / "train"
    output = _run([
        str(BIN / "lerobot-train"), "--policy.type=geovla", f"--dataset.repo_id=local/{dataset_root.name}",
        f"--dataset.root={dataset_root}", "--dataset.video_backend=pyav", "--steps=2", "--batch_size=2",
        f"--output_dir={out}", "--policy.device=cpu", "--policy.push_to_hub=false", "--policy.image_size=32",
        "--policy.use_amp=true", "--policy.spatial_tokens=voxel", "--policy.n_obs_steps=1",
        "--save_freq=2", "--log_freq=1", "--wandb.enable=false", "--num_workers=0",
    ], cwd=tmp_path)
    assert "'use_amp': True" in output and "step:2" in output
    losses = [float(m) for m in re.findall(r"\bloss:([0-9.]+)", output)]
    assert losses and all(np.isfinite(losses))
    assert (out / "checkpoints" / "000002" / "pretrained_model" / "model.safetensors").exists()


def _pusht_policy(directory: Path) -> None:
    """A tiny untrained policy with PushT's features (as lerobot-eval maps them) and made-up stats."""
    torch.manual_seed(0)
    config = GeoVLAConfig(
        device="cpu", image_size=32, push_to_hub=False,
        input_features={"observation.image": PolicyFeature(FeatureType.VISUAL, (3, PUSHT_IMAGE, PUSHT_IMAGE)),
                        "observation.state": PolicyFeature(FeatureType.STATE, (2,))},
        output_features={"action": PolicyFeature(FeatureType.ACTION, (2,))},
    )
    policy = GeoVLAPolicy(config)
    stats = {key: {"mean": torch.full((2,), 256.0), "std": torch.full((2,), 100.0)}
             for key in ("observation.state", "action")}
    policy.attach_processors(*make_geovla_pre_post_processors(config, dataset_stats=stats))
    policy.save_pretrained(directory)


def _lerobot_eval(policy: Path, env: list[str], out: Path, episodes: int = 1) -> dict:
    """``lerobot-eval`` of a saved policy; its overall metrics, checked to cover every episode with a video."""
    output = _run([
        str(BIN / "lerobot-eval"), f"--policy.path={policy}", *env, f"--eval.n_episodes={episodes}",
        f"--eval.batch_size={episodes}", "--policy.device=cpu", f"--output_dir={out}",
    ], cwd=out.parent)
    assert "Overall Aggregated Metrics" in output
    overall = json.loads((out / "eval_info.json").read_text())["overall"]
    assert overall["n_episodes"] == episodes and np.isfinite(overall["avg_sum_reward"])
    assert [Path(p).exists() for p in overall["video_paths"]] == [True] * episodes
    return overall


def test_lerobot_eval_runs_a_pusht_episode(tmp_path):
    _pusht_policy(tmp_path / "policy")
    _lerobot_eval(tmp_path / "policy", [
        "--env.type=pusht", "--env.episode_length=5", f"--env.observation_height={PUSHT_IMAGE}",
        f"--env.observation_width={PUSHT_IMAGE}", "--env.visualization_height=96", "--env.visualization_width=96",
    ], tmp_path / "eval")


def _tabletop_features(geometry: bool) -> dict[str, dict[str, PolicyFeature]]:
    """Input and output features of a policy for ``--env.type=geovla_tabletop`` (32 px, two cameras)."""
    features = env_to_policy_features(TabletopEnvConfig(image_size=32, cameras=list(TABLETOP_CAMERAS), geometry=geometry))
    return {"input_features": {k: f for k, f in features.items() if f.type is not FeatureType.ACTION},
            "output_features": {k: f for k, f in features.items() if f.type is FeatureType.ACTION}}


def test_lerobot_eval_runs_geovla_with_voxel_tokens_on_the_tabletop(tmp_path):
    """The voxel policy raises without depth and cameras: the episodes show they reach it."""
    torch.manual_seed(0)
    config = GeoVLAConfig(device="cpu", image_size=32, push_to_hub=False, spatial_tokens="voxel", n_obs_steps=1,
                          **_tabletop_features(geometry=True))
    policy = GeoVLAPolicy(config)
    policy.attach_processors(*make_geovla_pre_post_processors(config))
    policy.save_pretrained(tmp_path / "policy")
    _lerobot_eval(tmp_path / "policy", [*TABLETOP_ENV, "--env.geometry=true"], tmp_path / "eval", episodes=2)


def test_lerobot_eval_runs_act_on_the_tabletop(tmp_path):
    """LeRobot's ACT, unmodified, built with random weights (no pretrained backbone to download)."""
    torch.manual_seed(0)
    config = ACTConfig(device="cpu", push_to_hub=False, pretrained_backbone_weights=None, chunk_size=10,
                       n_action_steps=5, dim_model=64, dim_feedforward=128, n_encoder_layers=1, n_decoder_layers=1,
                       n_heads=2, latent_dim=8, **_tabletop_features(geometry=False))
    stats = {"observation.state": {"mean": torch.zeros(4), "std": torch.ones(4)},
             "action": {"mean": torch.zeros(4), "std": torch.ones(4)},
             **{f"observation.images.{cam}": {"mean": torch.full((3, 1, 1), 0.5), "std": torch.full((3, 1, 1), 0.25)}
                for cam in TABLETOP_CAMERAS}}
    policy = ACTPolicy(config)
    for part in (policy, *make_pre_post_processors(config, dataset_stats=stats)):
        part.save_pretrained(tmp_path / "policy")
    _lerobot_eval(tmp_path / "policy", TABLETOP_ENV, tmp_path / "eval")
