"""Reading the image and text files recorded datasets are made of, with errors that name the file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from drivers.base import FrameDecodeError, SourceError

if TYPE_CHECKING:
    from slam.core.frames import CameraIntrinsics


def read_depth_png(path: Path, scale: float, invalid_values: tuple[int, ...] = ()) -> np.ndarray:
    """A 16-bit depth PNG to metres (float32); 0 and any of ``invalid_values`` become 0 (invalid)."""
    raw = _read_image(path)
    if raw.ndim != 2 or raw.dtype not in (np.uint16, np.int32, np.uint8):
        raise FrameDecodeError(
            f"{path}: expected a single-channel 16-bit depth image, got {raw.dtype} {raw.shape}"
        )
    raw = raw.astype(np.int64)
    bad = raw == 0
    for v in invalid_values:
        bad |= raw == v
    depth = (raw / scale).astype(np.float32)
    depth[bad] = 0.0
    return depth


def read_color(path: Path) -> np.ndarray:
    """A colour image to H×W×3 uint8 RGB."""
    img = _read_image(path, mode="RGB")
    return img


def check_depth_size(path: Path, depth: np.ndarray, intrinsics: CameraIntrinsics) -> None:
    """A sequence's images are all the size of its first decodable frame: a depth image of another size
    is a bad frame (``FrameDecodeError`` naming ``path``)."""
    if depth.shape != (intrinsics.height, intrinsics.width):
        raise FrameDecodeError(
            f"{path}: depth is {depth.shape[1]}x{depth.shape[0]}, the sequence's images are "
            f"{intrinsics.width}x{intrinsics.height}"
        )


def read_color_like(path: Path, depth: np.ndarray) -> np.ndarray:
    """The colour image registered to ``depth``, which must be its size (``FrameDecodeError`` otherwise)."""
    color = read_color(path)
    if color.shape[:2] != depth.shape:
        raise FrameDecodeError(
            f"{path}: colour is {color.shape[1]}x{color.shape[0]}, depth is {depth.shape[1]}x{depth.shape[0]}"
        )
    return color


def _read_image(path: Path, mode: str | None = None) -> np.ndarray:
    if not path.is_file():
        raise FrameDecodeError(f"{path}: file not found")
    try:
        with Image.open(path) as img:
            img.load()  # decode now: a truncated file raises here, not later
            if mode is not None and img.mode != mode:
                img = img.convert(mode)
            return np.array(img)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise FrameDecodeError(f"{path}: cannot decode image ({exc})") from exc


def read_matrix(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A whitespace-separated text matrix of the given shape with finite values."""
    try:
        values = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except (OSError, ValueError) as exc:
        raise FrameDecodeError(f"{path}: cannot read a {shape[0]}x{shape[1]} matrix ({exc})") from exc
    if values.shape != shape:
        raise FrameDecodeError(f"{path}: expected a {shape[0]}x{shape[1]} matrix, got {values.shape}")
    if not np.all(np.isfinite(values)):
        raise FrameDecodeError(f"{path}: matrix contains NaN or inf")
    return values


def require_dir(path: Path | None, what: str) -> Path:
    if path is None:
        raise SourceError(f"{what}: no path given")
    path = Path(path).expanduser()
    if not path.exists():
        raise SourceError(f"{what}: folder {path} does not exist")
    if not path.is_dir():
        raise SourceError(f"{what}: {path} is not a folder")
    return path
