"""Replica as rendered for NICE-SLAM: ``results/frameNNNNNN.jpg``, ``results/depthNNNNNN.png``, ``traj.txt``.

- Depth is uint16 with 6553.5 units a metre (``depth_scale``), 0 = invalid.
- ``traj.txt`` holds one camera-to-world pose a line: 16 numbers, a row-major 4×4 matrix, in the OpenCV
  camera convention (x right, y down, z forward; NICE-SLAM flips the y and z axes after reading them to
  get its OpenGL convention, this driver does not). Line i is the pose of the i-th frame in file-number
  order, as in NICE-SLAM's loader; the number of poses must equal the number of depth images.
- Intrinsics are ``intrinsics=(fx, fy, cx, cy)`` when given, else NICE-SLAM's Replica configuration
  (1200×680, fx = fy = 600, cx = 599.5, cy = 339.5). The image size comes from the first decodable depth
  image; later frames of another size are skipped.
- Colour is required: a frame whose ``frameNNNNNN.jpg`` is missing or unreadable is skipped (counted).
- Replica is rendered and has no timestamps: frame N is given t = N / ``fps`` (30 by default).

A ``traj.txt`` that is missing, has a line that is not 16 finite numbers, or a line count other than the
number of frames fails at construction with a ``SourceError`` naming the file (and line).
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drivers.base import SequenceSource, SourceError
from drivers.image_io import check_depth_size, read_color_like, read_depth_png, require_dir
from slam.core.frames import CameraIntrinsics, RGBDFrame

log = logging.getLogger(__name__)

#: NICE-SLAM's configs/Replica/replica.yaml: (fx, fy, cx, cy) for (width, height)
REPLICA_INTRINSICS = (600.0, 600.0, 599.5, 339.5)
REPLICA_IMAGE_SIZE = (1200, 680)
REPLICA_DEPTH_SCALE = 6553.5
_DEPTH_RE = re.compile(r"^depth(\d+)\.png$")


@dataclass(frozen=True)
class ReplicaEntry:
    number: int
    digits: str  # the number as written in the file names
    pose: np.ndarray


def _read_trajectory(path: Path) -> list[np.ndarray]:
    if not path.is_file():
        raise SourceError(f"replica: {path} not found")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"replica: cannot read {path} ({exc})") from exc
    poses = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 16:
            raise SourceError(
                f"replica: {path}:{number}: expected 16 numbers (a 4x4 matrix), got {len(fields)}"
            )
        try:
            values = [float(v) for v in fields]
        except ValueError as exc:
            raise SourceError(f"replica: {path}:{number}: not a number ({exc})") from exc
        if not all(math.isfinite(v) for v in values):
            raise SourceError(f"replica: {path}:{number}: pose contains NaN or inf")
        poses.append(np.array(values, dtype=np.float64).reshape(4, 4))
    return poses


class ReplicaSource(SequenceSource):
    name = "replica"
    sensor = "rgbd"

    def __init__(
        self,
        path: Path,
        first: int = 0,
        last: int | None = None,
        stride: int = 1,
        *,
        intrinsics: tuple[float, float, float, float] | None = None,
        depth_scale: float = REPLICA_DEPTH_SCALE,
        fps: float = 30.0,
        load_color: bool = True,
    ) -> None:
        super().__init__(first, last, stride)
        self.root = require_dir(path, "replica")
        if not depth_scale > 0:
            raise SourceError(f"replica: depth_scale must be positive, got {depth_scale}")
        if not fps > 0:
            raise SourceError(f"replica: fps must be positive, got {fps}")
        self.depth_scale = float(depth_scale)
        self.fps = float(fps)
        self.load_color = load_color
        self._given_intrinsics = intrinsics is not None
        if intrinsics is None:
            intrinsics = REPLICA_INTRINSICS
        elif len(intrinsics) != 4 or not all(math.isfinite(float(v)) for v in intrinsics):
            raise SourceError(
                f"replica: intrinsics must be 4 finite numbers (fx, fy, cx, cy), got {intrinsics}"
            )
        self.fx, self.fy, self.cx, self.cy = (float(v) for v in intrinsics)
        if not (self.fx > 0 and self.fy > 0):
            raise SourceError(f"replica: focal lengths must be positive, got fx={self.fx}, fy={self.fy}")

        self.results = self.root / "results"
        if not self.results.is_dir():
            raise SourceError(f"replica: folder {self.results} does not exist")
        found = sorted(
            (int(m.group(1)), m.group(1)) for p in self.results.iterdir() if (m := _DEPTH_RE.match(p.name))
        )
        if not found:
            raise SourceError(f"replica: no depthNNNNNN.png files in {self.results}")
        traj_file = self.root / "traj.txt"
        poses = _read_trajectory(traj_file)
        if len(poses) != len(found):
            raise SourceError(
                f"replica: {traj_file} has {len(poses)} poses but {self.results} has {len(found)} depth images"
            )
        self._entries = [ReplicaEntry(n, d, pose) for (n, d), pose in zip(found, poses, strict=True)]
        self._intrinsics: CameraIntrinsics | None = None

    def _depth_path(self, entry: ReplicaEntry) -> Path:
        return self.results / f"depth{entry.digits}.png"

    def _color_path(self, entry: ReplicaEntry) -> Path:
        return self.results / f"frame{entry.digits}.jpg"

    def _describe(self, entry: ReplicaEntry) -> str:
        return str(self._depth_path(entry))

    def _load(self, position: int, entry: ReplicaEntry) -> RGBDFrame:
        depth_path = self._depth_path(entry)
        depth = read_depth_png(depth_path, scale=self.depth_scale)
        if self._intrinsics is None:
            # the first decodable frame fixes the image size; later frames must match it
            height, width = depth.shape
            if not self._given_intrinsics and (width, height) != REPLICA_IMAGE_SIZE:
                log.warning(
                    "replica: images are %dx%d but the default intrinsics are for 1200x680; pass intrinsics=",
                    width,
                    height,
                )
            self._intrinsics = CameraIntrinsics(self.fx, self.fy, self.cx, self.cy, width, height)
        intr = self._intrinsics
        check_depth_size(depth_path, depth, intr)
        color = read_color_like(self._color_path(entry), depth) if self.load_color else None
        return RGBDFrame(
            index=entry.number,
            timestamp=entry.number / self.fps,
            depth=depth,
            intrinsics=intr,
            color=color,
            gt_pose=entry.pose,
            source_name=str(depth_path),
        )
