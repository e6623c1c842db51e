"""Writing rollout videos: camera mosaics with a caption, encoded as H.264 mp4 through PyAV."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw

CAPTION_HEIGHT = 14


def caption_frame(frame: np.ndarray, text: str, scale: int = 3) -> np.ndarray:
    """Upscale ``frame`` ``[H, W, 3]`` by ``scale`` (nearest) and put ``text`` in a bar above it."""
    image = Image.fromarray(frame).resize((frame.shape[1] * scale, frame.shape[0] * scale), Image.NEAREST)
    canvas = Image.new("RGB", (image.width, image.height + CAPTION_HEIGHT), (0, 0, 0))
    canvas.paste(image, (0, CAPTION_HEIGHT))
    ImageDraw.Draw(canvas).text((4, 1), text, fill=(255, 255, 255))
    return np.asarray(canvas)


def write_mp4(frames: Iterable[np.ndarray], path: str | Path, fps: int) -> Path:
    """Encode uint8 RGB frames ``[H, W, 3]`` (all the same size) to an H.264 mp4 at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = None
        for frame in frames:
            # yuv420p needs even sides.
            frame = np.pad(frame, ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0)))
            if stream is None:
                stream = container.add_stream("libx264", rate=fps)
                stream.height, stream.width = frame.shape[:2]
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": "20"}
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        if stream is None:
            raise ValueError(f"no frames to write to {path}")
        container.mux(stream.encode())
    return path
