"""Track head vs VGGT: the tracker re-stated here, step by step, from VGGT's tracker computation
(BaseTrackerPredictor with its CorrBlock, EfficientUpdateFormer, attention blocks and sin-cos
embeddings) on raw VGGT-named weights, every weight randomised, in float64. The tracker's
parameter names and shapes are VGGT's (the converter passes `track_head.tracker.*` through), so its
state dict stands for a converted VGGT checkpoint.

Quirks of VGGT that the re-statement keeps (each has its own test below):
(1) the attention blocks add the attention residual to the *normalised* input;
(2) the flow embedding uses linear frequencies `arange(0, C, 2) * 1000 / C` with sin/cos interleaved;
(3) the query's position embedding is sampled bilinearly (border padding) from a per-pixel table;
(4) the correlation pyramid scales coordinates by `1 / 2**level`, also for odd map sizes;
(5) the correlation window offset `stack(meshgrid(dy, dx, indexing="ij"))` is added to (x, y), so
    the window is x-major;
(6) query features are sampled with border padding (correlations with zero padding).

Tracks are compared in float64: the flow embedding's top frequency (~1000 rad per pixel) amplifies
rounding from one iteration to the next.
"""

import math

import torch
import torch.nn.functional as F

from geometry.heads.track import Tracker
from geometry.heads.track_modules import (AttnBlock, CrossAttnBlock, correlation_pyramid, flow_embedding,
                                          query_position_embedding, sample_correlation)

LATENT, HIDDEN, DEPTH, LEVELS, RADIUS, VIRTUAL, HEADS, STRIDE, MAX_SCALE = 8, 16, 2, 3, 2, 4, 8, 2, 518.0
TRACK_ATOL, PROB_ATOL = 1e-10, 1e-12  # pixels; visibility / confidence


def randomise(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter random: norm scales around 1, matrices ~ 1/sqrt(fan_in), all else ~ 0.5.
    The flow head's matrix is 10x smaller (VGGT initialises it at std 0.001): with larger steps the
    ~1000 rad/pixel flow frequency amplifies float64 rounding ~100x per iteration."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=p.dtype)
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.3 * noise)
            elif p.dim() >= 2 and name.endswith("weight"):
                p.copy_(noise / p.shape[-1] ** 0.5 * (0.1 if "flow_head" in name else 1.0))
            else:
                p.copy_(0.5 * noise)
    return module


# ---- VGGT's tracker computation, re-stated on VGGT-named weights ------------------------------

def ref_bilinear(img: torch.Tensor, xy: torch.Tensor, padding_mode: str) -> torch.Tensor:
    """VGGT's bilinear sampler: `img [n, C, H, W]` at pixel coordinates `xy [n, Ho, Wo, 2]`
    (pixel centres at integers, align_corners=True) -> `[n, C, Ho, Wo]`."""
    H, W = img.shape[-2:]
    scale = torch.tensor([2 / max(W - 1, 1), 2 / max(H - 1, 1)], dtype=xy.dtype)
    return F.grid_sample(img, xy * scale - 1, mode="bilinear", align_corners=True, padding_mode=padding_mode)


def ref_sample_features(fmap: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """VGGT's sample_features4d: `[B, C, H, W]` at `[B, N, 2]` with border padding -> `[B, N, C]`."""
    return ref_bilinear(fmap, xy.unsqueeze(2), "border").squeeze(-1).transpose(1, 2)


def ref_flow_embedding(xy: torch.Tensor, C: int) -> torch.Tensor:
    """VGGT's 2D embedding of `xy [B, N, 2]` into `[B, N, 2C]`: even slots sin, odd slots cos,
    frequencies `arange(0, C, 2) * 1000 / C`; x's C entries, then y's."""
    div = torch.arange(0, C, 2, dtype=xy.dtype) * (1000.0 / C)
    out = []
    for axis in range(2):
        pe = torch.zeros(*xy.shape[:-1], C, dtype=xy.dtype)
        pe[..., 0::2] = torch.sin(xy[..., axis:axis + 1] * div)
        pe[..., 1::2] = torch.cos(xy[..., axis:axis + 1] * div)
        out.append(pe)
    return torch.cat(out, dim=-1)


def ref_pos_table(D: int, H: int, W: int) -> torch.Tensor:
    """VGGT's 2D sin-cos table `[1, D, H, W]`: half the channels embed the column index x, half
    the row index y; each half is `[sin(p w), cos(p w)]`, `w = 1 / 10000^(arange(D/4) / (D/4))`."""
    gx, gy = torch.meshgrid(torch.arange(W, dtype=torch.float64), torch.arange(H, dtype=torch.float64), indexing="xy")

    def one_d(dim: int, pos: torch.Tensor) -> torch.Tensor:
        omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
        out = pos.reshape(-1, 1) * omega
        return torch.cat([out.sin(), out.cos()], dim=1)

    emb = torch.cat([one_d(D // 2, gx), one_d(D // 2, gy)], dim=1)  # [H*W, D]
    return emb.reshape(1, H, W, D).permute(0, 3, 1, 2)


def ref_corr(fmaps: torch.Tensor, targets: torch.Tensor, coords: torch.Tensor, levels: int, r: int) -> torch.Tensor:
    """VGGT's CorrBlock: `fmaps [B, S, C, H, W]`, `targets [B, S, N, C]`, `coords [B, S, N, 2]`
    -> `[B, S, N, levels (2r+1)^2]`. Per level: the full correlation volume, sampled (zero
    padding) at `coords / 2**level + delta`, `delta = stack(meshgrid(dy, dx, "ij"))`."""
    B, S, N, C = targets.shape
    d = torch.linspace(-r, r, 2 * r + 1, dtype=fmaps.dtype)
    delta = torch.stack(torch.meshgrid(d, d, indexing="ij"), dim=-1).view(1, 2 * r + 1, 2 * r + 1, 2)
    out, level_maps = [], fmaps
    for i in range(levels):
        if i:
            b, s, c, h, w = level_maps.shape
            level_maps = F.avg_pool2d(level_maps.reshape(b * s, c, h, w), 2, 2).reshape(b, s, c, h // 2, w // 2)
        H, W = level_maps.shape[-2:]
        corrs = torch.matmul(targets, level_maps.reshape(B, S, C, H * W)) / math.sqrt(C)
        grid = coords.reshape(B * S * N, 1, 1, 2) / 2 ** i + delta
        out.append(ref_bilinear(corrs.reshape(B * S * N, 1, H, W), grid, "zeros").reshape(B, S, N, -1))
    return torch.cat(out, dim=-1)


def ref_layer_norm(sd: dict, p: str, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], sd[p + ".weight"], sd[p + ".bias"], eps=1e-5)


def ref_mlp(sd: dict, p: str, x: torch.Tensor) -> torch.Tensor:
    h = F.gelu(F.linear(x, sd[p + ".fc1.weight"], sd[p + ".fc1.bias"]))
    return F.linear(h, sd[p + ".fc2.weight"], sd[p + ".fc2.bias"])


def ref_mha(sd: dict, p: str, q: torch.Tensor, kv: torch.Tensor, heads: int) -> torch.Tensor:
    """nn.MultiheadAttention (batch_first) from its packed in-projection and out-projection."""
    D = q.shape[-1]
    w, b = sd[p + ".in_proj_weight"], sd[p + ".in_proj_bias"]
    Q, K, V = F.linear(q, w[:D], b[:D]), F.linear(kv, w[D:2 * D], b[D:2 * D]), F.linear(kv, w[2 * D:], b[2 * D:])

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(*t.shape[:-1], heads, D // heads).transpose(-3, -2)

    att = torch.softmax(split(Q) @ split(K).transpose(-1, -2) / math.sqrt(D // heads), dim=-1) @ split(V)
    return F.linear(att.transpose(-3, -2).reshape(q.shape), sd[p + ".out_proj.weight"], sd[p + ".out_proj.bias"])


def ref_attn_block(sd: dict, p: str, x: torch.Tensor) -> torch.Tensor:
    x = ref_layer_norm(sd, p + ".norm1", x)  # the residual below is added to this normalised x
    x = x + ref_mha(sd, p + ".attn", x, x, HEADS)
    return x + ref_mlp(sd, p + ".mlp", ref_layer_norm(sd, p + ".norm2", x))


def ref_cross_block(sd: dict, p: str, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    x = ref_layer_norm(sd, p + ".norm1", x)
    context = ref_layer_norm(sd, p + ".norm_context", context)
    x = x + ref_mha(sd, p + ".cross_attn", x, context, HEADS)
    return x + ref_mlp(sd, p + ".mlp", ref_layer_norm(sd, p + ".norm2", x))


def ref_update_former(sd: dict, p: str, x: torch.Tensor, depth: int) -> torch.Tensor:
    """VGGT's EfficientUpdateFormer on `[B, N, T, D]`, space attention after every time block."""
    tokens = F.linear(ref_layer_norm(sd, p + ".input_norm", x), sd[p + ".input_transform.weight"],
                      sd[p + ".input_transform.bias"])
    init = tokens
    B, _, T, _ = tokens.shape
    virtual = sd[p + ".virual_tracks"]
    M = virtual.shape[1]
    tokens = torch.cat([tokens, virtual.repeat(B, 1, T, 1)], dim=1)
    N = tokens.shape[1]
    for i in range(depth):
        tokens = ref_attn_block(sd, f"{p}.time_blocks.{i}", tokens.reshape(B * N, T, -1)).reshape(B, N, T, -1)
        space = tokens.permute(0, 2, 1, 3).reshape(B * T, N, -1)
        points, virt = space[:, :N - M], space[:, N - M:]
        virt = ref_cross_block(sd, f"{p}.space_virtual2point_blocks.{i}", virt, points)
        virt = ref_attn_block(sd, f"{p}.space_virtual_blocks.{i}", virt)
        points = ref_cross_block(sd, f"{p}.space_point2virtual_blocks.{i}", points, virt)
        tokens = torch.cat([points, virt], dim=1).reshape(B, T, N, -1).permute(0, 2, 1, 3)
    tokens = ref_layer_norm(sd, p + ".output_norm", tokens[:, :N - M] + init)
    return F.linear(tokens, sd[p + ".flow_head.weight"], sd[p + ".flow_head.bias"])


def ref_tracker(sd: dict, query_points: torch.Tensor, fmaps: torch.Tensor, iters: int
                ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """VGGT's BaseTrackerPredictor.forward (stride 2, conf predicted, sigmoid applied)."""
    B, N, _ = query_points.shape
    _, S, C, HH, WW = fmaps.shape
    fmaps = ref_layer_norm(sd, "fmap_norm", fmaps.permute(0, 1, 3, 4, 2)).permute(0, 1, 4, 2, 3)
    query_points = query_points / float(STRIDE)
    coords = query_points.clone().reshape(B, 1, N, 2).repeat(1, S, 1, 1)
    track_feats = ref_sample_features(fmaps[:, 0], coords[:, 0]).unsqueeze(1).repeat(1, S, 1, 1)
    backup = coords.clone()
    D = sd["query_ref_token"].shape[-1]
    preds = []
    for _ in range(iters):
        fcorrs = ref_corr(fmaps, track_feats, coords, LEVELS, RADIUS)
        fcorrs = ref_mlp(sd, "corr_mlp", fcorrs.permute(0, 2, 1, 3).reshape(B * N, S, -1))
        flows = (coords - coords[:, 0:1]).permute(0, 2, 1, 3).reshape(B * N, S, 2)
        flows_emb = torch.cat([ref_flow_embedding(flows, C // 2), flows / MAX_SCALE, flows / MAX_SCALE], dim=-1)
        feats_ = track_feats.permute(0, 2, 1, 3).reshape(B * N, S, C)
        x = torch.cat([flows_emb, fcorrs, feats_], dim=2)
        pos = ref_sample_features(ref_pos_table(D, HH, WW).expand(B, -1, -1, -1), coords[:, 0])
        x = x + pos.reshape(B * N, 1, D)
        tok = sd["query_ref_token"]
        x = x + torch.cat([tok[:, 0:1], tok[:, 1:2].expand(-1, S - 1, -1)], dim=1)
        delta = ref_update_former(sd, "updateformer", x.reshape(B, N, S, -1), DEPTH).reshape(B * N, S, -1)
        upd = F.group_norm(delta[..., 2:].reshape(-1, C), 1, sd["ffeat_norm.weight"], sd["ffeat_norm.bias"], eps=1e-5)
        upd = F.gelu(F.linear(upd, sd["ffeat_updater.0.weight"], sd["ffeat_updater.0.bias"]))
        feats_ = upd + feats_.reshape(-1, C)
        track_feats = feats_.reshape(B, N, S, C).permute(0, 2, 1, 3)
        coords = coords + delta[..., :2].reshape(B, N, S, 2).permute(0, 2, 1, 3)
        coords[:, 0] = backup[:, 0]
        preds.append(coords * STRIDE)
    flat = track_feats.reshape(B * S * N, C)
    vis = torch.sigmoid(F.linear(flat, sd["vis_predictor.0.weight"], sd["vis_predictor.0.bias"])).reshape(B, S, N)
    conf = torch.sigmoid(F.linear(flat, sd["conf_predictor.0.weight"], sd["conf_predictor.0.bias"])).reshape(B, S, N)
    return preds, vis, conf


# ---- inputs ----------------------------------------------------------------------------------

def make_tracker(seed: int = 6) -> Tracker:
    return randomise(Tracker(LATENT, LEVELS, RADIUS, HIDDEN, DEPTH, VIRTUAL, stride=STRIDE).double().eval(), seed)


def make_inputs(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature maps `[2, 3, C, 11, 9]` (odd sizes: pooling floors) and 5 queries per batch in image
    pixels (stride 2), some off-grid, some outside the map's span x in [0, 16], y in [0, 20]."""
    g = torch.Generator().manual_seed(seed)
    fmaps = torch.randn(2, 3, LATENT, 11, 9, generator=g, dtype=torch.float64)
    queries = torch.tensor([[[3.3, 4.7], [-1.3, 5.0], [17.6, 21.9], [9.2, 0.4], [12.0, 14.0]],
                            [[0.0, 0.0], [16.5, 3.2], [7.7, 19.1], [5.5, 10.25], [2.9, 25.0]]], dtype=torch.float64)
    return fmaps, queries


# ---- tests -----------------------------------------------------------------------------------

@torch.no_grad()
def test_tracker_equals_vggt_restatement():
    tracker = make_tracker()
    fmaps, queries = make_inputs()
    sd = tracker.state_dict()
    preds, vis, conf = tracker(queries, fmaps, iterations=4)
    ref_preds, ref_vis, ref_conf = ref_tracker(sd, queries, fmaps, 4)
    assert len(preds) == 4
    for i, (p, r) in enumerate(zip(preds, ref_preds)):
        torch.testing.assert_close(p, r, atol=TRACK_ATOL, rtol=0, msg=lambda m: f"iteration {i}: {m}")
    torch.testing.assert_close(vis, ref_vis, atol=PROB_ATOL, rtol=0)
    torch.testing.assert_close(conf, ref_conf, atol=PROB_ATOL, rtol=0)
    # the comparison is sensitive: tracks move by pixels, probabilities are far from saturated
    assert (preds[-1] - queries.unsqueeze(1)).abs().max() > 5
    assert vis.max() - vis.min() > 0.3 and conf.max() - conf.min() > 0.2


@torch.no_grad()
def test_attention_blocks_add_residual_to_normalised_input():  # (1)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 5, HIDDEN, generator=g, dtype=torch.float64)
    context = torch.randn(3, 4, HIDDEN, generator=g, dtype=torch.float64)
    attn = randomise(AttnBlock(HIDDEN, HEADS).double(), 4)
    cross = randomise(CrossAttnBlock(HIDDEN, HEADS).double(), 5)
    attn_sd = {f"blk.{k}": v for k, v in attn.state_dict().items()}
    cross_sd = {f"blk.{k}": v for k, v in cross.state_dict().items()}
    torch.testing.assert_close(attn(x), ref_attn_block(attn_sd, "blk", x), atol=1e-12, rtol=0)
    torch.testing.assert_close(cross(x, context), ref_cross_block(cross_sd, "blk", x, context), atol=1e-12, rtol=0)


def test_flow_embedding_linear_interleaved_frequencies():  # (2)
    g = torch.Generator().manual_seed(6)
    flows = 5 * torch.randn(4, 3, 2, generator=g, dtype=torch.float64)
    e = flow_embedding(flows, 16)  # C = 8 per axis: frequencies 0, 250, 500, 750
    torch.testing.assert_close(e, ref_flow_embedding(flows, 8), atol=1e-13, rtol=0)
    x, y = flows[..., 0], flows[..., 1]
    torch.testing.assert_close(e[..., 0], torch.zeros_like(x))  # sin(0 x)
    torch.testing.assert_close(e[..., 1], torch.ones_like(x))  # cos(0 x)
    torch.testing.assert_close(e[..., 2], torch.sin(250 * x))
    torch.testing.assert_close(e[..., 7], torch.cos(750 * x))
    torch.testing.assert_close(e[..., 10], torch.sin(250 * y))


def test_query_position_embedding_sampled_from_grid_with_border():  # (3)
    D, H, W = 28, 11, 9
    queries = torch.tensor([[[2.0, 3.0], [1.65, 2.35], [-0.65, 2.5], [8.8, 10.95], [4.6, 12.5]]], dtype=torch.float64)
    emb = query_position_embedding(queries, D, H, W)
    table = ref_pos_table(D, H, W)
    torch.testing.assert_close(emb, ref_sample_features(table, queries), atol=1e-14, rtol=0)
    torch.testing.assert_close(emb[0, 0], table[0, :, 3, 2], atol=1e-14, rtol=0)  # on a pixel: the table entry
    torch.testing.assert_close(emb[0, 3], table[0, :, H - 1, W - 1], atol=1e-14, rtol=0)  # beyond the corner
    torch.testing.assert_close(emb[0, 2], (table[0, :, 2, 0] + table[0, :, 3, 0]) / 2, atol=1e-14, rtol=0)
    # interpolated, not evaluated at the point: sin(1.65) is not the mix of sin(1) and sin(2)
    assert not torch.allclose(emb[0, 1, 0], torch.tensor(math.sin(1.65), dtype=torch.float64), atol=1e-3)


def test_correlation_levels_scale_by_powers_of_two():  # (4)
    g = torch.Generator().manual_seed(7)
    fmap = torch.randn(1, 1, 4, 7, 7, generator=g, dtype=torch.float64)  # 7 -> 3 -> 1: pooling floors
    feats = torch.randn(1, 1, 2, 4, generator=g, dtype=torch.float64)
    coords = torch.tensor([[[[3.0, 3.0], [1.4, 5.2]]]], dtype=torch.float64)
    pyramid = correlation_pyramid(fmap[0], 3)
    assert [scale for _, scale in pyramid] == [1.0, 0.5, 0.25]
    corr = sample_correlation(pyramid, feats[0], coords[0], radius=1)
    torch.testing.assert_close(corr, ref_corr(fmap, feats, coords, 3, 1)[0], atol=1e-13, rtol=0)
    # level 1 sees (3, 3) at (1.5, 1.5) (VGGT's 3 / 2), not at 3 * 3/7
    level1 = pyramid[1][0][0]
    expected = level1[:, 1:3, 1:3].mean((1, 2)) @ feats[0, 0, 0] / 2  # (1.5, 1.5); 1/sqrt(C) = 1/2
    torch.testing.assert_close(corr[0, 0, 9 + 4], expected, atol=1e-13, rtol=0)


def test_correlation_window_is_x_major():  # (5)
    C = 4
    fmap = torch.zeros(1, C, 9, 9, dtype=torch.float64)
    target = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    fmap[0, :, 4, 5] = target  # at (x=5, y=4)
    fmap[0, :, 5, 4] = -target  # at (x=4, y=5)
    coords = torch.tensor([[[4.0, 4.0]]], dtype=torch.float64)
    corr = sample_correlation(correlation_pyramid(fmap, 1), target.view(1, 1, C), coords, radius=1)
    peak = target.pow(2).sum() / C ** 0.5
    assert corr[0, 0, 7] == peak and corr[0, 0, 5] == -peak  # entry 7: x + 1; entry 5: y + 1
    torch.testing.assert_close(corr, ref_corr(fmap[None], target.view(1, 1, 1, C), coords[None], 1, 1)[0])


@torch.no_grad()
def test_query_features_sampled_with_border_padding():  # (6)
    tracker = make_tracker()
    fmaps, _ = make_inputs()
    queries = torch.tensor([[[-3.0, 5.0], [20.0, 25.0]], [[8.0, -4.0], [4.0, 30.0]]], dtype=torch.float64)
    _, vis, conf = tracker(queries, fmaps, iterations=0)  # no update: from the query features alone
    _, ref_vis, ref_conf = ref_tracker(tracker.state_dict(), queries, fmaps, 0)
    torch.testing.assert_close(vis, ref_vis, atol=PROB_ATOL, rtol=0)
    torch.testing.assert_close(conf, ref_conf, atol=PROB_ATOL, rtol=0)
    # the nearest border pixel's feature (after the feature LayerNorm) decides, zero padding would not
    normed = F.layer_norm(fmaps[1, 0, :, 10, 2], (LATENT,), tracker.fmap_norm.weight, tracker.fmap_norm.bias)
    border = torch.sigmoid(tracker.vis_predictor(normed))
    torch.testing.assert_close(vis[1, :, 1], border.expand(3), atol=1e-14, rtol=0)
