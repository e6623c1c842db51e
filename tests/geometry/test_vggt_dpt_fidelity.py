"""VGGT's depth and point heads: a model converted from VGGT-named random weights gives, for every
dense output (depth, depth confidence, world points, point confidence), what VGGT's DPT head
computes. The reference below re-states VGGT's head from the raw weights, step by step, with its
quirks: the fusion blocks' in-place ReLU (the residual unit's skip adds relu(x)), zero padding,
bilinear resizing with align_corners=True, the uv position embedding built in float32 and scaled
by 0.1 there, and VGGT's output activations."""

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from geometry.model import GeometryModel
from geometry.pretrained import load_vggt_weights
from test_geometry_vggt import DEPTH, PATCH, _config, vggt_like_state_dict

TOLERANCE = 1e-12  # float64; measured difference: at most 5e-16 (float rounding) on all four outputs


def ref_uv_embed(channels: int, h: int, w: int, aspect_ratio: float, dtype: torch.dtype) -> torch.Tensor:
    """VGGT's `create_uv_grid` + `position_grid_to_embed` -> `[channels, h, w]` in float32: the
    coordinates in the features' dtype, the sin/cos in float64 (float32 positions times float64
    frequencies), cast to float32 at the end."""
    diag = (aspect_ratio ** 2 + 1.0) ** 0.5
    span_x, span_y = aspect_ratio / diag, 1.0 / diag
    xs = torch.linspace(-span_x * (w - 1) / w, span_x * (w - 1) / w, steps=w, dtype=dtype)
    ys = torch.linspace(-span_y * (h - 1) / h, span_y * (h - 1) / h, steps=h, dtype=dtype)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(-1, 2)  # [h*w, (x, y)]

    def sincos(pos: torch.Tensor, dim: int) -> torch.Tensor:
        omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
        ang = torch.einsum("m,d->md", pos, 1.0 / 100.0 ** omega)
        return torch.cat([ang.sin(), ang.cos()], dim=1).float()

    emb = torch.cat([sincos(grid[:, 0], channels // 2), sincos(grid[:, 1], channels // 2)], dim=-1)
    return emb.reshape(h, w, channels).permute(2, 0, 1)


def ref_dpt_head(sd: dict[str, torch.Tensor], p: str, layers: list[torch.Tensor], patch_start_idx: int,
                 image_hw: tuple[int, int], activation: str, inplace_relu: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """VGGT's DPTHead on per-layer tokens `[B, S, N, D]` -> values `[B, S, H, W, out-1]` and
    confidence `[B, S, H, W]`. `inplace_relu=False` gives the textbook residual unit (skip adds x)."""
    B, S, _, D = layers[0].shape
    H, W = image_hw
    gh, gw = H // PATCH, W // PATCH

    def conv(x, name, stride=1, padding=0, bias=True):
        return F.conv2d(x, sd[p + name + ".weight"], sd[p + name + ".bias"] if bias else None, stride, padding)

    def add_pos(x):
        emb = ref_uv_embed(x.shape[1], x.shape[2], x.shape[3], W / H, x.dtype) * 0.1
        return x + emb[None]

    def residual_unit(x, name):
        out = F.relu(x)
        if inplace_relu:  # nn.ReLU(inplace=True) rectified x itself: the skip below reads relu(x)
            x = out
        out = F.relu(conv(out, name + ".conv1", padding=1))
        return conv(out, name + ".conv2", padding=1) + x

    def fusion(name, x, skip=None, size=None):
        if skip is not None:
            x = x + residual_unit(skip, name + ".resConfUnit1")
        x = residual_unit(x, name + ".resConfUnit2")
        size = size if size is not None else (x.shape[-2] * 2, x.shape[-1] * 2)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return conv(x, name + ".out_conv")

    levels = []
    for i, tokens in enumerate(layers):
        x = tokens[:, :, patch_start_idx:].reshape(B * S, -1, D)
        x = F.layer_norm(x, (D,), sd[p + "norm.weight"], sd[p + "norm.bias"], 1e-5)
        x = x.permute(0, 2, 1).reshape(B * S, D, gh, gw)
        x = add_pos(conv(x, f"projects.{i}"))
        rw, rb = sd.get(p + f"resize_layers.{i}.weight"), sd.get(p + f"resize_layers.{i}.bias")
        if i == 0:
            x = F.conv_transpose2d(x, rw, rb, stride=4)
        elif i == 1:
            x = F.conv_transpose2d(x, rw, rb, stride=2)
        elif i == 3:
            x = F.conv2d(x, rw, rb, stride=2, padding=1)
        levels.append(conv(x, f"scratch.layer{i + 1}_rn", padding=1, bias=False))
    l1, l2, l3, l4 = levels
    out = fusion("scratch.refinenet4", l4, size=l3.shape[2:])
    out = fusion("scratch.refinenet3", out, l3, size=l2.shape[2:])
    out = fusion("scratch.refinenet2", out, l2, size=l1.shape[2:])
    out = fusion("scratch.refinenet1", out, l1)
    out = conv(out, "scratch.output_conv1", padding=1)
    out = add_pos(F.interpolate(out, size=(gh * PATCH, gw * PATCH), mode="bilinear", align_corners=True))
    out = F.relu(conv(out, "scratch.output_conv2.0", padding=1))
    out = conv(out, "scratch.output_conv2.2")
    fmap = out.permute(0, 2, 3, 1)
    values, conf = fmap[..., :-1], fmap[..., -1]
    if activation == "exp":
        values = torch.exp(values)
    elif activation == "inv_log":
        values = torch.sign(values) * torch.expm1(torch.abs(values))
    else:
        raise ValueError(activation)
    conf = 1 + conf.exp()  # expp1
    return values.reshape(B, S, *values.shape[1:]), conf.reshape(B, S, *conf.shape[1:])


@pytest.fixture(scope="module")
def converted():
    """Float64 model converted from random VGGT-named weights (every tensor random), its aggregator
    output on non-square frames (4 x 6 patches, B=2, S=3, heads chunked 2 frames at a time), its
    head outputs and the raw weights."""
    torch.manual_seed(0)
    sd = {k: v.double() for k, v in vggt_like_state_dict(seed=3).items()}
    config = replace(_config(), frames_chunk_size=2)
    model = GeometryModel(config).double().eval()
    load_vggt_weights(model, sd)
    images = torch.rand(2, 3, 3, 4 * PATCH, 6 * PATCH, dtype=torch.float64)
    with torch.no_grad():
        agg = model.aggregator(images, output_layers=tuple(range(DEPTH)))
        out = model.heads(agg)
    layers = [agg.layers[i] for i in config.dpt_layers]
    return sd, layers, agg.patch_start_idx, images.shape[-2:], out


@pytest.mark.parametrize("head, activation, keys", [
    ("depth_head.", "exp", ("depth", "depth_conf")),
    ("point_head.", "inv_log", ("world_points", "world_points_conf")),
])
def test_dense_heads_equal_vggt_restatement(converted, head, activation, keys):
    sd, layers, ps, hw, out = converted
    values, conf = ref_dpt_head(sd, head, layers, ps, tuple(hw), activation)
    if head == "depth_head.":
        values = values[..., 0]  # VGGT's depth is [B, S, H, W, 1]; the model drops the last axis
    for key, ref in zip(keys, (values, conf)):
        assert out[key].shape == ref.shape
        torch.testing.assert_close(out[key], ref, rtol=TOLERANCE, atol=TOLERANCE, msg=key)
    # the comparison can tell VGGT's residual unit from the textbook one (skip adds x)
    textbook_values, textbook_conf = ref_dpt_head(sd, head, layers, ps, tuple(hw), activation, inplace_relu=False)
    if head == "depth_head.":
        textbook_values = textbook_values[..., 0]
    for key, wrong in zip(keys, (textbook_values, textbook_conf)):
        assert (out[key] - wrong).abs().max() > 1e-3 * out[key].abs().max(), key
