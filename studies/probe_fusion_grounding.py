"""Can the deep-fusion LLM + flow-matching expert ground an instruction in spatial tokens? A
vision-free synthetic probe.

Each sample is a scene of voxel-like spatial tokens, built as the policy's voxel tokens are
(MLP of Fourier features of the world position + MLP of the colour): three objects of distinct
colours on a table plus ``--distractors`` table-coloured tokens, an instruction naming one
object ("touch the red cube"), and the hand position as the state. The target chunk is the
built-in reach expert's first move (a step toward the point above the named object, scaled to
at most 1 per axis), repeated. Only the tiny LLM/expert and the two embedding MLPs train, so the
probe isolates what the action model can learn from perfect spatial tokens in a given number of
steps. Prints JSON (also written to ``--out``): per evaluation, the step, the loss and, on 128
held-out scenes, the cosine between the predicted and the true horizontal direction of the first
moves and the error of the first action.

    python studies/probe_fusion_grounding.py --steps 800                  # causal prefix
    python studies/probe_fusion_grounding.py --steps 800 --bidirectional  # spatial tokens read the instruction
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from envs.tabletop.env import MAX_TRANSLATION  # noqa: E402
from envs.tabletop.expert import APPROACH_LIFT  # noqa: E402
from envs.tabletop.scene import COLOURS, PLACEMENT_HIGH, PLACEMENT_LOW  # noqa: E402
from geometry.layers import Mlp  # noqa: E402
from policies.voxel_tokens import fourier_features  # noqa: E402
from vla.action_model import DeepFusionActionModel  # noqa: E402
from vla.config import DeepFusionConfig  # noqa: E402

OBJECTS = 3
HORIZON = 10
TABLE_RGB = (0.6, 0.5, 0.4)
WORKSPACE_HALF = 0.3  # metres; positions are divided by it before the Fourier features
FREQUENCIES = 6


class SyntheticScenes:
    """Batches of (spatial tokens' positions and colours, instruction, state, target chunk)."""

    def __init__(self, tokenizer, distractors: int) -> None:
        self.tokenizer, self.distractors = tokenizer, distractors
        self.names = list(COLOURS)
        self.rgb = torch.tensor([COLOURS[n] for n in self.names])

    def sample(self, batch: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        colours = torch.stack([torch.randperm(len(self.names), generator=generator)[:OBJECTS] for _ in range(batch)])
        low, high = torch.tensor(PLACEMENT_LOW, dtype=torch.float32), torch.tensor(PLACEMENT_HIGH, dtype=torch.float32)
        xy = low + (high - low) * torch.rand(batch, OBJECTS, 2, generator=generator)
        objects = torch.cat([xy, torch.full((batch, OBJECTS, 1), 0.02)], dim=-1)
        table_xy = (torch.rand(batch, self.distractors, 2, generator=generator) * 2 - 1) * WORKSPACE_HALF
        table = torch.cat([table_xy, torch.zeros(batch, self.distractors, 1)], dim=-1)
        named = torch.randint(0, OBJECTS, (batch,), generator=generator)
        target = objects[torch.arange(batch), named]
        hand = torch.cat([torch.rand(batch, 2, generator=generator) * 0.1 - 0.05,
                          torch.rand(batch, 1, generator=generator) * 0.04 + 0.17], dim=-1)
        step = (target + torch.tensor([0.0, 0.0, APPROACH_LIFT]) - hand) / MAX_TRANSLATION
        step = step / step.abs().amax(-1, keepdim=True).clamp_min(1.0)
        chunk = torch.cat([step, -torch.ones(batch, 1)], dim=-1)[:, None].expand(batch, HORIZON, 4)
        texts = [f"touch the {self.names[int(colours[b, named[b]])]} cube" for b in range(batch)]
        ids = self.tokenizer(texts, padding="max_length", max_length=8, truncation=True, return_tensors="pt")
        return {
            "xyz": torch.cat([objects, table], dim=1),
            "rgb": torch.cat([self.rgb[colours], torch.tensor(TABLE_RGB).expand(batch, self.distractors, 3)], dim=1),
            "input_ids": ids["input_ids"], "attention_mask": ids["attention_mask"],
            "state": torch.cat([hand / 0.1, torch.ones(batch, 1)], dim=-1),
            "actions": chunk.contiguous(), "direction": (target - hand)[:, :2],
        }


def run_probe(steps: int, bidirectional: bool, lr: float = 1e-3, distractors: int = 100, batch_size: int = 16,
              evaluations: int = 4, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = DeepFusionActionModel(DeepFusionConfig(tokenizer="word", flow_samples=4, prefix_causal=not bidirectional,
                                                   action_horizon=HORIZON))
    width = model.llm_width
    xyz_embed, rgb_embed = Mlp(3 * (1 + 2 * FREQUENCIES), width, width), Mlp(3, width, width)
    params = [*model.parameters(), *xyz_embed.parameters(), *rgb_embed.parameters()]
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    scenes = SyntheticScenes(model.tokenizer, distractors)
    held_out = scenes.sample(128, torch.Generator().manual_seed(seed + 10_000))
    generator = torch.Generator().manual_seed(seed + 1)
    state_pad = model.config.max_state_dim - 4

    def prefix(scene: dict):
        tokens = xyz_embed(fourier_features(scene["xyz"] / WORKSPACE_HALF, FREQUENCIES)) + rgb_embed(scene["rgb"])
        return model.embed_prefix(scene["input_ids"], scene["attention_mask"], None, None, tokens,
                                  torch.ones(tokens.shape[:2], dtype=torch.bool))

    def evaluate() -> dict:
        with torch.no_grad():
            chunk = model.sample_actions(prefix(held_out), F.pad(held_out["state"], (0, state_pad)), action_dim=4,
                                         generator=torch.Generator().manual_seed(seed))
        cosine = F.cosine_similarity(chunk[:, :5, :2].mean(1), held_out["direction"], dim=-1).mean()
        error = (chunk[:, 0, :3] - held_out["actions"][:, 0, :3]).norm(dim=-1).mean()
        return {"direction_cosine": round(float(cosine), 4), "first_action_error": round(float(error), 4)}

    curve = []
    for step in range(1, steps + 1):
        scene = scenes.sample(batch_size, generator)
        loss = model.compute_loss(prefix(scene), scene["actions"], F.pad(scene["state"], (0, state_pad)),
                                  generator=generator)["loss"]
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()
        if step % max(1, steps // evaluations) == 0 or step == steps:
            curve.append({"step": step, "loss": round(float(loss.detach()), 4), **evaluate()})
    return {"bidirectional_prefix": bidirectional, "lr": lr, "distractors": distractors, "batch_size": batch_size,
            "curve": curve}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--bidirectional", action="store_true", help="prefix_causal=False")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--distractors", type=int, default=100, help="table-coloured tokens per scene")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run_probe(args.steps, args.bidirectional, args.lr, args.distractors, seed=args.seed)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
