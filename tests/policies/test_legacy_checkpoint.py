"""A policy saved before the move to LeRobot 0.6.1 (on 0.4.4, Python 3.11, transformers 4.57) loads
on the current stack and gives the actions it gave then (``tests/fixtures/make_legacy_policy.py``)."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import torch

from policies.modeling_geovla import GeoVLAPolicy

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _observation(arrays: np.lib.npyio.NpzFile, prefix: str) -> dict:
    observation: dict = {"state": arrays[f"{prefix}/state"], "instruction": str(arrays[f"{prefix}/instruction"])}
    for name in ("images", "depth", "intrinsics", "extrinsics"):
        observation[name] = {key.split("/")[-1]: arrays[key] for key in arrays.files if key.startswith(f"{prefix}/{name}/")}
    return observation


def test_a_policy_saved_on_lerobot_0_4_4_gives_the_same_actions(tmp_path):
    assert (FIXTURES / "legacy_policy.tar.xz").stat().st_size < 1_000_000
    with tarfile.open(FIXTURES / "legacy_policy.tar.xz") as tar:
        tar.extractall(tmp_path, filter="data")
    policy = GeoVLAPolicy.from_pretrained(tmp_path / "legacy_policy")
    assert policy.config.spatial_tokens == "voxel" and policy.config.n_obs_steps == 2

    arrays = np.load(FIXTURES / "legacy_policy_io.npz")
    noise = torch.from_numpy(arrays["noise"])
    expected = arrays["actions"]
    policy.reset()
    actions = np.stack([policy.predict_action(_observation(arrays, f"obs{i}"), noise=noise[i]) for i in range(2)])
    np.testing.assert_allclose(actions, expected, rtol=0, atol=1e-5)
    # The equality is not trivial: other noise, other actions.
    policy.reset()
    other = policy.predict_action(_observation(arrays, "obs0"), noise=torch.randn_like(noise[0]))
    assert np.abs(other - expected[0]).max() > 1e-2
