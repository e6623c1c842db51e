"""Compare the PyTorch rasteriser with gsplat on CUDA; prints JSON (max / mean differences).

Needs a CUDA GPU with gsplat (1.5.3) built; on a machine without one it exits with a message.
Random scenes of Gaussians (SH degree 4) in front of several 64x64 / 128x128 cameras are rendered
by both backends of `GaussianRenderer` from the same tensors, and the images, alphas, expected
depths (where alpha > 0.5), visibilities and the gradients of an L1 loss are compared.

Expected tolerance (float32): mean |difference| of images and alphas below 1e-4 and max below
1e-2 — the only differences should come from pixels where a Gaussian's alpha sits at the 1/255
cut-off or the transmittance at the 1e-4 stop (gsplat composites in float32, the PyTorch path
accumulates log-transmittance in float64); visibility agreement above 99.9 %; gradient cosine
similarity above 0.99.

    python perf/compare_gsplat.py --gaussians 2000 --views 3
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from geometry.gaussians.params import Gaussians
from geometry.gaussians.render import GaussianRenderer

TOLERANCE = {"images_mean": 1e-4, "images_max": 1e-2, "alpha_mean": 1e-4, "alpha_max": 1e-2,
             "visibility_agreement": 0.999, "grad_cosine": 0.99}


def look_at(eye: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """OpenCV camera-from-world `[3, 4]` of a camera at `eye` looking at `target` (world z up)."""
    z = torch.nn.functional.normalize(target - eye, dim=0)
    x = torch.nn.functional.normalize(torch.linalg.cross(z, torch.tensor([0.0, 0.0, 1.0])), dim=0)
    y = torch.linalg.cross(z, x)
    R = torch.stack([x, y, z])
    return torch.cat([R, (-R @ eye)[:, None]], dim=1)


def scene(n: int, views: int, size: int, seed: int, device: torch.device) -> tuple[Gaussians, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * 0.4
    quats = torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1)
    scales = torch.rand(n, 3, generator=g) * 0.05 + 0.005
    opac = torch.rand(n, generator=g) * 0.9 + 0.05
    sh = torch.randn(n, 25, 3, generator=g) * torch.cat([torch.ones(1), 0.2 * torch.ones(24)]).view(25, 1)
    gs = Gaussians(means=means, quats=quats, scales=scales, opacities=opac, sh=sh, valid=torch.ones(n, dtype=torch.bool))
    gs = Gaussians(**{k: getattr(gs, k)[None, None].to(device) for k in ("means", "quats", "scales", "opacities", "sh", "valid")})
    f = size * 0.9
    K = torch.tensor([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]]).expand(views, 3, 3)
    angles = torch.arange(views) * 2 * torch.pi / views
    E = torch.stack([look_at(torch.tensor([2.5 * a.cos(), 2.5 * a.sin(), 0.8]), torch.zeros(3)) for a in angles])
    return gs, K[None, None].to(device), E[None, None].to(device)


def render_with_grads(backend: str, gs: Gaussians, K: torch.Tensor, E: torch.Tensor, size: int, target: torch.Tensor):
    leaves = {k: getattr(gs, k).detach().clone().requires_grad_(True) for k in ("means", "scales", "opacities", "sh")}
    g = Gaussians(means=leaves["means"], quats=gs.quats, scales=leaves["scales"], opacities=leaves["opacities"],
                  sh=leaves["sh"], valid=gs.valid)
    out = GaussianRenderer(backend=backend)(g, K, E, (size, size))
    (out["images"] - target).abs().mean().backward()
    return {k: v.detach() for k, v in out.items()}, {k: v.grad for k, v in leaves.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gaussians", type=int, default=2000)
    parser.add_argument("--views", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("compare_gsplat.py needs a CUDA GPU (gsplat's rasteriser is CUDA-only); none is available here")
    device = torch.device("cuda")
    results = []
    for size in args.sizes:
        for seed in range(args.seeds):
            gs, K, E = scene(args.gaussians, args.views, size, seed, device)
            target = torch.rand(1, 1, args.views, 3, size, size, device=device)
            ref, ref_grad = render_with_grads("gsplat", gs, K, E, size, target)
            out, grad = render_with_grads("torch", gs, K, E, size, target)
            solid = (ref["alpha"] > 0.5) & (out["alpha"] > 0.5)
            row = {"size": size, "seed": seed}
            for key in ("images", "alpha"):
                diff = (ref[key] - out[key]).abs()
                row[f"{key}_max"], row[f"{key}_mean"] = float(diff.max()), float(diff.mean())
            row["depth_rel_mean"] = float(((ref["depth"] - out["depth"]).abs() / ref["depth"].clamp_min(1e-6))[solid].mean())
            row["visibility_agreement"] = float((ref["visibility"] == out["visibility"]).float().mean())
            for k in grad:
                row[f"grad_cosine_{k}"] = float(torch.nn.functional.cosine_similarity(
                    ref_grad[k].flatten(), grad[k].flatten(), dim=0))
            results.append(row)
    worst = {k: (min if k.startswith(("visibility", "grad")) else max)(r[k] for r in results)
             for k in results[0] if k not in ("size", "seed")}
    ok = (worst["images_mean"] <= TOLERANCE["images_mean"] and worst["images_max"] <= TOLERANCE["images_max"]
          and worst["alpha_mean"] <= TOLERANCE["alpha_mean"] and worst["alpha_max"] <= TOLERANCE["alpha_max"]
          and worst["visibility_agreement"] >= TOLERANCE["visibility_agreement"]
          and all(v >= TOLERANCE["grad_cosine"] for k, v in worst.items() if k.startswith("grad_cosine")))
    print(json.dumps({"device": torch.cuda.get_device_name(), "gaussians": args.gaussians, "views": args.views,
                      "tolerance": TOLERANCE, "worst": worst, "within_tolerance": ok, "runs": results}, indent=2))


if __name__ == "__main__":
    main()
