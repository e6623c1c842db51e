"""Per-layer key/value caches of streaming inference, evictable in place, and their budget groups."""

from __future__ import annotations

from collections.abc import Callable

import torch

from geometry.layers.eviction import compaction_moves, keep_mask, similarity_scores, split_budget
from geometry.layers.masks import GroupMasks, suppression_bias

PrepareKeys = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]
QueryStrengths = list[tuple[torch.Tensor, torch.Tensor | float | None]]


class KVCache:
    """Keys and values that one attention layer has seen in a stream, `[R, heads, length, D]`.

    Rows R are the layer's attention groups (B for global attention, B*V for temporal frame
    attention: `rows_per_sample` = V). Buffers are preallocated and grow geometrically; a step
    appends in place and eviction fills holes in place (`geometry.layers.eviction.compaction_moves`), so
    no step copies the whole cache. The first append's tokens are the anchors.

    Key layout (`rotated`): True stores keys after q/k norm and RoPE, as attention uses them. We
    choose it by default because this model's RoPE is 2D over the patch grid with no time axis:
    a key's rotation never changes as the stream grows or tokens are evicted, so caching it
    rotated is exact and saves re-normalising and re-rotating the whole cache every step.
    False stores raw keys with their positions and prepares them each step (for position
    schemes that re-index cached tokens); both give the same outputs.

    With `key_mask=True` the cache also keeps each key's dynamics-mask value (global attention
    after stage 1); `stage_key_mask` hands the next step's values and query groups to `update`,
    which then returns per query group the additive bias `log(1 - s * m_k)` as one row
    `[R, H, 1, length]` (see `geometry.layers.masks.GroupMasks`): the bias costs O(length) a
    step, not O(queries x length).
    """

    def __init__(self, rows_per_sample: int = 1, rotated: bool = True, key_mask: bool = False) -> None:
        self.rows_per_sample = rows_per_sample
        self.rotated = rotated
        self.buffers: dict[str, torch.Tensor] = {}
        self.length = 0
        self.anchors = 0
        self.has_key_mask = key_mask
        self._staged: tuple[torch.Tensor, QueryStrengths] | None = None
        self._attended_keys: torch.Tensor | None = None

    @property
    def tokens(self) -> int:
        """Cached tokens per batch sample (summed over its rows), the unit of the budgets."""
        return self.length * self.rows_per_sample

    @property
    def nbytes(self) -> int:
        """Bytes allocated by the buffers (capacity, not length)."""
        return sum(b.numel() * b.element_size() for b in self.buffers.values())

    def stage_key_mask(self, key_mask: torch.Tensor, groups: QueryStrengths) -> None:
        """Dynamics-mask values `[R, n]` of the next update's keys, and its queries grouped by
        strength: (query indices, strength s or None for no bias), from
        `geometry.dynamics_mask.query_groups`."""
        self._staged = (key_mask, groups)

    def _append(self, fields: dict[str, torch.Tensor]) -> None:
        n = next(iter(fields.values())).shape[2]
        needed = self.length + n
        for name, new in fields.items():
            buf = self.buffers.get(name)
            if buf is None or buf.shape[2] < needed:
                grown = new.new_empty(*new.shape[:2], max(needed, 2 * (0 if buf is None else buf.shape[2])), *new.shape[3:])
                if buf is not None:
                    grown[:, :, : self.length] = buf[:, :, : self.length]
                self.buffers[name] = buf = grown
            buf[:, :, self.length: needed] = new
        if self.length == 0:
            self.anchors = n
        self.length = needed

    def update(self, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor | None,
               prepare_keys: PrepareKeys) -> tuple[torch.Tensor, torch.Tensor, GroupMasks | None]:
        """Append raw keys `k` and values `v` `[R, H, n, D]` (positions `[R, n, 2]` or None).

        Returns the keys (normalised and rotated by `prepare_keys`) and values over all cached
        tokens `[R, H, length, D]` and the per-query-group bias rows (None without a key mask).
        """
        fields = {"v": v}
        if self.rotated:
            fields["k"] = prepare_keys(k, pos)
        else:
            fields["k"] = k
            if pos is not None:
                fields["pos"] = pos.unsqueeze(1).expand(-1, k.shape[1], -1, -1)
        if self.has_key_mask:
            if self._staged is None:
                raise ValueError("this cache keeps dynamics-mask values: call stage_key_mask before update")
            key_mask, groups = self._staged
            fields["m"] = key_mask.unsqueeze(1).expand(-1, k.shape[1], -1).to(v.dtype)
            self._staged = None
        self._append(fields)
        view = {name: buf[:, :, : self.length] for name, buf in self.buffers.items()}
        keys = view["k"] if self.rotated else prepare_keys(view["k"], view.get("pos"))
        self._attended_keys = keys
        if not self.has_key_mask:
            return keys, view["v"], None
        m = view["m"].unsqueeze(2)
        return keys, view["v"], [(idx, None if s is None else suppression_bias(s, m)) for idx, s in groups]

    def evict(self, budget: int) -> torch.Tensor:
        """Shrink to `budget` tokens per sample; returns the layer's mean similarity score.

        Keeps the anchors and, per head, the candidates least similar to their mean normalised
        key (scored on the keys as the last attention used them).
        """
        per_row = budget // self.rows_per_sample
        if per_row < self.anchors:
            raise ValueError(f"budget {budget} leaves {per_row} tokens per row, below the {self.anchors} anchors")
        if self._attended_keys is None:
            raise ValueError("evict needs the keys of a preceding update")
        scores, mean_score = similarity_scores(self._attended_keys[:, :, self.anchors:])
        src, dst, valid = compaction_moves(keep_mask(scores, self.anchors, per_row - self.anchors), per_row)
        for buf in self.buffers.values():
            tail = (1,) * (buf.dim() - 3)
            s = src.view(*src.shape, *tail).expand(*src.shape, *buf.shape[3:])
            d = dst.view(*dst.shape, *tail).expand(*dst.shape, *buf.shape[3:])
            ok = valid.view(*valid.shape, *tail)
            buf.scatter_(2, d, torch.where(ok, buf.gather(2, s), buf.gather(2, d)))
        self.length = per_row
        self._attended_keys = None
        return mean_score


class CacheGroup:
    """Caches that share one token budget, split by `geometry.layers.eviction.split_budget`.

    `total=None` is unbounded (nothing is ever evicted). `scores` holds each layer's last mean
    similarity score (0 until the layer first evicts, i.e. an even split).
    """

    def __init__(self, caches: list[KVCache], total: int | None) -> None:
        self.caches = caches
        self.total = total
        self.scores = torch.zeros(len(caches), dtype=torch.float64)

    def check(self, anchor_tokens: int) -> None:
        """Raise ValueError if `total` cannot hold `anchor_tokens` per layer."""
        if self.total is not None:
            split_budget(self.scores, self.total, anchor_tokens)

    def enforce(self) -> None:
        """Evict every cache holding more than its budget and record its mean score."""
        if self.total is None or not self.caches:
            return
        floor = max(c.anchors * c.rows_per_sample for c in self.caches)
        for i, (cache, budget) in enumerate(zip(self.caches, split_budget(self.scores, self.total, floor))):
            if cache.tokens > budget:
                self.scores[i] = float(cache.evict(budget))

    @property
    def tokens(self) -> int:
        return sum(c.tokens for c in self.caches)

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.caches)


__all__ = ["CacheGroup", "KVCache"]
