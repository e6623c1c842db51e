"""Pure functions of voxelization: the clip's voxel size, cell assignment and weighted scatter."""

from __future__ import annotations

import math

import torch

from geometry.voxel.morton import BITS, cell_ids

_MAX_CELLS_PER_AXIS = 1 << (BITS - 2)


def assign_voxels(points: torch.Tensor, valid: torch.Tensor, voxel_size: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Points `[M, 3]` with a validity mask `[M]` -> sorted unique voxel ids `[n]` and, per point,
    its voxel's row `[M]` (-1 for invalid points).

    Example (voxel size 1): points (0.2, 0, 0), (0.7, 0.1, 0), (1.5, 0, 0) -> the first two share
    cell (0, 0, 0) and the third is cell (1, 0, 0): ids `[id0, id0 + 1]`, rows `[0, 0, 1]`.
    """
    rows = torch.full(valid.shape, -1, dtype=torch.long, device=points.device)
    ids = cell_ids(torch.floor(points[valid] / voxel_size))
    unique, inverse = torch.unique(ids, return_inverse=True)
    rows[valid] = inverse
    return unique, rows


def occupied_count(points: torch.Tensor, valid: torch.Tensor, voxel_size: float) -> int:
    """Largest number of occupied cells over the time steps of `points [T, M, 3]`, `valid [T, M]`."""
    return max(int(torch.unique(cell_ids(torch.floor(p[m] / voxel_size))).shape[0]) for p, m in zip(points, valid))


def clip_voxel_size(points: torch.Tensor, valid: torch.Tensor, target: int, mode: str = "extent",
                    iterations: int = 14, tolerance: float = 0.03) -> float:
    """One voxel size for a whole clip, `points [T, M, 3]`, `valid [T, M]`.

    "extent": `extent / target ** (1/3)` with extent the largest side of the bounding box of all
    valid points of all time steps (seed 001). Example: points spanning 2 m, target 1000 -> 0.2 m.
    "count": bisection (in log size) from there towards the size at which the busiest time step
    occupies `target` cells; it stops once the count lies in `[(1 - tolerance) target, target]`.
    Sharing the size over time is what keeps a static point's id fixed.
    """
    if not bool(valid.any()):
        raise ValueError("voxelization got no valid point (check depth, the cameras, max_depth, pixel_mask and bounds)")
    pts = points[valid]
    extent = float((pts.max(0).values - pts.min(0).values).max())
    limit = float(pts.abs().max()) / _MAX_CELLS_PER_AXIS
    size = max(extent / target ** (1.0 / 3.0), limit, 1e-9)
    if mode == "extent":
        return size
    if mode != "count":
        raise ValueError(f"voxel size mode {mode!r} must be 'extent' or 'count'")
    lo = hi = math.log(size)
    for _ in range(40):  # halve until the budget is reached or every point has its own cell
        if occupied_count(points, valid, math.exp(lo)) >= target or math.exp(lo) <= 2 * limit:
            break
        lo -= math.log(2.0)
    for _ in range(40):
        if occupied_count(points, valid, math.exp(hi)) <= target:
            break
        hi += math.log(2.0)
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        count = occupied_count(points, valid, math.exp(mid))
        if count > target:
            lo = mid
        else:
            hi = mid
            if count >= (1 - tolerance) * target:
                break
    return max(math.exp(hi), limit)


def segment_softmax(scores: torch.Tensor, segments: torch.Tensor, num_segments: int) -> torch.Tensor:
    """Softmax of `scores [M]` within each segment (`segments [M]` in `[0, num_segments)`).

    Example: scores `[0, 0, ln 3, 0]`, segments `[0, 0, 1, 1]` -> `[0.5, 0.5, 0.75, 0.25]`; the
    weights of every segment sum to 1.
    """
    peak = scores.new_full((num_segments,), float("-inf")).scatter_reduce(0, segments, scores, "amax")
    e = torch.exp(scores - peak[segments])
    total = e.new_zeros(num_segments).index_add(0, segments, e)
    return e / total[segments]


def weighted_scatter(values: torch.Tensor, weights: torch.Tensor, segments: torch.Tensor, num_segments: int) -> torch.Tensor:
    """`out[s] = sum over i with segments[i] == s of weights[i] * values[i]`; `[M, D] -> [num_segments, D]`.

    Example: values `[[1], [3], [5]]`, weights `[0.5, 0.5, 1]`, segments `[0, 0, 1]` -> `[[2], [5]]`.
    """
    out = values.new_zeros(num_segments, values.shape[-1])
    return out.index_add(0, segments, values * weights[:, None])
