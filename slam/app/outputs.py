"""The run's output contract, shared by ``slam replay`` and the service, each file written atomically:

``DIR/trajectory.txt``  TUM format, camera-to-world, one line per tracked frame
``DIR/mesh.ply``        the map's mesh, when a map exists and ``output.save_mesh``
``DIR/stats.json``      frames, timings, memory, tracker/mapper names and, with ground truth, accuracy
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from drivers.base import Source, open_source
from slam.app.config import SLAMConfig
from slam.app.persistence import write_mesh_atomic, write_text_atomic, write_trajectory_atomic
from slam.core.frames import Frame
from slam.core.resources import peak_rss_mb
from slam.engine.engine import Engine, TrackingResult

log = logging.getLogger(__name__)


@dataclass
class TrajectoryRecorder:
    """Observer that keeps every tracked pose, with ground truth where the frame has it."""

    timestamps: list[float] = field(default_factory=list)
    poses: list[np.ndarray] = field(default_factory=list)
    gt_timestamps: list[float] = field(default_factory=list)
    gt_poses: list[np.ndarray] = field(default_factory=list)

    def on_tracked(self, frame: Frame, result: TrackingResult) -> None:
        self.record(frame, result.pose)

    def record(self, frame: Frame, pose: np.ndarray) -> None:
        """Keep ``pose`` as ``frame``'s (a copy), and the frame's ground truth when it has one."""
        self.timestamps.append(frame.timestamp)
        self.poses.append(pose.copy())
        gt = getattr(frame, "gt_pose", None)
        if gt is not None:
            self.gt_timestamps.append(frame.timestamp)
            self.gt_poses.append(gt)

    def write(self, path: Path) -> None:
        """The recorded poses as a TUM trajectory file, written atomically."""
        write_trajectory_atomic(path, np.array(self.timestamps, dtype=np.float64), np.array(self.poses))


@dataclass
class RunResult:
    out_dir: Path
    stats: dict[str, Any]
    trajectory_path: Path
    mesh_path: Path | None
    interrupted: bool = False


def write_run_outputs(
    cfg: SLAMConfig,
    source: Source,
    engine: Engine,
    recorder: TrajectoryRecorder,
    wall_s: float,
    interrupted: bool = False,
    extra_stats: dict[str, Any] | None = None,
) -> RunResult:
    """The run's output contract (trajectory.txt, mesh.ply, stats.json), each file written atomically;
    shared by ``slam replay`` and the service."""
    out_dir = Path(cfg.output.dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    traj_path = out_dir / "trajectory.txt"
    recorder.write(traj_path)
    mesh_path, mesh_error = None, None
    if cfg.output.save_mesh and engine.mapper is not None:
        try:
            mesh = engine.mapper.extract_mesh()
            if mesh is not None and len(mesh.triangles) > 0:
                mesh_path = out_dir / "mesh.ply"
                write_mesh_atomic(mesh_path, mesh)
        except Exception as exc:  # e.g. a mapper that crashed mid-step: the stats must still be written
            log.exception("could not write the mesh")
            mesh_path, mesh_error = None, f"{type(exc).__name__}: {exc}"

    stats = _stats(cfg, source, engine, recorder, wall_s)
    stats["interrupted"] = interrupted
    if mesh_error is not None:
        stats["mesh_error"] = mesh_error
    if mesh_path is not None and not interrupted:
        stats.update(ground_truth_mesh_accuracy(cfg, source, mesh_path))
    stats.update(extra_stats or {})
    write_text_atomic(out_dir / "stats.json", json.dumps(stats, indent=2) + "\n")
    return RunResult(out_dir, stats, traj_path, mesh_path, interrupted)


def ground_truth_mesh_accuracy(
    cfg: SLAMConfig, source: Source, mesh_path: Path, view_every: int = 10
) -> dict:
    """Mesh metrics against the source's exact mesh (``gt_mesh_path``, e.g. the demo scene), completion
    counted over the surfaces the run's frames observed (every ``view_every``-th frame, at its
    ground-truth pose); empty when the source has no such mesh."""
    gt_mesh = getattr(source, "gt_mesh_path", None)
    if gt_mesh is None or not Path(gt_mesh).exists():
        return {}
    from slam.eval.mesh import MeshError, crop_mesh_near, mesh_metrics, near_points_mask, observed_mask

    s = cfg.source
    views_source = open_source(
        s.kind, s.path, first=s.first, last=s.last, stride=(s.stride or 1) * view_every, **s.options
    )
    reference: Any = gt_mesh
    if getattr(source, "sensor", "rgbd") == "lidar":
        with views_source:
            seen = lidar_observed_points(views_source, cfg.lidar.preprocess.max_range, voxel=0.1)
        # completion: the surface seen within mesh_eval_range of the sensor
        near = seen[:, 3] <= cfg.lidar.mesh_eval_range
        ref_mask = partial(near_points_mask, seen=seen[near, :3], tolerance=cfg.lidar.mesh_eval_tolerance)
        # an outdoor scene's mesh is far larger than what a run sees: sampled whole, its samples would be
        # metres apart and the accuracy would measure their spacing, so keep the triangles near the scans
        reference = crop_mesh_near(gt_mesh, seen[:, :3], radius=5.0)
    else:
        with views_source:
            views = [
                (f.gt_pose, f.depth, f.intrinsics)
                for f in views_source
                if getattr(f, "gt_pose", None) is not None
            ]
        ref_mask = partial(observed_mask, views=views)
    try:
        m = mesh_metrics(reference, mesh_path, n_points=100_000, ref_mask=ref_mask)
    except MeshError as exc:
        log.warning("mesh metrics against %s: %s", gt_mesh, exc)
        return {}
    return {
        "mesh_accuracy_cm": round(m.accuracy_cm, 3),
        "mesh_completion_cm": round(m.completion_cm, 3),
        "mesh_completion_ratio": round(m.completion_ratio, 4),
    }


def lidar_observed_points(scans, max_range: float, voxel: float = 0.1) -> np.ndarray:
    """World points the scans observed within ``max_range`` of the sensor, at their ground-truth poses, one
    per ``voxel`` cell (nearest range kept): M×4, x y z and the range it was seen from (the reference for
    LiDAR mesh metrics)."""
    from slam.frontends.lidar_preprocess import range_mask, voxel_downsample

    def reduce(parts: list[np.ndarray]) -> np.ndarray:
        seen = np.concatenate(parts)
        seen = seen[
            np.argsort(seen[:, 3], kind="stable")
        ]  # the first point of a cell is its nearest sighting
        return seen[voxel_downsample(seen[:, :3], voxel)]

    # reduced every _OBSERVED_BATCH_ROWS rows: all the scans' points at once (4·8 bytes a point) raised a
    # long LiDAR run's peak memory by gigabytes. The same points in the same order as one reduction: the
    # kept points come first and the sort is stable, so ties still go to the earlier scan
    chunks: list[np.ndarray] = []
    pending = 0
    for scan in scans:
        if getattr(scan, "gt_pose", None) is None:
            continue
        pts = scan.points[np.isfinite(scan.points).all(axis=1)]
        pts = pts[range_mask(pts, 0.0, max_range)].astype(np.float64)
        world = pts @ scan.gt_pose[:3, :3].T + scan.gt_pose[:3, 3]
        chunks.append(np.column_stack([world, np.linalg.norm(pts, axis=1)]))
        pending += len(pts)
        if pending > _OBSERVED_BATCH_ROWS:
            chunks, pending = [reduce(chunks)], 0
    if not chunks:
        return np.zeros((0, 4))
    return reduce(chunks)


#: scan points gathered before ``lidar_observed_points`` reduces them to one per cell (64 MB of rows)
_OBSERVED_BATCH_ROWS = 2_000_000


def _stats(cfg: SLAMConfig, source: Source, engine: Engine, rec: TrajectoryRecorder, wall_s: float) -> dict:
    ms = np.array(engine.stats.tracking_ms) if engine.stats.tracking_ms else np.array([np.nan])
    map_ms = np.array(engine.stats.mapping_ms) if engine.stats.mapping_ms else np.array([np.nan])
    n = engine.stats.frames
    stats: dict[str, Any] = {
        "frames": n,
        "frames_skipped": source.frames_skipped,
        "frames_lost": engine.stats.frames_lost,
        "wall_s": round(wall_s, 3),
        "fps": round(n / wall_s, 3) if wall_s > 0 else None,
        "tracking_ms_median": round(float(np.median(ms)), 3),
        "tracking_ms_p90": round(float(np.percentile(ms, 90)), 3),
        "mapping_ms_median": round(float(np.median(map_ms)), 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "tracker": engine.tracker_name,
        "mapper": engine.mapper.name if engine.mapper is not None else None,
        "map_mb": round(engine.mapper.map_bytes() / 2**20, 3) if engine.mapper is not None else None,
        "source": {"kind": cfg.source.kind, "path": str(cfg.source.path) if cfg.source.path else None},
        "skipped": [{"frame": which, "reason": why} for which, why in source.skipped],
    }
    stats.update(trajectory_accuracy(rec))
    stats.update(engine.frontend_stats())  # e.g. the event term's ``events`` block
    return stats


def trajectory_accuracy(rec: TrajectoryRecorder) -> dict[str, float | None]:
    """ATE (unaligned and SE(3)-aligned) and 1-second RPE against the frames' ground truth."""
    from slam.core.trajectory import Trajectory
    from slam.eval.metrics import ate, rpe

    gt_t = np.array(rec.gt_timestamps)
    if len(gt_t) < 2:
        return {"ate_rmse_m": None, "ate_rmse_aligned_m": None, "rpe_trans_1s_m": None}
    keep = np.isin(np.array(rec.timestamps), gt_t)
    est = Trajectory(np.array(rec.timestamps)[keep], np.array(rec.poses)[keep])
    ref = Trajectory(gt_t, np.array(rec.gt_poses))
    out: dict[str, float | None] = {"ate_rmse_m": None, "ate_rmse_aligned_m": None, "rpe_trans_1s_m": None}
    # each metric on its own: too few or collinear poses make one undefined, not the others
    for key, fn in (
        ("ate_rmse_m", lambda: ate(ref, est, align="none").rmse),
        ("ate_rmse_aligned_m", lambda: ate(ref, est, align="se3").rmse),
        ("rpe_trans_1s_m", lambda: rpe(ref, est, delta=1.0, unit="seconds").trans.rmse),
    ):
        try:
            out[key] = round(float(fn()), 6)
        except ValueError as exc:  # TrajectoryError is a ValueError too
            log.info("%s undefined for this run: %s", key, exc)
    return out
