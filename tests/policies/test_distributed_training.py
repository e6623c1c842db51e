"""Distributed training through accelerate: 2 CPU processes (DDP over gloo) train exactly as one
process does on the same global batch, and checkpoints resume under either process count.

Convention (``policies.distributed``): ``batch_size`` is per process and micro-batch, so 2 processes
with ``batch_size=2`` train on the same 4 samples per step as 1 process with ``batch_size=2`` and
``grad_accum=2``; each micro-batch's flow-matching noise is seeded by its sampler index, so both
runs also draw the same noise. The two gradients then agree to the last bit: DDP averages
``(g0 + g1) / 2``, accumulation sums ``g0 / 2 + g1 / 2``, and halving is exact in floating point.
``TOLERANCE`` leaves room only for reduction-order rounding (measured difference: 0).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from policies.checkpoints import CHECKPOINTS, STATE_FILE
from policies.distributed import batch_randomness, step_batches
from policies.train_config import TrainConfig
from policies.training import train

REPO = Path(__file__).resolve().parents[2]
STEPS = 4
TOLERANCE = 1e-6  # max |weight difference| allowed between runs that must train identically
CPU = torch.device("cpu")
# Large steps, so that runs that differ end far apart; the learning rate decays within the 4
# steps, so that the scheduler's step count matters too.
POLICY = {"image_size": 32, "optimizer_lr": 1e-3, "scheduler_decay_lr": 1e-4}


def _config(root: Path, output: Path, **overrides) -> TrainConfig:
    """The tiny 32-px run every test trains: 4 steps of 2 samples per micro-batch, saved at 2 and 4."""
    values = dict(dataset_root=str(root), output_dir=str(output), steps=STEPS, batch_size=2, save_every=2,
                  log_every=1, policy=POLICY)
    return TrainConfig(**{**values, **overrides})


def _free_port() -> int:
    """A TCP port nobody listens on, for the processes' rendezvous."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _launch_two_processes(root: Path, output: Path, *arguments: str) -> None:
    """``scripts/train_policy.py`` on 2 CPU processes joined by gloo (``ACCELERATE_USE_CPU``:
    ``accelerate launch --cpu`` would start one process), ``batch_size=2`` each."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), "scripts/train_policy.py", "--threads", "1",
               f"dataset_root={root}", f"output_dir={output}", f"steps={STEPS}", "batch_size=2", "grad_accum=1",
               "save_every=2", "log_every=1", *(f"policy.{key}={value}" for key, value in POLICY.items()), *arguments]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"2-process training failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"


def _weights(output: Path, step: int = STEPS) -> dict[str, torch.Tensor]:
    """The weights a run's checkpoint at ``step`` saved for ``from_pretrained``."""
    return load_file(output / CHECKPOINTS / f"step_{step:06d}" / "pretrained_model" / "model.safetensors")


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest absolute difference between two state dicts' entries."""
    assert a.keys() == b.keys()
    return max((a[key].double() - b[key].double()).abs().max().item() for key in a)


def _logged(output: Path, key: str = "loss") -> dict[int, float]:
    """``key`` of every step logged in ``metrics.jsonl``."""
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    return {record["step"]: record[key] for record in records if key in record}


def _copy_up_to_step_2(source: Path, target: Path) -> Path:
    """``source``'s run as a crash after step 2 would have left it (its step-4 checkpoint removed)."""
    shutil.copytree(source, target)
    shutil.rmtree(target / CHECKPOINTS / f"step_{STEPS:06d}")
    return target


@pytest.fixture(scope="module")
def two_process_run(dataset_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("two_processes") / "run"
    _launch_two_processes(dataset_root, output)
    return output


@pytest.fixture(scope="module")
def one_process_run(dataset_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("one_process") / "run"
    train(_config(dataset_root, output, grad_accum=2), progress=False)
    return output


def _take(batches, count: int) -> list[tuple[int, list[int]]]:
    """The first ``count`` (sampler index, sample indices) pairs that ``step_batches`` yields."""
    return [(index, batch.tolist()) for (index, batch), _ in zip(batches, range(count))]


def test_step_batches_split_each_global_batch_between_processes():
    """Per step, the 2 processes' batches are disjoint halves of the global batch, and together
    they are the 2 micro-batches one process accumulates (also from a resumed step)."""
    samples = list(range(11))
    accumulating = TrainConfig("unused", "unused", batch_size=2, grad_accum=2)
    sharded = TrainConfig("unused", "unused", batch_size=2, grad_accum=1)
    micro = _take(step_batches(samples, accumulating, 0, 1, 0), 6)
    assert [index for index, _ in micro] == list(range(6))
    for start in (0, 1):
        halves = [_take(step_batches(samples, sharded, start, 2, rank), 3 - start) for rank in (0, 1)]
        for step, first, second in zip(range(start, 3), *halves):
            assert [first, second] == micro[2 * step: 2 * step + 2]
            assert len(first[1]) == len(second[1]) == 2 and set(first[1]).isdisjoint(second[1])


def test_batch_randomness_depends_only_on_seed_and_batch_index():
    with batch_randomness(0, 5, CPU):
        first = torch.randn(4)
    torch.randn(100)  # whatever ran before does not matter
    state = torch.get_rng_state()
    with batch_randomness(0, 5, CPU):
        again = torch.randn(4)
    assert torch.equal(torch.get_rng_state(), state), "the global RNG must be given back"
    with batch_randomness(0, 6, CPU):
        other_batch = torch.randn(4)
    with batch_randomness(1, 5, CPU):
        other_seed = torch.randn(4)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other_batch) and not torch.allclose(first, other_seed)


def test_two_processes_train_like_one_process_on_the_same_global_batch(two_process_run, one_process_run):
    two_losses, one_losses = _logged(two_process_run), _logged(one_process_run)
    assert list(two_losses) == list(one_losses) == [1, 2, 3, 4]
    for step in two_losses:
        assert two_losses[step] == pytest.approx(one_losses[step], abs=TOLERANCE)
    rates = list(_logged(two_process_run, "lr").values())
    assert rates == list(_logged(one_process_run, "lr").values()) and rates == sorted(rates, reverse=True)
    assert rates[0] > rates[-1]
    for step in (2, STEPS):
        assert _max_difference(_weights(two_process_run, step), _weights(one_process_run, step)) <= TOLERANCE
    # Not vacuous: steps 3-4 move the weights by far more than the tolerance.
    assert _max_difference(_weights(one_process_run, 2), _weights(one_process_run)) > 100 * TOLERANCE
    state = json.loads((two_process_run / CHECKPOINTS / f"step_{STEPS:06d}" / STATE_FILE).read_text())
    assert state == {"step": STEPS, "batch_size": 2, "batches_per_step": 2}


def test_a_two_process_checkpoint_resumes_in_one_process(two_process_run, dataset_root, tmp_path):
    crashed = _copy_up_to_step_2(two_process_run, tmp_path / "run")
    resumed = train(_config(dataset_root, crashed, grad_accum=2), resume=True, progress=False)
    expected = _logged(two_process_run)
    assert list(resumed["losses"]) == [3, 4]
    for step in (3, 4):
        assert resumed["losses"][step] == pytest.approx(expected[step], abs=TOLERANCE)
    assert _max_difference(_weights(crashed), _weights(two_process_run)) <= TOLERANCE


def test_a_one_process_checkpoint_resumes_in_two_processes(one_process_run, dataset_root, tmp_path):
    crashed = _copy_up_to_step_2(one_process_run, tmp_path / "run")
    _launch_two_processes(dataset_root, crashed, "--resume")
    resumed, expected = _logged(crashed), _logged(one_process_run)
    assert list(resumed) == [1, 2, 3, 4]
    for step in (3, 4):
        assert resumed[step] == pytest.approx(expected[step], abs=TOLERANCE)
    assert _max_difference(_weights(crashed), _weights(one_process_run)) <= TOLERANCE


def test_resume_refuses_another_global_batch(one_process_run, dataset_root, tmp_path):
    crashed = _copy_up_to_step_2(one_process_run, tmp_path / "run")
    with pytest.raises(ValueError, match=r"grad_accum × num_processes = 2; this run has batch_size=2 and 1 × 1 = 1"):
        train(_config(dataset_root, crashed, grad_accum=1), resume=True, progress=False)


@pytest.mark.parametrize(("variable", "message"), [("WORLD_SIZE", "ACCELERATE_USE_CPU=true"),
                                                   ("ACCELERATE_USE_FSDP", "FSDP only on GPUs")])
def test_a_launch_that_would_not_train_together_is_refused(variable, message, dataset_root, tmp_path, monkeypatch):
    """2 launched processes that did not join one group, or FSDP asked for on a CPU (accelerate
    would fall back to DDP), stop before training."""
    monkeypatch.setenv(variable, "2" if variable == "WORLD_SIZE" else "true")
    with pytest.raises(RuntimeError, match=message):
        train(_config(dataset_root, tmp_path / "run"), progress=False)
    assert not (tmp_path / "run").exists()


def test_no_parameter_is_a_0d_tensor(dataset_meta):
    """FSDP refuses 0-d parameters ("FSDP doesn't support scalar parameters")."""
    from geovla_helpers import make_policy

    assert [name for name, param in make_policy(dataset_meta).named_parameters() if param.dim() == 0] == []


def test_the_policy_trains_and_saves_under_torch_fsdp(dataset_root, tmp_path):
    """accelerate runs FSDP on GPUs only; torch's FSDP itself runs on CPUs over gloo. One step of
    the whole policy as one FSDP unit (``configs/accelerate_fsdp.yaml``) on 2 processes equals the
    unsharded step, and the gathered full state dict saves through ``save_pretrained(state_dict=)``
    to a directory ``from_pretrained`` loads."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(_free_port()), "tests/policies/fsdp_worker.py", str(dataset_root), str(tmp_path)]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"FSDP training failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    outcome = json.loads((tmp_path / "result.json").read_text())
    assert outcome["same_keys"] and outcome["max_difference"] < 1e-6 < 1e-3 < outcome["max_update"], outcome
    from policies.modeling_geovla import GeoVLAPolicy

    loaded = GeoVLAPolicy.from_pretrained(tmp_path / "policy").state_dict()
    saved = load_file(tmp_path / "policy" / "model.safetensors")
    assert _max_difference({k: loaded[k] for k in saved}, saved) == 0.0
