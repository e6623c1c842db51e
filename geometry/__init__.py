"""4D multi-view geometry aggregator (patch path) with camera, depth, point and track heads, and streaming."""

from geometry.aggregator import Aggregator, AggregatorOutput
from geometry.config import PRESETS, GeometryConfig, make_config
from geometry.model import GeometryModel
from geometry.pretrained import load_vggt_weights
from geometry.streaming import GeometryStream, stream_model

__all__ = ["PRESETS", "Aggregator", "AggregatorOutput", "GeometryConfig", "GeometryModel", "GeometryStream", "load_vggt_weights", "make_config",
           "stream_model"]
