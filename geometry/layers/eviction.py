"""KV-cache eviction and budget split of streaming inference (InfiniteVGGT), as pure functions.

A cache row holds `L` keys per head: the anchors (the first time step) at `[0, A)`, the other
candidates after them. When a layer holds more than its budget, it keeps the anchors and, per
head, the candidates least similar (cosine) to the mean normalised candidate key; the mean score
of the layer then sets its share of the next budget split.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TEMPERATURE = 0.5


def similarity_scores(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores `<k_i/|k_i|, mu>` `[R, H, M]` of candidate keys `[R, H, M, D]`, and their mean.

    `mu` is the per-(row, head) mean of the normalised keys, so the mean score over i is
    `|mu|^2` (1 when all keys point the same way, near 0 when they spread out); the returned mean
    averages it over rows and heads (a 0-d tensor). Example (one row, one head): keys
    `[[1, 0], [1, 0], [0, 1]]` give mu = (2/3, 1/3), scores `[2/3, 2/3, 1/3]`, mean 5/9.
    """
    unit = F.normalize(keys.to(torch.promote_types(keys.dtype, torch.float32)), dim=-1)
    mu = unit.mean(dim=2, keepdim=True)
    scores = (unit * mu).sum(-1)
    return scores, mu.squeeze(2).square().sum(-1).mean()


def keep_mask(scores: torch.Tensor, num_anchors: int, keep: int) -> torch.Tensor:
    """Boolean `[R, H, A + M]`: the `A` anchors and, per head, the `keep` lowest of `scores [R, H, M]`.

    Example (A=1, keep=2): scores `[0.9, 0.1, 0.5, 0.3]` -> `[T, F, T, F, T]` (anchor, then the
    candidates scoring 0.1 and 0.3).
    """
    R, H, M = scores.shape
    if not 0 <= keep <= M:
        raise ValueError(f"keep={keep} must lie in [0, {M}] candidates")
    mask = torch.zeros(R, H, num_anchors + M, dtype=torch.bool, device=scores.device)
    mask[..., :num_anchors] = True
    lowest = scores.topk(keep, dim=-1, largest=False).indices
    return mask.scatter_(-1, num_anchors + lowest, True)


def compaction_moves(keep: torch.Tensor, new_length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Moves that pack the kept slots of `keep [R, H, L]` into `[0, new_length)` in place.

    Every (row, head) keeps exactly `new_length` slots. Kept slots at or after `new_length` move
    into the dropped slots before it; everything else stays where it is, so one step costs at most
    `L - new_length` copies instead of a copy of the whole cache. Returns `src`, `dst` `[R, H, m]`
    (slot indices, m = min(L - new_length, new_length)) and `valid` `[R, H, m]` (False where a
    (row, head) has fewer moves than m; those pairs must be skipped). Example (new_length 3):
    keep `[T, F, T, F, T]` -> src `[4, 3]`, dst `[1, 0]`, valid `[T, F]`: slot 4 moves into hole 1.
    """
    L = keep.shape[-1]
    m = min(L - new_length, new_length)
    head, tail = keep[..., :new_length], keep[..., new_length:]
    dst = torch.argsort(head.to(torch.uint8), dim=-1, stable=True)[..., :m]
    src = new_length + torch.argsort((~tail).to(torch.uint8), dim=-1, stable=True)[..., :m]
    holes = (~head).sum(-1, keepdim=True)
    valid = torch.arange(m, device=keep.device) < holes
    return src, dst, valid


def split_budget(scores: torch.Tensor, total: int, floor: int = 0) -> list[int]:
    """Per-layer token budgets from the layers' mean scores `[L]`; they sum to `total`.

    `budget_l = floor + softmax((1 - score_l) / 0.5)_l * (total - L * floor)`, rounded by largest
    remainder so the sum is exact. With `floor = 0` this is InfiniteVGGT's
    `softmax((1 - s) / 0.5) * total`; the floor reserves each layer's anchors so they always fit.
    Example: scores `[0, 0]`, total 10 -> `[5, 5]`; scores `[1, 0]`, total 100, floor 10 ->
    `[10 + 80 * 0.119, 10 + 80 * 0.881]` -> `[20, 80]`.
    """
    L = scores.shape[0]
    spare = total - L * floor
    if spare < 0:
        raise ValueError(f"total budget {total} is below {L} layers x {floor} anchor tokens = {L * floor}")
    share = torch.softmax((1.0 - scores.double()) / TEMPERATURE, dim=0) * spare
    base = share.floor()
    order = torch.argsort(share - base, descending=True)
    extra = torch.zeros_like(base)
    extra[order[: spare - int(base.sum())]] = 1
    return [floor + int(b) for b in (base + extra).tolist()]


__all__ = ["compaction_moves", "keep_mask", "similarity_scores", "split_budget"]
