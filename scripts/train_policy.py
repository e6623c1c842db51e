"""Train the geovla policy on a local LeRobotDataset.

    accelerate launch scripts/train_policy.py --config configs/demo_reach_tiny.yaml
    python scripts/train_policy.py --config configs/demo_reach_tiny.yaml steps=200 policy.chunk_size=8
    python scripts/train_policy.py --config ... --resume          # continue from the last checkpoint

Overrides are ``key=value`` pairs (YAML values; ``policy.<field>`` sets a GeoVLAConfig field).

Several processes train one run on ``batch_size × grad_accum × N`` samples per step
(``batch_size`` is per process), exactly as one process with ``grad_accum × N`` micro-batches
would; a checkpoint resumes under any N with the same ``grad_accum × N``:

    accelerate launch --multi_gpu --num_processes N scripts/train_policy.py --config ...     # DDP, GPUs
    accelerate launch --config_file configs/accelerate_fsdp.yaml scripts/train_policy.py ...  # FSDP, GPUs
    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes N scripts/train_policy.py ...  # DDP, CPUs

(``accelerate launch --cpu`` starts a single process; FSDP runs on GPUs only.)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from accelerate import PartialState

from policies.rollout import DEFAULT_SEED, env_factory, evaluate_policy
from policies.train_config import TrainConfig, read_yaml
from policies.training import train


def load_config(path: str | None, overrides: list[str]) -> TrainConfig:
    values = read_yaml(Path(path).read_text()) if path else {}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key=value or policy.field=value")
        key, raw = item.split("=", 1)
        target = values
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = read_yaml(raw)
    return TrainConfig.from_dict(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML file with TrainConfig fields")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output_dir")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (1 is fastest on a CPU shared with other jobs)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides")
    args = parser.parse_args()
    cfg = load_config(args.config, args.overrides)
    if args.threads:
        torch.set_num_threads(args.threads)

    def periodic_evaluation(policy, step: int) -> dict:
        make_env, _ = env_factory(policy, cfg.eval_env, cfg.eval_task)
        results = evaluate_policy(policy, make_env, cfg.eval_episodes, DEFAULT_SEED, progress=False)
        return {"success_rate": results["success_rate"], "mean_reward": results["mean_reward"]}

    result = train(cfg, resume=args.resume, evaluate=periodic_evaluation if cfg.eval_every else None)
    losses = result["losses"]
    summary = {"final_policy": result["final_dir"], "steps": result["steps"], "seconds": round(result["seconds"], 1),
               "final_loss": losses[max(losses)] if losses else None}
    if PartialState().is_main_process:
        print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
