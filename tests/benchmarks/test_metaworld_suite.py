"""``scripts/benchmark.py --suite metaworld --quick`` on two MetaWorld tasks: each policy is trained
once, on the merged demonstrations of both tasks (one LeRobotDataset holding both instructions),
and evaluated on each task; the rows, the pooled ``mt2 mean`` row and the anchors appear in the
results; a per-task evaluation removed from the state is redone alone when the run continues.

geovla alone (instruction and geometry) keeps it short; the built-in suite's test runs all five
policies on the same harness, and the word tokenizer SmolVLA and pi0 read instructions with is
checked to know every MetaWorld instruction word. About 1.5 minutes on the 2-core machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer

from benchmarks.suites import get_suite
from envs.metaworld import task_description
from envs.recording import open_dataset
from policies.intervals import wilson_interval

ROOT = Path(__file__).resolve().parents[2]
TASKS = ["reach", "pick-place"]
POLICIES = ["geovla"]
COMMAND = [sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--suite", "metaworld", "--quick",
           "--tasks", *TASKS, "--policies", *POLICIES, "--no-progress"]


def _run(out: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([*COMMAND, "--out", out.name], env=env, cwd=out.parent, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("metaworld") / "quick"
    _run(out)
    yield out
    shutil.rmtree(out, ignore_errors=True)


def test_one_policy_over_both_tasks_evaluated_on_each(quick_run):
    out = quick_run
    results = _read(out / "results.json")
    rows = [(cell["task"], cell["policy"]) for cell in results["cells"]]
    assert rows == [(task, name) for task in [*TASKS, "mt2 mean"] for name in POLICIES]
    merged = results["datasets"]["mt2"]
    assert merged["tasks"] == TASKS and merged["episodes"] == 6
    dataset = open_dataset(merged["root"], merged["repo_id"])
    assert dataset.meta.total_episodes == 6
    assert set(dataset.meta.tasks.index) == {task_description(task) for task in TASKS}
    assert "observation.depth.topview" in dataset.meta.features
    assert "observation.depth.topview" not in open_dataset(merged["without_geometry"]["root"]).meta.features

    by_key = {(cell["task"], cell["policy"]): cell for cell in results["cells"]}
    for name in POLICIES:
        checkpoints = {by_key[(task, name)]["checkpoint"] for task in [*TASKS, "mt2 mean"]}
        assert len(checkpoints) == 1 and Path(checkpoints.pop()).parts[-6:-4] == ("mt2", name)
        for task in TASKS:
            cell = by_key[(task, name)]
            eval_info = _read(out / "cells" / "mt2" / name / task / "eval" / "eval_info.json")
            assert sum(eval_info["per_task"][0]["metrics"]["successes"]) == cell["successes"]
            assert f"--env.task={task}" in cell["eval_command"] and cell["episodes"] == 2
            assert ("--env.geometry=true" in cell["eval_command"]) == (name == "geovla")
        pooled = by_key[("mt2 mean", name)]
        assert pooled["episodes"] == 4
        assert pooled["successes"] == sum(by_key[(task, name)]["successes"] for task in TASKS)
        assert pooled["wilson95"] == pytest.approx(list(wilson_interval(pooled["successes"], 4)), abs=1e-4)
    table = (out / "results.md").read_text()
    assert "| mt2 mean | geovla tiny |" in table and "SmolVLA 57.3%, pi0 47.9%" in table


def test_the_word_tokenizer_knows_every_instruction_word(quick_run):
    tokenizer = Tokenizer.from_file(str(quick_run / "assets" / "word_vlm" / "tokenizer.json"))
    vocabulary = tokenizer.get_vocab()
    for task in get_suite("metaworld").tasks:
        assert all(word in vocabulary for word in task_description(task).split()), task


def test_a_removed_task_evaluation_is_redone_alone(quick_run):
    out = quick_run
    state = _read(out / "state.json")
    kept = state["cells"]["mt2/geovla"]["evals"]["reach"]
    removed = state["cells"]["mt2/geovla"]["evals"].pop("pick-place")
    state["cells"]["mt2/geovla"]["status"] = "trained"
    (out / "state.json").write_text(json.dumps(state))
    train_log = (out / "cells" / "mt2" / "geovla" / "train.log").read_text()
    _run(out)
    state = _read(out / "state.json")
    evaluations = state["cells"]["mt2/geovla"]["evals"]
    assert evaluations["reach"] == kept and evaluations["pick-place"]["eval_seeds"] == removed["eval_seeds"]
    assert evaluations["pick-place"]["successes"] == removed["successes"]  # the same seeds, the same episodes
    assert (out / "cells" / "mt2" / "geovla" / "train.log").read_text() == train_log  # not trained again
    assert all(cell["status"] == "done" for cell in state["cells"].values())
