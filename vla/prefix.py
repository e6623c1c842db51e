"""Assembling the prefix: visual and spatial tokens placed into the embedded instruction.

The tokenised instruction carries one ``<image>`` id per visual token and one ``<spatial>`` id
per spatial token. When it carries no ``<spatial>`` ids, :func:`insert_placeholders` puts them
right after the last ``<image>`` id. :func:`scatter_tokens` then writes the tokens over the
placeholder embeddings, in order, and marks the slots of masked tokens as invalid.
"""

from dataclasses import dataclass

import torch
from torch import Tensor

from vla.checks import values_checked


@dataclass
class Prefix:
    """The prefix as the deep-fusion decoder sees it.

    Args:
        embeds: ``[B, L, D]`` token embeddings (instruction, visual and spatial tokens).
        valid: ``[B, L]`` bool, ``False`` at padding and at masked visual/spatial tokens.
    """

    embeds: Tensor
    valid: Tensor


def insert_placeholders(
    input_ids: Tensor, attention_mask: Tensor, count: int, token_id: int, after_id: int
) -> tuple[Tensor, Tensor]:
    """Insert ``count`` copies of ``token_id`` after the last ``after_id`` of each row.

    A row without ``after_id`` gets them before its first valid token.

    Example (``count=2``, ``token_id=9``, ``after_id=5``)::

        ids  [5, 5, 7, 0]   mask [1, 1, 1, 0]
        ->   [5, 5, 9, 9, 7, 0]   [1, 1, 1, 1, 1, 0]

    Args:
        input_ids: ``[B, L]`` long.
        attention_mask: ``[B, L]``, nonzero at real tokens.
        count: number of ids to insert.
        token_id: the inserted id.
        after_id: the id after whose last occurrence to insert.

    Returns:
        ``(input_ids [B, L + count], attention_mask [B, L + count])``.
    """
    batch, length = input_ids.shape
    positions = torch.arange(length, device=input_ids.device).expand(batch, -1)
    is_after = input_ids == after_id
    last_after = torch.where(is_after, positions, -1).amax(dim=1)
    first_valid = torch.where(attention_mask.bool(), positions, length).amin(dim=1)
    insert_at = torch.where(last_after >= 0, last_after + 1, first_valid)[:, None]

    out_pos = torch.arange(length + count, device=input_ids.device).expand(batch, -1)
    inserted = (out_pos >= insert_at) & (out_pos < insert_at + count)
    source = torch.where(out_pos < insert_at, out_pos, out_pos - count).clamp(0, length - 1)
    ids = torch.where(inserted, token_id, input_ids.gather(1, source))
    mask = torch.where(inserted, 1, attention_mask.long().gather(1, source))
    return ids, mask.to(attention_mask.dtype)


def scatter_tokens(
    embeds: Tensor,
    valid: Tensor,
    input_ids: Tensor,
    token_id: int,
    tokens: Tensor,
    token_mask: Tensor | None,
    name: str,
) -> tuple[Tensor, Tensor]:
    """Write ``tokens`` over the embeddings at the ``token_id`` positions, in order.

    Example: ids ``[3, 9, 9, 4]`` with ``token_id=9``, tokens ``[t0, t1]`` and mask ``[1, 0]``
    -> embeddings ``[e3, t0, t1, e4]``, validity ``[v, v, False, v]``.

    Args:
        embeds: ``[B, L, D]`` instruction embeddings.
        valid: ``[B, L]`` bool validity.
        input_ids: ``[B, L]`` long.
        token_id: placeholder id.
        tokens: ``[B, N, D]``.
        token_mask: ``[B, N]`` (nonzero = present) or None for all present.
        name: the tokens' name for error messages.

    Returns:
        ``(embeds [B, L, D], valid [B, L])``, new tensors.
    """
    batch, n_tokens, width = tokens.shape
    if width != embeds.shape[-1] or tokens.shape[0] != embeds.shape[0]:
        raise ValueError(
            f"{name} must be [B={embeds.shape[0]}, N, D={embeds.shape[-1]}], got {tuple(tokens.shape)}"
        )
    slots = input_ids == token_id
    counts = slots.sum(dim=1)
    if values_checked() and bool((counts != n_tokens).any()):
        raise ValueError(
            f"{name}: each row of input_ids needs {n_tokens} placeholder ids {token_id}, "
            f"got counts {counts.tolist()}"
        )
    embeds = embeds.masked_scatter(slots[..., None], tokens.to(embeds.dtype))
    if token_mask is not None:
        if token_mask.shape != (batch, n_tokens):
            raise ValueError(
                f"{name} mask must be [{batch}, {n_tokens}], got {tuple(token_mask.shape)}"
            )
        present = torch.ones_like(valid).masked_scatter(slots, token_mask.bool())
        valid = valid & present
    return embeds, valid
