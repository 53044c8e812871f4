"""KITTI odometry layout: one sequence folder ``sequences/XX`` with

- ``velodyne/NNNNNN.bin``: one scan a file, float32 little-endian ``x y z intensity`` per point, in the
  LiDAR frame (x forward, y left, z up);
- ``times.txt``: one timestamp (s) per scan; without it t = index / ``fps`` (10 Hz);
- ``calib.txt``: ``KEY: numbers`` lines; ``Tr`` (or ``Tr_velo_to_cam``) is the 3×4 LiDAR-to-camera-0
  transform;
- ground truth, optional (the test sequences 11–21 have none): ``poses.txt`` in the sequence folder or
  KITTI's own ``poses/XX.txt`` next to ``sequences/``, or the ``poses`` option: one camera-0 pose a line
  (row-major 3×4). They are converted to the LiDAR frame, ``T_lidar = Tr⁻¹ · T_cam · Tr``, so
  ``gt_pose`` is the LiDAR-to-world pose with the world at the first LiDAR pose when the first camera
  pose is the identity;
- optionally (not part of KITTI; written by ``drivers.sim.lidar_dataset``) ``velodyne_times/NNNNNN.bin``:
  one float32 per point of the scan with the same number, the point's time in seconds relative to the
  scan's timestamp. Scans then carry ``point_times``.

Which instant of the sweep a scan's timestamp and pose denote depends on who recorded it: for the
generated sequences it is the end of the sweep (``drivers.sim.lidar_dataset``).

Bad input: a ``.bin`` whose size is not a multiple of 16 bytes, an empty scan, a scan with no finite
point, or a time file of the wrong size makes that scan skipped and counted (with the file named);
non-finite points are dropped and counted in ``points_dropped`` (and ``scan.extra["points_dropped"]``).
A poses, times or calib file that is malformed or disagrees with the scans fails at construction.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from drivers.base import FrameDecodeError, SequenceSource, SourceError
from drivers.image_io import require_dir
from drivers.lidar_io import finite_rows, read_float32_sidecar, read_kitti_bin, read_times_file
from slam.core.frames import LidarScan
from slam.core.geometry import invert_pose
from slam.core.trajectory import TrajectoryError, read_kitti

log = logging.getLogger(__name__)

_SCAN_RE = re.compile(r"^(\d+)\.bin$")
TIMES_SIDECAR = "velodyne_times"
CALIB_KEYS = ("Tr", "Tr_velo_to_cam")


def read_calib(path: Path) -> dict[str, np.ndarray]:
    """``KEY: v1 v2 ...`` lines of a KITTI calib file to float64 arrays (errors name file and line)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"kitti: cannot read {path} ({exc})") from exc
    out: dict[str, np.ndarray] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, rest = line.partition(":")
        if not sep:
            raise SourceError(f"kitti: {path}:{number}: expected 'KEY: numbers', got {line.strip()!r}")
        try:
            values = np.array([float(v) for v in rest.split()], dtype=np.float64)
        except ValueError:
            raise SourceError(
                f"kitti: {path}:{number}: {key.strip()} has a value that is not a number"
            ) from None
        if not np.all(np.isfinite(values)):
            raise SourceError(f"kitti: {path}:{number}: {key.strip()} has NaN or inf")
        out[key.strip()] = values
    return out


def lidar_to_camera(calib_path: Path) -> np.ndarray:
    """The 4×4 ``Tr`` (LiDAR to camera 0) of a calib file."""
    calib = read_calib(calib_path)
    for key in CALIB_KEYS:
        if key in calib:
            values = calib[key]
            if values.size != 12:
                raise SourceError(f"kitti: {calib_path}: {key} must have 12 numbers (3x4), got {values.size}")
            tr = np.eye(4)
            tr[:3, :4] = values.reshape(3, 4)
            return tr
    raise SourceError(
        f"kitti: {calib_path} has no Tr line (LiDAR-to-camera transform); keys: {sorted(calib)}"
    )


def _default_poses_file(root: Path) -> Path | None:
    for candidate in (root / "poses.txt", root.parent.parent / "poses" / f"{root.name}.txt"):
        if candidate.is_file():
            return candidate
    return None


class KittiSource(SequenceSource):
    name = "kitti"
    sensor = "lidar"

    def __init__(
        self,
        path: Path,
        first: int = 0,
        last: int | None = None,
        stride: int = 1,
        *,
        poses: Path | str | None = None,
        calib: Path | str | None = None,
        fps: float = 10.0,
        point_times: bool = True,
    ) -> None:
        """``poses``/``calib``: files to use instead of the defaults; ``point_times``: read the
        ``velodyne_times`` sidecar when present."""
        super().__init__(first, last, stride)
        self.root = require_dir(path, "kitti")
        scan_dir = self.root / "velodyne"
        if not scan_dir.is_dir():
            raise SourceError(
                f"kitti: {scan_dir} not found (give the sequence folder, e.g. .../sequences/00)"
            )
        if not fps > 0:
            raise SourceError(f"kitti: fps must be positive, got {fps}")
        numbers = sorted(int(m.group(1)) for p in scan_dir.iterdir() if (m := _SCAN_RE.match(p.name)))
        if not numbers:
            raise SourceError(f"kitti: no NNNNNN.bin scans in {scan_dir}")
        self._entries = numbers
        self.scan_dir = scan_dir
        self.points_dropped = 0

        times_file = self.root / "times.txt"
        if times_file.is_file():
            self.timestamps = read_times_file(times_file, len(numbers), "kitti")
        else:
            log.warning("kitti: %s not found: t = scan number / %g Hz", times_file, fps)
            self.timestamps = np.array(numbers, dtype=np.float64) / fps

        times_dir = self.root / TIMES_SIDECAR
        self.times_dir = times_dir if point_times and times_dir.is_dir() else None

        poses_file = Path(poses) if poses is not None else _default_poses_file(self.root)
        self.poses_file = poses_file
        self.gt_poses: np.ndarray | None = None
        if poses_file is not None:
            calib_file = Path(calib) if calib is not None else self.root / "calib.txt"
            if not calib_file.is_file():
                raise SourceError(
                    f"kitti: {calib_file} not found: it holds Tr, needed to bring the camera poses of "
                    f"{poses_file} into the LiDAR frame"
                )
            self.tr = lidar_to_camera(calib_file)
            try:
                cam = read_kitti(poses_file).poses
            except TrajectoryError as exc:
                raise SourceError(f"kitti: {exc}") from exc
            if len(cam) != len(numbers):
                raise SourceError(
                    f"kitti: {poses_file} has {len(cam)} poses for {len(numbers)} scans in {scan_dir}"
                )
            self.gt_poses = invert_pose(self.tr) @ cam @ self.tr

    def _scan_path(self, number: int) -> Path:
        return self.scan_dir / f"{number:06d}.bin"

    def _describe(self, entry: int) -> str:
        return str(self._scan_path(entry))

    def _load(self, position: int, entry: int) -> LidarScan:
        path = self._scan_path(entry)
        data = read_kitti_bin(path)
        times = None
        if self.times_dir is not None:
            times = read_float32_sidecar(self.times_dir / f"{entry:06d}.bin", len(data))
        keep = finite_rows(data, times)
        dropped = int(len(data) - keep.sum())
        if dropped:
            if not keep.any():
                raise FrameDecodeError(f"{path}: no finite point ({dropped} NaN/inf points)")
            self.points_dropped += dropped
            log.warning("%s: dropped %d points with NaN or inf", path, dropped)
            data = data[keep]
            times = None if times is None else times[keep]
        return LidarScan(
            index=entry,
            timestamp=float(self.timestamps[position]),
            points=data[:, :3],
            intensity=data[:, 3],
            point_times=times,
            gt_pose=None if self.gt_poses is None else self.gt_poses[position],
            source_name=str(path),
            extra={"points_dropped": dropped},
        )
