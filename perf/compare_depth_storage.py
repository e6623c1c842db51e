"""Compare the two depth storages of recorded demonstrations: float32 arrays (exact, the default)
and LeRobot's native depth video stream (``record_demos.py --depth-video``).

    python perf/compare_depth_storage.py --episodes 5 --image-size 32

Records the same episodes (same seeds) both ways into a temporary folder, reads both back through
``envs.recording.open_dataset`` and prints JSON: the error of the depth stream in metres against
the float32 depth (overall, over the pixels the geometry losses use, and at 0.2-0.6 m), how much of
it the codec adds, the storage of each, the time to record and to read each, and the codec. The
error of LeRobot's default depth quantiser, computed on the same frames, shows why the recorder
fits the quantiser to MuJoCo's depth range instead.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import av
import gymnasium as gym
import numpy as np
import pyarrow.parquet as pq
from lerobot.configs import DepthEncoderConfig
from lerobot.datasets.depth_utils import dequantize_depth, quantize_depth

import envs
from envs.recording import DEPTH_PREFIX, depth_video_encoder, open_dataset, record_demos
from envs.tabletop.env import TASKS
from policies.geovla_model import MAX_VALID_DEPTH

BAND_M = (0.2, 0.6)  # depths of the workspace seen by the fixed cameras


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=TASKS, default="reach")
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    return parser.parse_args()


def record(args: argparse.Namespace, root: Path, depth_video: bool) -> float:
    """Record ``args.episodes`` episodes to ``root``; return the seconds it took."""
    env = gym.make(envs.TABLETOP_ID, task=args.task, image_size=args.image_size, geometry=True)
    start = time.perf_counter()
    try:
        record_demos(env, envs.make_expert(env), root, args.episodes, seed=args.seed, depth_video=depth_video,
                     progress=False)
    finally:
        env.close()
    return time.perf_counter() - start


def read_depth(root: Path) -> tuple[np.ndarray, float]:
    """Every frame's depth ``[N, cameras, H, W]`` (metres) read through ``open_dataset``, and the
    seconds that reading all items (every feature, as training does) took."""
    dataset = open_dataset(root)
    keys = sorted(k for k in dataset.meta.features if k.startswith(DEPTH_PREFIX))
    start = time.perf_counter()
    items = [dataset[i] for i in range(len(dataset))]
    seconds = time.perf_counter() - start
    return np.stack([np.stack([item[k].numpy() for k in keys]) for item in items]), seconds


def error_stats(exact: np.ndarray, stored: np.ndarray) -> dict[str, Any]:
    """Absolute error in metres: all pixels, the valid ones (what the geometry losses and voxel
    tokens use: ``0 < depth < MAX_VALID_DEPTH``), the ``BAND_M`` depths; plus pixels whose validity
    changed."""
    error = np.abs(stored.astype(np.float64) - exact)
    valid = (exact > 0) & (exact < MAX_VALID_DEPTH)
    band = (exact >= BAND_M[0]) & (exact <= BAND_M[1])
    valid_error = error[valid]
    return {
        "all_pixels": {"max": float(error.max()), "mean": float(error.mean())},
        "valid_pixels": {
            "count": int(valid.sum()),
            "depth_range_m": [float(exact[valid].min()), float(exact[valid].max())],
            "median": float(np.median(valid_error)),
            "p99": float(np.percentile(valid_error, 99)),
            "max": float(valid_error.max()),
            "mean": float(valid_error.mean()),
            "max_relative": float((valid_error / exact[valid]).max()),
        },
        f"pixels_at_{BAND_M[0]}-{BAND_M[1]}_m": {
            "count": int(band.sum()),
            "max": float(error[band].max()),
            "mean": float(error[band].mean()),
        },
        "validity_flips": int((valid != ((stored > 0) & (stored < MAX_VALID_DEPTH))).sum()),
    }


def quantised(depth: np.ndarray, encoder: DepthEncoderConfig) -> np.ndarray:
    """``depth`` after LeRobot's 12-bit quantiser alone (no codec), in metres."""
    params = dict(depth_min=encoder.depth_min, depth_max=encoder.depth_max, shift=encoder.shift,
                  use_log=encoder.use_log)
    codes = quantize_depth(depth, video_backend=None, input_unit="m", **params)
    # A trailing channel axis makes dequantize_depth treat the leading axes as a batch.
    return dequantize_depth(codes[..., None], output_unit="m", output_tensor=False, **params).reshape(depth.shape)


def depth_bytes_float32(root: Path) -> int:
    """Compressed bytes of the depth columns in the data parquet files."""
    total = 0
    for path in root.glob("data/*/*.parquet"):
        metadata = pq.ParquetFile(path).metadata
        for group in range(metadata.num_row_groups):
            for column in range(metadata.num_columns):
                chunk = metadata.row_group(group).column(column)
                if chunk.path_in_schema.startswith(DEPTH_PREFIX):
                    total += chunk.total_compressed_size
    return total


def folder_bytes(root: Path, pattern: str = "**/*") -> int:
    return sum(p.stat().st_size for p in root.glob(pattern) if p.is_file())


def codec_report(encoder: DepthEncoderConfig) -> dict[str, Any]:
    """What the depth stream needs from the PyAV wheel, and whether this one has it."""
    codec = av.codec.Codec(encoder.vcodec, "w")
    decoder = av.codec.Codec(encoder.vcodec, "r")
    return {
        "pyav": av.__version__,
        "libavcodec": ".".join(map(str, av.library_versions["libavcodec"])),
        "encoder": codec.name,
        "decoder": decoder.name,
        "pix_fmt": encoder.pix_fmt,
        "pix_fmt_supported": encoder.pix_fmt in {f.name for f in codec.video_formats},
        "options": encoder.get_codec_options(),
        "quantiser": {"depth_min_m": encoder.depth_min, "depth_max_m": encoder.depth_max, "shift_m": encoder.shift,
                      "log": encoder.use_log, "bits": 12},
    }


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        float_root, video_root = Path(tmp) / "float32", Path(tmp) / "depth_video"
        record_s = {"float32": record(args, float_root, False), "depth_video": record(args, video_root, True)}
        exact, float_read_s = read_depth(float_root)
        stored, video_read_s = read_depth(video_root)
        env = gym.make(envs.TABLETOP_ID, task=args.task, image_size=args.image_size, geometry=True)
        encoder = depth_video_encoder(env.unwrapped)
        env.close()
        frames, cameras, height, width = exact.shape
        report = {
            "episodes": args.episodes,
            "frames": frames,
            "cameras": cameras,
            "image_size": [height, width],
            "codec": codec_report(encoder),
            "depth_video_error_m": error_stats(exact, stored),
            "codec_added_error_m": float(np.abs(stored - quantised(exact, encoder)).max()),
            "lerobot_default_quantiser_error_m": error_stats(exact, quantised(exact, DepthEncoderConfig())),
            "storage_bytes": {
                "depth_raw_float32": exact.nbytes,
                "depth_float32_parquet": depth_bytes_float32(float_root),
                "depth_video_mp4": folder_bytes(video_root, f"videos/{DEPTH_PREFIX}*/**/*.mp4"),
                "dataset_float32": folder_bytes(float_root),
                "dataset_depth_video": folder_bytes(video_root),
            },
            "seconds": {
                "record_float32": round(record_s["float32"], 2),
                "record_depth_video": round(record_s["depth_video"], 2),
                "read_all_items_float32": round(float_read_s, 2),
                "read_all_items_depth_video": round(video_read_s, 2),
                "read_ms_per_frame_float32": round(1000 * float_read_s / frames, 2),
                "read_ms_per_frame_depth_video": round(1000 * video_read_s / frames, 2),
            },
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
