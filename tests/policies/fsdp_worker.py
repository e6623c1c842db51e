"""One training step of the tiny policy under torch FSDP (FULL_SHARD, the whole policy one unit
as in ``configs/accelerate_fsdp.yaml``) on 2 CPU processes over gloo, against the same step
unsharded; run by ``test_distributed_training.py`` through ``torch.distributed.run``.

    python -m torch.distributed.run --nproc_per_node 2 tests/policies/fsdp_worker.py DATASET OUT

Rank 0 saves the gathered full state dict with ``save_pretrained(OUT/policy, state_dict=...)``
and writes ``OUT/result.json``: the largest difference to the unsharded step, the largest update
of the step (SGD: the difference shows the gradients') and whether the key sets match.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from lerobot.datasets import LeRobotDatasetMetadata
from torch.distributed.fsdp import FullStateDictConfig, ShardingStrategy, StateDictType
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

from policies.modeling_geovla import GeoVLAPolicy
from policies.distributed import batch_randomness, step_batches
from policies.train_config import TrainConfig
from policies.training import build_policy, training_dataset

CPU = torch.device("cpu")


def build(cfg: TrainConfig, meta: LeRobotDatasetMetadata) -> GeoVLAPolicy:
    torch.manual_seed(0)
    return build_policy(cfg, meta, "cpu")


def unsharded_step(cfg: TrainConfig, meta: LeRobotDatasetMetadata, dataset, world: int) -> dict[str, torch.Tensor]:
    """The same step on one process: the world's micro-batches, each loss divided by the world size."""
    policy = build(cfg, meta)
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.1)
    for rank in range(world):
        index, batch = next(step_batches(dataset, cfg, 0, world, rank))
        with batch_randomness(cfg.seed, index, CPU):
            loss, _ = policy(policy.processors[0](batch))
        (loss / world).backward()
    torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
    optimizer.step()
    return {key: value.detach().clone() for key, value in policy.state_dict().items()}


def main(dataset_root: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    cfg = TrainConfig(dataset_root=dataset_root, output_dir=out, batch_size=2, policy={"image_size": 32})
    meta = LeRobotDatasetMetadata(f"local/{Path(dataset_root).name}", root=dataset_root)
    policy = build(cfg, meta)
    initial = {key: value.detach().clone() for key, value in policy.state_dict().items()}
    dataset = training_dataset(cfg, policy.config, meta)
    model = FSDP(policy, sharding_strategy=ShardingStrategy.FULL_SHARD, use_orig_params=True, device_id=CPU)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    index, batch = next(step_batches(dataset, cfg, 0, world, rank))
    with batch_randomness(cfg.seed, index, CPU):
        loss, _ = model(policy.processors[0](batch))
    loss.backward()
    model.clip_grad_norm_(1.0)
    optimizer.step()
    with FSDP.state_dict_type(model, StateDictType.FULL_STATE_DICT, FullStateDictConfig(rank0_only=True)):
        full = model.state_dict()
    if rank == 0:
        reference = unsharded_step(cfg, meta, dataset, world)
        policy.save_pretrained(Path(out) / "policy", state_dict=full)
        result = {
            "same_keys": sorted(full) == sorted(reference),
            "max_difference": max((full[k] - reference[k]).abs().max().item() for k in reference),
            "max_update": max((full[k] - initial[k]).abs().max().item() for k in reference),
        }
        (Path(out) / "result.json").write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
