"""Bounds for the event term on sequence (a) of ``bench/events.py``: how much could events help there?

Issue 6 asks RGB-D + events to have a 20 % lower ATE than RGB-D alone on the 7-Scenes frames tracked at
stride 4 with blurred colour. The depth tracker does not use colour, so the events can only help by
adding motion information. This script measures what such information would be worth and what the event
term delivers:

1. **Oracles** (no events): the depth tracker, each frame given a prior in its normal equations (the
   :class:`~slam.core.observation.PosePrior` the event term uses) that holds the frame's pose to the last estimated
   pose moved by the *ground-truth* relative motion: the rotation only, or the whole motion, optionally
   with Gaussian noise on the translation (per axis, per frame), at a prior weight. The initial guess is
   that same prediction (alone, without a prior, in the "initial guess only" row). A perfect rotation is the best the events' orientation prior could give.
2. **The events' own accuracy**: for every tracked frame, from the previous frame's ground-truth pose
   (its keyframe, deblurred as the tracker does), the pose the event windows predict
   (``EventOdometry.propagate``), against constant velocity (the previous ground-truth motion), as the
   error of the relative motion: translation (cm) and rotation (°), median over the frames.

Usage (from the repository root; a few minutes on 2 cores, most of it simulating the events)::

    .venv/bin/python -m bench.events_bounds
    .venv/bin/python -m bench.events_bounds --skip-events   # oracles only (about a minute each)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import REPO_ROOT, default_data
from bench.events import EXPOSURE_S, attach_events, prepare_sevenscenes

# (name, prior on, prior weight, translation noise per axis in cm)
ORACLES = [
    ("depth alone", None, 0.0, 0.0),
    ("perfect motion, initial guess only", "guess", 0.0, 0.0),
    ("perfect relative rotation", "rotation", 1e4, 0.0),
    ("perfect relative motion", "motion", 1e4, 0.0),
    ("relative motion, 0.3 cm noise", "motion", 1e3, 0.3),
    ("relative motion, 1 cm noise", "motion", 1e2, 1.0),
]


def run_oracle(
    frames: list, prior: str | None, weight: float, noise_cm: float, seed: int = 0
) -> dict[str, Any]:
    from slam.app.build import build_engine
    from slam.app.config import SLAMConfig
    from slam.app.outputs import TrajectoryRecorder, trajectory_accuracy
    from slam.core.geometry import se3_exp, se3_log
    from slam.core.observation import PosePrior

    cfg = SLAMConfig(seed=seed)
    cfg.events.tracking.enabled = False  # the plain depth tracker; the oracle's prior replaces the events'
    engine = build_engine(cfg, "rgbd")
    oracle = OraclePrior(engine.frontend)
    engine.frontend = oracle
    tracker = engine.tracker
    rng = np.random.default_rng(seed)
    rec = TrajectoryRecorder()
    engine.subscribe(rec)
    previous_gt = None
    for frame in frames:
        oracle.prior = None
        if prior is not None and previous_gt is not None and tracker.poses:
            # np.linalg.inv, not invert_pose: 7-Scenes' rotations are off orthonormal by up to 3e-4, and a
            # rigid inverse of them makes every relative motion that much off scale, which compounds
            relative = np.linalg.inv(previous_gt) @ frame.gt_pose
            if noise_cm > 0:
                relative = relative @ se3_exp(np.r_[rng.normal(0.0, noise_cm / 100.0, 3), 0.0, 0.0, 0.0])
            target = tracker.poses[-1] @ relative
            h = np.zeros((6, 6))
            if prior == "rotation":
                h[3:, 3:] = weight * np.eye(3)
            else:
                h[:] = weight * np.eye(6)
            term = None
            if prior != "guess":
                term = lambda pose, h=h, target=target: (h, h @ se3_log(pose @ np.linalg.inv(target)))  # noqa: E731
            # registered from the target (the initial guess), with its term, and nothing else tried
            oracle.prior = PosePrior(target, term, compare_velocity=False)
        engine.process(frame)
        previous_gt = frame.gt_pose
    return trajectory_accuracy(rec)


class OraclePrior:
    """A frontend that hands the wrapped frontend's observations a given :class:`PosePrior` (the way the
    event term hands its prediction to the tracker)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.prior = None
        self.tracker_suffix = ""

    def observe(self, frame, history):
        obs = self.inner.observe(frame, history)
        obs.prior = self.prior
        return obs

    def tracked(self, observation, pose, lost, info) -> None:
        self.inner.tracked(observation, pose, lost, info)

    def stats(self) -> dict:
        return self.inner.stats()


def event_accuracy(seq) -> dict[str, float]:
    from slam.core.geometry import se3_exp, se3_log
    from slam.frontends.events import EventOdometry, EventTrackingConfig

    odometry = EventOdometry(EventTrackingConfig(exposure_s=EXPOSURE_S))
    rows = []
    frames = seq.frames
    for k in range(2, len(frames)):
        before, prev, cur = frames[k - 2], frames[k - 1], frames[k]
        if cur.events is None or len(cur.events) == 0:
            continue
        key = odometry.keyframe(prev, prev.gt_pose, cur.events.intrinsics, prev.events)
        if key is None:
            continue
        dt = prev.timestamp - before.timestamp
        velocity = se3_log(prev.gt_pose @ np.linalg.inv(before.gt_pose)) / dt
        prop = odometry.propagate(key, prev.gt_pose, cur.events, prev.timestamp, cur.timestamp, velocity)
        if prop is None:
            continue
        truth = np.linalg.inv(prev.gt_pose) @ cur.gt_pose

        def error(pose: np.ndarray, truth: np.ndarray = truth, prev: Any = prev) -> tuple[float, float]:
            e = se3_log(np.linalg.inv(truth) @ np.linalg.inv(prev.gt_pose) @ pose)
            return float(np.linalg.norm(e[:3]) * 100), float(np.degrees(np.linalg.norm(e[3:])))

        constant = se3_exp(velocity * (cur.timestamp - prev.timestamp)) @ prev.gt_pose
        rows.append([np.linalg.norm(truth[:3, 3]) * 100, *error(prop.pose), *error(constant)])
    a = np.array(rows)
    return {
        "frames": len(a),
        "step_cm_median": round(float(np.median(a[:, 0])), 2),
        "events_trans_cm_median": round(float(np.median(a[:, 1])), 2),
        "events_rot_deg_median": round(float(np.median(a[:, 2])), 3),
        "constant_velocity_trans_cm_median": round(float(np.median(a[:, 3])), 2),
        "constant_velocity_rot_deg_median": round(float(np.median(a[:, 4])), 3),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.events_bounds", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=None, help="7-Scenes folder (default: shared redkitchen)")
    p.add_argument("--last", type=int, default=599, help="last 7-Scenes frame")
    p.add_argument("--stride", type=int, default=4, help="tracking stride")
    p.add_argument("--skip-events", action="store_true", help="oracles only: no event simulation")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "bench_events_bounds")
    args = p.parse_args(argv)
    data = args.data or default_data()
    if not data.is_dir():
        print(f"7-Scenes frames not found at {data}: set SLAM_SHARED_DATA or --data", file=sys.stderr)
        return 2
    import torch

    from drivers.sevenscenes import SevenScenesSource

    torch.set_num_threads(1)
    with SevenScenesSource(data, first=0, last=args.last) as source:
        frames = [f for f in source if f.index % args.stride == 0]
    results: dict[str, Any] = {"oracles": {}}
    for name, prior, weight, noise in ORACLES:
        t0 = time.perf_counter()
        acc = run_oracle(frames, prior, weight, noise)
        results["oracles"][name] = {"prior": prior, "weight": weight, "noise_cm": noise, **acc}
        print(
            f"{name:32s} ATE {acc['ate_rmse_m'] * 100:5.2f} cm, aligned {acc['ate_rmse_aligned_m'] * 100:5.2f} cm, "
            f"RPE 1 s {acc['rpe_trans_1s_m'] * 100:5.2f} cm ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    if not args.skip_events:
        seq = prepare_sevenscenes(data, args.last, args.stride, progress=False)
        attach_events(seq)
        results["event_accuracy"] = acc = event_accuracy(seq)
        print(
            f"per frame, from the previous ground-truth pose ({acc['frames']} frames, median step "
            f"{acc['step_cm_median']} cm): events {acc['events_trans_cm_median']} cm / {acc['events_rot_deg_median']}°, "
            f"constant velocity {acc['constant_velocity_trans_cm_median']} cm / {acc['constant_velocity_rot_deg_median']}°"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
