"""Frame assembly (pure numpy, no librealsense): depth/colour pairing, dropped-frame counting, and
the conversion of depth units and colour formats."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from drivers.base import FrameDecodeError
from slam.core.frames import CameraIntrinsics


@dataclass
class Image:
    """One decoded image of one stream."""

    stamp_ms: float
    number: int
    data: np.ndarray
    intrinsics: CameraIntrinsics | None = None


@dataclass
class FramePair:
    depth: Image
    color: Image | None


class FramePairer:
    """Turns the syncer's framesets into one pair per depth frame.

    The syncer emits a frameset whenever any stream has a new frame, reusing the other stream's
    previous frame (measured sequence: (d0,c0) (d1,c1) (d2,c1) (d2,c2) (d3,c2) ...). A depth frame is
    emitted once, with the first colour frame not older than the one before it; a depth frame whose
    colour never comes is emitted with the newest colour seen when the next depth frame arrives.
    Identity is the timestamp: software-device and some recorded frames all have frame number 0.
    """

    def __init__(self, with_color: bool) -> None:
        self.with_color = with_color
        self._pending: Image | None = None
        self._pending_color: Image | None = None  # newest colour seen for the pending depth
        self._last_depth_ms = -math.inf
        self._last_color_ms = -math.inf  # newest colour already paired
        self.stale_color = 0  # depth frames paired with an older colour frame

    def push(self, depth: Image | None, color: Image | None) -> list[FramePair]:
        out: list[FramePair] = []
        if depth is not None and depth.stamp_ms > self._last_depth_ms:
            out.extend(self.flush())
            self._last_depth_ms = depth.stamp_ms
            self._pending = depth
        if self._pending is None:
            return out
        if not self.with_color:
            out.append(FramePair(self._pending, None))
            self._pending = None
            return out
        if color is not None:
            self._pending_color = color
            if color.stamp_ms > self._last_color_ms:
                out.append(self._emit(color))
        return out

    def flush(self) -> list[FramePair]:
        """The pending depth frame, with the newest colour seen (end of stream, or a newer depth)."""
        if self._pending is None:
            return []
        if self._pending_color is not None:
            self.stale_color += 1
        return [self._emit(self._pending_color)]

    def _emit(self, color: Image | None) -> FramePair:
        assert self._pending is not None
        pair = FramePair(self._pending, color)
        if color is not None:
            self._last_color_ms = max(self._last_color_ms, color.stamp_ms)
        self._pending = None
        return pair


class DropCounter:
    """Frames missing from a stream, from the gaps between successive timestamps at the stream's rate."""

    def __init__(self, fps: float) -> None:
        self.period_ms = 1000.0 / fps
        self.dropped = 0
        self._last_ms: float | None = None

    def see(self, stamp_ms: float) -> int:
        missing = 0
        if self._last_ms is not None:
            missing = max(0, round((stamp_ms - self._last_ms) / self.period_ms) - 1)
            self.dropped += missing
        self._last_ms = stamp_ms
        return missing


def depth_metres(raw: np.ndarray, scale: float) -> np.ndarray:
    """uint16 depth units to float32 metres; 0 stays 0 (invalid)."""
    return (raw.astype(np.float32) * np.float32(scale)).astype(np.float32)


def color_rgb(data: np.ndarray, fmt: str) -> np.ndarray:
    """An H×W×3 uint8 RGB image from a colour frame's data in librealsense format ``fmt``."""
    if fmt == "rgb8":
        return np.ascontiguousarray(data)
    if fmt == "bgr8":
        return np.ascontiguousarray(data[..., ::-1])
    if fmt == "rgba8":
        return np.ascontiguousarray(data[..., :3])
    if fmt == "bgra8":
        return np.ascontiguousarray(data[..., 2::-1])
    raise FrameDecodeError(f"colour format {fmt} is not supported (rgb8, bgr8, rgba8, bgra8 are)")


SUPPORTED_COLOR = ("rgb8", "bgr8", "rgba8", "bgra8")
