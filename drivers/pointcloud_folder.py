"""A folder of ``.ply`` / ``.pcd`` scans, one scan a file, in natural name order (``2`` before ``10``).

- Points are read with Open3D; ``intensity`` (or ``scalar_intensity``, ``reflectance``, ``i``), per-point
  time (``t``, ``time``, ``timestamp``, … in the units of ``time_unit``, see
  ``drivers.lidar_io.point_times_seconds``) and ``ring`` attributes are used when the file has them.
- Timestamps: the ``times`` file (one a line, as many as scans), else those of a TUM ``poses`` file with
  as many poses as scans, else index / ``fps``.
- Ground truth, optional: ``poses``, a TUM or KITTI trajectory file (read by ``slam.core.trajectory``)
  of sensor-to-world poses. A KITTI file has one pose per scan. A TUM file is matched to the scans by
  nearest timestamp within ``max_difference`` seconds when scan times are known (scans without a match
  have none), else it must have one pose per scan.

Unreadable or empty files and scans with no finite point are skipped and counted; non-finite points are
dropped and counted in ``points_dropped``.

``load_registration_pair`` reads a folder holding ``source.ply``, ``target.ply`` and
``T_target_source.txt`` (a 4×4 matrix mapping source points into the target frame), the layout of the
real scan pair in the shared data.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np

from drivers.base import FrameDecodeError, SequenceSource, SourceError
from drivers.image_io import read_matrix, require_dir
from drivers.lidar_io import (
    INTENSITY_FIELDS,
    RING_FIELDS,
    TIME_FIELDS,
    TimeUnit,
    finite_rows,
    first_present,
    natural_key,
    point_times_seconds,
    read_point_cloud_file,
    read_times_file,
)
from slam.core.frames import LidarScan
from slam.core.trajectory import TrajectoryError, associate_indices, read_trajectory

log = logging.getLogger(__name__)

SUFFIXES = (".ply", ".pcd")


def decode_cloud(path: Path, timestamp: float, time_unit: TimeUnit = "auto") -> tuple[dict, int]:
    """The LidarScan fields of one cloud file (points, intensity, point_times, ring) and the number of
    non-finite points dropped."""
    attrs = read_point_cloud_file(path)
    points = np.asarray(attrs["positions"], dtype=np.float64)
    names = [n for n in attrs if n != "positions"]
    intensity_name = first_present(INTENSITY_FIELDS, names)
    time_name = first_present(TIME_FIELDS, names)
    ring_name = first_present(RING_FIELDS, names)
    intensity = attrs[intensity_name] if intensity_name else None
    times = None
    if time_name:
        try:
            times = point_times_seconds(attrs[time_name], time_unit, timestamp, what=f"{path}: {time_name}")
        except ValueError as exc:
            raise FrameDecodeError(str(exc)) from exc
    ring = attrs[ring_name] if ring_name else None
    keep = finite_rows(points, intensity, times)
    if not keep.any():
        raise FrameDecodeError(f"{path}: no finite point ({len(points)} NaN/inf points)")
    dropped = int(len(points) - keep.sum())
    fields = {
        "points": points[keep],
        "intensity": None if intensity is None else intensity[keep],
        "point_times": None if times is None else times[keep],
        "ring": None if ring is None else ring[keep],
    }
    return fields, dropped


class PointCloudFolderSource(SequenceSource):
    name = "pointcloud_folder"
    sensor = "lidar"

    def __init__(
        self,
        path: Path,
        first: int = 0,
        last: int | None = None,
        stride: int = 1,
        *,
        poses: Path | str | None = None,
        poses_format: Literal["auto", "tum", "kitti"] = "auto",
        times: Path | str | None = None,
        fps: float = 10.0,
        max_difference: float = 0.02,
        time_unit: TimeUnit = "auto",
    ) -> None:
        super().__init__(first, last, stride)
        self.root = require_dir(path, "pointcloud_folder")
        if not fps > 0:
            raise SourceError(f"pointcloud_folder: fps must be positive, got {fps}")
        files = sorted(
            (p for p in self.root.iterdir() if p.suffix.lower() in SUFFIXES and p.is_file()), key=natural_key
        )
        if not files:
            raise SourceError(f"pointcloud_folder: no .ply or .pcd files in {self.root}")
        self._entries = files
        self.time_unit = time_unit
        self.points_dropped = 0

        stamps = read_times_file(Path(times), len(files), "pointcloud_folder") if times is not None else None
        self.gt_poses: list[np.ndarray | None] = [None] * len(files)
        if poses is not None:
            try:
                traj = read_trajectory(Path(poses), poses_format)
            except TrajectoryError as exc:
                raise SourceError(f"pointcloud_folder: {exc}") from exc
            if traj.has_timestamps and stamps is not None:
                scan_idx, pose_idx = associate_indices(stamps, traj.timestamps, max_difference)
                for i, j in zip(scan_idx, pose_idx):
                    self.gt_poses[i] = traj.poses[j]
                if len(scan_idx) < len(files):
                    log.warning(
                        "pointcloud_folder: %d of %d scans have no pose in %s within %g s",
                        len(files) - len(scan_idx),
                        len(files),
                        poses,
                        max_difference,
                    )
            else:
                if len(traj) != len(files):
                    raise SourceError(
                        f"pointcloud_folder: {poses} has {len(traj)} poses for {len(files)} scans"
                    )
                self.gt_poses = list(traj.poses)
                if traj.has_timestamps:
                    stamps = traj.timestamps
        self.timestamps = stamps if stamps is not None else np.arange(len(files), dtype=np.float64) / fps

    def _describe(self, entry: Path) -> str:
        return str(entry)

    def _load(self, position: int, entry: Path) -> LidarScan:
        timestamp = float(self.timestamps[position])
        fields, dropped = decode_cloud(entry, timestamp, self.time_unit)
        if dropped:
            self.points_dropped += dropped
            log.warning("%s: dropped %d points with NaN or inf", entry, dropped)
        return LidarScan(
            index=position,
            timestamp=timestamp,
            gt_pose=self.gt_poses[position],
            source_name=str(entry),
            extra={"points_dropped": dropped},
            **fields,
        )


def load_registration_pair(folder: Path) -> tuple[LidarScan, LidarScan, np.ndarray]:
    """``source.ply``, ``target.ply`` and the 4×4 ``T_target_source.txt`` of a scan-pair folder."""
    folder = require_dir(folder, "registration pair")
    scans = []
    for index, name in enumerate(("source.ply", "target.ply")):
        try:
            fields, _ = decode_cloud(folder / name, 0.0)
        except FrameDecodeError as exc:
            raise SourceError(str(exc)) from exc
        scans.append(LidarScan(index=index, timestamp=0.0, source_name=str(folder / name), **fields))
    try:
        transform = read_matrix(folder / "T_target_source.txt", (4, 4))
    except FrameDecodeError as exc:
        raise SourceError(str(exc)) from exc
    return scans[0], scans[1], transform
