"""The language vector that conditions FiLM and the router."""

from __future__ import annotations

import torch

from vla.checks import check_instruction_mask


def mean_instruction_embedding(embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the LLM input embeddings over the valid (non-padding) instruction tokens.

    embeddings: [B, L, D] (the LLM's `embed_tokens(input_ids)`), mask: [B, L] bool or 0/1,
    true at real tokens → [B, D] in the dtype of `embeddings` (accumulated in float32).

    Example: embeddings[0] = [[1, 1], [3, 3], [9, 9]], mask[0] = [1, 1, 0] → [2, 2]; the padding
    token (9, 9) is ignored whether it sits on the left or the right.
    """
    if embeddings.ndim != 3:
        raise ValueError(f"embeddings must be [B, L, D], got shape {tuple(embeddings.shape)}")
    if mask.shape != embeddings.shape[:2]:
        raise ValueError(
            f"mask must be [B, L] = {tuple(embeddings.shape[:2])}, got shape {tuple(mask.shape)}"
        )
    weights = mask.to(torch.float32)
    counts = weights.sum(dim=1, keepdim=True)  # [B, 1]
    check_instruction_mask("mask", mask)
    total = torch.einsum("bl,bld->bd", weights, embeddings.to(torch.float32))
    return (total / counts).to(embeddings.dtype)
