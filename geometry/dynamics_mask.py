"""Dynamics mask (PAGE-4D idea): down-weight dynamic patches as keys of global attention.

After stage 1 a SpatialMaskHead predicts a per-patch dynamic probability m. In the global
attention of stages 2-3, a query of kind q attending to a patch key k has its attention weight
multiplied by `1 - s_q * m_k` (renormalised by the softmax), where s_q = gamma_l for camera-token
queries (one learnable gate per layer), 1 for register-token queries and 0 for patch queries.
"""

from __future__ import annotations

import torch
from torch import nn

from geometry.layers.masks import GroupMasks, suppression_bias
from geometry.layers.scalar import load_scalars_saved_0d


def query_strengths(tokens_per_frame: int, patch_start_idx: int, gamma: torch.Tensor) -> torch.Tensor:
    """Suppression strength of each query position of one frame, `[tokens_per_frame]`.

    Example (patch_start_idx=5, 7 tokens, gamma=0.3): `[0.3, 1, 1, 1, 1, 0, 0]` — camera token,
    four registers, two patches.
    """
    registers = gamma.new_ones(patch_start_idx - 1)
    patches = gamma.new_zeros(tokens_per_frame - patch_start_idx)
    return torch.cat([gamma.reshape(1), registers, patches])


def query_groups(num_frames: int, tokens_per_frame: int, patch_start_idx: int,
                 gamma: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor | float | None]]:
    """Query positions of S frames grouped by strength: (indices, strength) for the camera tokens
    (gamma), the registers (1) and the patches (None: never biased).

    A streaming cache biases each group with one key row `[.., 1, L]` instead of a dense
    `[.., n, L]` bias. Example (S=2, N=4, patch_start_idx=2): cameras `[0, 4]`, registers
    `[1, 5]`, patches `[2, 3, 6, 7]`.
    """
    device = gamma.device
    starts = torch.arange(num_frames, device=device).unsqueeze(1) * tokens_per_frame
    registers = (starts + torch.arange(1, patch_start_idx, device=device)).flatten()
    patches = (starts + torch.arange(patch_start_idx, tokens_per_frame, device=device)).flatten()
    return [(starts.flatten(), gamma), (registers, 1.0), (patches, None)]


def token_key_mask(mask: torch.Tensor, num_frames: int, tokens_per_frame: int, patch_start_idx: int) -> torch.Tensor:
    """Patch mask `[B, S*P]` -> per-token key mask `[B, S*N]`, 0 at the special tokens.

    Example (N=3, patch_start_idx=1, S=1): `[[0.2, 0.7]]` -> `[[0, 0.2, 0.7]]`.
    """
    B = mask.shape[0]
    m = mask.reshape(B, num_frames, tokens_per_frame - patch_start_idx)
    return torch.cat([m.new_zeros(B, num_frames, patch_start_idx), m], dim=-1).reshape(B, num_frames * tokens_per_frame)


def dynamics_key_bias(mask: torch.Tensor, strengths: torch.Tensor, num_frames: int, patch_start_idx: int) -> torch.Tensor:
    """Additive attention bias `[B, 1, S*N, S*N]` for global attention over S frames of N tokens.

    `mask` is `[B, S*P]` (P = N - patch_start_idx patches per frame), `strengths` `[N]` from
    `query_strengths`. Entry (q, k) is `log(1 - strengths[q % N] * m_k)` with m_k = 0 for special
    token keys, so special keys and patch queries are never biased. Example: m_k = 1 and a
    register query gives log(1e-6) (the key is effectively removed); m_k = 0.5 and a camera query
    with gamma 0.5 gives log(0.75).
    """
    B = mask.shape[0]
    N = strengths.shape[0]
    m = token_key_mask(mask, num_frames, N, patch_start_idx).reshape(B, 1, 1, num_frames * N)
    return suppression_bias(strengths.repeat(num_frames).reshape(1, 1, num_frames * N, 1), m)


class SpatialMaskHead(nn.Module):
    """Patch tokens `[B, S, P, C]` -> dynamic-probability logits `[B, S*P]`."""

    def __init__(self, dim: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or max(dim // 4, 16)
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, patch_tokens: torch.Tensor) -> torch.Tensor:
        B = patch_tokens.shape[0]
        return self.net(patch_tokens).reshape(B, -1)


class DynamicsMask(nn.Module):
    """Mask head, one camera gate per layer (gamma_l = sigmoid(gate_l)) and a global strength.

    `strength` multiplies m and starts at 0, so at init the bias is exactly zero and a model
    loaded from VGGT computes what VGGT computes; it opens as training finds the mask useful.
    """

    def __init__(self, dim: int, depth: int) -> None:
        super().__init__()
        self.head = SpatialMaskHead(dim)
        self.gates = nn.Parameter(torch.zeros(depth))
        self.strength = nn.Parameter(torch.zeros(1))
        load_scalars_saved_0d(self, "strength")

    def layer_query_groups(self, layer: int, num_frames: int, tokens_per_frame: int,
                           patch_start_idx: int) -> list[tuple[torch.Tensor, torch.Tensor | float | None]]:
        """`query_groups` of global layer `layer` (camera strength gamma_l)."""
        return query_groups(num_frames, tokens_per_frame, patch_start_idx, torch.sigmoid(self.gates[layer]))

    def key_mask(self, mask_prob: torch.Tensor, num_frames: int, tokens_per_frame: int,
                 patch_start_idx: int) -> torch.Tensor:
        """Per-token key values `strength * m` `[B, S*N]` (0 at special tokens) for a KV cache."""
        return token_key_mask(self.strength * mask_prob, num_frames, tokens_per_frame, patch_start_idx)

    def group_masks(self, mask_prob: torch.Tensor, layer: int, num_frames: int, tokens_per_frame: int,
                    patch_start_idx: int, causal: torch.Tensor | None = None) -> GroupMasks:
        """Masks of global layer `layer` per query group (`geometry.layers.masks.GroupMasks`),
        equal to the dense `bias` (combined with the boolean `causal` `[S*N, S*N]` when given).

        Patch queries are never biased, so they attend with no mask (or their causal rows);
        camera and register queries each get one bias row `[B, 1, 1, S*N]` (`[B, 1, n_g, S*N]`
        with causal rows, -inf where not allowed). This costs O(S*N) per layer, not O((S*N)^2).
        """
        m = self.key_mask(mask_prob, num_frames, tokens_per_frame, patch_start_idx)[:, None, None]
        masks: GroupMasks = []
        for idx, strength in self.layer_query_groups(layer, num_frames, tokens_per_frame, patch_start_idx):
            rows = None if causal is None else causal[idx]  # [n_g, S*N] bool
            if strength is None:
                masks.append((idx, rows))
                continue
            bias = suppression_bias(strength, m)
            masks.append((idx, bias if rows is None else bias.masked_fill(~rows, float("-inf"))))
        return masks

    def bias(self, mask_prob: torch.Tensor, layer: int, num_frames: int, tokens_per_frame: int,
             patch_start_idx: int) -> torch.Tensor:
        """Dense key bias `[B, 1, S*N, S*N]` of global layer `layer` for dynamic probabilities
        `mask_prob [B, S*P]`: the definition that `group_masks` computes per query group."""
        strengths = query_strengths(tokens_per_frame, patch_start_idx, torch.sigmoid(self.gates[layer]))
        return dynamics_key_bias(self.strength * mask_prob, strengths, num_frames, patch_start_idx)
