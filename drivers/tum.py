"""TUM RGB-D layout: ``rgb.txt``, ``depth.txt`` and ``groundtruth.txt`` index files in one folder.

Each index file has ``#`` comment lines and one entry a line: ``timestamp filename`` (rgb, depth; the
file name relative to the folder) or ``timestamp tx ty tz qx qy qz qw`` (ground truth, camera-to-world,
OpenCV camera axes). Every file must be sorted by time.

- Frames are the depth images; their timestamps are the depth timestamps.
- Each depth frame is associated with the nearest colour image by timestamp; a depth frame with no colour
  image within ``max_difference`` seconds (0.02 by default) is dropped, as TUM's ``associate.py`` does,
  and counted in ``frames_unassociated``. Without an ``rgb.txt`` no frame is dropped and none has colour.
- Ground truth is the nearest ``groundtruth.txt`` pose within ``gt_max_difference`` seconds (0.02 by
  default), else None; without a ``groundtruth.txt`` every frame has None.
- Depth is uint16 with 5000 units a metre (``depth_scale``), 0 = invalid.
- Intrinsics are ``intrinsics=(fx, fy, cx, cy)`` when given, else TUM's published calibration chosen by
  the folder name (``freiburg1``/``freiburg2``/``freiburg3``), else the ROS default with a warning. The
  image size comes from the first decodable depth image; later frames of another size are skipped.

Malformed index files (a line with the wrong number of fields, a non-numeric or non-finite value, a
zero quaternion, timestamps out of order) fail at construction with a ``SourceError`` naming file:line.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drivers.base import SequenceSource, SourceError
from drivers.image_io import check_depth_size, read_color_like, read_depth_png, require_dir
from slam.core.frames import CameraIntrinsics, RGBDFrame
from slam.core.geometry import pose_from_tum

log = logging.getLogger(__name__)

#: TUM's published calibration of each Kinect (fx, fy, cx, cy), for 640×480 images
TUM_INTRINSICS: dict[str, tuple[float, float, float, float]] = {
    "freiburg1": (517.3, 516.5, 318.6, 255.3),
    "freiburg2": (520.9, 521.0, 325.1, 249.7),
    "freiburg3": (535.4, 539.2, 320.1, 247.6),
}
#: ROS's default Kinect intrinsics, which TUM recommends when the sensor is unknown
ROS_DEFAULT_INTRINSICS = (525.0, 525.0, 319.5, 239.5)
TUM_IMAGE_SIZE = (640, 480)


@dataclass(frozen=True)
class TUMEntry:
    depth_file: Path
    timestamp: float
    color_file: Path | None
    gt_pose: np.ndarray | None


def _parse_lines(path: Path, n_fields: int, numeric_fields: int) -> list[tuple[int, list[str]]]:
    """Non-comment lines of an index file as (line number, fields); checks field count and time order.

    The first ``numeric_fields`` fields must be finite numbers (the first is the timestamp).
    """
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"tum: cannot read {path} ({exc})") from exc
    rows: list[tuple[int, list[str]]] = []
    previous = -math.inf
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        fields = stripped.split()
        if len(fields) != n_fields:
            raise SourceError(
                f"tum: {path}:{number}: expected {n_fields} fields, got {len(fields)}: {stripped!r}"
            )
        for value in fields[:numeric_fields]:
            try:
                ok = math.isfinite(float(value))
            except ValueError:
                ok = False
            if not ok:
                raise SourceError(f"tum: {path}:{number}: {value!r} is not a finite number: {stripped!r}")
        t = float(fields[0])
        if t < previous:
            raise SourceError(f"tum: {path}: not sorted by time at line {number} ({t} after {previous})")
        previous = t
        rows.append((number, fields))
    return rows


def _nearest(times: np.ndarray, t: float, max_difference: float) -> int | None:
    """Index of the element of the sorted ``times`` nearest ``t``, if within ``max_difference``."""
    if times.size == 0:
        return None
    i = int(np.searchsorted(times, t))
    candidates = [j for j in (i - 1, i) if 0 <= j < times.size]
    best = min(candidates, key=lambda j: abs(times[j] - t))
    return best if abs(times[best] - t) <= max_difference else None


def _intrinsics_for(root: Path) -> tuple[float, float, float, float]:
    name = root.resolve().name.lower()
    for key, values in TUM_INTRINSICS.items():
        if key in name:
            return values
    log.warning(
        "tum: folder name %r names no freiburg1/2/3 sensor; using the ROS default intrinsics %s "
        "(pass intrinsics=(fx, fy, cx, cy) to set them)",
        root.name,
        ROS_DEFAULT_INTRINSICS,
    )
    return ROS_DEFAULT_INTRINSICS


class TUMSource(SequenceSource):
    name = "tum"
    sensor = "rgbd"

    def __init__(
        self,
        path: Path,
        first: int = 0,
        last: int | None = None,
        stride: int = 1,
        *,
        intrinsics: tuple[float, float, float, float] | None = None,
        depth_scale: float = 5000.0,
        max_difference: float = 0.02,
        gt_max_difference: float = 0.02,
        load_color: bool = True,
    ) -> None:
        super().__init__(first, last, stride)
        self.root = require_dir(path, "tum")
        if not depth_scale > 0:
            raise SourceError(f"tum: depth_scale must be positive, got {depth_scale}")
        if not (max_difference >= 0 and gt_max_difference >= 0):
            raise SourceError("tum: max_difference and gt_max_difference must be >= 0")
        self.depth_scale = float(depth_scale)
        self.max_difference = float(max_difference)
        self.gt_max_difference = float(gt_max_difference)
        self.load_color = load_color

        if intrinsics is None:
            self._given_intrinsics = False
            intrinsics = _intrinsics_for(self.root)
        else:
            self._given_intrinsics = True
            if len(intrinsics) != 4 or not all(math.isfinite(float(v)) for v in intrinsics):
                raise SourceError(
                    f"tum: intrinsics must be 4 finite numbers (fx, fy, cx, cy), got {intrinsics}"
                )
        self.fx, self.fy, self.cx, self.cy = (float(v) for v in intrinsics)
        if not (self.fx > 0 and self.fy > 0):
            raise SourceError(f"tum: focal lengths must be positive, got fx={self.fx}, fy={self.fy}")

        depth_file = self.root / "depth.txt"
        if not depth_file.is_file():
            raise SourceError(f"tum: {depth_file} not found")
        depth_rows = _parse_lines(depth_file, 2, 1)
        if not depth_rows:
            raise SourceError(f"tum: {depth_file} lists no depth images")

        rgb_file = self.root / "rgb.txt"
        if rgb_file.is_file():
            rgb_rows = _parse_lines(rgb_file, 2, 1)
            rgb_times = np.array([float(f[0]) for _, f in rgb_rows])
            rgb_names = [f[1] for _, f in rgb_rows]
            has_rgb = True
        else:
            log.warning("tum: %s not found: frames will have no colour", rgb_file)
            rgb_times, rgb_names, has_rgb = np.empty(0), [], False

        gt_file = self.root / "groundtruth.txt"
        if gt_file.is_file():
            gt_rows = _parse_lines(gt_file, 8, 8)
            gt_times = np.array([float(f[0]) for _, f in gt_rows])
            gt_values = np.array([[float(v) for v in f[1:]] for _, f in gt_rows]).reshape(-1, 7)
            for (number, _), q in zip(gt_rows, gt_values[:, 3:], strict=True):
                if np.linalg.norm(q) < 1e-6:
                    raise SourceError(f"tum: {gt_file}:{number}: quaternion (qx qy qz qw) is zero")
            gt_poses = pose_from_tum(gt_values) if len(gt_rows) else np.empty((0, 4, 4))
        else:
            log.info("tum: %s not found: frames will have no ground truth", gt_file)
            gt_times, gt_poses = np.empty(0), np.empty((0, 4, 4))

        entries: list[TUMEntry] = []
        self.unassociated: list[str] = []
        for _, (stamp, name) in depth_rows:
            t = float(stamp)
            color_file = None
            if has_rgb:
                j = _nearest(rgb_times, t, self.max_difference)
                if j is None:
                    self.unassociated.append(name)
                    continue
                color_file = self.root / rgb_names[j]
            k = _nearest(gt_times, t, self.gt_max_difference)
            pose = gt_poses[k].copy() if k is not None else None
            entries.append(TUMEntry(self.root / name, t, color_file, pose))
        if self.unassociated:
            log.warning(
                "tum: %d of %d depth frames have no colour image within %.3f s and are dropped",
                len(self.unassociated),
                len(depth_rows),
                self.max_difference,
            )
        if not entries:
            raise SourceError(
                f"tum: no depth frame in {depth_file} has a colour image within {max_difference} s"
            )
        self._entries = entries
        self._intrinsics: CameraIntrinsics | None = None

    @property
    def frames_unassociated(self) -> int:
        """Depth frames dropped at construction for want of a colour image within ``max_difference``."""
        return len(self.unassociated)

    def _describe(self, entry: TUMEntry) -> str:
        return str(entry.depth_file)

    def _load(self, position: int, entry: TUMEntry) -> RGBDFrame:
        depth = read_depth_png(entry.depth_file, scale=self.depth_scale)
        if self._intrinsics is None:
            # the first decodable frame fixes the image size; later frames must match it
            height, width = depth.shape
            if not self._given_intrinsics and (width, height) != TUM_IMAGE_SIZE:
                log.warning(
                    "tum: images are %dx%d but TUM's calibration is for 640x480; pass intrinsics=",
                    width,
                    height,
                )
            self._intrinsics = CameraIntrinsics(self.fx, self.fy, self.cx, self.cy, width, height)
        intr = self._intrinsics
        check_depth_size(entry.depth_file, depth, intr)
        color = None
        if self.load_color and entry.color_file is not None:
            color = read_color_like(entry.color_file, depth)
        return RGBDFrame(
            index=position,
            timestamp=entry.timestamp,
            depth=depth,
            intrinsics=intr,
            color=color,
            gt_pose=entry.gt_pose,
            source_name=str(entry.depth_file),
        )
