"""LiDAR benchmark: our engine (neural SDF map, Gauss-Newton tracker, mapper) against KISS-ICP on the
generated drive (``drivers.sim.lidar_dataset``, read through the ``kitti`` driver as ``lidar_demo``).

Both methods read the same scans with their per-point times (each deskews: ours with its constant-velocity
motion in ``slam.frontends.lidar``, KISS-ICP with its own), start at the identity, which is the first ground-truth
pose, and report the pose at each scan's timestamp, **the end of the sweep**, which is also the instant of
the ground truth. Scored the same way:

* ATE RMSE, unaligned and SE(3)-aligned (``slam.eval.metrics.ate``);
* KITTI-style relative errors: for every 10th scan and each segment length of 100, 200, ... 800 m that the
  drive is long enough for (20, 40, 60, 80 m on drives too short for ten 100 m segments; printed), the relative pose error over that length of path, translation in % of the
  length and rotation in deg per 100 m, averaged over all segments (the KITTI odometry devkit's
  definition; poses in the LiDAR frame);
* Hz: scans / wall time of the whole loop (reading and preprocessing included, mapping included for ours);
* peak RSS: each method runs in its own process (``--only``), which reports its own peak (``slam.core.resources.peak_rss_mb``, ``VmHWM``);
* for ours also mesh accuracy / completion against the scene's exact mesh (``stats.json``).

A third row, ``KISS-ICP, no ground``, runs KISS-ICP on the scans without the points our ground segmentation
labels ground. It is a diagnostic, not KISS-ICP's method. (Generator version 1 drove outer streets with
open ground on one side, about 85 % of a scan's points on ground, flat facades, and a body that never
rocked, so every sweep drew its ground rings at the same distances; those rings pulled KISS-ICP's
point-to-point ICP towards zero motion, 16 % relative error. Version 2 drives inner streets, gives the
facades a ground-floor relief and the body a suspension sway, and KISS-ICP tracks: 0.2-0.4 %.)

Every process uses one thread (torch and KISS-ICP's ``max_num_threads``): the design point is a shared
2-core machine. KISS-ICP (PyPI ``kiss-icp``) runs its Python pipeline class ``KissICP`` with its default
configuration (``kiss_icp.config.load_config(None)``: max range 100 m, voxel size = max range / 100), deskew
on.

Usage (from the repository root)::

    .venv/bin/python -m bench.lidar                        # 150 scans of the 64x1024 drive, all methods
    .venv/bin/python -m bench.lidar --scans 60 --beams 32  # shorter, sparser
    .venv/bin/python -m bench.lidar --only kiss            # one method (prints its JSON)
    .venv/bin/python -m bench.lidar --scans 655 --write-benchmarks   # the whole loop, into BENCHMARKS.md

Results are printed (a table and, last, one JSON line); with ``--write-benchmarks`` they replace this
drive's section of BENCHMARKS.md (one section per beams / columns / seed), with the command, the commit
and the machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    REPO_ROOT,
    child_argv,
    command_line,
    machine_info,
    markdown_grid,
    peak_rss_mb,
    run_child,
    write_benchmarks,
)

METHODS = ("ours", "kiss", "kiss_noground")
LABELS = {"ours": "ours (neural SDF)", "kiss": "KISS-ICP", "kiss_noground": "KISS-ICP, no ground"}
SEGMENT_LENGTHS = (100.0, 200.0, 300.0, 400.0, 500.0, 600.0, 700.0, 800.0)  # KITTI devkit
SHORT_SEGMENT_LENGTHS = (20.0, 40.0, 60.0, 80.0)  # for drives shorter than about 110 m (stated in the output)
SEGMENT_STEP = 10  # first frames every 10 scans, as the devkit


# ------------------------------------------------------------------------------------------- metrics


def _rotation_angles(rot: np.ndarray) -> np.ndarray:
    cos = (np.trace(rot, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.arccos(np.clip(cos, -1.0, 1.0))


def kitti_relative_errors(
    gt: np.ndarray, est: np.ndarray, lengths: tuple[float, ...] | None = None
) -> dict[str, Any]:
    """KITTI odometry devkit errors of ``est`` against ``gt`` (both N×4×4, paired by index): translation
    in %, rotation in deg / 100 m, averaged over all (first frame, length) segments. ``lengths`` default to
    the devkit's 100-800 m, or to 20-80 m when fewer than 10 segments of 100 m fit in the path."""
    steps = np.linalg.norm(np.diff(gt[:, :3, 3], axis=0), axis=1)
    dist = np.concatenate([[0.0], np.cumsum(steps)])
    firsts = np.arange(0, len(gt), SEGMENT_STEP)
    if lengths is None:
        fit_100 = int(np.sum(dist[firsts] + 100.0 <= dist[-1]))
        lengths = SEGMENT_LENGTHS if fit_100 >= 10 else SHORT_SEGMENT_LENGTHS
    t_err, r_err = [], []
    for length in lengths:  # a few lengths; each is vectorised over the first frames
        last = np.searchsorted(dist, dist[firsts] + length)  # first frame at least `length` further on
        ok = last < len(gt)
        i, j = firsts[ok], last[ok]
        if i.size == 0:
            continue
        d_gt = np.linalg.inv(gt[i]) @ gt[j]
        d_est = np.linalg.inv(est[i]) @ est[j]
        err = np.linalg.inv(d_est) @ d_gt
        t_err.append(np.linalg.norm(err[:, :3, 3], axis=1) / length)
        r_err.append(_rotation_angles(err[:, :3, :3]) / length)
    if not t_err:
        return {
            "rel_trans_pct": None,
            "rel_rot_deg_per_100m": None,
            "segments": 0,
            "segment_lengths_m": list(lengths),
        }
    t_all, r_all = np.concatenate(t_err), np.concatenate(r_err)
    return {
        "rel_trans_pct": float(t_all.mean() * 100.0),
        "rel_rot_deg_per_100m": float(np.degrees(r_all.mean()) * 100.0),
        "segments": int(t_all.size),
        "segment_lengths_m": list(lengths),
    }


def trajectory_scores(stamps: np.ndarray, gt: np.ndarray, est: np.ndarray) -> dict[str, Any]:
    from slam.core.trajectory import Trajectory
    from slam.eval.metrics import ate

    ref, mine = Trajectory(stamps, gt), Trajectory(stamps, est)
    steps = np.linalg.norm(np.diff(gt[:, :3, 3], axis=0), axis=1)
    out: dict[str, Any] = {
        "ate_rmse_m": float(ate(ref, mine, align="none").rmse),
        "ate_rmse_aligned_m": None,
        "path_m": float(steps.sum()),
    }
    try:
        out["ate_rmse_aligned_m"] = float(ate(ref, mine, align="se3").rmse)
    except ValueError:  # a straight path (a short drive) has no SE(3) alignment; the other figures stand
        pass
    out.update(kitti_relative_errors(gt, est))
    return out


# -------------------------------------------------------------------------------------------- methods


def open_sequence(args: argparse.Namespace):
    from drivers.lidar_demo import LidarDemoSource

    return LidarDemoSource(
        path=args.cache,
        scans=args.scans,
        beams=args.beams,
        columns=args.columns,
        seed=args.seed,
        progress=False,
    )


def run_ours(args: argparse.Namespace) -> dict[str, Any]:
    from slam.app.config import load_config
    from slam.app.replay import run_replay

    overrides: dict[str, Any] = {
        "source": {
            "kind": "lidar_demo",
            "options": {
                "scans": args.scans,
                "beams": args.beams,
                "columns": args.columns,
                "seed": args.seed,
                "progress": False,
            },
        },
        "output": {"dir": str(Path(args.out) / "ours"), "progress": False},
        "threads": 1,
    }
    if args.cache is not None:
        overrides["source"]["path"] = str(args.cache)
    cfg = load_config(args.config, overrides)
    result = run_replay(cfg)
    from slam.core.trajectory import read_trajectory

    est = read_trajectory(result.trajectory_path)
    with open_sequence(args) as source:
        gt = source.gt_poses[: len(est.poses)]
        stamps = source.timestamps[: len(est.poses)]
    s = result.stats
    out = {
        "method": "ours",
        "scans": s["frames"],
        "lost": s["frames_lost"],
        "hz": s["fps"],
        "wall_s": s["wall_s"],
        "tracking_ms_median": s["tracking_ms_median"],
        "mapping_ms_median": s["mapping_ms_median"],
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "mesh_accuracy_cm": s.get("mesh_accuracy_cm"),
        "mesh_completion_cm": s.get("mesh_completion_cm"),
        "mesh_completion_ratio": s.get("mesh_completion_ratio"),
        "config": str(args.config),
    }
    out.update(trajectory_scores(stamps, gt, est.poses))
    return out


def run_kiss(args: argparse.Namespace, drop_ground: bool = False) -> dict[str, Any]:
    """KISS-ICP on every scan with its point times; ``drop_ground`` first removes the points our ground
    segmentation labels ground (a diagnostic variant, timed with the segmentation)."""
    from kiss_icp.config import load_config as kiss_load_config
    from kiss_icp.kiss_icp import KissICP

    from slam.frontends.lidar_preprocess import segment_ground

    config = kiss_load_config(None)  # its defaults: max range 100 m, voxel size 1 m
    config.data.deskew = True
    config.registration.max_num_threads = 1
    odometry = KissICP(config=config)
    poses, stamps, gts = [], [], []
    t0 = time.perf_counter()
    with open_sequence(args) as source:
        for scan in source:
            points = scan.points
            times = scan.point_times if scan.point_times is not None else np.zeros(0, np.float32)
            if drop_ground:
                keep = ~segment_ground(points)
                points, times = points[keep], (times[keep] if len(times) else times)
            odometry.register_frame(points.astype(np.float64), times.astype(np.float64))
            poses.append(odometry.last_pose.copy())
            stamps.append(scan.timestamp)
            gts.append(scan.gt_pose)
    wall = time.perf_counter() - t0
    out = {
        "method": "kiss_noground" if drop_ground else "kiss",
        "scans": len(poses),
        "lost": None,
        "hz": len(poses) / wall,
        "wall_s": wall,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "voxel_size_m": config.mapping.voxel_size,
        "deskew": True,
    }
    out.update(trajectory_scores(np.array(stamps), np.array(gts), np.array(poses)))
    return out


# ------------------------------------------------------------------------------------------------ CLI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.lidar", description=__doc__.split("\n\n")[0])
    p.add_argument("--scans", type=int, default=150, help="scans of the generated drive (10 per second)")
    p.add_argument("--beams", type=int, default=64, choices=(16, 32, 64), help="sensor beams")
    p.add_argument("--columns", type=int, default=1024, help="firings per revolution")
    p.add_argument("--seed", type=int, default=0, help="scene and noise seed")
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="our config (default: configs/lidar_64.yaml, lidar_32 below 64 beams)",
    )
    p.add_argument("--cache", type=Path, default=None, help="cache root for the generated sequence")
    p.add_argument("--out", type=Path, default=Path("runs/bench_lidar"), help="output folder")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--only", choices=METHODS, help="run one method in this process and print its JSON")
    p.add_argument(
        "--write-benchmarks",
        action="store_true",
        help="write the results into BENCHMARKS.md (the section of this drive: beams, columns, seed)",
    )
    args = p.parse_args(argv)
    if args.scans < 2:
        p.error("--scans must be >= 2")
    if args.config is None:
        args.config = REPO_ROOT / "configs" / ("lidar_64.yaml" if args.beams == 64 else "lidar_32.yaml")
    return args


def _child_argv(method: str, args: argparse.Namespace) -> list[str]:
    options = {
        "scans": args.scans,
        "beams": args.beams,
        "columns": args.columns,
        "seed": args.seed,
        "config": args.config,
        "out": args.out,
        "cache": args.cache,
    }
    return child_argv("bench.lidar", method, options)


def print_table(results: list[dict[str, Any]]) -> None:
    def fmt(v: Any, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    header = f"{'method':<20} {'ATE m':>8} {'ATE SE3 m':>10} {'rel t %':>8} {'rel r °/100m':>13} {'Hz':>6} {'RSS MB':>7} {'mesh acc/compl cm':>18}"
    print(header)
    print("-" * len(header))
    for r in results:
        mesh = "-"
        if r.get("mesh_accuracy_cm") is not None:
            mesh = f"{r['mesh_accuracy_cm']:.1f} / {r['mesh_completion_cm']:.1f}"
        print(
            f"{LABELS[r['method']]:<20} {fmt(r['ate_rmse_m'], '.3f'):>8} {fmt(r['ate_rmse_aligned_m'], '.3f'):>10} "
            f"{fmt(r['rel_trans_pct'], '.3f'):>8} {fmt(r['rel_rot_deg_per_100m'], '.3f'):>13} {fmt(r['hz'], '.2f'):>6} "
            f"{fmt(r['peak_rss_mb'], '.0f'):>7} {mesh:>18}"
        )


def section_title(args: argparse.Namespace) -> str:
    """The BENCHMARKS.md section this run owns: one per drive (beams, columns, seed), so a variant does not
    overwrite the default drive's figures."""
    variant = [f"{args.columns} columns"] if args.columns != 1024 else []
    variant += [f"seed {args.seed}"] if args.seed != 0 else []
    suffix = f" ({', '.join(variant)})" if variant else ""
    return f"## LiDAR: generated {args.beams}-beam drive{suffix}, ours vs KISS-ICP (bench/lidar.py)"


def benchmark_section(
    args: argparse.Namespace,
    meta: dict[str, Any],
    results: list[dict[str, Any]],
    command: str,
    machine: dict,
    date: str,
) -> str:
    """The run as a BENCHMARKS.md section: its command, commit, date and machine, the drive and one row per
    method."""

    def fmt(v: Any, spec: str) -> str:
        return "–" if v is None else format(v, spec)

    rows = []
    for r in results:
        mesh = "–"
        if r.get("mesh_accuracy_cm") is not None:
            mesh = f"{r['mesh_accuracy_cm']:.1f} / {r['mesh_completion_cm']:.1f}"
        ms = "–"
        if r.get("tracking_ms_median") is not None:
            ms = f"{r['tracking_ms_median']:.0f} / {r['mapping_ms_median']:.0f}"
        rows.append(
            [
                LABELS[r["method"]],
                fmt(r["ate_rmse_m"], ".3f"),
                fmt(r["ate_rmse_aligned_m"], ".3f"),
                fmt(r["rel_trans_pct"], ".3f"),
                fmt(r["rel_rot_deg_per_100m"], ".3f"),
                fmt(r["hz"], ".2f"),
                ms,
                fmt(r.get("lost"), "d"),
                fmt(r["peak_rss_mb"], ".0f"),
                mesh,
            ]
        )
    header = [
        "method",
        "ATE m",
        "ATE SE(3) m",
        "rel. transl. %",
        "rel. rot. °/100 m",
        "Hz",
        "tracking / mapping ms median",
        "lost",
        "peak RSS MB",
        "mesh acc. / compl. cm",
    ]
    path_m = results[0]["path_m"] if results else 0.0
    lines = [
        section_title(args),
        "",
        f"Command: `{command}`  ",
        f"Commit: {machine['commit']}; {date} UTC; {machine['nproc']} cores ({machine['cpu']}), "
        f"{machine['memory_gb']} GB, load average at start {machine['load_average_at_start']}.",
        "",
        f"Drive: {meta['scans']} scans, {args.beams}x{args.columns}, {path_m:.0f} m, seed {args.seed}, per-point "
        "times to both methods, one thread each; poses at the end of each sweep. Ours: "
        f"`{Path(args.config).name}`; KISS-ICP: its defaults with deskewing.",
    ]
    if results:
        lines.append(
            f"Relative errors over segments of {results[0]['segment_lengths_m']} m ({results[0]['segments']} "
            "segments), in the LiDAR frame (KITTI's definition)."
        )
    lines += ["", markdown_grid(header, rows), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.only:
        import torch

        torch.set_num_threads(1)
        result = (
            run_ours(args)
            if args.only == "ours"
            else run_kiss(args, drop_ground=args.only == "kiss_noground")
        )
        print(json.dumps(result))
        return 0
    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    machine = machine_info()
    with open_sequence(args) as source:  # generate once, before the timed runs
        meta = {"scans": len(source), "folder": str(source.folder)}
    results = []
    for method in args.methods:
        proc = run_child(_child_argv(method, args), capture_output=True)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"{method} failed (exit {proc.returncode})")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    path_m = results[0]["path_m"] if results else 0.0
    print(
        f"generated drive: {meta['scans']} scans, {args.beams}x{args.columns}, {path_m:.0f} m, "
        f"poses at the end of each sweep ({meta['folder']})"
    )
    if results:
        print(
            f"relative errors over segments of {results[0]['segment_lengths_m']} m "
            f"({results[0]['segments']} segments), poses in the LiDAR frame"
        )
    print_table(results)
    if any(r["method"] == "kiss_noground" for r in results):
        print(
            "KISS-ICP, no ground: a diagnostic, not KISS-ICP's pipeline (its scans without the points our "
            "ground segmentation labels ground)"
        )
    print(
        json.dumps({"sequence": meta, "args": {k: str(v) for k, v in vars(args).items()}, "results": results})
    )
    if args.write_benchmarks:
        command = command_line("bench.lidar", list(argv if argv is not None else sys.argv[1:]))
        path = write_benchmarks(
            benchmark_section(args, meta, results, command, machine, started), section_title(args)
        )
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
