"""Benchmark the voxel / Gaussian path on a clip of the built-in task; prints JSON.

CPU (default, `tiny`): voxelization time of a clip (T time steps x 4 cameras, 64 px, ground-truth
depth), voxel count per time step against the target, CPU-rasteriser render time (forward and
forward + backward) of one Gaussian per voxel into every camera, and the two-pass model forward
(ground-truth geometry). `--device cuda` adds the gsplat render time and the gsplat vs CPU
rasteriser speed ratio (both on the GPU tensors). Times are medians over `--repeats` after one
warm-up.

    MUJOCO_GL=egl python perf/bench_voxel.py
    MUJOCO_GL=egl python perf/bench_voxel.py --device cuda --targets 2048 8192
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import torch  # noqa: E402

import envs  # noqa: E402
from geometry.config import make_config  # noqa: E402
from geometry.gaussians.fitting import gaussians_of, init_from_voxels  # noqa: E402
from geometry.gaussians.render import GaussianRenderer  # noqa: E402
from geometry.training import collect_frames  # noqa: E402
from geometry.voxel import VoxelizationModule, make_voxel_config  # noqa: E402
from geometry.voxel.model import VoxelGaussianModel  # noqa: E402

CAMERAS = ("front", "left", "right", "wrist")


def timed(fn, repeats: int, device: torch.device) -> tuple[float, object]:
    """Median seconds of `fn()` over `repeats` calls after one warm-up, and the last result."""
    result = fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def clip(time_steps: int, size: int, device: torch.device) -> dict[str, torch.Tensor]:
    """One clip `[1, T, V, ...]` of the reach task under the scripted expert (every 5th step)."""
    env = gym.make(envs.TABLETOP_ID, task="reach", image_size=size, geometry=True)
    frames = collect_frames(env, envs.make_expert(env), seeds=[0], steps=5 * time_steps, every=5, cameras=CAMERAS)
    env.close()
    return {k: v[None].to(device) for k, v in frames.items()}


def render_fn(renderer: GaussianRenderer, grid, f: dict, size: int, backward: bool):
    raw, offset = init_from_voxels(grid)

    def run():
        r = raw.clone().requires_grad_(backward)
        out = renderer(gaussians_of(r, offset, grid), f["intrinsics"], f["extrinsics"], (size, size))
        if backward:
            out["images"].mean().backward()
        return out

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--time-steps", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--targets", type=int, nargs="+", default=[2048])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    S = args.image_size
    f = clip(args.time_steps, S, device)
    T, V = f["images"].shape[1:3]
    grid_hw = (S // 8, S // 8)
    feats = torch.randn(1, T, V, grid_hw[0] * grid_hw[1], 64, device=device)
    report = {"device": str(device), "preset": "tiny", "time_steps": T, "views": V, "image_size": S,
              "torch_threads": torch.get_num_threads(), "runs": []}
    for target in args.targets:
        run = {"target_voxels": target}
        for mode in ("count", "extent"):
            vox = VoxelizationModule(64, 64, make_voxel_config("tiny", target_voxels=target, voxel_size_mode=mode)).to(device)
            with torch.no_grad():
                sec, grid = timed(lambda: vox(feats, grid_hw, f["depth"], f["intrinsics"], f["extrinsics"],
                                              pixel_mask=f["valid"], images=f["images"]), args.repeats, device)
            run[f"voxelize_{mode}_s"] = sec
            run[f"voxels_per_step_{mode}"] = grid.valid.sum(-1)[0].tolist()
            run[f"voxel_size_{mode}_m"] = float(grid.voxel_size[0])
            if mode == "count":
                count_grid = grid
        renderers = {"torch": GaussianRenderer(backend="torch")}
        if device.type == "cuda":
            renderers["gsplat"] = GaussianRenderer(backend="gsplat")
        for name, renderer in renderers.items():
            with torch.no_grad():
                run[f"render_{name}_forward_s"], _ = timed(render_fn(renderer, count_grid, f, S, False), args.repeats, device)
            run[f"render_{name}_forward_backward_s"], _ = timed(render_fn(renderer, count_grid, f, S, True), args.repeats, device)
        if "gsplat" in renderers:
            run["gsplat_speedup_forward"] = run["render_torch_forward_s"] / run["render_gsplat_forward_s"]
            run["gsplat_speedup_forward_backward"] = run["render_torch_forward_backward_s"] / run["render_gsplat_forward_backward_s"]
        torch.manual_seed(0)
        model = VoxelGaussianModel(make_config("tiny"), make_voxel_config("tiny", target_voxels=target)).to(device).eval()
        with torch.no_grad():
            run["two_pass_model_forward_s"], _ = timed(lambda: model(f["images"], depth=f["depth"], intrinsics=f["intrinsics"],
                                                                     extrinsics=f["extrinsics"], pixel_mask=f["valid"]),
                                                       args.repeats, device)
        report["runs"].append(run)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
