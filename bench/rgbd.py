"""RGB-D benchmark: our engine against Open3D's dense SLAM and chained Open3D RGB-D odometry.

All methods run on the same frames (default: the shared 7-Scenes redkitchen, frames 0-599, 640x480),
start at the first ground-truth pose (so unaligned ATE is comparable) and are scored the same way:

* ATE RMSE unaligned and SE(3)-aligned, 1-second RPE (translation), against the frames' ground truth;
* fps end to end: frames / wall time of the whole loop, frame reading included (``stats.json``'s
  ``wall_s``/``fps`` for ours; the peers' loops are timed the same way), and tracking ms per frame;
* peak RSS: each method runs in its own process (``--only METHOD``), which reports its own peak
  (``slam.core.resources.peak_rss_mb``, ``VmHWM``) after the loop and the mesh extraction;
* map MB: ours ``stats.json`` ``map_mb``; Open3D dense: active voxel blocks x 16^3 x bytes per voxel;
* mesh accuracy / completion against a reference mesh fused from the same frames at their
  ground-truth poses (Open3D TSDF, 1 cm voxels, depth_max 4 m; cached in the output folder).

Usage (from the repository root)::

    .venv/bin/python -m bench.rgbd                       # everything, frames 0-599
    .venv/bin/python -m bench.rgbd --quick               # frames 0-59, smoke test
    .venv/bin/python -m bench.rgbd --skip-ours           # the peers only
    .venv/bin/python -m bench.rgbd --set tracker.points=4000 --write-benchmarks
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    REPO_ROOT,
    child_argv,
    command_line,
    default_data,
    machine_info,
    markdown_grid,
    peak_rss_mb,
    run_child,
    timing,
    write_benchmarks,
)

SECTION_TITLE = "## RGB-D: 7-Scenes redkitchen (bench/rgbd.py)"
METHODS = ("ours", "o3d_dense", "o3d_dense_cv", "o3d_odometry")
LABELS = {
    "ours": "ours",
    "o3d_dense": "Open3D dense SLAM",
    "o3d_dense_cv": "Open3D dense SLAM + CV prior",
    "o3d_odometry": "Open3D RGB-D odometry (chained)",
}
# Open3D dense SLAM settings (examples/python/t_reconstruction_system/dense_slam.py, with 1 cm voxels
# and the 4 m depth range every method here uses)
O3D_VOXEL_SIZE = 0.01
O3D_BLOCK_RESOLUTION = 16
O3D_BLOCK_COUNT = 40_000  # initial capacity, as in Open3D's example; the hash map grows when full
DEPTH_MIN = 0.1
DEPTH_MAX = 4.0
DEPTH_DIFF = 0.07  # odometry_distance_thr of Open3D's example
TRUNC_VOXEL_MULTIPLIER = 8.0
MIN_FITNESS = 0.05  # below this fraction of inliers a peer's frame counts as lost (as slam.engine.baseline)


@dataclass(frozen=True)
class FrameSpec:
    """Which frames every method runs on."""

    data: Path
    first: int = 0
    last: int | None = 599
    stride: int = 1
    kind: str = "7scenes"

    def open(self, first: int | None = None, last: int | None = None):
        from drivers.base import open_source

        return open_source(
            self.kind,
            self.data,
            first=self.first if first is None else first,
            last=self.last if last is None else last,
            stride=self.stride,
        )

    def describe(self) -> str:
        last = "end" if self.last is None else self.last
        return f"{self.kind} {self.data}, frames {self.first}-{last}, stride {self.stride}"


def _o3d_images(frame, device):
    """Open3D tensor depth (float32 metres) and colour (float32 in [0, 1], what float depth needs)."""
    import open3d as o3d

    depth = o3d.t.geometry.Image(o3d.core.Tensor(frame.depth, device=device))
    rgb = frame.color if frame.color is not None else np.zeros((*frame.depth.shape, 3), np.uint8)
    color = o3d.t.geometry.Image(o3d.core.Tensor(rgb.astype(np.float32) / 255.0, device=device))
    return depth, color


def _trajectory_results(out_dir: Path, recorder) -> dict[str, Any]:
    """A peer's trajectory.txt and its accuracy, written and scored as ``slam.app.outputs`` does ours."""
    from slam.app.outputs import trajectory_accuracy

    path = out_dir / "trajectory.txt"
    recorder.write(path)
    return {"trajectory_path": str(path), **trajectory_accuracy(recorder)}


def _first_frame(spec: FrameSpec):
    """The first frame, read outside the timed loop (setup, like our engine's construction)."""
    with spec.open(last=spec.first if spec.last is None else min(spec.first, spec.last)) as source:
        for frame in source:
            return frame
    raise RuntimeError(f"no readable frame in {spec.describe()}")


def _quiet_open3d() -> None:
    import open3d as o3d

    # the tracker asks the raycast frame for colour on every frame and warns that there is none
    o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)


# ------------------------------------------------------------------------------------------- peers


def run_o3d_dense(
    spec: FrameSpec,
    out_dir: Path,
    constant_velocity: bool = False,
    voxel_size: float = O3D_VOXEL_SIZE,
    block_count: int = O3D_BLOCK_COUNT,
    save_mesh: bool = True,
) -> dict[str, Any]:
    """Open3D dense SLAM (``o3d.t.pipelines.slam.Model``): frame-to-model point-to-plane tracking against
    a raycast of the TSDF, TSDF integration of every tracked frame, CPU.

    Follows Open3D's ``examples/python/t_reconstruction_system/dense_slam.py``. With
    ``constant_velocity`` the model is raycast at the pose predicted from the last motion instead of
    the last pose (``track_frame_to_model`` has no initial-guess argument; its result is relative to
    the raycast pose), which the plain version lacks and needs at larger strides.
    """
    import open3d as o3d

    from slam.app.outputs import TrajectoryRecorder

    _quiet_open3d()
    out_dir.mkdir(parents=True, exist_ok=True)
    device = o3d.core.Device("CPU:0")
    first = _first_frame(spec)
    k = o3d.core.Tensor(first.intrinsics.matrix, o3d.core.float64)
    h, w = first.depth.shape
    pose = first.gt_pose.copy() if first.gt_pose is not None else np.eye(4)
    model = o3d.t.pipelines.slam.Model(
        voxel_size, O3D_BLOCK_RESOLUTION, block_count, o3d.core.Tensor(pose), device
    )
    input_frame = o3d.t.pipelines.slam.Frame(h, w, k, device)
    raycast_frame = o3d.t.pipelines.slam.Frame(h, w, k, device)
    del first

    recorder = TrajectoryRecorder()
    track_ms: list[float] = []
    lost = 0
    raycast_pose = pose  # the pose the model was last raycast at: tracking results are relative to it
    velocity = np.eye(4)
    t0 = time.perf_counter()
    with spec.open() as source:
        for i, frame in enumerate(source):
            depth, color = _o3d_images(frame, device)
            input_frame.set_data_from_image("depth", depth)
            input_frame.set_data_from_image("color", color)
            ok = True
            if i > 0:
                t1 = time.perf_counter()
                try:
                    result = model.track_frame_to_model(
                        input_frame, raycast_frame, 1.0, DEPTH_MAX, DEPTH_DIFF
                    )
                    rel = result.transformation.numpy()
                    ok = bool(np.all(np.isfinite(rel))) and result.fitness >= MIN_FITNESS
                except RuntimeError:  # too few correspondences
                    ok = False
                track_ms.append((time.perf_counter() - t1) * 1e3)
                new_pose = raycast_pose @ rel if ok else raycast_pose
                lost += int(not ok)
                velocity = np.linalg.inv(pose) @ new_pose
                pose = new_pose
            model.update_frame_pose(i, o3d.core.Tensor(pose))
            if ok:
                model.integrate(input_frame, 1.0, DEPTH_MAX, TRUNC_VOXEL_MULTIPLIER)
            raycast_pose = pose @ velocity if constant_velocity else pose
            if constant_velocity:
                model.update_frame_pose(i, o3d.core.Tensor(raycast_pose))
            model.synthesize_model_frame(
                raycast_frame, 1.0, DEPTH_MIN, DEPTH_MAX, TRUNC_VOXEL_MULTIPLIER, False
            )
            recorder.record(frame, pose)
        skipped = source.frames_skipped
    wall_s = time.perf_counter() - t0

    mesh_path = None
    if save_mesh:
        mesh = model.voxel_grid.extract_triangle_mesh().to_legacy()
        if len(mesh.triangles) > 0:
            mesh_path = out_dir / "mesh.ply"
            o3d.io.write_triangle_mesh(str(mesh_path), mesh)
    rss = peak_rss_mb()
    grid = model.voxel_grid
    bytes_per_voxel = sum(
        grid.attribute(name).dtype.byte_size() * int(np.prod(grid.attribute(name).shape[4:]))
        for name in ("tsdf", "weight", "color")
    )
    blocks = int(grid.hashmap().size())
    return {
        "method": "o3d_dense_cv" if constant_velocity else "o3d_dense",
        "tracker": "open3d slam.Model frame-to-model point-to-plane"
        + (" + constant velocity" if constant_velocity else ""),
        **timing(wall_s, len(recorder.timestamps), track_ms),
        "frames_lost": lost,
        "frames_skipped": skipped,
        "peak_rss_mb": round(rss, 1),
        "map_mb": round(blocks * O3D_BLOCK_RESOLUTION**3 * bytes_per_voxel / 2**20, 3),
        "map_blocks": blocks,
        "map_capacity_mb": round(
            int(grid.hashmap().capacity()) * O3D_BLOCK_RESOLUTION**3 * bytes_per_voxel / 2**20, 3
        ),
        "mesh_path": str(mesh_path) if mesh_path else None,
        **_trajectory_results(out_dir, recorder),
    }


def run_o3d_odometry(spec: FrameSpec, out_dir: Path) -> dict[str, Any]:
    """Chained frame-to-frame Open3D RGB-D odometry (``rgbd_odometry_multi_scale``, hybrid residual,
    Open3D's default criteria and loss, identity initial guess), CPU. No map.

    It is ``slam.engine.baseline.Open3DOdometryTracker`` without its constant-velocity prior: a lost frame
    keeps the previous pose, and the next frame registers against it."""
    from slam.app.outputs import TrajectoryRecorder
    from slam.core.observation import Observation
    from slam.engine.baseline import OdometryTrackerConfig, Open3DOdometryTracker

    _quiet_open3d()
    out_dir.mkdir(parents=True, exist_ok=True)
    config = OdometryTrackerConfig(
        method="hybrid",
        depth_max=DEPTH_MAX,
        iterations=[10, 5, 3],
        depth_outlier_trunc=DEPTH_DIFF,  # Open3D's OdometryLossParams default, as its example
        constant_velocity=False,
        min_fitness=MIN_FITNESS,
    )
    tracker = Open3DOdometryTracker(config)
    recorder = TrajectoryRecorder()
    track_ms: list[float] = []
    lost = 0
    t0 = time.perf_counter()
    with spec.open() as source:
        for i, frame in enumerate(source):
            t1 = time.perf_counter()
            result = tracker.track(Observation(frame))  # the first frame starts at its ground-truth pose
            if i > 0:
                track_ms.append((time.perf_counter() - t1) * 1e3)
                lost += int(result.lost)
            recorder.record(frame, result.pose)
        skipped = source.frames_skipped
    wall_s = time.perf_counter() - t0
    rss = peak_rss_mb()
    return {
        "method": "o3d_odometry",
        "tracker": "open3d rgbd_odometry_multi_scale hybrid, frame-to-frame",
        **timing(wall_s, len(recorder.timestamps), track_ms),
        "frames_lost": lost,
        "frames_skipped": skipped,
        "peak_rss_mb": round(rss, 1),
        "map_mb": None,
        "mesh_path": None,
        **_trajectory_results(out_dir, recorder),
    }


def run_ours(spec: FrameSpec, out_dir: Path, sets: list[str], config: Path | None = None) -> dict[str, Any]:
    """Our engine through ``slam.app.replay.run_replay`` in its default config (plus ``--set`` overrides)."""
    from slam.app.config import load_config, merge_trees, parse_overrides
    from slam.app.replay import run_replay

    base = {
        "source": {
            "kind": spec.kind,
            "path": str(spec.data),
            "first": spec.first,
            "last": spec.last,
            "stride": spec.stride,
        },
        "output": {"dir": str(out_dir), "progress": False},
    }
    cfg = load_config(config, merge_trees(base, parse_overrides(sets)))
    run = run_replay(cfg)
    rss = (
        peak_rss_mb()
    )  # after the loop and the mesh, like the peers (stats.json's is taken before its mesh metrics)
    keys = (
        "frames",
        "frames_lost",
        "frames_skipped",
        "wall_s",
        "fps",
        "tracking_ms_median",
        "tracking_ms_p90",
        "map_mb",
        "tracker",
        "mapper",
        "ate_rmse_m",
        "ate_rmse_aligned_m",
        "rpe_trans_1s_m",
    )
    return {
        "method": "ours",
        **{key: run.stats.get(key) for key in keys},
        "peak_rss_mb": round(rss, 1),
        "stats_peak_rss_mb": run.stats.get("peak_rss_mb"),
        "mesh_path": str(run.mesh_path) if run.mesh_path else None,
        "trajectory_path": str(run.trajectory_path),
        "overrides": list(sets),
    }


def run_method(method: str, spec: FrameSpec, out_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    if method == "ours":
        return run_ours(spec, out_dir, args.set, args.config)
    if method in ("o3d_dense", "o3d_dense_cv"):
        return run_o3d_dense(
            spec, out_dir, constant_velocity=method == "o3d_dense_cv", block_count=args.o3d_block_count
        )
    if method == "o3d_odometry":
        return run_o3d_odometry(spec, out_dir)
    raise ValueError(f"unknown method {method!r}")


# ------------------------------------------------------------------------------------------- reference


def reference_mesh(spec: FrameSpec, out_dir: Path, voxel_size: float = O3D_VOXEL_SIZE) -> Path:
    """Mesh of the frames fused at their ground-truth poses (Open3D TSDF, CPU), cached in ``out_dir``."""
    path = out_dir / "reference_mesh.ply"
    key_path = out_dir / "reference_mesh.json"
    key = {
        "data": str(Path(spec.data).resolve()),
        "kind": spec.kind,
        "first": spec.first,
        "last": spec.last,
        "stride": spec.stride,
        "voxel_size": voxel_size,
        "depth_max": DEPTH_MAX,
        "trunc_voxel_multiplier": TRUNC_VOXEL_MULTIPLIER,
    }
    if path.exists() and key_path.exists():
        try:
            if json.loads(key_path.read_text()) == key:
                return path
        except json.JSONDecodeError:
            pass
    import open3d as o3d

    from slam.core.observation import Observation
    from slam.engine.baseline import TSDFMapper, TSDFMapperConfig

    _quiet_open3d()  # "Write Ply clamped color value to valid range": interpolated colours a hair above 1
    # the baseline pipeline's TSDF fusion (16³ blocks, CPU), every frame at its ground-truth pose
    config = TSDFMapperConfig(
        voxel_size=voxel_size, sdf_trunc=TRUNC_VOXEL_MULTIPLIER * voxel_size, depth_max=DEPTH_MAX, every=1
    )
    fusion = TSDFMapper(config)
    with spec.open() as source:
        for frame in source:
            if frame.gt_pose is not None:
                fusion.integrate(Observation(frame), frame.gt_pose)
    mesh = fusion.extract_mesh()
    if mesh is None:
        raise RuntimeError(f"no frame with a ground-truth pose in {spec.describe()}: no reference mesh")
    out_dir.mkdir(parents=True, exist_ok=True)
    o3d.io.write_triangle_mesh(str(path), mesh)
    key_path.write_text(json.dumps(key, indent=2) + "\n")
    return path


# ------------------------------------------------------------------------------------------- reporting


def _cm(value: float | None) -> float | None:
    return None if value is None else value * 100.0


ROWS: list[tuple[str, str, str, bool]] = [
    # (label, result key, format, higher is better)
    ("ATE RMSE, unaligned (cm)", "ate_cm", "{:.2f}", False),
    ("ATE RMSE, SE(3)-aligned (cm)", "ate_aligned_cm", "{:.2f}", False),
    ("RPE 1 s, translation RMSE (cm)", "rpe_1s_cm", "{:.2f}", False),
    ("fps, end to end", "fps", "{:.2f}", True),
    ("tracking ms, median", "tracking_ms_median", "{:.1f}", False),
    ("tracking ms, p90", "tracking_ms_p90", "{:.1f}", False),
    ("peak RSS (MB)", "peak_rss_mb", "{:.0f}", False),
    ("map (MB)", "map_mb", "{:.1f}", False),
    ("mesh accuracy (cm)", "accuracy_cm", "{:.2f}", False),
    ("mesh completion (cm)", "completion_cm", "{:.2f}", False),
    ("mesh completion ratio < 5 cm (%)", "completion_pct", "{:.1f}", True),
]


def _row_values(result: dict[str, Any]) -> dict[str, float | None]:
    mesh = result.get("mesh") or {}
    return {
        "ate_cm": _cm(result.get("ate_rmse_m")),
        "ate_aligned_cm": _cm(result.get("ate_rmse_aligned_m")),
        "rpe_1s_cm": _cm(result.get("rpe_trans_1s_m")),
        "fps": result.get("fps"),
        "tracking_ms_median": result.get("tracking_ms_median"),
        "tracking_ms_p90": result.get("tracking_ms_p90"),
        "peak_rss_mb": result.get("peak_rss_mb"),
        "map_mb": result.get("map_mb"),
        "accuracy_cm": mesh.get("accuracy_cm"),
        "completion_cm": mesh.get("completion_cm"),
        "completion_pct": None if mesh.get("completion_ratio") is None else 100.0 * mesh["completion_ratio"],
    }


def table_rows(results: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows (strings): one column per method; a peer's cell adds ours ÷ peer when ours ran."""
    methods = [m for m in METHODS if m in results]
    header = ["metric", *(LABELS[m] for m in methods)]
    values = {m: _row_values(results[m]) if "error" not in results[m] else {} for m in methods}
    rows = []
    frames_row = ["frames (lost)"]
    for m in methods:
        r = results[m]
        if "error" in r:
            frames_row.append(f"failed: {r['error']}")
        else:
            frames_row.append(f"{r.get('frames')} ({r.get('frames_lost', 0)})")
    rows.append(frames_row)
    ours = values.get("ours", {})
    for label, key, fmt, _ in ROWS:
        row = [label]
        for m in methods:
            v = values[m].get(key)
            if v is None:
                row.append("—")
                continue
            cell = fmt.format(v)
            o = ours.get(key)
            if m != "ours" and o is not None and v:
                cell += f" ({o / v:.2f}×)"
            row.append(cell)
        rows.append(row)
    return header, rows


RATIO_NOTE = (
    "A peer's cell shows its value and, in brackets, ours ÷ peer: below 1× means ours is lower "
    "(better for errors, time, memory; worse for fps and completion ratio)."
)


def print_table(results: dict[str, dict[str, Any]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    header, rows = table_rows(results)
    table = Table(title=title)
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    console = Console(width=None if sys.stdout.isatty() else 140)  # logs: no wrapping at 80 columns
    console.print(table)
    if "ours" in results:
        console.print(RATIO_NOTE)


def markdown_table(results: dict[str, dict[str, Any]]) -> str:
    return markdown_grid(*table_rows(results))


def benchmark_section(
    results: dict[str, dict[str, Any]], command: str, spec: FrameSpec, machine: dict[str, Any], date: str
) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v)
    load = machine.get("load_average_at_start")
    lines = [
        SECTION_TITLE,
        "",
        f"Command: `{command}`",
        "",
        f"- Date: {date}",
        f"- Machine: {machine['nproc']} CPU cores ({machine['cpu']}), {machine['memory_gb']} GB RAM, "
        f"CPU only; load average (1, 5, 15 min) at start: {load}",
        f"- Software: Python {machine['python']}, {versions}; commit {machine['commit']}",
        f"- Frames: {spec.describe()}; every method starts at the first ground-truth pose",
        "",
        markdown_table(results),
        "",
        "ATE/RPE against the dataset's ground truth (KinectFusion poses, with a 36 mm jump between frames "
        "121 and 122 that a perfect tracker pays about 3.6 cm of unaligned ATE for: compare aligned ATE "
        "and RPE). fps: frames ÷ wall time of the whole loop, frame reading included. Peak RSS: each method "
        "in its own process. Open3D dense SLAM: `o3d.t.pipelines.slam.Model`, 1 cm voxels, 16³ blocks, "
        "depth ≤ 4 m, CPU; its map MB counts the active voxel blocks. Mesh metrics against the same frames "
        "fused at their ground-truth poses (1 cm TSDF)." + (" " + RATIO_NOTE if "ours" in results else ""),
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- driver


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.rgbd", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=None, help="dataset folder (default: shared redkitchen)")
    p.add_argument("--kind", default="7scenes", help="driver of --data (default 7scenes)")
    p.add_argument("--first", type=int, default=0)
    p.add_argument("--last", type=int, default=None, help="last frame, inclusive (default 599, quick 59)")
    p.add_argument("--stride", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="frames first..first+59: a smoke test")
    p.add_argument("--out", type=Path, default=None, help="output folder (default runs/bench_rgbd[_quick])")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override of our config (repeatable), e.g. --set tracker.points=4000",
    )
    p.add_argument("--config", type=Path, default=None, help="YAML config for ours (defaults otherwise)")
    p.add_argument("--skip-ours", action="store_true")
    p.add_argument("--skip-peers", action="store_true")
    p.add_argument(
        "--o3d-cv", action="store_true", help="also run Open3D dense SLAM with a constant-velocity prior"
    )
    p.add_argument(
        "--o3d-block-count",
        type=int,
        default=O3D_BLOCK_COUNT,
        help="initial voxel-block capacity of Open3D dense SLAM",
    )
    p.add_argument("--skip-mesh", action="store_true", help="no reference mesh, no mesh metrics")
    p.add_argument(
        "--write-benchmarks",
        action="store_true",
        help="write the table into BENCHMARKS.md (replacing this benchmark's section)",
    )
    p.add_argument("--only", choices=METHODS, help=argparse.SUPPRESS)  # child mode: one method, JSON out
    args = p.parse_args(argv)
    if args.data is None:
        args.data = default_data()
    if args.last is None:
        args.last = args.first + 59 if args.quick else 599
    if args.out is None:
        args.out = REPO_ROOT / "runs" / ("bench_rgbd_quick" if args.quick else "bench_rgbd")
    if args.skip_ours and args.skip_peers:
        p.error("--skip-ours and --skip-peers leave nothing to run")
    return args


def _child_argv(method: str, args: argparse.Namespace) -> list[str]:
    options = {
        "data": args.data,
        "kind": args.kind,
        "first": args.first,
        "last": args.last,
        "stride": args.stride,
        "out": args.out,
        "o3d-block-count": args.o3d_block_count,
        "set": list(args.set),
        "config": args.config,
    }
    return child_argv("bench.rgbd", method, options)


def run_in_subprocess(method: str, args: argparse.Namespace) -> dict[str, Any]:
    """One method in a fresh process (so peak RSS is its own); its result.json, or {"error": ...}."""
    result_path = args.out / method / "result.json"
    result_path.unlink(missing_ok=True)
    t0 = time.perf_counter()
    proc = run_child(_child_argv(method, args))
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0 or not result_path.exists():
        return {"method": method, "error": f"exit status {proc.returncode}"}
    result = json.loads(result_path.read_text())
    result["process_s"] = round(elapsed, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw_argv)
    spec = FrameSpec(Path(args.data), args.first, args.last, args.stride, args.kind)
    args.out = Path(args.out).resolve()
    if args.only:  # child mode
        out_dir = args.out / args.only
        result = run_method(args.only, spec, out_dir, args)
        (out_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
        return 0

    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"bench/rgbd: {spec.describe()} -> {args.out}", flush=True)
    methods = [] if args.skip_ours else ["ours"]
    if not args.skip_peers:
        methods += ["o3d_dense"] + (["o3d_dense_cv"] if args.o3d_cv else []) + ["o3d_odometry"]

    ref_path = None
    if not args.skip_mesh:
        t0 = time.perf_counter()
        print("reference mesh (ground-truth poses, 1 cm TSDF)...", flush=True)
        ref_path = reference_mesh(spec, args.out)
        print(f"  {ref_path} ({time.perf_counter() - t0:.0f} s)", flush=True)

    results: dict[str, dict[str, Any]] = {}
    for method in methods:
        print(f"running {method}...", flush=True)
        result = run_in_subprocess(method, args)
        if ref_path is not None and result.get("mesh_path"):
            from slam.eval.mesh import MeshError, mesh_metrics

            try:
                result["mesh"] = mesh_metrics(ref_path, result["mesh_path"]).as_dict()
            except MeshError as exc:
                result["mesh_error"] = str(exc)
        results[method] = result
        if "error" in result:
            print(f"  {method} failed: {result['error']}", flush=True)
        else:
            print(
                f"  {result['frames']} frames, {result['fps']} fps, aligned ATE "
                f"{_fmt_cm(result.get('ate_rmse_aligned_m'))}, process {result['process_s']} s",
                flush=True,
            )

    command = command_line("bench.rgbd", raw_argv)
    frames = {**asdict(spec), "data": str(spec.data)}
    summary = {"command": command, "date": date, "machine": machine, "frames": frames, "results": results}
    (args.out / "results.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print_table(results, f"RGB-D benchmark: {spec.describe()}")
    print(f"results: {args.out / 'results.json'}")
    if args.write_benchmarks:
        path = write_benchmarks(benchmark_section(results, command, spec, machine, date), SECTION_TITLE)
        print(f"wrote the section {SECTION_TITLE!r} of {path}")
    return 0 if all("error" not in r for r in results.values()) else 1


def _fmt_cm(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.2f} cm"


if __name__ == "__main__":
    sys.exit(main())
