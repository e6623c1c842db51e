"""``studies/eval_flow_steps.py``: one evaluation per flow-step count, and the sampler really runs
that many expert steps per chunk (a random policy: success itself is not tested)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from geovla_helpers import load_script
from lerobot.configs.types import FeatureType, PolicyFeature

from policies.configuration_geovla import GeoVLAConfig
from policies.modeling_geovla import GeoVLAPolicy
from policies.processor_geovla import make_geovla_pre_post_processors




def _saved_random_policy(directory: Path) -> Path:
    inputs = {f"observation.images.{cam}": PolicyFeature(FeatureType.VISUAL, (3, 32, 32))
              for cam in ("front", "left", "right")}
    inputs["observation.state"] = PolicyFeature(FeatureType.STATE, (4,))
    config = GeoVLAConfig(image_size=32, device="cpu", push_to_hub=False, input_features=inputs,
                          output_features={"action": PolicyFeature(FeatureType.ACTION, (4,))})
    stats = {key: {"mean": np.zeros(4, np.float32), "std": np.ones(4, np.float32)}
             for key in ("observation.state", "action")}
    torch.manual_seed(0)
    policy = GeoVLAPolicy(config)
    policy.attach_processors(*make_geovla_pre_post_processors(config, dataset_stats=stats))
    policy.save_pretrained(directory)
    return directory


def test_flow_steps_change_the_sampler_and_json_is_written(tmp_path):
    policy_dir = _saved_random_policy(tmp_path / "policy")
    out = tmp_path / "flow.json"
    report = load_script("studies/eval_flow_steps").main([
        "--policy", str(policy_dir), "--steps", "4", "2", "--episodes", "1", "--max-steps", "6",
        "--out", str(out),
    ])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert report["trained_flow_steps"] == 10 and report["episodes"] == 1
    rows = report["results"]
    assert [row["flow_steps"] for row in rows] == [4, 2]
    # 6 env steps with n_action_steps 5: two chunks, each with as many expert calls as flow steps
    assert [row["chunks"] for row in rows] == [2, 2]
    assert [row["expert_calls_per_chunk"] for row in rows] == [4.0, 2.0]
    for row in rows:
        assert 0.0 <= row["success_rate"] <= 1.0 and row["chunk_ms_median"] > 0
        assert 1 <= row["mean_steps"] <= 6
