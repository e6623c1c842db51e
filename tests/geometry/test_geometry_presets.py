"""The three presets build and run: tiny and small on CPU, full on the meta device."""

import torch

from geometry.config import PRESETS, make_config, scaled_layers
from geometry.model import GeometryModel


def test_scaled_layers_examples():
    assert scaled_layers(24) == (4, 11, 17, 23)
    assert scaled_layers(12) == (2, 5, 8, 11)
    assert scaled_layers(6) == (1, 2, 4, 5)
    assert PRESETS["tiny"].dpt_layers == (1, 2, 4, 5)


def test_preset_sizes():
    tiny, small, full = (make_config(p) for p in ("tiny", "small", "full"))
    assert (tiny.img_size, tiny.embed_dim, tiny.depth) == (64, 64, 6) and tiny.patch_size in (8, 14)
    assert (small.img_size, small.embed_dim, small.depth) == (224, 384, 12)
    assert (full.img_size // full.patch_size, full.embed_dim, full.depth, full.num_heads) == (27, 1024, 24, 16)


@torch.no_grad()
def test_small_forward_on_cpu():
    torch.manual_seed(0)
    model = GeometryModel(make_config("small", track_head=False)).eval()
    out = model(torch.rand(1, 1, 2, 3, 224, 224))
    assert out["depth"].shape == (1, 1, 2, 224, 224) and out["pose_enc"].shape == (1, 2, 9)
    assert torch.isfinite(out["depth"]).all() and (out["depth"] > 0).all()


def test_full_builds_and_runs_on_meta():
    with torch.device("meta"):
        model = GeometryModel(make_config("full"))
        out = model(torch.empty(1, 2, 2, 3, 378, 378), query_points=torch.empty(1, 4, 2))
    n_params = sum(p.numel() for p in model.parameters())
    n_vggt_like = n_params - sum(p.numel() for n, p in model.named_parameters()
                                 if any(k in n for k in ("view_mixer", "view_camera_token", "time_register_token",
                                                         "time_embed", "view_embed", "camera_param_embed",
                                                         "dynamics_mask", "view_proj")))
    print(f"full preset: {n_params:,} parameters ({n_vggt_like:,} in VGGT-shaped modules)")
    # VGGT-1B (1,256,537,516) minus its mask token (1024) and the class token's position (1024, folded
    # into the class token); the position table stays VGGT's 37x37: the same modules otherwise
    assert model.aggregator.patch_embed.vit.pos_embed.shape == (1, 37 * 37, 1024)
    assert n_vggt_like == 1_256_537_516 - 1024 - 1024
    assert out["depth"].shape == (1, 2, 2, 378, 378) and out["world_points"].shape == (1, 2, 2, 378, 378, 3)
    assert out["pose_enc"].shape == (1, 2, 9) and out["track"].shape == (1, 4, 4, 2)
    assert out["mask_logits"].shape == (1, 4 * 27 * 27)
