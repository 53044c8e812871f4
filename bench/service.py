"""Service benchmark: pose latency, throughput with 0 vs 50 subscribers, realtime vs fast replay.

Two runs of ``slam.service.SLAMService`` on the same frames (default: the shared 7-Scenes redkitchen,
frames 0-599), each in this process with the default config, publishing on loopback:

* **fast** (every frame, as fast as possible): subscriber phases 0 → N → 0 → N (``--subscribers``, 50)
  in the same run. The N subscribers are SUB sockets of one child process (its own GIL, like robots),
  subscribed to every topic and decoding every message. Per phase: tracking-thread ms per frame (the
  time inside ``Engine.track``), pipeline fps (tracked frames ÷ wall time of the phase) and publish ms.
  Frames tracked while subscribers connect or leave belong to no phase.
* **realtime** (paced at the recording's 30 Hz): one subscriber process. Dropped-frame fraction,
  frames not mapped, and frame → pose latency: from the driver delivering the frame to the subscriber
  holding the decoded pose (both on the machine's wall clock).

Both report publish ms (tracking of a frame finished → ``publish_pose`` returned, median), ATE
(unaligned, SE(3)-aligned) and 1-s RPE over the frames each run tracked; the realtime/fast ATE ratio
is the aligned one.

Usage (from the repository root)::

    .venv/bin/python -m bench.service                          # 7-Scenes 0-599
    .venv/bin/python -m bench.service --last 299 --write-benchmarks
    .venv/bin/python -m bench.service --quick                  # demo scene, 40 small frames: smoke test
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import REPO_ROOT

SECTION_TITLE = "## Service: latency, subscribers, realtime vs fast (bench/service.py)"
QUICK_TREE = {  # the test suite's small scene: seconds, not minutes
    "source": {"kind": "demo", "options": {"frames": 40, "width": 160, "height": 120, "noise": False}},
    "mapper": {"rays": 1024, "first_frame_iterations": 40, "keyframe_rays": 1000},
    "tracker": {"min_hits": 5, "min_inlier_ratio": 0.2},
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


# ----------------------------------------------------------------------------------------------- runs


def service_config(args: argparse.Namespace, mode: str, out_dir: Path):
    from slam.app.config import merge_trees, parse_overrides, validate_config

    if args.quick:
        tree = merge_trees(QUICK_TREE, {"source": {"options": {"progress": False}}})
    else:
        tree = {"source": {"kind": args.kind, "path": str(args.data), "first": args.first, "last": args.last}}
    tree = merge_trees(
        tree,
        {
            "output": {"dir": str(out_dir), "progress": False, "save_mesh": False},
            "service": {
                "mode": mode,
                "save_map": False,
                "publish": {"address": "tcp://127.0.0.1:*"},
                "control": {"enabled": False},
            },
        },
    )
    return validate_config(merge_trees(tree, parse_overrides(args.set or [])), "bench/service.py")


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

    service = SLAMService(service_config(args, "fast", out_dir / "fast"))
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
    return {"stats": result.stats, "phases": phases, "publish_ms_median": result.stats["publish_ms_median"]}


def run_realtime(args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    from slam.service.runtime import SLAMService

    service = SLAMService(service_config(args, "realtime", out_dir / "realtime"))
    offset = time.time() - time.perf_counter()  # perf_counter → wall clock, to meet the subscriber's clock
    child: SubscriberProcess | None = None
    service.start()
    try:
        child = SubscriberProcess(service.publisher.endpoint, 1, out_dir / "subs_realtime.json")
        while not service.wait(0.2):
            pass
    finally:
        got = child.stop() if child is not None else {"receipts": []}
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
    s = result.stats
    received = s["frames_received"]
    return {
        "stats": s,
        "dropped_fraction": round(s["frames_dropped"] / received, 4) if received else None,
        "frame_to_pose_ms_median": round(float(np.median(e2e)), 2) if len(e2e) else None,
        "frame_to_pose_ms_p90": round(float(np.percentile(e2e, 90)), 2) if len(e2e) else None,
        "poses_received": int(len(e2e)),
    }


# ------------------------------------------------------------------------------------------- report


def _cm(v: float | None) -> str:
    return "–" if v is None else f"{v * 100:.2f}"


def report(results: dict[str, Any], command: str, machine: dict[str, Any], frames: str) -> str:
    fast, rt = results["fast"], results["realtime"]
    fs, rs = fast["stats"], rt["stats"]
    ratio = results.get("ate_ratio_aligned")
    lines = [
        SECTION_TITLE,
        "",
        f"Command: `{command}`",
        "",
        f"- Date: {results['date']}",
        f"- Machine: {machine['nproc']} CPU cores ({machine['cpu']}), CPU only; load average at start: "
        f"{machine['load_average_at_start']}; commit {machine['commit']}",
        f"- Frames: {frames}",
        "",
        "| run | tracked | dropped | not mapped | fps | tracking ms (median) | publish ms (median) "
        "| frame → pose ms (median / p90) | ATE cm | ATE aligned cm | RPE 1 s cm |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s, extra in (("fast", fs, None), ("realtime 30 Hz", rs, rt)):
        e2e = (
            "–"
            if extra is None or extra["frame_to_pose_ms_median"] is None
            else (f"{extra['frame_to_pose_ms_median']:.1f} / {extra['frame_to_pose_ms_p90']:.1f}")
        )
        dropped = f"{s['frames_dropped']} ({s['frames_dropped'] / max(s['frames_received'], 1) * 100:.0f} %)"
        lines.append(
            f"| {name} | {s['frames']} | {dropped} | {s['frames_not_mapped']} | {s['fps']:.2f} | "
            f"{s['tracking_ms_median']:.1f} | {s['publish_ms_median']:.3f} | {e2e} | {_cm(s['ate_rmse_m'])} | "
            f"{_cm(s['ate_rmse_aligned_m'])} | {_cm(s['rpe_trans_1s_m'])} |"
        )
    lines += [
        "",
        f"Realtime / fast aligned ATE: **{ratio:.2f}×**" if ratio is not None else "Realtime / fast ATE: –",
        "",
        "Fast run, subscriber phases (same run, same process; N subscribers = N SUB sockets on every topic "
        "in one child process, each decoding every message):",
        "",
        "| phase | subscribers | frames | pipeline fps | tracking ms (median) | tracking ms (mean) | publish ms (median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, p in enumerate(fast["phases"], 1):
        lines.append(
            f"| {i} | {p['subscribers']} | {p['frames']} | {p['fps']} | {p['tracking_ms_median']} | "
            f"{p['tracking_ms_mean']} | {p['publish_ms_median']} |"
        )
    if results.get("subscriber_effect") is not None:
        eff = results["subscriber_effect"]
        lines += [
            "",
            f"With {eff['subscribers']} subscribers vs none: tracking ms (mean) {eff['tracking_ms_change_pct']:+.1f} %, "
            f"pipeline fps {eff['fps_change_pct']:+.1f} %.",
        ]
    lines += [
        "",
        "publish ms: tracking of a frame finished → the engine's observers (trajectory recorder, `publish_pose`) "
        "returned. frame → pose: the driver delivered the frame → a subscriber process holds the decoded pose "
        "(realtime run, 1 subscriber). Fast mode maps every frame (the tracker waits for room in the mapping "
        "queue), so its fps is the pipeline's; realtime drops stale frames and the mapper takes what it can. "
        "ATE/RPE over the frames each run tracked (the realtime run's first frames wait for the map's first "
        "fit; their frames are counted as dropped).",
        "",
    ]
    return "\n".join(lines)


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


# --------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.service", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=None, help="dataset folder (default: the shared redkitchen)")
    p.add_argument("--kind", default="7scenes", help="driver of --data (default 7scenes)")
    p.add_argument("--first", type=int, default=0)
    p.add_argument("--last", type=int, default=599, help="last frame, inclusive (default 599)")
    p.add_argument(
        "--subscribers", type=int, default=50, help="subscribers in the loaded phases (default 50)"
    )
    p.add_argument("--out", type=Path, default=None, help="output folder (default runs/bench_service)")
    p.add_argument("--set", action="append", help="config override KEY=VALUE (repeatable)")
    p.add_argument("--quick", action="store_true", help="the small demo scene instead: a smoke test")
    p.add_argument("--write-benchmarks", action="store_true", help="write the section into BENCHMARKS.md")
    p.add_argument("--subscriber", nargs=3, metavar=("ADDRESS", "N", "OUT"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.subscriber:
        address, count, out = args.subscriber
        run_subscribers(address, int(count), Path(out))
        return 0
    import torch

    from bench.common import default_data, machine_info, write_benchmarks

    torch.set_num_threads(1)
    if args.data is None and not args.quick:
        args.data = default_data()
    out_dir = args.out or REPO_ROOT / ("runs/bench_service_quick" if args.quick else "runs/bench_service")
    out_dir.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    frames = (
        "demo scene, 40 frames 160×120 (quick)"
        if args.quick
        else (f"{args.kind} {args.data}, frames {args.first}-{args.last}, 640×480 at 30 Hz")
    )
    print(f"bench/service: {frames} -> {out_dir}", flush=True)
    results: dict[str, Any] = {"date": dt.datetime.now().isoformat(timespec="seconds"), "machine": machine}
    print("fast run with subscriber phases...", flush=True)
    results["fast"] = run_fast_with_subscribers(args, out_dir)
    print("realtime run...", flush=True)
    results["realtime"] = run_realtime(args, out_dir)
    fast_ate, rt_ate = (
        results["fast"]["stats"]["ate_rmse_aligned_m"],
        results["realtime"]["stats"]["ate_rmse_aligned_m"],
    )
    results["ate_ratio_aligned"] = round(rt_ate / fast_ate, 3) if fast_ate and rt_ate else None
    results["subscriber_effect"] = subscriber_effect(results["fast"]["phases"])
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    command = "python -m bench.service " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    section = report(results, command.strip(), machine, frames)
    print(section)
    if args.write_benchmarks:
        path = write_benchmarks(section, SECTION_TITLE)
        print(f"wrote the section {SECTION_TITLE!r} of {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
