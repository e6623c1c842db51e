"""Heads reading the aggregator's tokens: camera, DPT depth/points, tracks."""

from geometry.heads.camera import CameraHead
from geometry.heads.dpt import DPTHead

__all__ = ["CameraHead", "DPTHead"]
