"""Heads reading the aggregator's tokens: camera, DPT depth/points, tracks."""

from geometry.heads.camera import CameraHead
from geometry.heads.dpt import DPTHead
from geometry.heads.track import TrackHead

__all__ = ["CameraHead", "DPTHead", "TrackHead"]
