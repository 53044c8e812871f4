"""Service benchmark: real-time runs of ``slam.service.SLAMService`` beside fast-mode runs of the same
data, for RGB-D and LiDAR, with KISS-ICP on the LiDAR data.

Cases (each run in its own child process, so that its peak RSS is its own):

* **RGB-D** (default: the shared 7-Scenes redkitchen, frames 0-599, 640×480, default config):
  ``realtime`` paced at the recording's 30 Hz, ``--runs`` times (3); ``fast`` (``service.mode: fast``,
  every frame tracked and mapped, as fast as possible) once.
* **LiDAR** (the generated drive, source kind ``lidar_demo``, ``configs/lidar_64.yaml``), for each of
  ``--lidar-columns`` (1024 and 2048; 64 beams): ``realtime`` paced at the drive's 10 Hz, ``--runs``
  times; ``fast`` once; and KISS-ICP on the same scans (``bench.lidar.run_kiss``: its Python pipeline,
  default configuration, deskewing, one thread).

Per service run: frames delivered by the source, tracked (and % of delivered), dropped (never tracked:
the tracker took a newer frame), lost, frame → pose latency (median, p90: the driver delivered the
frame → a subscriber process holds the decoded pose; realtime runs, one subscriber), tracking ms
(median), aligned ATE (RGB-D; the realtime/fast ratio of aligned ATE) or KITTI-style relative
translation error (LiDAR, ``bench.lidar.kitti_relative_errors`` over the scans the run tracked) and
whether the whole drive was tracked, peak RSS, map MB, wall time and the rate (frames tracked ÷ wall
time). The report gives min / median / max over the realtime runs next to the targets of issue 18.

``--subscriber-phases`` adds the older fast run with subscriber phases 0 → N → 0 → N (``--subscribers``,
50 SUB sockets in one child process decoding every message): tracking ms, pipeline fps and publish ms
per phase.

Usage (from the repository root)::

    .venv/bin/python -m bench.service                          # everything: RGB-D, LiDAR 64x1024 and 64x2048
    .venv/bin/python -m bench.service --write-benchmarks       # the same, and its section of BENCHMARKS.md
    .venv/bin/python -m bench.service --datasets rgbd --last 99 --runs 1     # a short RGB-D run
    .venv/bin/python -m bench.service --datasets lidar --scans 80 --lidar-columns 1024 --runs 1
    .venv/bin/python -m bench.service --datasets lidar --skip-kiss           # without KISS-ICP
    .venv/bin/python -m bench.service --quick                  # smoke test: demo scene and a 64x256 drive
    .venv/bin/python -m bench.service --quick --subscriber-phases --subscribers 5

The whole benchmark takes about 15 minutes of both cores (the realtime runs last as long as the
recordings: 20 s of RGB-D, 65.5 s of drive, each three times per resolution); KISS-ICP needs the
``bench`` extra (``pip install -e .[bench]``). The drive starts from rest (about 3 m in its first 3 s), so
relative errors need about 80 scans or more (segments of 20 m and up); shorter drives report none.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import REPO_ROOT

# the title of the section earlier runs wrote (BENCHMARKS.md links to it): a new run replaces that section
SECTION_TITLE = "## Service: latency, subscribers, realtime vs fast (bench/service.py)"
QUICK_TREE = {  # the test suite's small scene: seconds, not minutes
    "source": {"kind": "demo", "options": {"frames": 40, "width": 160, "height": 120, "noise": False}},
    "mapper": {"rays": 1024, "first_frame_iterations": 40, "keyframe_rays": 1000},
    "tracker": {"min_hits": 5, "min_inlier_ratio": 0.2},
}
QUICK_LIDAR = {
    "scans": 30,
    "columns": [256],
}  # short and sparse, but 24 m: one 20 m segment for relative errors
QUICK_LIDAR_TREE = {"mapper": {"first_frame_iterations": 30}, "lidar": {"mapping_rays": 5000}}
RGBD_HZ, LIDAR_HZ = 30, 10
LIDAR_BEAMS = 64

#: issue 18's targets: (what, the test on the figures); checked in ``targets``
TARGETS = {
    "rgbd_tracked": "≥ 95 % of delivered frames tracked, every run",
    "rgbd_latency_median": "frame → pose median ≤ 25 ms",
    "rgbd_latency_p90": "frame → pose p90 ≤ 40 ms",
    "rgbd_ate_ratio": "aligned ATE ≤ 1.1 × the fast run's",
    "rgbd_rss": "peak RSS about 1 GB",
    "lidar_tracked": "≥ 95 % of delivered scans tracked, every run",
    "lidar_rel": "relative translation error below KISS-ICP's",
    "lidar_fast_rate": "fast rate ≥ 0.8 × KISS-ICP's",
    "lidar_rss": "peak RSS ≤ 1 GB",
    "lidar_map": "map ≤ 120 MB",
}


# --------------------------------------------------------------------------------- subscriber process


def run_subscribers(address: str, count: int, out: Path) -> None:
    """Child process: ``count`` SUB sockets on every topic, each decoding what it gets; prints "ready"
    once every socket has a message, and on SIGTERM writes socket 0's pose receipts to ``out``."""
    import zmq

    from slam.transport.wire import PoseMessage, WireError, decode

    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    context = zmq.Context()
    sockets = []
    for _ in range(count):
        sock = context.socket(zmq.SUB)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.setsockopt(zmq.RCVHWM, 100_000)
        sock.connect(address)
        sockets.append(sock)
    poller = zmq.Poller()
    for sock in sockets:
        poller.register(sock, zmq.POLLIN)
    heard: set[int] = set()
    receipts: list[tuple[float, int, float]] = []  # (stamp, seq, wall time received) on socket 0
    counts = [0] * count
    errors = 0
    while not stop:
        for sock, _ in poller.poll(100):
            i = sockets.index(sock)
            parts = sock.recv_multipart()
            now = time.time()
            try:
                message = decode(parts)
            except WireError:
                errors += 1
                continue
            counts[i] += 1
            if i == 0 and isinstance(message, PoseMessage):
                receipts.append((message.stamp, message.seq, now))
            if len(heard) < count:
                heard.add(i)
                if len(heard) == count:
                    print("ready", flush=True)
    out.write_text(json.dumps({"receipts": receipts, "messages": counts, "errors": errors}))


class SubscriberProcess:
    def __init__(self, address: str, count: int, out: Path) -> None:
        self.out = out
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.service", "--subscriber", address, str(count), str(out)],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline().strip()  # the service publishes status every second
        if line != "ready":
            raise RuntimeError(f"subscriber process did not connect (said {line!r})")

    def stop(self) -> dict[str, Any]:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        return json.loads(self.out.read_text())


# ----------------------------------------------------------------------------------------- the cases


def case_names(args: argparse.Namespace) -> list[tuple[str, int | None]]:
    """(case, LiDAR columns) in running order: fast before the realtime runs of the same data."""
    cases: list[tuple[str, int | None]] = []
    if "rgbd" in args.datasets:
        cases.append(("rgbd-fast", None))
        cases += [("rgbd-realtime", None)] * args.runs
        if args.subscriber_phases:
            cases.append(("rgbd-subscribers", None))
    if "lidar" in args.datasets:
        for columns in args.lidar_columns:
            cases += [] if args.skip_kiss else [("kiss", columns)]
            cases += [("lidar-fast", columns)] + [("lidar-realtime", columns)] * args.runs
    return cases


def service_config(
    args: argparse.Namespace, dataset: str, mode: str, out_dir: Path, columns: int | None = None
):
    """The service's config for one run: the dataset's config, ``mode``, publishing on loopback, no
    control server, no map file or mesh (they are written after the run and cost nothing measured)."""
    from slam.app.config import load_config, merge_trees, parse_overrides, validate_config

    service = {
        "output": {"dir": str(out_dir), "progress": False, "save_mesh": False},
        "service": {
            "mode": mode,
            "save_map": False,
            "publish": {"address": "tcp://127.0.0.1:*"},
            "control": {"enabled": False},
        },
    }
    if dataset == "lidar":
        tree = {"source": {"kind": "lidar_demo", "options": lidar_options(args, columns)}}
        if args.cache is not None:
            tree["source"]["path"] = str(args.cache)
        if args.quick:
            tree = merge_trees(tree, QUICK_LIDAR_TREE)
        tree = merge_trees(merge_trees(tree, service), parse_overrides(args.lidar_set or []))
        return load_config(args.lidar_config, tree)
    if args.quick:
        tree = merge_trees(QUICK_TREE, {"source": {"options": {"progress": False}}})
    else:
        tree = {"source": {"kind": args.kind, "path": str(args.data), "first": args.first, "last": args.last}}
    tree = merge_trees(merge_trees(tree, service), parse_overrides(args.set or []))
    return validate_config(tree, "bench/service.py")


def lidar_options(args: argparse.Namespace, columns: int | None) -> dict[str, Any]:
    """The ``lidar_demo`` driver's options for the drive at ``columns`` (as bench/lidar.py sets them)."""
    return {
        "scans": args.scans,
        "beams": LIDAR_BEAMS,
        "columns": columns,
        "seed": args.seed,
        "progress": False,
    }


def lidar_namespace(args: argparse.Namespace, columns: int) -> argparse.Namespace:
    """bench/lidar.py's arguments for the same drive (its ``open_sequence`` and ``run_kiss`` read them)."""
    return argparse.Namespace(
        scans=args.scans, beams=LIDAR_BEAMS, columns=columns, seed=args.seed, cache=args.cache
    )


def run_service(
    args: argparse.Namespace, dataset: str, mode: str, out_dir: Path, columns: int | None
) -> dict:
    """One service run to the end of the recording; realtime runs with one subscriber process that
    times the poses. Returns its figures (``summarize``)."""
    from slam.service.runtime import SLAMService

    out_dir.mkdir(parents=True, exist_ok=True)  # the subscriber writes its receipts here
    service = SLAMService(service_config(args, dataset, mode, out_dir, columns))
    offset = time.time() - time.perf_counter()  # perf_counter → wall clock, to meet the subscriber's clock
    child: SubscriberProcess | None = None
    got: dict[str, Any] = {"receipts": []}
    service.start()
    try:
        if mode == "realtime":  # fast runs have no subscriber: their rate is the pipeline's alone
            child = SubscriberProcess(service.publisher.endpoint, 1, out_dir / "subscriber.json")
        while not service.wait(0.2):
            pass
    finally:
        if child is not None:
            got = child.stop()
        result = service.shutdown()
    rows = service.latency.rows()
    available = {round(stamp, 6): avail + offset for stamp, avail, _, _ in rows}
    e2e = np.array(
        [
            (recv - available[round(stamp, 6)]) * 1e3
            for stamp, _, recv in got["receipts"]
            if round(stamp, 6) in available
        ]
    )
    out = summarize(result.stats, e2e)
    out.update({"dataset": dataset, "mode": mode, "columns": columns})
    if dataset == "lidar":
        out.update(lidar_scores(args, columns, result.trajectory_path, out))
    return out


def summarize(stats: dict[str, Any], e2e_ms: np.ndarray) -> dict[str, Any]:
    """A run's figures from its stats.json (read with ``.get``: the service's fields evolve) and its
    frame → pose latencies (ms)."""
    from bench.common import peak_rss_mb

    tracked = stats.get("frames")
    delivered = stats.get("frames_received")
    return {
        "delivered": delivered,
        "tracked": tracked,
        "tracked_pct": round(100.0 * tracked / delivered, 2) if delivered and tracked is not None else None,
        "dropped": stats.get("frames_dropped"),
        "lost": stats.get("frames_lost"),
        "not_mapped": stats.get("frames_not_mapped"),
        "mapped": stats.get("frames_mapped"),
        "frame_to_pose_ms_median": round(float(np.median(e2e_ms)), 2) if len(e2e_ms) else None,
        "frame_to_pose_ms_p90": round(float(np.percentile(e2e_ms, 90)), 2) if len(e2e_ms) else None,
        "poses_received": int(len(e2e_ms)),
        "tracking_ms_median": stats.get("tracking_ms_median"),
        "mapping_ms_median": stats.get("mapping_ms_median"),
        "ate_rmse_m": stats.get("ate_rmse_m"),
        "ate_rmse_aligned_m": stats.get("ate_rmse_aligned_m"),
        "rpe_trans_1s_m": stats.get("rpe_trans_1s_m"),
        # the service's own figure at the end of its run; this process's peak if stats.json lacks it
        "peak_rss_mb": stats.get("peak_rss_mb") or round(peak_rss_mb(), 1),
        "map_mb": stats.get("map_mb"),
        "wall_s": stats.get("wall_s"),
        "rate_hz": stats.get("fps"),
        "held_for_first_map_s": stats.get("held_for_first_map_s"),
        "mapping": stats.get("mapping"),  # other branches may add a block of mapping figures
    }


def lidar_scores(
    args: argparse.Namespace, columns: int, trajectory_path: Path, run: dict[str, Any]
) -> dict[str, Any]:
    """KITTI-style relative errors over the scans the run tracked (paired with the drive's ground truth
    by timestamp) and whether it tracked the whole drive: every scan delivered, none lost, and the last
    tracked scan within the drive's last half second."""
    from bench.lidar import kitti_relative_errors, open_sequence
    from slam.core.trajectory import read_trajectory

    est = read_trajectory(trajectory_path)
    with open_sequence(lidar_namespace(args, columns)) as source:
        stamps, gt = np.asarray(source.timestamps), np.asarray(source.gt_poses)
    index = np.searchsorted(stamps, est.timestamps - 1e-6)
    index = np.clip(index, 0, len(stamps) - 1)
    paired = np.abs(stamps[index] - est.timestamps) < 1e-4
    scores = kitti_relative_errors(gt[index[paired]], est.poses[paired])
    last = float(est.timestamps[-1]) if len(est.timestamps) else float("-inf")
    whole = bool(run.get("delivered") == len(stamps) and not run.get("lost") and last >= stamps[-1] - 0.5)
    return {
        "drive_scans": int(len(stamps)),
        "rel_trans_pct": scores["rel_trans_pct"],
        "rel_rot_deg_per_100m": scores["rel_rot_deg_per_100m"],
        "segments": scores["segments"],
        "segment_lengths_m": scores["segment_lengths_m"],
        "whole_drive": whole,
    }


def run_kiss_case(args: argparse.Namespace, columns: int) -> dict[str, Any]:
    from bench.lidar import run_kiss

    out = run_kiss(lidar_namespace(args, columns))
    out.update({"dataset": "lidar", "mode": "kiss", "columns": columns, "rate_hz": out["hz"]})
    return out


def run_case(case: str, args: argparse.Namespace, out_dir: Path, columns: int | None) -> dict[str, Any]:
    """One case in this process (the parent runs each in a child: ``--only CASE``)."""
    if case == "kiss":
        return run_kiss_case(args, columns)
    if case == "rgbd-subscribers":
        out = run_fast_with_subscribers(args, out_dir)
        return {**out, "dataset": "rgbd", "mode": "subscribers", "columns": None}
    dataset, mode = case.split("-")
    return run_service(args, dataset, mode, out_dir, columns)


def _child_argv(case: str, args: argparse.Namespace, out_dir: Path, columns: int | None) -> list[str]:
    from bench.common import child_argv

    options: dict[str, Any] = {
        "data": args.data,
        "kind": args.kind,
        "first": args.first,
        "last": args.last,
        "scans": args.scans,
        "seed": args.seed,
        "lidar-config": args.lidar_config,
        "cache": args.cache,
        "lidar-columns": columns,
        "subscribers": args.subscribers,
        "out": out_dir,
        "set": list(args.set or []),
        "lidar-set": list(args.lidar_set or []),
    }
    return child_argv("bench.service", case, options) + (["--quick"] if args.quick else [])


# ------------------------------------------------------------------------- fast run with subscriber phases


def _phase_stats(rows: np.ndarray, track_ms: np.ndarray, lo: int, hi: int) -> dict[str, Any]:
    """Frames [lo, hi) in tracking order: pipeline fps, tracking ms, publish ms."""
    seg = rows[lo:hi]
    wall = seg[-1, 2] - seg[0, 2] if len(seg) > 1 else float("nan")
    return {
        "frames": int(hi - lo),
        "fps": round((len(seg) - 1) / wall, 3) if len(seg) > 1 else None,
        "tracking_ms_median": round(float(np.median(track_ms[lo:hi])), 2),
        "tracking_ms_mean": round(float(np.mean(track_ms[lo:hi])), 2),
        "publish_ms_median": round(float(np.median(seg[:, 3] - seg[:, 2]) * 1e3), 3),
    }


def run_fast_with_subscribers(args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    from slam.service.runtime import SLAMService

    out_dir.mkdir(parents=True, exist_ok=True)  # the subscriber processes write their receipts here
    service = SLAMService(service_config(args, "rgbd", "fast", out_dir))
    total = service.source.length() or 0
    plan = [0, args.subscribers, 0, args.subscribers]
    warmup = 5  # the first frames fit the map's start, slower than the rest: in no phase
    per_phase = max((total - warmup) // len(plan), 2)
    boundaries: list[tuple[int, int, int]] = []  # (subscribers, first frame, end frame)
    service.start()
    engine = service.pipeline.engine
    child: SubscriberProcess | None = None
    try:
        while engine.stats.frames < warmup and not service.tracking_done.is_set():
            time.sleep(0.02)
        for k, subscribers in enumerate(plan):
            if subscribers:
                child = SubscriberProcess(service.publisher.endpoint, subscribers, out_dir / f"subs_{k}.json")
            start = engine.stats.frames
            end = min(warmup + (k + 1) * per_phase, total)
            while engine.stats.frames < end and not service.tracking_done.is_set():
                time.sleep(0.02)
            boundaries.append((subscribers, start, engine.stats.frames))
            if child is not None:
                child.stop()
                child = None
    finally:
        if child is not None:
            child.stop()
        result = service.shutdown()
    rows = service.latency.rows()
    track_ms = np.array(engine.stats.tracking_ms)
    phases = [
        {"subscribers": n, **_phase_stats(rows, track_ms, lo, hi)} for n, lo, hi in boundaries if hi - lo > 2
    ]
    return {
        "phases": phases,
        "publish_ms_median": result.stats.get("publish_ms_median"),
        "wall_s": result.stats.get("wall_s"),
    }


def subscriber_effect(phases: list[dict[str, Any]]) -> dict[str, Any] | None:
    none = [p for p in phases if p["subscribers"] == 0]
    some = [p for p in phases if p["subscribers"] > 0]
    if not none or not some:
        return None

    def mean(key: str, group: list[dict[str, Any]]) -> float:
        weights = np.array([p["frames"] for p in group], dtype=float)
        return float(np.average([p[key] for p in group], weights=weights))

    return {
        "subscribers": some[0]["subscribers"],
        "tracking_ms_change_pct": round(
            (mean("tracking_ms_mean", some) / mean("tracking_ms_mean", none) - 1) * 100, 2
        ),
        "fps_change_pct": round((mean("fps", some) / mean("fps", none) - 1) * 100, 2),
    }


# ------------------------------------------------------------------------------------------- report


def _fmt(v: Any, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def _label(r: dict[str, Any]) -> str:
    if r["dataset"] == "rgbd":
        return f"RGB-D {r['mode']}" + (f" {RGBD_HZ} Hz" if r["mode"] == "realtime" else "")
    res = f"{LIDAR_BEAMS}×{r['columns']}"
    if r["mode"] == "kiss":
        return f"KISS-ICP {res}"
    return f"LiDAR {res} {r['mode']}" + (f" {LIDAR_HZ} Hz" if r["mode"] == "realtime" else "")


def _spread(values: list[Any], spec: str, scale: float = 1.0) -> str:
    vals = [v * scale for v in values if v is not None]
    if not vals:
        return "–"
    if len(vals) == 1:
        return format(vals[0], spec)
    lo, mid, hi = min(vals), float(np.median(vals)), max(vals)
    return f"{format(lo, spec)} / {format(mid, spec)} / {format(hi, spec)}"


def _verdict(ok: bool | None) -> str:
    return "–" if ok is None else ("yes" if ok else "**no**")


def _all(values: list[Any], test) -> bool | None:
    vals = [v for v in values if v is not None]
    return None if not vals or len(vals) < len(values) else all(test(v) for v in vals)


def runs_table(results: list[dict[str, Any]]) -> str:
    from bench.common import markdown_grid

    header = [
        "run",
        "#",
        "delivered",
        "tracked (%)",
        "dropped",
        "lost",
        "frame → pose ms median / p90",
        "tracking ms median",
        "ATE aligned cm",
        "rel. transl. %",
        "whole drive",
        "peak RSS MB",
        "map MB",
        "wall s",
        "rate Hz",
    ]
    rows, count = [], {}
    for r in results:
        if r["mode"] == "subscribers":
            continue
        label = _label(r)
        count[label] = count.get(label, 0) + 1
        kiss = r["mode"] == "kiss"
        tracked = "–" if kiss else f"{r['tracked']} ({_fmt(r['tracked_pct'], '.1f')})"
        e2e = "–"
        if r.get("frame_to_pose_ms_median") is not None:
            e2e = f"{r['frame_to_pose_ms_median']:.1f} / {r['frame_to_pose_ms_p90']:.1f}"
        ate = r.get("ate_rmse_aligned_m") if r["dataset"] == "rgbd" else None
        whole = r.get("whole_drive")
        rows.append(
            [
                label,
                str(count[label]),
                _fmt(r.get("scans") if kiss else r.get("delivered"), "d"),
                tracked,
                _fmt(r.get("dropped"), "d"),
                _fmt(r.get("lost"), "d"),
                e2e,
                _fmt(r.get("tracking_ms_median"), ".1f"),
                _fmt(None if ate is None else ate * 100, ".2f"),
                _fmt(r.get("rel_trans_pct"), ".3f"),
                "–" if whole is None else ("yes" if whole else "**no**"),
                _fmt(r.get("peak_rss_mb"), ".0f"),
                _fmt(r.get("map_mb"), ".1f"),
                _fmt(r.get("wall_s"), ".1f"),
                _fmt(r.get("rate_hz"), ".2f"),
            ]
        )
    return markdown_grid(header, rows)


def targets(results: list[dict[str, Any]]) -> list[list[str]]:
    """Rows (figure, min / median / max over the runs, target, met) for each dataset and resolution."""
    rows: list[list[str]] = []
    rgbd = [r for r in results if r["dataset"] == "rgbd" and r["mode"] == "realtime"]
    rgbd_fast = next((r for r in results if r["dataset"] == "rgbd" and r["mode"] == "fast"), None)
    if rgbd:
        pct = [r["tracked_pct"] for r in rgbd]
        med = [r["frame_to_pose_ms_median"] for r in rgbd]
        p90 = [r["frame_to_pose_ms_p90"] for r in rgbd]
        fast_ate = rgbd_fast.get("ate_rmse_aligned_m") if rgbd_fast else None
        ratio = [
            r["ate_rmse_aligned_m"] / fast_ate if fast_ate and r["ate_rmse_aligned_m"] else None for r in rgbd
        ]
        rss = [r["peak_rss_mb"] for r in rgbd]
        name = f"RGB-D {RGBD_HZ} Hz"
        rows += [
            [
                name,
                "tracked %",
                _spread(pct, ".1f"),
                TARGETS["rgbd_tracked"],
                _verdict(_all(pct, lambda v: v >= 95)),
            ],
            [
                name,
                "frame → pose median ms",
                _spread(med, ".1f"),
                TARGETS["rgbd_latency_median"],
                _verdict(_all(med, lambda v: v <= 25)),
            ],
            [
                name,
                "frame → pose p90 ms",
                _spread(p90, ".1f"),
                TARGETS["rgbd_latency_p90"],
                _verdict(_all(p90, lambda v: v <= 40)),
            ],
            [name, "tracking ms median", _spread([r["tracking_ms_median"] for r in rgbd], ".1f"), "", ""],
            [name, "ATE aligned cm", _spread([r["ate_rmse_aligned_m"] for r in rgbd], ".2f", 100), "", ""],
            [
                name,
                "ATE aligned, realtime / fast",
                _spread(ratio, ".2f"),
                TARGETS["rgbd_ate_ratio"],
                _verdict(_all(ratio, lambda v: v <= 1.1)),
            ],
            [name, "peak RSS MB", _spread(rss, ".0f"), TARGETS["rgbd_rss"], "–"],
            [name, "map MB", _spread([r["map_mb"] for r in rgbd], ".1f"), "", ""],
        ]
    for columns in sorted({r["columns"] for r in results if r["dataset"] == "lidar"}):
        same = [r for r in results if r["dataset"] == "lidar" and r["columns"] == columns]
        rt = [r for r in same if r["mode"] == "realtime"]
        fast = next((r for r in same if r["mode"] == "fast"), None)
        kiss = next((r for r in same if r["mode"] == "kiss"), None)
        ours = [r for r in same if r["mode"] in ("realtime", "fast")]
        name = f"LiDAR {LIDAR_BEAMS}×{columns}"
        kiss_rel = kiss.get("rel_trans_pct") if kiss else None
        kiss_hz = kiss.get("rate_hz") if kiss else None
        if rt:
            pct = [r["tracked_pct"] for r in rt]
            rel = [r["rel_trans_pct"] for r in rt]
            below = None if kiss_rel is None else _all(rel, lambda v, k=kiss_rel: v < k)
            rows += [
                [
                    f"{name} {LIDAR_HZ} Hz",
                    "tracked %",
                    _spread(pct, ".1f"),
                    TARGETS["lidar_tracked"],
                    _verdict(_all(pct, lambda v: v >= 95)),
                ],
                [
                    f"{name} {LIDAR_HZ} Hz",
                    "whole drive tracked",
                    f"{sum(bool(r['whole_drive']) for r in rt)} of {len(rt)} runs",
                    "",
                    "",
                ],
                [
                    f"{name} {LIDAR_HZ} Hz",
                    "frame → pose median / p90 ms",
                    f"{_spread([r['frame_to_pose_ms_median'] for r in rt], '.0f')}; {_spread([r['frame_to_pose_ms_p90'] for r in rt], '.0f')}",
                    "",
                    "",
                ],
                [
                    f"{name} {LIDAR_HZ} Hz",
                    "rel. transl. %",
                    _spread(rel, ".3f"),
                    f"{TARGETS['lidar_rel']} ({_fmt(kiss_rel, '.3f')})",
                    _verdict(below),
                ],
            ]
        if fast is not None:
            fast_rel = fast.get("rel_trans_pct")
            rows.append(
                [
                    f"{name} fast",
                    "rel. transl. %",
                    _fmt(fast_rel, ".3f"),
                    f"{TARGETS['lidar_rel']} ({_fmt(kiss_rel, '.3f')})",
                    _verdict(None if kiss_rel is None or fast_rel is None else fast_rel < kiss_rel),
                ]
            )
            ok = None if not kiss_hz or fast.get("rate_hz") is None else fast["rate_hz"] >= 0.8 * kiss_hz
            rows.append(
                [
                    f"{name} fast",
                    "rate Hz",
                    _fmt(fast.get("rate_hz"), ".2f"),
                    f"{TARGETS['lidar_fast_rate']} (≥ {_fmt(None if not kiss_hz else 0.8 * kiss_hz, '.2f')})",
                    _verdict(ok),
                ]
            )
        if ours:
            rss = [r["peak_rss_mb"] for r in ours]
            maps = [r["map_mb"] for r in ours]
            rows += [
                [
                    f"{name} (all runs)",
                    "peak RSS MB",
                    _spread(rss, ".0f"),
                    TARGETS["lidar_rss"],
                    _verdict(_all(rss, lambda v: v <= 1024)),
                ],
                [
                    f"{name} (all runs)",
                    "map MB",
                    _spread(maps, ".1f"),
                    TARGETS["lidar_map"],
                    _verdict(_all(maps, lambda v: v <= 120)),
                ],
            ]
        if kiss is not None:
            rows.append(
                [
                    f"KISS-ICP {LIDAR_BEAMS}×{columns}",
                    "rate Hz; peak RSS MB; rel. transl. %",
                    f"{_fmt(kiss_hz, '.2f')}; {_fmt(kiss.get('peak_rss_mb'), '.0f')}; {_fmt(kiss_rel, '.3f')}",
                    "",
                    "",
                ]
            )
    return rows


def subscriber_table(run: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "Fast RGB-D run with subscriber phases (`--subscriber-phases`; N subscribers = N SUB sockets on every "
        "topic in one child process, each decoding every message):",
        "",
        "| phase | subscribers | frames | pipeline fps | tracking ms (median) | tracking ms (mean) | publish ms (median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, p in enumerate(run["phases"], 1):
        lines.append(
            f"| {i} | {p['subscribers']} | {p['frames']} | {p['fps']} | {p['tracking_ms_median']} | "
            f"{p['tracking_ms_mean']} | {p['publish_ms_median']} |"
        )
    eff = subscriber_effect(run["phases"])
    if eff is not None:
        lines += [
            "",
            f"With {eff['subscribers']} subscribers vs none: tracking ms (mean) {eff['tracking_ms_change_pct']:+.1f} %, "
            f"pipeline fps {eff['fps_change_pct']:+.1f} %.",
        ]
    return lines


def report(
    results: list[dict[str, Any]], command: str, machine: dict[str, Any], date: str, data: list[str]
) -> str:
    from bench.common import markdown_grid

    lines = [
        SECTION_TITLE,
        "",
        f"Command: `{command}`  ",
        f"Commit: {machine['commit']}; {date} UTC; {machine['nproc']} cores ({machine['cpu']}), "
        f"{machine['memory_gb']} GB, CPU only, load average at start {machine['load_average_at_start']}.",
        "",
        *[f"- {d}" for d in data],
        "",
        "Every run:",
        "",
        runs_table(results),
        "",
        "Realtime runs, min / median / max, against the targets (issue 18):",
        "",
        markdown_grid(["case", "figure", "min / median / max", "target", "met"], targets(results)),
    ]
    subs = next((r for r in results if r["mode"] == "subscribers"), None)
    if subs is not None:
        lines += subscriber_table(subs)
    lines += [
        "",
        "Each run in its own process (peak RSS is the run's own, `VmHWM` at the end of the run). tracked %: of the "
        "frames the source delivered; dropped: never tracked (the tracker took a newer frame; realtime only). "
        "frame → pose: the driver delivered the frame → a subscriber process holds the decoded pose (realtime "
        "runs, one subscriber). rate: frames tracked ÷ wall time. ATE (RGB-D) and relative errors (LiDAR: "
        "KITTI's definition, poses in the LiDAR frame, over the scans each run tracked) against the ground "
        "truth; whole drive: every scan delivered, none lost, tracked to the drive's last half second. "
        "KISS-ICP: its Python pipeline, defaults, deskewing, one thread (bench/lidar.py). Timings are only "
        "comparable on an otherwise idle machine.",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- main


CASES = ("rgbd-fast", "rgbd-realtime", "rgbd-subscribers", "lidar-fast", "lidar-realtime", "kiss")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.service", description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", choices=("rgbd", "lidar"), default=["rgbd", "lidar"])
    p.add_argument(
        "--runs", type=int, default=None, help="runs of each realtime case (default 3, 1 with --quick)"
    )
    p.add_argument(
        "--data", type=Path, default=None, help="RGB-D dataset folder (default: the shared redkitchen)"
    )
    p.add_argument("--kind", default="7scenes", help="driver of --data (default 7scenes)")
    p.add_argument("--first", type=int, default=0)
    p.add_argument("--last", type=int, default=599, help="last RGB-D frame, inclusive (default 599)")
    p.add_argument("--set", action="append", help="RGB-D config override KEY=VALUE (repeatable)")
    p.add_argument(
        "--scans", type=int, default=None, help="scans of the generated drive (default: the whole loop, 655)"
    )
    p.add_argument(
        "--lidar-columns",
        type=int,
        nargs="+",
        default=None,
        help="firings per revolution of the 64-beam drives (default 1024 2048)",
    )
    p.add_argument("--seed", type=int, default=0, help="the drive's scene and noise seed")
    p.add_argument("--lidar-config", type=Path, default=REPO_ROOT / "configs" / "lidar_64.yaml")
    p.add_argument("--lidar-set", action="append", help="LiDAR config override KEY=VALUE (repeatable)")
    p.add_argument("--skip-kiss", action="store_true", help="no KISS-ICP runs (it needs the bench extra)")
    p.add_argument("--cache", type=Path, default=None, help="cache root for the generated drive")
    p.add_argument(
        "--subscriber-phases", action="store_true", help="add the fast RGB-D run with subscriber phases"
    )
    p.add_argument(
        "--subscribers", type=int, default=50, help="subscribers in the loaded phases (default 50)"
    )
    p.add_argument("--out", type=Path, default=None, help="output folder (default runs/bench_service)")
    p.add_argument("--quick", action="store_true", help="demo scene and a 30-scan 64x256 drive: a smoke test")
    p.add_argument("--write-benchmarks", action="store_true", help="write the section into BENCHMARKS.md")
    p.add_argument("--only", choices=CASES, help=argparse.SUPPRESS)  # one case in this process (a child)
    p.add_argument("--subscriber", nargs=3, metavar=("ADDRESS", "N", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.scans is None and args.quick:
        args.scans = QUICK_LIDAR["scans"]
    if args.lidar_columns is None:
        args.lidar_columns = QUICK_LIDAR["columns"] if args.quick else [1024, 2048]
    if args.runs < 1:
        p.error("--runs must be >= 1")
    if args.scans is not None and args.scans < 2:
        p.error("--scans must be >= 2")
    return args


def describe_data(args: argparse.Namespace, results: list[dict[str, Any]]) -> list[str]:
    out = []
    if "rgbd" in args.datasets:
        out.append(
            "RGB-D: demo scene, 40 frames 160×120 (quick)"
            if args.quick
            else f"RGB-D: {args.kind} {args.data}, frames {args.first}-{args.last}, 640×480, {RGBD_HZ} Hz, default config"
        )
    if "lidar" in args.datasets:
        drive = next((r for r in results if r["dataset"] == "lidar" and r.get("drive_scans")), None)
        scans = drive["drive_scans"] if drive else args.scans
        segs = f"; relative errors over segments of {drive['segment_lengths_m']} m" if drive else ""
        out.append(
            f"LiDAR: the generated drive (`lidar_demo`, seed {args.seed}), {scans} scans at {LIDAR_HZ} Hz, "
            f"{LIDAR_BEAMS} beams × {', '.join(map(str, args.lidar_columns))} columns, "
            f"`{Path(args.lidar_config).name}`{' with quick overrides' if args.quick else ''}{segs}"
        )
    out.append(f"Realtime runs per case: {args.runs}; fast runs and KISS-ICP: one each")
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.subscriber:
        address, count, out = args.subscriber
        run_subscribers(address, int(count), Path(out))
        return 0
    from bench.common import command_line, default_data, machine_info, run_child, write_benchmarks

    if args.data is None and not args.quick:
        args.data = default_data()
    out_dir = args.out or REPO_ROOT / ("runs/bench_service_quick" if args.quick else "runs/bench_service")
    if args.only:
        import torch

        torch.set_num_threads(1)
        columns = args.lidar_columns[0] if args.only.startswith(("lidar", "kiss")) else None
        print(json.dumps(run_case(args.only, args, out_dir, columns), default=str))
        return 0
    out_dir.mkdir(parents=True, exist_ok=True)
    date = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    machine = machine_info()
    if "lidar" in args.datasets:
        from bench.lidar import open_sequence

        for columns in args.lidar_columns:  # generate each drive once, before the timed runs
            with open_sequence(lidar_namespace(args, columns)) as source:
                print(f"drive 64x{columns}: {len(source)} scans ({source.folder})", flush=True)
    results: list[dict[str, Any]] = []
    for i, (case, columns) in enumerate(case_names(args)):
        run_dir = out_dir / (f"{i:02d}_{case}" + (f"_{columns}" if columns else ""))
        print(f"{case}{f' 64x{columns}' if columns else ''} -> {run_dir}", flush=True)
        proc = run_child(_child_argv(case, args, run_dir, columns), capture_output=True)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"{case} failed (exit {proc.returncode})")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    (out_dir / "results.json").write_text(
        json.dumps({"date": date, "machine": machine, "results": results}, indent=2, default=str) + "\n"
    )
    command = command_line("bench.service", list(argv if argv is not None else sys.argv[1:]))
    section = report(results, command, machine, date, describe_data(args, results))
    print(section)
    if args.write_benchmarks:
        path = write_benchmarks(section, SECTION_TITLE)
        print(f"wrote the section {SECTION_TITLE!r} of {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
