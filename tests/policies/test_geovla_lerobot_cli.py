"""The two LeRobot commands on the ``geovla`` plugin: ``lerobot-train --policy.type=geovla`` on the
recorded dataset writes a loadable checkpoint; ``lerobot-eval --policy.path=...`` runs a short
PushT episode with a tiny policy whose features are PushT's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from lerobot.configs.types import FeatureType, PolicyFeature

from policies.configuration_geovla import GeoVLAConfig
from policies.modeling_geovla import GeoVLAPolicy
from policies.processor_geovla import make_geovla_pre_post_processors

BIN = Path(sys.executable).parent
PUSHT_IMAGE = 96  # lerobot-eval renders PushT at this size (--env.observation_height/width)


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
        "--save_freq=2", "--env_eval_freq=0", "--log_freq=1", "--wandb.enable=false", "--num_workers=0",
    ], cwd=tmp_path)
    assert "step:2" in output and "loss:" in output
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


def test_lerobot_eval_runs_a_pusht_episode(tmp_path):
    _pusht_policy(tmp_path / "policy")
    out = tmp_path / "eval"
    output = _run([
        str(BIN / "lerobot-eval"), f"--policy.path={tmp_path / 'policy'}", "--env.type=pusht",
        "--env.episode_length=5", f"--env.observation_height={PUSHT_IMAGE}", f"--env.observation_width={PUSHT_IMAGE}",
        "--env.visualization_height=96", "--env.visualization_width=96",
        "--eval.n_episodes=1", "--eval.batch_size=1", "--policy.device=cpu", f"--output_dir={out}",
    ], cwd=tmp_path)
    assert "Overall Aggregated Metrics" in output
    info = json.loads((out / "eval_info.json").read_text())
    overall = info["overall"]
    assert overall["n_episodes"] == 1 and np.isfinite(overall["avg_sum_reward"])
    assert [Path(p).exists() for p in overall["video_paths"]] == [True]
