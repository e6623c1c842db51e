import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from policies.modeling_geovla import GeoVLAPolicy
from policies.checkpoints import latest_checkpoint
from policies.configuration_geovla import GeoVLAConfig
from policies.distributed import StepBatchSampler
from policies.train_config import TrainConfig
from policies.training import build_optimizer, train


def _config(root, output, **overrides):
    values = dict(dataset_root=str(root), output_dir=str(output), steps=4, batch_size=4, save_every=2,
                  log_every=1, policy={"image_size": 32})
    values.update(overrides)
    return TrainConfig(**values)


def test_step_sampler_resumes_mid_epoch():
    full = StepBatchSampler(10, 4, seed=3)
    batches = [b for b, _ in zip(full, range(7))]
    resumed = [b for b, _ in zip(StepBatchSampler(10, 4, seed=3, start_step=3), range(4))]
    assert resumed == batches[3:]
    assert all(len(b) == 4 and len(set(b)) == 4 for b in batches)
    # Two batches per epoch (10 // 4): disjoint within an epoch, reshuffled in the next one.
    assert set(batches[0]).isdisjoint(batches[1]) and set(batches[2]).isdisjoint(batches[3])
    assert batches[2:4] != batches[0:2]
    assert [b for b, _ in zip(StepBatchSampler(10, 4, seed=4), range(2))] != batches[:2]


def test_resumed_run_continues_the_same_loss_curve(dataset_root, tmp_path):
    def crash_after_checkpoint(policy, step):
        if step == 3:
            raise RuntimeError("simulated crash")
        return {}

    with pytest.raises(RuntimeError, match="simulated crash"):
        train(_config(dataset_root, tmp_path / "crashed", eval_every=1), evaluate=crash_after_checkpoint, progress=False)
    assert latest_checkpoint(tmp_path / "crashed").name == "step_000002"
    resumed = train(_config(dataset_root, tmp_path / "crashed"), resume=True, progress=False)
    straight = train(_config(dataset_root, tmp_path / "straight"), progress=False)
    assert list(resumed["losses"]) == [3, 4]
    for step in (3, 4):
        assert resumed["losses"][step] == straight["losses"][step]

    records = [json.loads(line) for line in (tmp_path / "crashed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]
    assert any((tmp_path / "straight" / "tensorboard").iterdir())
    policy = GeoVLAPolicy.from_pretrained(straight["final_dir"])
    assert policy.processors is not None


def test_refuses_to_mix_runs(dataset_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(_config(dataset_root, tmp_path / "new"), resume=True, progress=False)
    train(_config(dataset_root, tmp_path / "run", steps=2), progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        train(_config(dataset_root, tmp_path / "run", steps=2), progress=False)


def test_unknown_config_keys_are_rejected():
    with pytest.raises(ValueError, match="unknown training config keys"):
        TrainConfig.from_dict({"dataset_root": "x", "output_dir": "y", "stepz": 3})


def test_script_config_reads_exponent_floats_and_nested_overrides(tmp_path):
    from geovla_helpers import load_script

    config_file = tmp_path / "run.yaml"
    config_file.write_text("dataset_root: d\noutput_dir: o\npolicy:\n  optimizer_lr: 3e-4\n")
    cfg = load_script("scripts/train_policy").load_config(str(config_file), ["steps=7", "policy.scheduler_decay_lr=1e-5",
                                                                      "policy.tokenizer=word"])
    assert cfg.steps == 7
    assert cfg.policy == {"optimizer_lr": 3e-4, "scheduler_decay_lr": 1e-5, "tokenizer": "word"}
    assert isinstance(cfg.policy["optimizer_lr"], float)


def test_the_demo_config_trains_voxel_tokens_on_raw_state_and_actions(dataset_root, raw_batch, tmp_path):
    from geovla_helpers import load_script

    demo_config = Path(__file__).parents[2] / "configs" / "demo_reach_tiny.yaml"
    cfg = load_script("scripts/train_policy").load_config(
        str(demo_config), [f"dataset_root={dataset_root}", f"output_dir={tmp_path / 'demo'}", "steps=2",
                           "batch_size=4", "save_every=2"])
    policy = GeoVLAPolicy.from_pretrained(train(cfg, progress=False)["final_dir"])
    assert (policy.config.spatial_tokens, policy.config.prefix_causal, policy.config.n_obs_steps) == ("voxel", False, 1)
    pre, post = policy.processors
    processed = pre({k: v.clone() if hasattr(v, "clone") else v for k, v in raw_batch.items()})
    torch.testing.assert_close(processed["observation.state"], raw_batch["observation.state"])
    torch.testing.assert_close(processed["action"], raw_batch["action"])
    torch.testing.assert_close(post(processed["action"]), raw_batch["action"])


def test_optimizer_is_the_presets_adamw_fused():
    config = GeoVLAConfig(optimizer_lr=1e-2, optimizer_weight_decay=0.1)
    weights = [torch.randn(5, 3), torch.randn(7)]
    fused_params = [torch.nn.Parameter(w.clone()) for w in weights]
    plain_params = [torch.nn.Parameter(w.clone()) for w in weights]
    policy = SimpleNamespace(config=config, get_optim_params=lambda: fused_params)
    fused = build_optimizer(policy)
    plain = config.get_optimizer_preset().build(plain_params)
    assert fused.defaults["fused"] and {k: fused.defaults[k] for k in ("lr", "betas", "eps", "weight_decay")} == \
        {k: plain.defaults[k] for k in ("lr", "betas", "eps", "weight_decay")}
    for _ in range(3):
        grads = [torch.randn_like(w) for w in weights]
        for params, optimizer in ((fused_params, fused), (plain_params, plain)):
            for p, g in zip(params, grads):
                p.grad = g.clone()
            optimizer.step()
    for f, p in zip(fused_params, plain_params):
        torch.testing.assert_close(f, p, rtol=1e-6, atol=1e-7)
