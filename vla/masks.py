"""Boolean attention masks and position ids for the prefix + suffix sequence.

Every mask here is boolean with ``True`` meaning "may attend", shaped ``[B, 1, Nq, Nk]`` so
that it broadcasts over heads in ``F.scaled_dot_product_attention``. A query that may attend to
nothing would make SDPA return NaN, so padded prefix queries always see themselves; their
outputs are never read by a valid token.
"""

import torch
from torch import Tensor


def prefix_attention_mask(valid: Tensor, causal: bool = True) -> Tensor:
    """Prefix self-attention mask.

    Args:
        valid: ``[B, L]`` bool, ``True`` for real prefix tokens, ``False`` for padding.
        causal: token ``i`` sees tokens ``j <= i`` when true, every valid token otherwise.

    Returns:
        ``[B, 1, L, L]`` bool.

    Example (``valid = [1, 1, 0, 1]``, causal; rows are queries)::

        1 0 0 0
        1 1 0 0
        0 0 1 0     <- the padded query sees only itself
        1 1 0 1
    """
    length = valid.shape[1]
    valid = valid.bool()
    allowed = valid[:, :, None] & valid[:, None, :]
    if causal:
        allowed = allowed & torch.ones(length, length, dtype=torch.bool, device=valid.device).tril()
    eye = torch.eye(length, dtype=torch.bool, device=valid.device)
    return (allowed | eye)[:, None]


def suffix_attention_mask(valid: Tensor, suffix_len: int) -> Tensor:
    """Rows of the suffix queries over ``[prefix keys, suffix keys]``.

    Args:
        valid: ``[B, L]`` bool prefix validity.
        suffix_len: ``S``, the number of suffix tokens.

    Returns:
        ``[B, 1, S, L + S]`` bool: every valid prefix key and every suffix key.

    Example (``valid = [1, 0, 1]``, ``S = 2``)::

        1 0 1 1 1
        1 0 1 1 1
    """
    batch = valid.shape[0]
    suffix_keys = torch.ones(batch, suffix_len, dtype=torch.bool, device=valid.device)
    keys = torch.cat([valid.bool(), suffix_keys], dim=1)
    return keys[:, None, None, :].expand(-1, 1, suffix_len, -1)


def joint_attention_mask(valid: Tensor, suffix_len: int, causal: bool = True, copies: int = 1) -> Tensor:
    """Mask of the whole ``[prefix, suffix_1, ..., suffix_K]`` sequence.

    The prefix block is :func:`prefix_attention_mask`; the prefix never sees a suffix; each of
    the ``K = copies`` suffixes sees every valid prefix token and its own tokens only, so one
    pass gives each copy exactly what a pass with that copy alone would (used to train on
    several flow-matching noise draws per prefix).

    Args:
        valid: ``[B, L]`` bool prefix validity.
        suffix_len: ``S``, tokens per suffix copy.
        causal: prefix causality.
        copies: ``K`` suffix copies.

    Returns:
        ``[B, 1, L + K * S, L + K * S]`` bool.

    Example (``valid = [1, 1]``, ``S = 1``, ``K = 2``, causal)::

        1 0 0 0
        1 1 0 0
        1 1 1 0
        1 1 0 1
    """
    batch, length = valid.shape
    total = copies * suffix_len
    prefix_rows = torch.cat(
        [
            prefix_attention_mask(valid, causal),
            torch.zeros(batch, 1, length, total, dtype=torch.bool, device=valid.device),
        ],
        dim=-1,
    )
    own_copy = torch.block_diag(
        *[torch.ones(suffix_len, suffix_len, dtype=torch.bool, device=valid.device)] * copies
    )
    suffix_rows = torch.cat(
        [valid.bool()[:, None, None, :].expand(-1, 1, total, -1), own_copy.expand(batch, 1, -1, -1)], dim=-1
    )
    return torch.cat([prefix_rows, suffix_rows], dim=2)


def prefix_position_ids(valid: Tensor) -> Tensor:
    """Rotary positions of prefix tokens: ``cumsum(valid) - 1``, clamped at 0.

    Padding does not advance the position, so left and right padding give the valid tokens the
    same positions. Leading padding would get ``-1``; it is clamped to 0 (it is never attended).

    Example: ``valid = [0, 1, 1, 0, 1]`` -> ``[0, 0, 1, 1, 2]``.

    Args:
        valid: ``[B, L]`` bool.

    Returns:
        ``[B, L]`` long.
    """
    return (valid.long().cumsum(dim=1) - 1).clamp(min=0)


def suffix_position_ids(valid: Tensor, suffix_len: int) -> Tensor:
    """Rotary positions of suffix tokens: they continue after the valid prefix tokens.

    Example: ``valid = [1, 1, 0]``, ``S = 3`` -> ``[2, 3, 4]``.

    Args:
        valid: ``[B, L]`` bool prefix validity.
        suffix_len: ``S``.

    Returns:
        ``[B, S]`` long.
    """
    n_valid = valid.long().sum(dim=1, keepdim=True)
    return n_valid + torch.arange(suffix_len, device=valid.device)[None]


def fold_mask_for_groups(mask: Tensor, groups: int) -> Tensor:
    """Repeat mask rows to match queries folded by :func:`vla.deep_fusion.grouped_attention`.

    With grouped-query attention the ``G`` query heads that share one key/value head are folded
    into the query axis (row ``g * N + n`` is query ``n`` of group member ``g``), so the mask rows
    repeat ``G`` times.

    Example: rows ``[r0, r1]`` with ``groups = 2`` -> ``[r0, r1, r0, r1]``.

    Args:
        mask: ``[B, 1, N, M]`` bool.
        groups: query heads per key/value head.

    Returns:
        ``[B, 1, G * N, M]`` bool.
    """
    if groups == 1:
        return mask
    return mask.repeat(1, 1, groups, 1)
