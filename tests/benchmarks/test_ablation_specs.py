"""The geovla ablations of the benchmark suite: each builds the policy it names from the suite's
geovla settings and gets the data and evaluation inputs it needs."""

from __future__ import annotations

from pathlib import Path

import draccus
import pytest

from benchmarks.policy_specs import ABLATIONS, POLICIES, BuildContext, get_policies
from benchmarks.suites import get_suite
from policies.configuration_geovla import GeoVLAConfig

# ablation -> the config fields it must set (everything else as geovla tiny)
EXPECTED = {
    "geovla-no-geometry": {"use_geometry": False},
    "geovla-patch": {"spatial_tokens": "patch"},
    "geovla-sensor-voxels": {"spatial_tokens": "voxel", "voxel_features": False, "runs_aggregator": False},
    "geovla-rgb": {"depth_source": "predicted", "camera_source": "predicted", "scene_fields": ()},
    "geovla-no-film": {"film": False},
    "geovla-router-add": {"router": "add"},
    "geovla-history": {"n_obs_steps": 2},
    "geovla-geometry-loss": {"geometry_loss_weight": 0.1, "spatial_tokens": "voxel"},
}


def _config(name: str) -> GeoVLAConfig:
    context = BuildContext(suite=get_suite("builtin"), image_size=32, vlm_dir=Path("unused"))
    args = ABLATIONS.get(name, POLICIES.get(name)).policy_args(context)
    assert args[0] == "--policy.type=geovla"
    return draccus.parse(GeoVLAConfig, args=[arg.replace("--policy.", "--", 1) for arg in args[1:]])


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_ablation_changes_what_it_names(name):
    reference, ablated = _config("geovla"), _config(name)
    for field, value in EXPECTED[name].items():
        assert getattr(ablated, field) == value, field
    assert ablated.voxel_workspace == reference.voxel_workspace and ablated.image_size == 32


def test_ablations_run_only_when_named():
    assert [spec.name for spec in get_policies(None)] == list(POLICIES)
    assert [spec.name for spec in get_policies(["geovla-rgb", "act"])] == ["act", "geovla-rgb"]
    with pytest.raises(ValueError, match="unknown policies \\['geovla-lidar'\\]"):
        get_policies(["geovla-lidar"])



def test_the_rgb_ablation_trains_with_depth_and_is_evaluated_without_it():
    suite, budget = get_suite("builtin"), get_suite("builtin").full_budget
    for name, trains_on_depth, evaluated_with_depth in (("geovla", True, True), ("geovla-rgb", True, False),
                                                        ("geovla-no-geometry", False, False)):
        spec = ABLATIONS.get(name, POLICIES.get(name))
        assert (spec.reads_geometry, spec.evaluates_with_geometry) == (trains_on_depth, evaluated_with_depth)
        geometry_arg = f"--env.geometry={str(evaluated_with_depth).lower()}"
        assert geometry_arg in suite.eval_env_args("reach", budget, spec.evaluates_with_geometry)
