"""DPT head (VGGT parameter names): intermediate tokens -> dense maps at the input resolution."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from geometry.aggregator import AggregatorOutput
from geometry.heads.activations import activate_head


def uv_position_embedding(channels: int, h: int, w: int, aspect_ratio: float, omega_0: float = 100.0,
                          device: torch.device | None = None) -> torch.Tensor:
    """Parameter-free sin-cos embedding `[channels, h, w]` of normalised image coordinates.

    Coordinates span a box with unit diagonal and the image's aspect ratio: x in
    `±(aspect/diag)·(w-1)/w`, y in `±(1/diag)·(h-1)/h`, diag = sqrt(aspect² + 1). The first half of
    the channels embeds x, the second y, each as `[sin(p·f), cos(p·f)]` over channels/4
    frequencies `omega_0 ** (-k / (channels/4))`. Example: a 1x1 grid gives zeros then ones
    in each half. Made on `device` (the CPU by default; named, not taken from a `torch.device`
    context, which some of torch's reference ops ignore once dynamo has run in the process).
    """
    diag = (aspect_ratio ** 2 + 1) ** 0.5
    span_x, span_y = aspect_ratio / diag, 1 / diag
    x = torch.linspace(-span_x * (w - 1) / w, span_x * (w - 1) / w, w, dtype=torch.float64, device=device)
    y = torch.linspace(-span_y * (h - 1) / h, span_y * (h - 1) / h, h, dtype=torch.float64, device=device)
    k = channels // 4
    freqs = omega_0 ** (-torch.arange(k, dtype=torch.float64, device=device) / k)

    def embed(p: torch.Tensor) -> torch.Tensor:
        ang = p[:, None] * freqs
        return torch.cat([ang.sin(), ang.cos()], dim=-1)  # [n, channels/2]

    ex = embed(x).T[:, None, :].expand(-1, h, w)
    ey = embed(y).T[:, :, None].expand(-1, h, w)
    return torch.cat([ex, ey], dim=0).float()


class ResidualConvUnit(nn.Module):
    """`[N, F, h, w]` -> `relu(x) + conv2(relu(conv1(relu(x))))`, 3x3 convs, same shape.

    The skip adds `relu(x)`, not `x`: VGGT builds this unit with an in-place ReLU, which rectifies
    the input before the skip reads it, and its trained weights expect that.
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        return x + self.conv2(F.relu(self.conv1(x)))


class FeatureFusionBlock(nn.Module):
    """RefineNet fusion: add the (refined) skip, refine, 1x1 conv, upsample (to `size` or x2)."""

    def __init__(self, features: int, has_residual: bool = True) -> None:
        super().__init__()
        self.resConfUnit1 = ResidualConvUnit(features) if has_residual else None
        self.resConfUnit2 = ResidualConvUnit(features)
        self.out_conv = nn.Conv2d(features, features, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None, size: tuple[int, int] | None = None) -> torch.Tensor:
        if self.resConfUnit1 is not None and skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        # The 1x1 conv commutes with bilinear upsampling (whose weights sum to 1), so it runs at the
        # input resolution: the same map as VGGT's upsample-then-conv, up to float rounding.
        x = self.out_conv(x)
        return F.interpolate(x, size=size, scale_factor=None if size else 2, mode="bilinear", align_corners=True)


class Scratch(nn.Module):
    """Per-level 3x3 projections to `features`, four fusion blocks and the output convs."""

    def __init__(self, out_channels: tuple[int, ...], features: int, output_dim: int, feature_only: bool) -> None:
        super().__init__()
        for i, ch in enumerate(out_channels, start=1):
            setattr(self, f"layer{i}_rn", nn.Conv2d(ch, features, 3, padding=1, bias=False))
        self.refinenet1 = FeatureFusionBlock(features)
        self.refinenet2 = FeatureFusionBlock(features)
        self.refinenet3 = FeatureFusionBlock(features)
        self.refinenet4 = FeatureFusionBlock(features, has_residual=False)
        if feature_only:
            self.output_conv1 = nn.Conv2d(features, features, 3, padding=1)
            self.output_conv2 = None
        else:
            self.output_conv1 = nn.Conv2d(features, features // 2, 3, padding=1)
            self.output_conv2 = nn.Sequential(nn.Conv2d(features // 2, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, output_dim, 1))

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        l1, l2, l3, l4 = (getattr(self, f"layer{i}_rn")(f) for i, f in enumerate(feats, start=1))
        x = self.refinenet4(l4, size=l3.shape[2:])
        x = self.refinenet3(x, l3, size=l2.shape[2:])
        x = self.refinenet2(x, l2, size=l1.shape[2:])
        x = self.refinenet1(x, l1)
        return self.output_conv1(x)


class DPTHead(nn.Module):
    """Tokens of 4 aggregator layers -> `[B, S, H, W, D]` values and `[B, S, H, W]` confidence.

    Per layer: LayerNorm, 1x1 projection to `out_channels[i]`, resize to 4x/2x/1x/0.5x the patch
    grid, then RefineNet fusion and upsampling to the full input resolution. `feature_only`
    returns features `[B, S, features, H/down_ratio, W/down_ratio]` instead (TrackHead).
    `pos_embed` adds `0.1 * uv_position_embedding` after each projection and after the final
    upsampling (as VGGT's depth/point heads do). Frames are processed `chunk_size` at a time.
    """

    def __init__(self, dim_in: int = 2048, patch_size: int = 14, output_dim: int = 4, activation: str = "inv_log",
                 conf_activation: str = "expp1", features: int = 256, out_channels: tuple[int, ...] = (256, 512, 1024, 1024),
                 layers: tuple[int, ...] = (4, 11, 17, 23), feature_only: bool = False, down_ratio: int = 1,
                 chunk_size: int = 8, pos_embed: bool = True) -> None:
        super().__init__()
        self.pos_embed = pos_embed
        self.patch_size, self.layers, self.down_ratio, self.chunk_size = patch_size, layers, down_ratio, chunk_size
        self.activation, self.conf_activation, self.feature_only = activation, conf_activation, feature_only
        self.norm = nn.LayerNorm(dim_in)
        self.projects = nn.ModuleList(nn.Conv2d(dim_in, ch, 1) for ch in out_channels)
        self.resize_layers = nn.ModuleList([
            nn.ConvTranspose2d(out_channels[0], out_channels[0], 4, stride=4),
            nn.ConvTranspose2d(out_channels[1], out_channels[1], 2, stride=2),
            nn.Identity(),
            nn.Conv2d(out_channels[3], out_channels[3], 3, stride=2, padding=1),
        ])
        self.scratch = Scratch(out_channels, features, output_dim, feature_only)

    def _forward_frames(self, tokens: list[torch.Tensor], patch_start_idx: int, grid: tuple[int, int]) -> torch.Tensor:
        """Tokens `[n, N, D]` per layer -> raw output `[n, out, H/down, W/down]`."""
        gh, gw = grid
        feats = []
        for i, x in enumerate(tokens):
            x = self.norm(x[:, patch_start_idx:])
            x = x.transpose(1, 2).reshape(x.shape[0], -1, gh, gw)
            feats.append(self.resize_layers[i](self._add_pos(self.projects[i](x), gw / gh)))
        out = self.scratch(feats)
        size = (gh * self.patch_size // self.down_ratio, gw * self.patch_size // self.down_ratio)
        if out.shape[2:] != size:  # align_corners bilinear to the same size is the identity
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=True)
        out = self._add_pos(out, gw / gh)
        return out if self.feature_only else self.scratch.output_conv2(out)

    def _add_pos(self, x: torch.Tensor, aspect_ratio: float, ratio: float = 0.1) -> torch.Tensor:
        """`x` `[n, c, h, w]` + `ratio * uv_position_embedding`, scaled in float32 as VGGT does."""
        if not self.pos_embed:
            return x
        emb = ratio * uv_position_embedding(x.shape[1], x.shape[2], x.shape[3], aspect_ratio, device=x.device)
        # In x's memory format: the maps are channels-last (the tokens' layout), and a broadcast
        # add between NHWC and NCHW operands is much slower than between like layouts.
        channels_last = x.is_contiguous(memory_format=torch.channels_last)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        return x + emb.to(x.device, x.dtype)[None].contiguous(memory_format=fmt)

    def forward(self, agg: AggregatorOutput) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        B, S = agg.layers[self.layers[0]].shape[:2]
        chunks = []
        for start in range(0, S, self.chunk_size):
            tokens = [agg.layers[i][:, start:start + self.chunk_size].flatten(0, 1) for i in self.layers]
            chunks.append(self._forward_frames(tokens, agg.patch_start_idx, agg.grid))
        n = [c.shape[0] // B for c in chunks]
        out = torch.cat([c.reshape(B, k, *c.shape[1:]) for c, k in zip(chunks, n)], dim=1)
        if self.feature_only:
            return out
        values, conf = activate_head(out.flatten(0, 1), self.activation, self.conf_activation)
        return values.reshape(B, S, *values.shape[1:]), conf.reshape(B, S, *conf.shape[1:])
