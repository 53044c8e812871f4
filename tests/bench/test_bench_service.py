"""bench/service.py: a LiDAR run's scores against the drive's ground truth, the report's spread and targets,
and (slow) the quick benchmark end to end in child processes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench import service as bench
from slam.core.trajectory import Trajectory, write_tum

SCANS, COLUMNS = 80, 128  # 80 scans: about 35 m, the drive starts from rest; enough for 20 m segments


@pytest.fixture(scope="module")
def drive(tmp_path_factory: pytest.TempPathFactory):
    from bench.lidar import open_sequence

    cache = tmp_path_factory.mktemp("cache")
    args = bench.parse_args(
        ["--datasets", "lidar", "--scans", str(SCANS), "--lidar-columns", str(COLUMNS), "--cache", str(cache)]
    )
    with open_sequence(bench.lidar_namespace(args, COLUMNS)) as source:
        return args, np.asarray(source.timestamps), np.asarray(source.gt_poses)


def _scores(drive, tmp_path: Path, keep: np.ndarray, poses: np.ndarray | None = None, lost: int = 0) -> dict:
    args, stamps, gt = drive
    path = tmp_path / "trajectory.txt"
    write_tum(path, Trajectory(stamps[keep], gt[keep] if poses is None else poses))
    return bench.lidar_scores(args, COLUMNS, path, {"delivered": len(stamps), "lost": lost})


def test_lidar_scores_of_the_ground_truth_and_of_a_subset_are_zero(drive, tmp_path: Path) -> None:
    every = np.arange(SCANS)
    exact = _scores(drive, tmp_path, every)
    assert exact["segments"] > 0 and exact["rel_trans_pct"] == pytest.approx(0.0, abs=1e-6)
    assert exact["whole_drive"] and exact["drive_scans"] == SCANS
    # a realtime run tracks every other scan: paired with the ground truth by timestamp, still exact
    halves = _scores(drive, tmp_path, every[::-1][::2][::-1])
    assert halves["rel_trans_pct"] == pytest.approx(0.0, abs=1e-6) and halves["whole_drive"]


def test_lidar_scores_of_a_scaled_trajectory_and_of_partial_runs(drive, tmp_path: Path) -> None:
    _, _, gt = drive
    scaled = gt.copy()
    scaled[:, :3, 3] *= 1.01  # every relative translation 1 % long: 1 % of a straight segment's length
    rel = _scores(drive, tmp_path, np.arange(SCANS), poses=scaled)["rel_trans_pct"]
    # a segment ends at the first scan at least its length further on (up to one 0.8 m step beyond a 20 m
    # length), and its chord is no longer than its path
    assert 0.8 < rel < 1.05, rel
    assert not _scores(drive, tmp_path, np.arange(SCANS - 10))["whole_drive"]  # stopped 1 s early
    assert not _scores(drive, tmp_path, np.arange(SCANS), lost=1)["whole_drive"]


def _run(dataset: str, mode: str, columns: int | None = None, **stats) -> dict:
    e2e = np.asarray(stats.pop("e2e", []), dtype=float)
    extra = {k: stats.pop(k) for k in ("rel_trans_pct", "whole_drive") if k in stats}
    base = {"frames": 100, "frames_received": 100, "peak_rss_mb": 900.0, "map_mb": 50.0, "fps": 9.0}
    out = bench.summarize({**base, **stats}, e2e)
    return {**out, "dataset": dataset, "mode": mode, "columns": columns, **extra}


def test_report_gives_the_spread_and_checks_the_targets() -> None:
    fast = _run("rgbd", "fast", ate_rmse_aligned_m=0.020)
    realtime = [
        _run("rgbd", "realtime", frames=tracked, ate_rmse_aligned_m=ate, e2e=np.linspace(10, 30, 11))
        for tracked, ate in ((99, 0.021), (96, 0.022), (94, 0.021))
    ]
    kiss = {"dataset": "lidar", "mode": "kiss", "columns": 1024, "rate_hz": 10.0, "rel_trans_pct": 0.5}
    lidar = [
        _run("lidar", "fast", 1024, fps=7.0, rel_trans_pct=0.3, whole_drive=True),
        *(
            _run(
                "lidar",
                "realtime",
                1024,
                rel_trans_pct=rel,
                whole_drive=True,
                map_mb=130.0 if rel > 0.4 else 90.0,
            )
            for rel in (0.3, 0.4, 0.45)
        ),
    ]
    rows = {(r[0], r[1]): r[2:] for r in bench.targets([fast, *realtime, kiss, *lidar])}
    assert rows[("RGB-D 30 Hz", "tracked %")] == [
        "94.0 / 96.0 / 99.0",
        bench.TARGETS["rgbd_tracked"],
        "**no**",
    ]
    assert rows[("RGB-D 30 Hz", "frame → pose median ms")][0] == "20.0 / 20.0 / 20.0"
    assert rows[("RGB-D 30 Hz", "frame → pose p90 ms")][2] == "yes"
    assert rows[("RGB-D 30 Hz", "ATE aligned, realtime / fast")][0] == "1.05 / 1.05 / 1.10"
    assert rows[("RGB-D 30 Hz", "ATE aligned, realtime / fast")][2] == "yes"
    assert rows[("LiDAR 64×1024 10 Hz", "rel. transl. %")][2] == "yes"  # all below KISS-ICP's 0.5
    assert rows[("LiDAR 64×1024 fast", "rate Hz")][2] == "**no**"  # 7 Hz < 0.8 × 10 Hz
    assert rows[("LiDAR 64×1024 (all runs)", "map MB")][2] == "**no**"  # one run at 130 MB
    assert rows[("LiDAR 64×1024 (all runs)", "peak RSS MB")][2] == "yes"
    assert rows[("LiDAR 64×1024 10 Hz", "whole drive tracked")][0] == "3 of 3 runs"
    machine = {"commit": "abc1234", "nproc": 2, "cpu": "cpu", "memory_gb": 8, "load_average_at_start": [0.1]}
    text = bench.report([fast, *realtime, kiss, *lidar], "python -m bench.service", machine, "2026-01-01", [])
    assert text.startswith(bench.SECTION_TITLE) and "abc1234" in text and "`python -m bench.service`" in text
    assert "| RGB-D realtime 30 Hz | 3 | 100 | 94 (94.0) |" in text


def test_child_argv_passes_the_options_of_one_case(tmp_path: Path) -> None:
    args = bench.parse_args(["--quick", "--set", "tracker.iterations=3", "--lidar-set", "mapper.rays=100"])
    assert args.runs == 1 and args.scans == bench.QUICK_LIDAR["scans"]
    argv = bench._child_argv("lidar-realtime", args, tmp_path, 256)
    child = bench.parse_args(argv[3:])  # after python -m bench.service
    assert child.only == "lidar-realtime" and child.quick and child.lidar_columns == [256]
    assert child.set == ["tracker.iterations=3"] and child.lidar_set == ["mapper.rays=100"]
    assert child.out == tmp_path and child.scans == args.scans


@pytest.mark.slow
def test_quick_benchmark_runs_every_service_case(tmp_path: Path) -> None:
    """--quick end to end, each case in its child process (KISS-ICP left out: an optional extra)."""
    out = tmp_path / "out"
    argv = ["--quick", "--skip-kiss", "--scans", "12", "--lidar-columns", "128", "--out", str(out)]
    assert bench.main([*argv, "--cache", str(tmp_path / "cache")]) == 0
    results = json.loads((out / "results.json").read_text())["results"]
    assert [(r["dataset"], r["mode"]) for r in results] == [
        ("rgbd", "fast"),
        ("rgbd", "realtime"),
        ("lidar", "fast"),
        ("lidar", "realtime"),
    ]
    for r in results:
        assert 0 < r["tracked"] <= r["delivered"] and r["peak_rss_mb"] > 100 and r["wall_s"] > 0
    fast_lidar = results[2]
    assert fast_lidar["delivered"] == fast_lidar["tracked"] == 12 and fast_lidar["dropped"] == 0
    assert results[3]["delivered"] == 12 and results[3]["poses_received"] > 0
