"""``scripts/benchmark.py --quick`` on the built-in ``reach`` task with all five policies (ACT,
Diffusion Policy, SmolVLA, pi0, geovla tiny): each cell trained by ``lerobot-train`` and evaluated
by ``lerobot-eval``; ``results.json``, the table and the plot agree with each other and with the
cells' own files; a run stopped by SIGTERM continues without redoing its finished cells; a cell
whose training stopped after a checkpoint resumes from it with ``lerobot-train --resume``.

One quick run of the five cells takes about 2.5 minutes on the 2-core machine; the module runs
the suite three times (stopped after the first cell, continued, one cell resumed).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from policies.intervals import wilson_interval

ROOT = Path(__file__).resolve().parents[2]
# policy -> (label, reads the instruction)
POLICIES = {"act": ("ACT", False), "diffusion": ("Diffusion Policy", False), "smolvla": ("SmolVLA", True),
            "pi0": ("pi0", True), "geovla": ("geovla tiny", True)}
COMMAND = [sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--suite", "builtin", "--quick",
           "--tasks", "reach", "--no-progress", "--policies", *POLICIES]
EVAL_SEEDS = [100_000, 100_001]
RUN_TIMEOUT = 600


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}


def _state(out: Path) -> dict[str, Any] | None:
    path = out / "state.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _run(out: Path, *extra: str) -> subprocess.CompletedProcess:
    """The suite with ``--out`` given relative to the working directory, as a user types it."""
    return subprocess.run([*COMMAND, "--out", out.name, *extra], env=_env(), cwd=out.parent, capture_output=True,
                          text=True, timeout=RUN_TIMEOUT)


def _run_and_stop_after_first_cell(out: Path) -> None:
    """Start the suite, send it SIGTERM once its first cell is done, check it stopped cleanly."""
    log = open(out.parent / "stopped_run.log", "w")
    process = subprocess.Popen([*COMMAND, "--out", out.name], env=_env(), cwd=out.parent, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while (_state(out) or {}).get("cells", {}).get("reach/act", {}).get("status") != "done":
            assert process.poll() is None, "the suite ended before it could be stopped"
            assert time.monotonic() < deadline, "the first cell did not finish in time"
            time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=120)
        with pytest.raises(ProcessLookupError):  # the LeRobot command it was running stopped with it
            os.killpg(process.pid, 0)
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
        log.close()
    assert code == 130, (out.parent / "stopped_run.log").read_text()[-3000:]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A quick run stopped after its first cell, then continued; the output folder and the
    first cell's record as it was when the run stopped."""
    out = tmp_path_factory.mktemp("benchmark") / "quick"
    _run_and_stop_after_first_cell(out)
    stopped = _state(out)
    assert stopped["cells"]["reach/act"]["status"] == "done"
    result = _run(out)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    yield out, stopped["cells"]["reach/act"]
    shutil.rmtree(out, ignore_errors=True)  # about 1 GB, most of it pi0's checkpoint


def _check_outputs(out: Path) -> dict[str, Any]:
    """results.json, results.md and success.png agree with each other and with the cells' files."""
    results = json.loads((out / "results.json").read_text())
    assert results["suite"] == "builtin" and results["budget"]["steps"] == 2
    cells = results["cells"]
    assert [(cell["task"], cell["policy"]) for cell in cells] == [("reach", name) for name in POLICIES]
    dataset = results["datasets"]["reach"]
    assert dataset["episodes"] == 3 and dataset["recording_seeds"] == [0, dataset["attempts"] - 1]
    assert dataset["recording_seeds"][1] < EVAL_SEEDS[0]
    for cell in cells:
        label, reads_instruction = POLICIES[cell["policy"]]
        assert (cell["label"], cell["reads_instruction"]) == (label, reads_instruction)
        assert cell["steps"] == 2 and cell["episodes"] == 2 and 0 <= cell["successes"] <= 2
        assert cell["success_rate"] == cell["successes"] / 2
        assert cell["wilson95"] == pytest.approx(list(wilson_interval(cell["successes"], 2)), abs=1e-4)
        assert cell["eval_seeds"] == EVAL_SEEDS
        assert cell["curve"][-1] == [cell["train_wall_s"], 2] and cell["train_wall_s"] > 0
        assert 0 <= cell["steps_in_equal_time"] <= 2 and cell["params"] > 0
        model_dir = Path(cell["checkpoint"])
        assert json.loads((model_dir / "config.json").read_text())["type"] == cell["policy"].split("-")[0]
        assert json.loads((model_dir.parent / "training_state" / "training_step.json").read_text())["step"] == 2
        eval_info = json.loads((out / "cells" / "reach" / cell["policy"] / "eval" / "eval_info.json").read_text())
        assert sum(eval_info["per_task"][0]["metrics"]["successes"]) == cell["successes"]
    by_policy = {cell["policy"]: cell for cell in cells}
    for name, geometry in (("geovla", "true"), ("act", "false")):
        assert f"--env.geometry={geometry}" in by_policy[name]["eval_command"]
    assert by_policy["pi0"]["params"] < 100e6  # pi0's own variants (PaliGemma 2B + 300M) are 3.5B
    smolvla_config = json.loads((Path(by_policy["smolvla"]["checkpoint"]) / "config.json").read_text())
    assert Path(smolvla_config["vlm_model_name"]).parent == out / "assets"
    fastest = min(cell["train_wall_s"] for cell in cells)
    assert results["equal_time"]["reach"]["seconds"] == fastest
    assert [cell["steps_in_equal_time"] for cell in cells if cell["train_wall_s"] == fastest][0] == 2

    rows = [line for line in (out / "results.md").read_text().splitlines() if line.startswith("| reach |")]
    assert len(rows) == len(cells)
    for row, cell in zip(rows, cells):
        assert f"| {cell['label']} |" in row and f"| {cell['successes']}/2 (" in row
    png = (out / "success.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    return results


def test_quick_suite_stopped_and_continued_gives_consistent_results(quick_run):
    out, act_when_stopped = quick_run
    _check_outputs(out)
    state = _state(out)
    assert all(state["cells"][f"reach/{name}"]["status"] == "done" for name in POLICIES)
    assert state["cells"]["reach/act"] == act_when_stopped  # not redone after the stop
    assert len(state["datasets"]) == 1 and (out / "datasets" / "reach" / "meta" / "info.json").is_file()


def _stop_act_after_step_one(out: Path) -> None:
    """Make the ACT cell look stopped after its step-1 checkpoint: the state as before its
    training ended, ``last`` pointing at a checkpoint of step 1."""
    checkpoints = out / "cells" / "reach" / "act" / "train" / "checkpoints"
    (checkpoints / "000002").rename(checkpoints / "000001")
    step_file = checkpoints / "000001" / "training_state" / "training_step.json"
    step_file.write_text(json.dumps({**json.loads(step_file.read_text()), "step": 1}))
    (checkpoints / "last").unlink()
    (checkpoints / "last").symlink_to("000001")
    state = _state(out)
    state["cells"]["reach/act"] = {"status": "training"}
    (out / "state.json").write_text(json.dumps(state))


def test_rerun_resumes_a_stopped_training_and_skips_done_cells(quick_run):
    out, _ = quick_run
    mismatch = _run(out, "--steps", "3")
    assert mismatch.returncode != 0 and "holds a run" in mismatch.stderr

    before = _state(out)["cells"]
    _stop_act_after_step_one(out)
    result = _run(out)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    after = _state(out)["cells"]
    assert {k: v for k, v in after.items() if k != "reach/act"} == {k: v for k, v in before.items() if k != "reach/act"}
    act = after["reach/act"]
    assert act["status"] == "done" and act["train"]["train_attempts"] == 2
    log = (out / "cells" / "reach" / "act" / "train.log").read_text()
    assert "attempt 2: resuming from step 1" in log and "--resume=true" in log
    curve = act["train"]["curve"]
    assert [step for _, step in curve] == [1, 2, 2] and curve[0][0] < curve[1][0] <= curve[2][0]
    _check_outputs(out)


def test_runs_in_separate_folders_merge_into_one_table(quick_run, tmp_path):
    out, _ = quick_run
    state = _state(out)
    halves = {"first": ["act", "diffusion"], "second": ["smolvla", "pi0", "geovla"]}
    for name, policies in halves.items():
        (tmp_path / name).mkdir()
        part = {**state, "cells": {f"reach/{p}": state["cells"][f"reach/{p}"] for p in policies}}
        (tmp_path / name / "state.json").write_text(json.dumps(part))
    merged = tmp_path / "merged"
    result = _run(merged, "--merge", str(tmp_path / "first"), str(tmp_path / "second"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((merged / "results.json").read_text()) == json.loads((out / "results.json").read_text())
    assert (merged / "results.md").read_text() == (out / "results.md").read_text()

    (tmp_path / "first" / "state.json").write_text(json.dumps({**state, "cells": {
        "reach/act": {**state["cells"]["reach/act"], "evals": {"reach": {"successes": -1}}}}}))
    conflict = _run(merged, "--merge", str(tmp_path / "first"))
    assert conflict.returncode != 0 and "'reach/act' was finished in two runs" in conflict.stderr
    other_budget = _run(tmp_path / "other", "--merge", str(tmp_path / "second"), "--steps", "3")
    assert other_budget.returncode != 0 and "holds a run" in other_budget.stderr
    missing = _run(merged, "--merge", str(tmp_path / "nowhere"))
    assert missing.returncode != 0 and "no state.json in" in missing.stderr


def test_a_state_carried_to_a_new_folder_remakes_what_it_lacks(quick_run, tmp_path):
    """Only state.json is copied: the dataset is recorded again (the same episodes and frames), a
    trained cell whose checkpoint is gone is trained again, finished cells are kept."""
    out, _ = quick_run
    carried = tmp_path / "carried"
    carried.mkdir()
    state = json.loads((out / "state.json").read_text().replace(str(out), str(carried)))
    state["cells"]["reach/act"].update(status="trained", evals={})
    (carried / "state.json").write_text(json.dumps(state))
    result = _run(carried, "--policies", "act")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    after = _state(carried)
    before = _state(out)
    assert {k: v for k, v in after["cells"].items() if k != "reach/act"} == \
        {k: v for k, v in state["cells"].items() if k != "reach/act"}
    act = after["cells"]["reach/act"]
    assert act["status"] == "done" and Path(act["train"]["checkpoint"]).is_relative_to(carried)
    assert act["evals"]["reach"]["episodes"] == 2 and act["train"]["train_attempts"] == 1
    recorded, original = after["datasets"]["reach"], before["datasets"]["reach"]
    assert Path(recorded["root"]) == carried / "datasets" / "reach"
    assert {k: v for k, v in recorded.items() if k not in ("root", "without_geometry")} == \
        {k: v for k, v in original.items() if k not in ("root", "without_geometry")}
    assert (Path(recorded["without_geometry"]["root"]) / "meta" / "info.json").is_file()


def test_equal_time_retrains_a_slower_policy_for_its_steps_in_the_time(quick_run, tmp_path):
    """geovla made to look slow (step 1 reached when the fastest policy finished, step 2 long
    after) is trained again for 1 step and evaluated on the same seeds; running again redoes
    nothing; a merge keeps the retraining."""
    out, _ = quick_run
    state = _state(out)
    fastest = min(cell["train"]["train_wall_s"] for key, cell in state["cells"].items() if key != "reach/geovla")
    state["cells"]["reach/geovla"]["train"].update(curve=[[fastest / 2, 1], [fastest * 10, 2], [fastest * 10, 2]],
                                                   train_wall_s=fastest * 10)
    run = tmp_path / "equal"
    run.mkdir()
    (run / "state.json").write_text(json.dumps(state))
    result = _run(run, "--policies", "geovla", "--equal-time")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    after = _state(run)
    assert {k: v for k, v in after["cells"].items() if k != "reach/geovla"} == \
        {k: v for k, v in state["cells"].items() if k != "reach/geovla"}
    retrained = after["cells"]["reach/geovla"]["equal_time"]
    assert retrained["status"] == "done" and retrained["steps"] == 1 and retrained["seconds"] == fastest
    assert retrained["train"]["steps"] == 1 and retrained["evals"]["reach"]["episodes"] == 2
    assert retrained["evals"]["reach"]["eval_seeds"] == EVAL_SEEDS
    model_dir = Path(retrained["train"]["checkpoint"])
    assert model_dir.is_relative_to(run / "cells" / "reach" / "geovla" / "equal_time")
    assert json.loads((model_dir.parent / "training_state" / "training_step.json").read_text())["step"] == 1
    rows = {cell["policy"]: cell for cell in json.loads((run / "results.json").read_text())["cells"]}
    assert rows["geovla"]["steps_in_equal_time"] == 1
    assert rows["geovla"]["at_equal_time"]["successes"] == retrained["evals"]["reach"]["successes"]
    fastest_row = [row for row in rows.values() if row["train_wall_s"] == fastest][0]
    assert fastest_row["at_equal_time"]["successes"] == fastest_row["successes"]

    again = _run(run, "--policies", "geovla", "--equal-time")
    assert again.returncode == 0 and _state(run) == after
    merged = tmp_path / "merged"
    assert _run(merged, "--merge", str(run), str(out)).returncode == 0
    assert json.loads((merged / "results.json").read_text())["cells"] == \
        json.loads((run / "results.json").read_text())["cells"]
