"""Train the geometry model on frames recorded from the built-in tabletop task; prints JSON.

Records expert rollouts (depth + camera ground truth from the simulator), trains on them and
reports median-scaled depth AbsRel / delta<1.25 and relative pose error / AUC@30 on held-out
episodes before and after training.

    python scripts/train_geometry.py --steps 1000 --image-size 64
    python scripts/train_geometry.py --device cuda --preset small --image-size 224 --vggt-checkpoint model.pt
"""

from __future__ import annotations

import argparse
import json
import time

import gymnasium
import torch

import envs
from geometry.config import make_config
from geometry.model import GeometryModel
from geometry.pretrained import load_vggt_weights
from geometry.training import collect_frames, evaluate, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", choices=["tiny", "small", "full"])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--cameras", nargs="+", default=["front", "left", "right", "wrist"])
    parser.add_argument("--task", default="reach")
    parser.add_argument("--train-episodes", type=int, default=40)
    parser.add_argument("--eval-episodes", type=int, default=6)
    parser.add_argument("--episode-steps", type=int, default=30)
    parser.add_argument("--every", type=int, default=3, help="keep every n-th observation")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--vggt-checkpoint", default=None, help="start from VGGT weights (local file)")
    parser.add_argument("--save", default=None, help="write the trained state dict here")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    env = gymnasium.make("geovla/Tabletop-v0", task=args.task, image_size=args.image_size, geometry=True)
    expert = envs.make_expert(env)
    train_frames = collect_frames(env, expert, range(args.train_episodes), args.episode_steps, args.every, args.cameras)
    eval_frames = collect_frames(env, expert, range(10_000, 10_000 + args.eval_episodes), args.episode_steps,
                                 args.every, args.cameras)
    env.close()

    device = torch.device(args.device)
    config = make_config(args.preset, img_size=args.image_size, track_head=False)
    model = GeometryModel(config)
    if args.vggt_checkpoint:
        load_vggt_weights(model, args.vggt_checkpoint)
    model.to(device)
    train_frames = {k: v.to(device) for k, v in train_frames.items()}
    eval_frames = {k: v.to(device) for k, v in eval_frames.items()}

    before = evaluate(model, eval_frames)
    start = time.time()
    losses = train(model, train_frames, args.steps, args.batch_size, args.lr, args.seed,
                   log=lambda s, t: print(json.dumps({"step": s, **{k: round(v, 4) for k, v in t.items()}}))
                   if s % 50 == 0 else None)
    seconds = time.time() - start
    after = evaluate(model, eval_frames)
    if args.save:
        torch.save(model.state_dict(), args.save)
    print(json.dumps({
        "preset": args.preset, "image_size": args.image_size, "cameras": args.cameras,
        "train_frames": int(train_frames["images"].shape[0]), "eval_frames": int(eval_frames["images"].shape[0]),
        "steps": args.steps, "train_seconds": round(seconds, 1), "first_loss": losses[0], "last_loss": losses[-1],
        "before": before, "after": after,
    }, indent=2))


if __name__ == "__main__":
    main()
