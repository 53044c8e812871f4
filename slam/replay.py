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
from pathlib import Path
from typing import Any

import numpy as np

from drivers.base import Source, open_source
from slam.baseline import Open3DOdometryTracker, TSDFMapper
from slam.config import SLAMConfig, torch_threads
from slam.engine import Engine, TrackingResult
from slam.frames import Frame, RGBDFrame
from slam.mapping import Mapper
from slam.neural_map import build_map
from slam.tracking import Tracker

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
    s = cfg.source
    return open_source(s.kind, s.path, first=s.first, last=s.last, stride=s.stride, **s.options)


def build_engine(cfg: SLAMConfig) -> Engine:
    import torch

    torch.set_num_threads(torch_threads(cfg))
    if cfg.pipeline == "baseline":
        return Engine(Open3DOdometryTracker(cfg.baseline.odometry), TSDFMapper(cfg.baseline.tsdf))
    neural_map = build_map(cfg.map)
    return Engine(Tracker(neural_map, cfg.tracker, seed=cfg.seed), Mapper(neural_map, cfg.mapper, seed=cfg.seed))


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
                if not isinstance(frame, RGBDFrame):
                    raise TypeError(f"source {cfg.source.kind!r} yields {type(frame).__name__}; this engine needs RGB-D")
                engine.process(frame)
                bar.update(1)
        except KeyboardInterrupt:
            interrupted = True
            log.warning("interrupted: writing the %d frames tracked so far", len(recorder.poses))
    wall_s = time.perf_counter() - t0

    traj_path = out_dir / "trajectory.txt"
    _write_trajectory(traj_path, recorder)
    mesh_path = None
    if cfg.output.save_mesh and engine.mapper is not None:
        mesh = engine.mapper.extract_mesh()
        if mesh is not None and len(mesh.triangles) > 0:
            import open3d as o3d

            mesh_path = out_dir / "mesh.ply"
            o3d.io.write_triangle_mesh(str(mesh_path), mesh)

    stats = _stats(cfg, source, engine, recorder, wall_s)
    stats["interrupted"] = interrupted
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return RunResult(out_dir, stats, traj_path, mesh_path, interrupted)


def _write_trajectory(path: Path, recorder: TrajectoryRecorder) -> None:
    from slam.eval.trajectory import Trajectory, write_tum

    poses = np.array(recorder.poses).reshape(-1, 4, 4)
    write_tum(path, Trajectory(np.array(recorder.timestamps, dtype=np.float64), poses))


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
    return stats


def trajectory_accuracy(rec: TrajectoryRecorder) -> dict[str, float | None]:
    """ATE (unaligned and SE(3)-aligned) and 1-second RPE against the frames' ground truth."""
    from slam.eval.metrics import ate, rpe
    from slam.eval.trajectory import Trajectory

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
