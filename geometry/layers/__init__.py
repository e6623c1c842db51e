"""Building blocks of the aggregator: attention, block, 2D RoPE, low-rank linear, MLP, LayerNorm."""

from geometry.layers.attention import Attention
from geometry.layers.block import Block, LayerScale
from geometry.layers.lowrank import LowRankLinear
from geometry.layers.mlp import Mlp
from geometry.layers.norm import LayerNorm
from geometry.layers.rope import RotaryPositionEmbedding2D, RotaryTables, grid_positions

__all__ = ["Attention", "Block", "LayerNorm", "LayerScale", "LowRankLinear", "Mlp", "RotaryPositionEmbedding2D",
           "RotaryTables", "grid_positions"]
