"""VGGT weights: the converter maps every VGGT key (checked against the real VGGT-1B key list on
the meta device) and a converted model in legacy mode computes VGGT's alternating attention,
re-stated here from the raw VGGT-named weights."""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from geometry.config import make_config
from geometry.model import GeometryModel
from geometry.pretrained import convert_vggt_state_dict, load_vggt_weights

SHAPES = Path("/work/shared/data/vggt_1b_state_dict_shapes.json")
C, HEADS, DEPTH, PE_DEPTH, PATCH, GRID, FEAT, OC = 64, 4, 6, 2, 8, 4, 16, (16, 24, 32, 32)


def _block_shapes(prefix, dim, qk_norm):
    hd = dim // HEADS
    shapes = {f"{prefix}norm1.weight": (dim,), f"{prefix}norm1.bias": (dim,),
              f"{prefix}attn.qkv.weight": (3 * dim, dim), f"{prefix}attn.qkv.bias": (3 * dim,),
              f"{prefix}attn.proj.weight": (dim, dim), f"{prefix}attn.proj.bias": (dim,),
              f"{prefix}ls1.gamma": (dim,), f"{prefix}norm2.weight": (dim,), f"{prefix}norm2.bias": (dim,),
              f"{prefix}mlp.fc1.weight": (4 * dim, dim), f"{prefix}mlp.fc1.bias": (4 * dim,),
              f"{prefix}mlp.fc2.weight": (dim, 4 * dim), f"{prefix}mlp.fc2.bias": (dim,), f"{prefix}ls2.gamma": (dim,)}
    if qk_norm:
        shapes.update({f"{prefix}attn.{n}_norm.{p}": (hd,) for n in "qk" for p in ("weight", "bias")})
    return shapes


def _dpt_shapes(prefix, out_dim):
    s = {f"{prefix}norm.weight": (2 * C,), f"{prefix}norm.bias": (2 * C,)}
    for i, ch in enumerate(OC):
        s[f"{prefix}projects.{i}.weight"], s[f"{prefix}projects.{i}.bias"] = (ch, 2 * C, 1, 1), (ch,)
        s[f"{prefix}scratch.layer{i + 1}_rn.weight"] = (FEAT, ch, 3, 3)
    for i, k in ((0, 4), (1, 2), (3, 3)):
        s[f"{prefix}resize_layers.{i}.weight"], s[f"{prefix}resize_layers.{i}.bias"] = (OC[i], OC[i], k, k), (OC[i],)
    for r in range(1, 5):
        p = f"{prefix}scratch.refinenet{r}."
        s[p + "out_conv.weight"], s[p + "out_conv.bias"] = (FEAT, FEAT, 1, 1), (FEAT,)
        for unit in (("resConfUnit1", "resConfUnit2") if r < 4 else ("resConfUnit2",)):
            for conv in ("conv1", "conv2"):
                s[f"{p}{unit}.{conv}.weight"], s[f"{p}{unit}.{conv}.bias"] = (FEAT, FEAT, 3, 3), (FEAT,)
    s[f"{prefix}scratch.output_conv1.weight"], s[f"{prefix}scratch.output_conv1.bias"] = (FEAT // 2, FEAT, 3, 3), (FEAT // 2,)
    s[f"{prefix}scratch.output_conv2.0.weight"], s[f"{prefix}scratch.output_conv2.0.bias"] = (32, FEAT // 2, 3, 3), (32,)
    s[f"{prefix}scratch.output_conv2.2.weight"], s[f"{prefix}scratch.output_conv2.2.bias"] = (out_dim, 32, 1, 1), (out_dim,)
    return s


def vggt_like_state_dict(seed=0):
    """A VGGT-named state dict at width 64 (aggregator, camera, depth and point heads)."""
    s = {"aggregator.camera_token": (1, 2, 1, C), "aggregator.register_token": (1, 2, 4, C),
         "aggregator.patch_embed.cls_token": (1, 1, C), "aggregator.patch_embed.pos_embed": (1, 1 + GRID * GRID, C),
         "aggregator.patch_embed.register_tokens": (1, 4, C), "aggregator.patch_embed.mask_token": (1, C),
         "aggregator.patch_embed.patch_embed.proj.weight": (C, 3, PATCH, PATCH),
         "aggregator.patch_embed.patch_embed.proj.bias": (C,),
         "aggregator.patch_embed.norm.weight": (C,), "aggregator.patch_embed.norm.bias": (C,),
         "camera_head.empty_pose_tokens": (1, 1, 9), "camera_head.token_norm.weight": (2 * C,),
         "camera_head.token_norm.bias": (2 * C,), "camera_head.trunk_norm.weight": (2 * C,),
         "camera_head.trunk_norm.bias": (2 * C,), "camera_head.embed_pose.weight": (2 * C, 9),
         "camera_head.embed_pose.bias": (2 * C,), "camera_head.poseLN_modulation.1.weight": (6 * C, 2 * C),
         "camera_head.poseLN_modulation.1.bias": (6 * C,), "camera_head.pose_branch.fc1.weight": (C, 2 * C),
         "camera_head.pose_branch.fc1.bias": (C,), "camera_head.pose_branch.fc2.weight": (9, C),
         "camera_head.pose_branch.fc2.bias": (9,)}
    for i in range(PE_DEPTH):
        s.update(_block_shapes(f"aggregator.patch_embed.blocks.{i}.", C, qk_norm=False))
    for i in range(DEPTH):
        s.update(_block_shapes(f"aggregator.frame_blocks.{i}.", C, qk_norm=True))
        s.update(_block_shapes(f"aggregator.global_blocks.{i}.", C, qk_norm=True))
    for i in range(2):
        s.update(_block_shapes(f"camera_head.trunk.{i}.", 2 * C, qk_norm=False))
    s.update(_dpt_shapes("depth_head.", 2))
    s.update(_dpt_shapes("point_head.", 4))
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in s.items():
        base = 1.0 if ("norm" in k and k.endswith("weight") and len(shape) == 1) else 0.0
        sd[k] = base + 0.1 * torch.randn(shape, generator=g)
    return sd


def _config():
    return make_config("tiny", img_size=GRID * PATCH, camera_trunk_depth=2, dpt_features=FEAT,
                       dpt_out_channels=OC, track_head=False)


# ---- a straightforward re-statement of VGGT (DINOv2 patch embed + alternating attention) ----

def _rope(x, pos, freq=100.0):
    half = x.shape[-1] // 2
    out = []
    for axis, part in enumerate((x[..., :half], x[..., half:])):
        inv = 1.0 / freq ** (torch.arange(0, half, 2, dtype=x.dtype) / half)
        ang = pos[..., axis].to(x.dtype)[:, None, :, None] * inv
        ang = torch.cat([ang, ang], -1)
        rot = torch.cat([-part[..., half // 2:], part[..., :half // 2]], -1)
        out.append(part * ang.cos() + rot * ang.sin())
    return torch.cat(out, -1)


def _ref_block(sd, p, x, pos=None, qk_norm=True, eps=1e-5):
    B, N, D = x.shape
    hd = D // HEADS
    h = F.layer_norm(x, (D,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps)
    q, k, v = F.linear(h, sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"]).reshape(B, N, 3, HEADS, hd).permute(2, 0, 3, 1, 4)
    if qk_norm:
        q = F.layer_norm(q, (hd,), sd[p + "attn.q_norm.weight"], sd[p + "attn.q_norm.bias"])
        k = F.layer_norm(k, (hd,), sd[p + "attn.k_norm.weight"], sd[p + "attn.k_norm.bias"])
    if pos is not None:
        q, k = _rope(q, pos), _rope(k, pos)
    a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), -1) @ v
    a = F.linear(a.transpose(1, 2).reshape(B, N, D), sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
    x = x + sd[p + "ls1.gamma"] * a
    h = F.layer_norm(x, (D,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps)
    h = F.linear(F.gelu(F.linear(h, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])), sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
    return x + sd[p + "ls2.gamma"] * h


def ref_interpolate_pos_encoding(pos_embed, tokens, H, W, patch):
    """DINOv2's `interpolate_pos_encoding` as VGGT builds it (interpolate_offset=0.0: an output size,
    no scale factor; interpolate_antialias=True): `[1, 1 + M*M, C]` -> `[1, 1 + (H/p)*(W/p), C]` for
    class-prefixed tokens `[n, 1 + P, C]`. The table itself when the input has M*M patches and is
    square; else the patch part bicubic with antialiasing in float32, back in the tokens' dtype."""
    n_patch, M = tokens.shape[1] - 1, math.isqrt(pos_embed.shape[1] - 1)
    if n_patch == M * M and H == W:
        return pos_embed
    table = pos_embed.float()
    cls_pos, patch_pos = table[:, :1], table[:, 1:]
    dim = tokens.shape[-1]
    patch_pos = F.interpolate(patch_pos.reshape(1, M, M, dim).permute(0, 3, 1, 2), size=(H // patch, W // patch),
                              mode="bicubic", antialias=True)
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, -1, dim)
    return torch.cat([cls_pos, patch_pos], dim=1).to(tokens.dtype)


def ref_dinov2_tokens(sd, frames, patch=PATCH):
    """DINOv2's `prepare_tokens_with_masks` on normalised frames `[n, 3, H, W]`: class token, the
    register tokens, then the patch tokens, all with their positions `[n, 1 + R + P, C]`."""
    pe = "aggregator.patch_embed."
    H, W = frames.shape[-2:]
    x = F.conv2d(frames, sd[pe + "patch_embed.proj.weight"], sd[pe + "patch_embed.proj.bias"], stride=patch)
    x = torch.cat([sd[pe + "cls_token"].expand(len(frames), -1, -1), x.flatten(2).transpose(1, 2)], 1)
    x = x + ref_interpolate_pos_encoding(sd[pe + "pos_embed"], x, H, W, patch)
    return torch.cat([x[:, :1], sd[pe + "register_tokens"].expand(len(frames), -1, -1), x[:, 1:]], 1)


def ref_dinov2_patch_tokens(sd, frames, patch=PATCH, depth=PE_DEPTH):
    """VGGT's patch embed (DINOv2 ViT) on normalised frames `[n, 3, H, W]` -> `x_norm_patchtokens`."""
    pe = "aggregator.patch_embed."
    x = ref_dinov2_tokens(sd, frames, patch)
    for i in range(depth):
        x = _ref_block(sd, f"{pe}blocks.{i}.", x, qk_norm=False, eps=1e-6)  # DINOv2 uses eps 1e-6
    x = F.layer_norm(x, (x.shape[-1],), sd[pe + "norm.weight"], sd[pe + "norm.bias"], 1e-6)
    return x[:, 1 + sd[pe + "register_tokens"].shape[1]:]


def ref_vggt_aggregator(sd, images):
    """VGGT's aggregator on `[B, S, 3, H, W]`: per-layer concat(frame, global) `[B, S, N, 2C]`."""
    B, S = images.shape[:2]
    gh, gw = images.shape[-2] // PATCH, images.shape[-1] // PATCH
    mean = torch.tensor([0.485, 0.456, 0.406]).to(images.dtype).view(1, 3, 1, 1)  # float32 buffers, as VGGT's
    std = torch.tensor([0.229, 0.224, 0.225]).to(images.dtype).view(1, 3, 1, 1)
    patches = ref_dinov2_patch_tokens(sd, (images.flatten(0, 1) - mean) / std)

    def two_slot(tok):
        return torch.cat([tok[:, :1], tok[:, 1:].expand(-1, S - 1, -1, -1)], 1).expand(B, -1, -1, -1).flatten(0, 1)

    tokens = torch.cat([two_slot(sd["aggregator.camera_token"]), two_slot(sd["aggregator.register_token"]), patches], 1)
    N = tokens.shape[1]
    yy, xx = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    pos = torch.cat([torch.zeros(5, 2, dtype=torch.long), torch.stack([yy, xx], -1).reshape(-1, 2) + 1])
    outputs = []
    for i in range(DEPTH):
        tokens = _ref_block(sd, f"aggregator.frame_blocks.{i}.", tokens, pos.expand(B * S, -1, -1))
        frame = tokens.reshape(B, S, N, C)
        tokens = _ref_block(sd, f"aggregator.global_blocks.{i}.", tokens.reshape(B, S * N, C), pos.repeat(S, 1).expand(B, -1, -1))
        glob = tokens.reshape(B, S, N, C)
        tokens = tokens.reshape(B * S, N, C)
        outputs.append(torch.cat([frame, glob], -1))
    return outputs


def test_converter_loads_every_tensor(tmp_path):
    sd = vggt_like_state_dict()
    path = tmp_path / "vggt_small.pt"
    torch.save(sd, path)
    model = GeometryModel(_config())
    missing = load_vggt_weights(model, path)
    new_modules = ("view_mixer", "time_embed", "view_embed", "camera_param_embed", "dynamics_mask", "view_proj")
    assert missing and all(any(m in k for m in new_modules) for k in missing)
    msd = model.state_dict()
    for k in ("aggregator.frame_blocks.3.attn.k_norm.weight", "depth_head.scratch.refinenet2.resConfUnit1.conv2.weight",
              "camera_head.poseLN_modulation.1.bias", "point_head.resize_layers.3.weight"):
        assert torch.equal(msd[k], sd[k])
    assert torch.equal(msd["aggregator.patch_embed.vit.reg_token"], sd["aggregator.patch_embed.register_tokens"])
    # multi-view tokens start from VGGT's slots: view/time 0 from slot 0, the others from slot 1
    assert torch.equal(msd["aggregator.view_camera_token"][:, 0], sd["aggregator.camera_token"][:, 0])
    assert torch.equal(msd["aggregator.view_camera_token"][:, 5], sd["aggregator.camera_token"][:, 1])
    bad = dict(sd)
    bad["aggregator.frame_blocks.0.attn.qkv.weight"] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="frame_blocks.0.attn.qkv.weight.*shape"):
        load_vggt_weights(GeometryModel(_config()), bad)
    with pytest.raises(ValueError, match="no counterpart"):
        load_vggt_weights(GeometryModel(_config()), {**sd, "aggregator.unknown": torch.zeros(1)})


@torch.no_grad()
@pytest.mark.parametrize("grid", [(GRID, GRID), (3, 5), (6, 6)])
def test_legacy_mode_equals_vggt_restatement(grid):
    """At the table's own grid and at others (the position table resampled as VGGT does)."""
    torch.manual_seed(0)
    sd = {k: v.double() for k, v in vggt_like_state_dict(seed=1).items()}  # float64: compare tightly
    model = GeometryModel(_config()).double().eval()
    load_vggt_weights(model, sd)
    images = torch.rand(2, 3, 3, grid[0] * PATCH, grid[1] * PATCH, dtype=torch.float64)
    ref = ref_vggt_aggregator(sd, images)
    out = model.aggregator(images, output_layers=tuple(range(DEPTH)))
    assert out.legacy
    for i in range(DEPTH):
        torch.testing.assert_close(out.layers[i], ref[i], atol=1e-9, rtol=1e-9)
    # the reference is sensitive: another checkpoint gives other tokens
    other = ref_vggt_aggregator({k: v.double() for k, v in vggt_like_state_dict(seed=2).items()}, images)
    assert not torch.allclose(other[-1], ref[-1], atol=1e-2)


def test_vggt_1b_keys_map_onto_full_preset_on_meta():
    shapes = json.loads(SHAPES.read_text())
    assert len(shapes) == 1797
    with torch.device("meta"):
        model = GeometryModel(make_config("full"))
        sd = {k: torch.empty(v) for k, v in shapes.items()}
        converted = convert_vggt_state_dict(sd, model)
    assert len(converted) == len(shapes) - 1 + 2  # mask_token dropped; two multi-view tokens added
    n_params = sum(p.numel() for p in model.parameters())
    assert 1.2e9 < n_params < 1.45e9
