"""Events benchmark: RGB-D alone against RGB-D + events, same frames, same run.

Two sequences, both with simulated events (``drivers.sim.events``) from a 320×240 event camera sharing
the RGB-D camera's optical centre and axes (its intrinsics are the RGB-D camera's scaled by 1/2):

(a) the shared 7-Scenes redkitchen frames 0-599, tracked at stride 4 (7.5 Hz). Events come from all
    600 frames: sub-frames warped with depth between consecutive frames at the ground-truth poses,
    at most 1 px of flow apart. Colour is motion-blurred over one 30 Hz frame period (the colour
    warped to the poses of the exposure and averaged).
(b) the demo scene, frames 0-299 tracked at stride 4 (fast: about 8 cm and 8° between tracked
    frames). Events from renders along the scene's continuous camera path, as many per 30 Hz frame
    (1 to 16) as keep the flow between renders within about 2 px (the demo driver's cached stream,
    ``source.options.events``).
    Colour motion-blurred as in (a), then darkened (``low_light``: 15 % of the range, shot and read
    noise).

Both runs of a sequence use the same config and seed (``slam.app.replay.build_engine``); "RGB-D" tracks
with ``slam.engine.tracker.Tracker`` on frames without events, "RGB-D + events" with
``slam.frontends.events.EventFrontend`` on the same frames carrying their events, attached by the
project's ``EventSynchronizer``. Reported: ATE RMSE (unaligned and SE(3)-aligned), 1-s RPE, lost
frames, Hz (tracked frames ÷ wall time of the tracking-and-mapping loop), event-term throughput
(events ÷ time spent in the event term), and the synchroniser's and 1 ms slicing's events/s on the
simulated stream. Targets (issue 6): ATE with events ≥ 20 % lower; slicing ≥ 5 M events/s; event
term ≥ 1 M events/s.

Usage (from the repository root)::

    .venv/bin/python -m bench.events                       # both sequences
    .venv/bin/python -m bench.events --quick               # fewer frames: a smoke test
    .venv/bin/python -m bench.events --write-benchmarks    # also write the "Events" section
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import REPO_ROOT, command_line, default_data, write_benchmarks

SECTION_TITLE = "## Events: RGB-D vs RGB-D + events (bench/events.py)"
EVENT_SCALE = 0.5  # event camera resolution relative to the RGB-D camera
DEMO_MAX_FLOW_PX = 2.0  # demo renders: at most this flow between two (the 1 px default takes twice as long)
SLICE_TARGET = 5e6
TERM_TARGET = 1e6


@dataclass
class Sequence:
    name: str
    frames: list  # RGBDFrame, degraded colour, ground truth
    packets: list  # EventPacket per original frame (the simulated stream)
    event_intrinsics: Any
    notes: str = ""
    generation_s: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


def _packet(events, intr, t_end: float, index: int):
    return events.packet(intr.width, intr.height, timestamp=t_end, index=index)


def prepare_sevenscenes(data: Path, last: int, stride: int, progress: bool = True) -> Sequence:
    from drivers.sevenscenes import SevenScenesSource
    from drivers.sim.events import DepthWarper, EventSimConfig, blurred_color, rgbd_sequence_events

    t0 = time.perf_counter()
    frames, packets = [], []
    intr_ev = None
    warper = None
    previous_pose = None
    with SevenScenesSource(data, first=0, last=last) as source:
        iterator = iter(source)
        first = next(iterator)
        intr_ev = first.intrinsics.scaled(EVENT_SCALE)
        warper = DepthWarper(first.intrinsics)

        def all_frames():
            yield first
            yield from iterator

        for frame, events in rgbd_sequence_events(all_frames(), intr_ev, EventSimConfig(seed=0)):
            packets.append(_packet(events, intr_ev, frame.timestamp, frame.index))
            if frame.index % stride == 0:
                if previous_pose is not None:
                    frame.color = blurred_color(frame, previous_pose, exposure=1.0, warper=warper)
                frames.append(frame)
                if progress and len(frames) % 25 == 0:
                    print(f"  7-Scenes: {len(frames)} tracked frames prepared", flush=True)
            previous_pose = frame.gt_pose
    return Sequence(
        "7-Scenes redkitchen",
        frames,
        packets,
        intr_ev,
        f"frames 0-{last}, stride {stride}; colour blurred over 1/30 s",
        time.perf_counter() - t0,
    )


def prepare_demo(frames_total: int, stride: int, progress: bool = True) -> Sequence:
    from drivers.demo import DemoSource
    from drivers.sim.events import (
        DEMO_EVENTS_META,
        DepthWarper,
        Events,
        EventSimConfig,
        blurred_color,
        ensure_demo_events,
        load_events,
        low_light,
    )

    t0 = time.perf_counter()
    frames = []
    previous_pose = None
    with DemoSource(frames=frames_total, progress=progress) as source:
        warper = None
        intr_ev = None
        for frame in source:
            if warper is None:
                warper = DepthWarper(frame.intrinsics)
                intr_ev = frame.intrinsics.scaled(EVENT_SCALE)
            if frame.index % stride == 0:
                color = frame.color
                if previous_pose is not None:
                    color = blurred_color(frame, previous_pose, exposure=1.0, warper=warper)
                frame.color = low_light(color, np.random.default_rng([0, frame.index, 0x11]))
                frames.append(frame)
            previous_pose = frame.gt_pose
        fps = source.fps
    # the demo driver's cached stream (source.options.events): simulated once by demo_events
    folder = ensure_demo_events(
        source.config, intr_ev, EventSimConfig(seed=0), max_flow=DEMO_MAX_FLOW_PX, progress=progress
    )
    stream = load_events(folder)
    worst = json.loads((folder / DEMO_EVENTS_META).read_text())["max_subframe_flow_px"]
    per_frame = [Events.empty()] + [stream.between((i - 1) / fps, i / fps) for i in range(1, frames_total)]
    packets = [_packet(ev, intr_ev, i / fps, i) for i, ev in enumerate(per_frame)]
    return Sequence(
        "demo scene (fast, blur + low light)",
        frames,
        packets,
        intr_ev,
        f"frames 0-{frames_total - 1}, stride {stride}; colour blurred over 1/30 s and darkened",
        time.perf_counter() - t0,
        {"max_subframe_flow_px": round(worst, 2)},
    )


def attach_events(seq: Sequence) -> dict[str, float]:
    """Attach the stream's events to the tracked frames with the project's synchroniser; returns its
    events/s and that of cutting the stream into 1 ms slices (best of three)."""
    from drivers.events.reader import iter_slices
    from drivers.events.sync import EventCameraConfig, EventSynchronizer

    intr = seq.event_intrinsics
    config = EventCameraConfig(fx=intr.fx, fy=intr.fy, cx=intr.cx, cy=intr.cy)
    total = sum(len(p) for p in seq.packets)
    best_sync, best_slice = np.inf, np.inf
    for _ in range(3):
        sync = EventSynchronizer(iter(seq.packets), intr.width, intr.height, config)
        c0 = time.perf_counter()
        attached = [sync.events_for(frame) for frame in seq.frames]
        best_sync = min(best_sync, time.perf_counter() - c0)
        c0 = time.perf_counter()
        n_slices = sum(1 for _ in iter_slices(iter(seq.packets), intr.width, intr.height, duration_s=1e-3))
        best_slice = min(best_slice, time.perf_counter() - c0)
    for frame, packet in zip(seq.frames, attached, strict=True):
        frame.events = packet
    return {
        "events": total,
        "events_attached": int(sum(len(p) for p in attached)),
        "sync_events_per_s": total / best_sync,
        "slice_1ms_events_per_s": total / best_slice,
        "slices": n_slices,
    }


EXPOSURE_S = 1.0 / 30.0  # the simulated colour camera's exposure (both sequences), known to the event term


def run_tracking(seq: Sequence, with_events: bool, seed: int = 0) -> dict[str, Any]:
    from slam.app.build import build_engine
    from slam.app.config import SLAMConfig
    from slam.app.outputs import TrajectoryRecorder, trajectory_accuracy

    cfg = SLAMConfig(seed=seed)
    # the event term knows the simulated exposure; frames without events take the RGB-D path exactly
    cfg.events.tracking.exposure_s = EXPOSURE_S
    engine = build_engine(cfg, "rgbd")
    rec = TrajectoryRecorder()
    engine.subscribe(rec)
    saved = [f.events for f in seq.frames]
    lost = 0
    t0 = time.perf_counter()
    try:
        for frame, events in zip(seq.frames, saved, strict=True):
            frame.events = events if with_events else None
            lost += int(engine.process(frame).lost)
    finally:
        for frame, events in zip(seq.frames, saved, strict=True):
            frame.events = events
    wall = time.perf_counter() - t0
    out: dict[str, Any] = {
        "frames": len(rec.poses),
        "lost": lost,
        "wall_s": round(wall, 2),
        "hz": round(len(rec.poses) / wall, 3),
        "tracking_ms_median": round(float(np.median(engine.stats.tracking_ms)), 2),
    }
    out.update(trajectory_accuracy(rec))
    if with_events:
        ev = engine.frontend_stats()["events"]  # the event frontend's counters (slam.frontends.events)
        seconds, cpu_seconds = ev["event_term_s"], ev["event_term_cpu_s"]
        out["event_term_events"] = ev["events"]
        out["event_term_s"] = round(seconds, 3)
        out["event_term_events_per_s"] = ev["events"] / seconds if seconds > 0 else None
        out["event_term_events_per_cpu_s"] = ev["events"] / cpu_seconds if cpu_seconds > 0 else None
        out["chose_velocity"] = ev["chose_velocity"]
    return out


def _cm(v: float | None) -> str:
    return "—" if v is None else f"{v * 100:.2f}"


def markdown_table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| sequence | method | frames (lost) | ATE (cm) | ATE aligned (cm) | RPE 1 s (cm) | Hz | ATE change | event term, wall / CPU (M ev/s) | sync / 1 ms slicing (M ev/s) | events |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        a, b, io = r["rgbd"], r["events"], r["io"]
        change = None
        if a.get("ate_rmse_m") and b.get("ate_rmse_m") is not None:
            change = (b["ate_rmse_m"] - a["ate_rmse_m"]) / a["ate_rmse_m"]
        lines.append(
            f"| {name} | RGB-D | {a['frames']} ({a['lost']}) | {_cm(a['ate_rmse_m'])} | {_cm(a['ate_rmse_aligned_m'])} "
            f"| {_cm(a['rpe_trans_1s_m'])} | {a['hz']:.2f} | | | | |"
        )
        term = b.get("event_term_events_per_s")
        term_cpu = b.get("event_term_events_per_cpu_s")
        lines.append(
            f"| {name} | RGB-D + events | {b['frames']} ({b['lost']}) | {_cm(b['ate_rmse_m'])} "
            f"| {_cm(b['ate_rmse_aligned_m'])} | {_cm(b['rpe_trans_1s_m'])} | {b['hz']:.2f} "
            f"| {'—' if change is None else f'{change * 100:+.1f} %'} "
            f"| {'—' if term is None else f'{term / 1e6:.2f}'} / {'—' if term_cpu is None else f'{term_cpu / 1e6:.2f}'} "
            f"| {io['sync_events_per_s'] / 1e6:.1f} / {io['slice_1ms_events_per_s'] / 1e6:.1f} | {io['events']:,} |"
        )
    return "\n".join(lines)


def verdicts(results: dict[str, dict[str, Any]]) -> list[str]:
    """One line per sequence: the ATE change and the throughputs against issue 6's targets."""
    lines = []
    for name, r in results.items():
        a, b, io = r["rgbd"], r["events"], r["io"]
        parts = []
        if a.get("ate_rmse_m") and b.get("ate_rmse_m") is not None:
            change = (b["ate_rmse_m"] - a["ate_rmse_m"]) / a["ate_rmse_m"]
            parts.append(f"ATE {change * 100:+.1f} % ({'met' if change <= -0.2 else 'NOT met'}: ≤ −20 %)")
        term, term_cpu = b.get("event_term_events_per_s"), b.get("event_term_events_per_cpu_s")
        if term is not None and term_cpu is not None:
            ok = (
                "met"
                if term >= TERM_TARGET
                else ("met on CPU time only" if term_cpu >= TERM_TARGET else "NOT met")
            )
            parts.append(
                f"event term {term / 1e6:.2f} M/s wall, {term_cpu / 1e6:.2f} M/s CPU ({ok}: ≥ 1 M/s)"
            )
        slicing = min(io["sync_events_per_s"], io["slice_1ms_events_per_s"])
        parts.append(
            f"slicing ≥ {slicing / 1e6:.1f} M/s ({'met' if slicing >= SLICE_TARGET else 'NOT met'}: ≥ 5 M/s)"
        )
        if a.get("lost"):
            parts.append(f"RGB-D alone reports {a['lost']} of {a['frames']} frames lost")
        lines.append(f"{name}: " + "; ".join(parts))
    return lines


def section(
    results: dict[str, dict[str, Any]],
    command: str,
    date: str,
    notes: list[str],
    load: list[float] | None = None,
) -> str:
    load = load if load is not None else [round(x, 2) for x in os.getloadavg()]
    body = [
        SECTION_TITLE,
        "",
        f"Command: `{command}`",
        "",
        f"- Date: {date}; {os.cpu_count()} CPU cores, CPU only; load average at the end: {load}",
        *[f"- {n}" for n in notes],
        "",
        markdown_table(results),
        "",
        "Targets: " + " ".join(f"{v}." for v in verdicts(results)),
        "",
        "Both runs of a row pair: same frames, config and seed; RGB-D tracks depth only (the tracker does "
        "not use colour, so blur and low light do not change it). RGB-D + events (`slam/frontends/events.py`, "
        "default `EventTrackingConfig` with the colour camera's 1/30 s exposure): 1/240 s event windows "
        "against the last keyframe (its colour deblurred with the events of its exposure, auto-gained, "
        "smoothed) chained from the last pose into the next frame's initial pose (constant velocity "
        "corrected by the events; also registered from plain constant velocity, the better fit kept), and "
        "the events' orientation as a prior in the depth term's normal equations, weighted by its "
        "information (counting only the independent observations of the smoothed event images); while "
        "the depth term reports a frame lost, the events carry the pose. ATE change: "
        "unaligned ATE with events relative to without (target ≤ −20 %). Hz: tracked frames ÷ wall time of "
        "tracking and mapping. Event term: events ÷ time spent in it, wall-clock and process CPU "
        "(target ≥ 1 M/s). Sync: the "
        "`EventSynchronizer` attaching the simulated stream to the frames; 1 ms slicing: `iter_slices` "
        "over the same stream (target ≥ 5 M/s; file reading is `bench/events_io.py`).",
        "",
    ]
    return "\n".join(body)


def main(argv: list[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m bench.events", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=None, help="7-Scenes folder (default: shared redkitchen)")
    p.add_argument("--last", type=int, default=599, help="last 7-Scenes frame")
    p.add_argument("--stride", type=int, default=4, help="7-Scenes tracking stride")
    p.add_argument("--demo-frames", type=int, default=300, help="demo frames rendered (30 Hz)")
    p.add_argument("--demo-stride", type=int, default=4, help="demo tracking stride")
    p.add_argument("--quick", action="store_true", help="7-Scenes 0-119 and demo 0-119: a smoke test")
    p.add_argument("--skip-7scenes", action="store_true")
    p.add_argument("--skip-demo", action="store_true")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "bench_events")
    p.add_argument(
        "--write-benchmarks", action="store_true", help="write the Events section of BENCHMARKS.md"
    )
    args = p.parse_args(raw)
    if args.quick:
        args.last, args.demo_frames = 119, 120
    data = args.data or default_data()
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    results: dict[str, dict[str, Any]] = {}
    notes = []
    jobs = []
    if not args.skip_7scenes:
        jobs.append(("7scenes", lambda: prepare_sevenscenes(data, args.last, args.stride)))
    if not args.skip_demo:
        jobs.append(("demo", lambda: prepare_demo(args.demo_frames, args.demo_stride)))
    for key, prepare in jobs:
        print(f"preparing {key}...", flush=True)
        seq = prepare()
        io = attach_events(seq)
        print(f"  {len(seq.frames)} frames, {io['events']:,} events, {seq.generation_s:.0f} s", flush=True)
        row: dict[str, Any] = {
            "io": io,
            "notes": seq.notes,
            "generation_s": round(seq.generation_s, 1),
            **seq.info,
        }
        for method, with_events in (("rgbd", False), ("events", True)):
            print(f"  tracking {method}...", flush=True)
            row[method] = run_tracking(seq, with_events)
            r = row[method]
            print(
                f"    ATE {_cm(r['ate_rmse_m'])} cm, aligned {_cm(r['ate_rmse_aligned_m'])} cm, lost {r['lost']}, "
                f"{r['hz']} Hz"
                + (f", event term {r['event_term_events_per_s'] / 1e6:.2f} M ev/s" if with_events else ""),
                flush=True,
            )
        name = f"({chr(ord('a') + len(results))}) {seq.name}"
        results[name] = row
        notes.append(
            f"{name}: {seq.notes}; {io['events']:,} simulated events"
            + (
                f"; largest flow between demo sub-frames {seq.info['max_subframe_flow_px']} px"
                if seq.info
                else ""
            )
        )
        del seq
    command = command_line("bench.events", raw)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(
        json.dumps(
            {"command": command, "date": date, "notes": notes, "results": results}, indent=2, default=str
        )
        + "\n"
    )
    print(markdown_table(results))
    if args.write_benchmarks:
        path = write_benchmarks(section(results, command, date, notes), SECTION_TITLE)
        print(f"wrote the section {SECTION_TITLE!r} of {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
