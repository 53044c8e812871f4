"""Replay a recorded sequence through the engine and write the run's output contract.

``DIR/trajectory.txt``  TUM format, camera-to-world, one line per tracked frame
``DIR/mesh.ply``        the map's mesh, when a map exists and ``output.save_mesh``
``DIR/stats.json``      frames, timings, memory, tracker/mapper names and, with ground truth, accuracy

Interrupting a run (Ctrl-C) still writes everything tracked so far.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from drivers.base import Source, SourceError, open_source
from slam.app.config import SLAMConfig, torch_threads
from slam.app.persistence import write_mesh_atomic, write_text_atomic, write_trajectory_atomic
from slam.core.frames import Frame, LidarScan, RGBDFrame
from slam.engine.baseline import Open3DOdometryTracker, TSDFMapper
from slam.engine.engine import Engine, TrackingResult
from slam.engine.mapper import Mapper
from slam.engine.tracker import Tracker
from slam.frontends.events import EventAidedTracker
from slam.frontends.lidar import LidarFrontend
from slam.map.neural_map import NeuralSDFMap, build_map

log = logging.getLogger(__name__)


@dataclass
class TrajectoryRecorder:
    """Observer that keeps every tracked pose, with ground truth where the frame has it."""

    timestamps: list[float] = field(default_factory=list)
    poses: list[np.ndarray] = field(default_factory=list)
    gt_timestamps: list[float] = field(default_factory=list)
    gt_poses: list[np.ndarray] = field(default_factory=list)

    def on_tracked(self, frame: Frame, result: TrackingResult) -> None:
        self.timestamps.append(frame.timestamp)
        self.poses.append(result.pose.copy())
        gt = getattr(frame, "gt_pose", None)
        if gt is not None:
            self.gt_timestamps.append(frame.timestamp)
            self.gt_poses.append(gt)


@dataclass
class RunResult:
    out_dir: Path
    stats: dict[str, Any]
    trajectory_path: Path
    mesh_path: Path | None
    interrupted: bool = False


def open_configured_source(cfg: SLAMConfig) -> Source:
    """The configured driver; with ``events.path`` set, its RGB-D frames carry that recording's events."""
    s = cfg.source
    source = open_source(s.kind, s.path, first=s.first, last=s.last, stride=s.stride, **s.options)
    if cfg.events.path is not None:
        from drivers.events.reader import EventFileError
        from drivers.events.sync import EventSyncedSource

        try:
            if source.sensor != "rgbd":
                raise SourceError(
                    f"events.path is set but source {s.kind!r} yields {source.sensor} data: events are attached "
                    "to RGB-D frames"
                )
            source = EventSyncedSource(source, cfg.events)
        except EventFileError as exc:
            source.close()
            raise SourceError(f"events.path: {exc}") from exc
        except BaseException:
            source.close()
            raise
    return source


def build_engine(cfg: SLAMConfig, neural_map: NeuralSDFMap | None = None, with_mapper: bool = True) -> Engine:
    """The configured tracker and mapper; ``neural_map`` continues an existing (loaded) map, and
    ``with_mapper=False`` tracks only (localisation in a saved map)."""
    import torch

    torch.set_num_threads(torch_threads(cfg))
    # the decoder's initial weights and fresh embeddings come from torch's global generator: seed it, or
    # two runs of the same config start from different maps
    torch.manual_seed(cfg.seed)
    if cfg.pipeline == "baseline":
        if neural_map is not None:
            raise ValueError("a saved neural map needs pipeline: neural (the baseline keeps an Open3D TSDF)")
        return Engine(Open3DOdometryTracker(cfg.baseline.odometry), TSDFMapper(cfg.baseline.tsdf) if with_mapper else None)
    neural_map = neural_map if neural_map is not None else build_map(cfg.map)
    # RGB-D frames and LiDAR scans go through the same tracker and mapper; the LiDAR front end only
    # preprocesses scans and turns them into points and rays (slam/lidar.py)
    lidar = LidarFrontend(cfg.lidar)
    mapper = Mapper(neural_map, cfg.mapper, seed=cfg.seed, lidar=lidar) if with_mapper else None
    if cfg.events.tracking.enabled:
        # the depth tracker plus the event term; frames without events take the depth tracker's path exactly
        tracker: Tracker = EventAidedTracker(
            neural_map, cfg.tracker, seed=cfg.seed, lidar=lidar, events=cfg.events.tracking
        )
    else:
        tracker = Tracker(neural_map, cfg.tracker, seed=cfg.seed, lidar=lidar)
    return Engine(tracker, mapper)


def peak_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux, bytes on macOS
    scale = 1.0 if sys.platform == "darwin" else 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def _progress(total: int | None, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", desc="replay", disable=not enabled, dynamic_ncols=True, leave=False)


def run_replay(cfg: SLAMConfig, source: Source | None = None, engine: Engine | None = None) -> RunResult:
    """Run every frame of the configured source through the engine and write the outputs."""
    source = source or open_configured_source(cfg)
    engine = engine or build_engine(cfg)
    recorder = TrajectoryRecorder()
    engine.subscribe(recorder)
    out_dir = Path(cfg.output.dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    interrupted = False
    t0 = time.perf_counter()
    with source, _progress(source.length(), cfg.output.progress) as bar:
        try:
            for frame in source:
                if not isinstance(frame, (RGBDFrame, LidarScan)):
                    raise TypeError(
                        f"source {cfg.source.kind!r} yields {type(frame).__name__}; the engine tracks RGB-D frames "
                        "and LiDAR scans"
                    )
                if isinstance(frame, LidarScan) and cfg.pipeline == "baseline":
                    raise TypeError(
                        f"source {cfg.source.kind!r} yields LiDAR scans; the baseline pipeline is RGB-D only "
                        "(use pipeline: neural)"
                    )
                engine.process(frame)
                bar.update(1)
        except KeyboardInterrupt:
            interrupted = True
            log.warning("interrupted: writing the %d frames tracked so far", len(recorder.poses))
    wall_s = time.perf_counter() - t0
    return write_run_outputs(cfg, source, engine, recorder, wall_s, interrupted=interrupted)


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
    write_trajectory_atomic(traj_path, np.array(recorder.timestamps, dtype=np.float64), np.array(recorder.poses))
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


def ground_truth_mesh_accuracy(cfg: SLAMConfig, source: Source, mesh_path: Path, view_every: int = 10) -> dict:
    """Mesh metrics against the source's exact mesh (``gt_mesh_path``, e.g. the demo scene), completion
    counted over the surfaces the run's frames observed (every ``view_every``-th frame, at its
    ground-truth pose); empty when the source has no such mesh."""
    gt_mesh = getattr(source, "gt_mesh_path", None)
    if gt_mesh is None or not Path(gt_mesh).exists():
        return {}
    from slam.eval.mesh import MeshError, mesh_metrics, observed_mask

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
                (f.gt_pose, f.depth, f.intrinsics) for f in views_source if getattr(f, "gt_pose", None) is not None
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

    chunks = []
    for scan in scans:
        if getattr(scan, "gt_pose", None) is None:
            continue
        pts = scan.points[np.isfinite(scan.points).all(axis=1)]
        pts = pts[range_mask(pts, 0.0, max_range)].astype(np.float64)
        world = pts @ scan.gt_pose[:3, :3].T + scan.gt_pose[:3, 3]
        chunks.append(np.column_stack([world, np.linalg.norm(pts, axis=1)]))
    if not chunks:
        return np.zeros((0, 4))
    seen = np.concatenate(chunks)
    seen = seen[np.argsort(seen[:, 3], kind="stable")]  # the first point of a cell is its nearest sighting
    return seen[voxel_downsample(seen[:, :3], voxel)]


def crop_mesh_near(mesh_path: Path, seen: np.ndarray, radius: float):
    """The open3d mesh at ``mesh_path`` without the triangles whose centroid is farther than ``radius`` (m)
    from every point of ``seen``."""
    import open3d as o3d

    mesh = o3d.io.read_triangle_mesh(str(mesh_path))
    tri = np.asarray(mesh.triangles)
    if len(tri) == 0:
        return mesh
    # a wall of a generated building is two triangles tens of metres long: split such triangles first, so
    # that a wall seen only in part is kept in part, not dropped whole because its centroid is far away
    verts, tri = split_long_triangles(np.asarray(mesh.vertices), tri, max_edge=radius)
    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(verts), o3d.utility.Vector3iVector(tri))
    centroids = verts[tri].mean(axis=1)
    mesh.remove_triangles_by_mask(~near_points_mask(centroids, seen, radius))
    mesh.remove_unreferenced_vertices()
    return mesh


def split_long_triangles(verts: np.ndarray, tris: np.ndarray, max_edge: float) -> tuple[np.ndarray, np.ndarray]:
    """(vertices, triangles) with every triangle whose longest edge exceeds ``max_edge`` split into four at
    its edge midpoints, repeatedly; the split ones are returned as separate triangles (a triangle soup
    appended to the vertices), which is all sampling and distance queries need."""
    tris = np.asarray(tris, dtype=np.int64)
    verts = np.asarray(verts, dtype=np.float64)

    def longest(soup: np.ndarray) -> np.ndarray:
        return np.linalg.norm(soup - np.roll(soup, 1, axis=1), axis=2).max(axis=1)

    long = longest(verts[tris]) > max_edge
    soup, done = verts[tris[long]], []
    while len(soup):
        split = longest(soup) > max_edge
        done.append(soup[~split])
        a, b, c = (soup[split][:, i] for i in range(3))
        ab, bc, ca = (a + b) / 2, (b + c) / 2, (c + a) / 2
        soup = np.concatenate([np.stack(t, axis=1) for t in ((a, ab, ca), (ab, b, bc), (ca, bc, c), (ab, bc, ca))])
    if not done:
        return verts, tris
    extra = np.concatenate(done).reshape(-1, 3)
    new_tris = len(verts) + np.arange(len(extra)).reshape(-1, 3)
    return np.concatenate([verts, extra]), np.concatenate([tris[~long], new_tris])


def near_points_mask(points: np.ndarray, seen: np.ndarray, tolerance: float) -> np.ndarray:
    """Which of the N×3 points lie within ``tolerance`` (m) of an observed point."""
    if len(seen) == 0:
        return np.zeros(len(points), dtype=bool)
    from scipy.spatial import cKDTree

    dist, _ = cKDTree(seen).query(points, distance_upper_bound=tolerance)
    return np.isfinite(dist)


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
        "tracker": engine.tracker.name,
        "mapper": engine.mapper.name if engine.mapper is not None else None,
        "map_mb": round(engine.mapper.map_bytes() / 2**20, 3) if engine.mapper is not None else None,
        "source": {"kind": cfg.source.kind, "path": str(cfg.source.path) if cfg.source.path else None},
        "skipped": [{"frame": which, "reason": why} for which, why in source.skipped],
    }
    stats.update(trajectory_accuracy(rec))
    event_stats = getattr(engine.tracker, "event_stats", None)
    if event_stats is not None:
        stats["events"] = event_stats()
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
