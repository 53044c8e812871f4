"""Microsoft 7-Scenes layout: frame-NNNNNN.{color.jpg,depth.png,pose.txt} in one folder.

Depth is uint16 millimetres (0 and 65535 invalid); poses are 4×4 camera-to-world. The dataset has no
timestamps: the Kinect ran at 30 Hz, so t = index / 30. Intrinsics come from ``camera-intrinsics.txt``
when present, else the dataset's published values (fx = fy = 585, cx = 320, cy = 240). Colour comes
from a separate, unregistered sensor: treat it as approximately aligned.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from drivers.base import FrameDecodeError, SequenceSource, SourceError
from drivers.image_io import check_depth_size, read_color_like, read_depth_png, read_matrix, require_dir
from slam.core.frames import CameraIntrinsics, RGBDFrame

DEFAULT_K = np.array([[585.0, 0.0, 320.0], [0.0, 585.0, 240.0], [0.0, 0.0, 1.0]])
_DEPTH_RE = re.compile(r"^frame-(\d+)\.depth\.png$")


class SevenScenesSource(SequenceSource):
    name = "7scenes"
    sensor = "rgbd"

    def __init__(
        self,
        path: Path,
        first: int = 0,
        last: int | None = None,
        stride: int = 1,
        fps: float = 30.0,
        load_color: bool = True,
    ) -> None:
        super().__init__(first, last, stride)
        self.root = require_dir(path, "7scenes")
        self.fps = fps
        self.load_color = load_color
        numbers = sorted(int(m.group(1)) for p in self.root.iterdir() if (m := _DEPTH_RE.match(p.name)))
        if not numbers:
            raise SourceError(f"7scenes: no frame-NNNNNN.depth.png files in {self.root}")
        self._entries = numbers
        k_file = self.root / "camera-intrinsics.txt"
        try:
            k = read_matrix(k_file, (3, 3)) if k_file.exists() else DEFAULT_K
        except FrameDecodeError as exc:
            raise SourceError(str(exc)) from exc
        if not (k[0, 0] > 0 and k[1, 1] > 0):
            # caught here: at decode time a bad K would make every frame fail, one by one
            raise SourceError(f"{k_file}: focal lengths must be positive, got fx={k[0, 0]}, fy={k[1, 1]}")
        self._k = k
        self._intrinsics: CameraIntrinsics | None = None

    def _path(self, number: int, suffix: str) -> Path:
        return self.root / f"frame-{number:06d}.{suffix}"

    def _describe(self, entry: int) -> str:
        return str(self._path(entry, "depth.png"))

    def _load(self, position: int, entry: int) -> RGBDFrame:
        depth_path = self._path(entry, "depth.png")
        depth = read_depth_png(depth_path, scale=1000.0, invalid_values=(65535,))
        if self._intrinsics is None:
            # the first decodable frame fixes the image size; later frames must match it
            self._intrinsics = CameraIntrinsics.from_matrix(self._k, depth.shape[1], depth.shape[0])
        # checked before the colour so that the message is about the depth image's size
        check_depth_size(depth_path, depth, self._intrinsics)
        color = None
        color_path = self._path(entry, "color.jpg")
        if self.load_color and color_path.exists():
            color = read_color_like(color_path, depth)
        pose_path = self._path(entry, "pose.txt")
        pose = read_matrix(pose_path, (4, 4)) if pose_path.exists() else None
        return RGBDFrame(
            index=entry,
            timestamp=entry / self.fps,
            depth=depth,
            intrinsics=self._intrinsics,
            color=color,
            gt_pose=pose,
            source_name=str(depth_path),
        )
