"""``studies/probe_spatial_tokens.py``: the ridge probe recovers a linear code and finds none in
noise, and the script probes a saved policy's aggregator tokens against the patch-position control."""

from __future__ import annotations

import json

import numpy as np
from geovla_helpers import load_script, make_policy

probe_script = load_script("studies/probe_spatial_tokens")


def test_the_probe_reads_a_linear_code_and_nothing_from_noise():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 12))
    code = x @ rng.normal(size=(12, 3)) + np.array([0.1, -0.2, 0.05])
    exact = probe_script.probe(x[:200], code[:200], x[200:], code[200:])
    assert min(exact["r2_xyz"]) > 0.999 and exact["mean_error_cm"] < 1.0
    noise = rng.normal(size=(300, 3))
    blind = probe_script.probe(x[:200], noise[:200], x[200:], noise[200:])
    assert max(blind["r2_xyz"]) < 0.1


def test_the_script_probes_a_saved_policy(dataset_meta, tmp_path):
    make_policy(dataset_meta, spatial_tokens="voxel", voxel_target=64).save_pretrained(tmp_path / "policy")
    result = probe_script.main(["--policy", str(tmp_path / "policy"), "--scenes", "12", "--out",
                                str(tmp_path / "probe.json")])
    assert json.loads((tmp_path / "probe.json").read_text()) == result
    assert result["objects"]["train"] >= 10 and result["objects"]["held_out"] >= 5
    for name in ("aggregator", "patch_position"):
        assert len(result[name]["r2_xyz"]) == 3 and result[name]["mean_error_cm"] > 0
    control = probe_script.main(["--policy", str(tmp_path / "policy"), "--scenes", "12", "--random-init"])
    assert control["weights"] == "random init" and control["objects"] == result["objects"]
