"""How the service shares the cores between tracking and mapping in realtime runs (slam.service.priority,
MappingWorker's schedule): the mapper waits for tracking, but never longer than its cap; a burst of frames
costs drops, not stale poses; a mapper far behind is counted and reported as the budget the run is short
of; spare time goes to refining the map, within service.mapping_max_share.

Frames come from the small demo scene the other service tests use (re-timed), with test doubles for the
tracker or the mapper where a known cost is the point.
"""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
import pytest
from test_service import SCENE, GroundTruthTracker, ListSource, service_config
from transport_util import RecordingPublisher

from drivers.demo import DemoSource
from slam.core.frames import CameraIntrinsics, RGBDFrame
from slam.engine.engine import Engine, TrackingResult
from slam.service.pipeline import MapItem, Pipeline
from slam.service.priority import TrackingPriority
from slam.service.queues import HandOff
from slam.service.runtime import SLAMService
from slam.service.state import Stages
from slam.service.status import short_of
from slam.service.workers import MappingSchedule, MappingWorker


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo_cache")
    DemoSource(root, **SCENE)
    return root


@pytest.fixture(scope="module")
def demo_frames(demo_root):
    return list(DemoSource(demo_root, **SCENE))


def retimed(frames, stamps):
    """The demo frames again and again, at ``stamps``."""
    return [
        dataclasses.replace(frames[i % len(frames)], index=i, timestamp=float(t))
        for i, t in enumerate(stamps)
    ]


# -- the priority ---------------------------------------------------------------------------------------


def test_mapper_waits_while_tracking_is_busy_and_goes_on_when_it_ends() -> None:
    frames: HandOff = HandOff(2, "drop_oldest", "newest")
    running = threading.Event()
    running.set()
    priority = TrackingPriority(frames, running, cap_s=5.0)
    assert priority.wait_for_tracking() == 0.0  # nothing tracked, nothing waiting: no wait

    def track_for(seconds: float) -> None:
        with priority.tracking():
            time.sleep(seconds)

    tracker = threading.Thread(target=track_for, args=(0.3,))
    tracker.start()
    time.sleep(0.05)
    t0 = time.monotonic()
    waited = priority.wait_for_tracking()
    elapsed = time.monotonic() - t0
    tracker.join()
    # woken when tracking ended (~0.25 s), long before the cap
    assert 0.15 < waited <= elapsed < 2.0 and priority.capped == 0 and priority.waits == 1

    frames.put("frame")  # a frame waiting for the tracker counts as tracking wanting the cores ...
    assert priority.tracking_wants_cores()
    running.clear()  # ... but not while paused: nobody is about to track it
    assert not priority.tracking_wants_cores()
    running.set()
    with priority.waiting_on_mapper():  # nor while the tracker waits for the mapper (the first map)
        assert not priority.tracking_wants_cores()
    assert priority.tracking_wants_cores()


def test_mapper_wait_ends_at_its_cap_while_tracking_stays_busy() -> None:
    priority = TrackingPriority(HandOff(2, "drop_oldest", "newest"), threading.Event(), cap_s=0.2)
    release = threading.Event()

    def wedged() -> None:
        with priority.tracking():
            release.wait(10.0)

    tracker = threading.Thread(target=wedged)
    tracker.start()
    time.sleep(0.05)
    try:
        t0 = time.monotonic()
        waited = [priority.wait_for_tracking() for _ in range(3)]
        elapsed = time.monotonic() - t0
    finally:
        release.set()
        tracker.join()
    assert all(0.2 <= w < 0.5 for w in waited) and elapsed < 1.5
    assert priority.capped == 3 and priority.waits == 3


def test_a_late_mapper_takes_turns_with_a_tracker_that_is_always_busy() -> None:
    # a tracker slower than the frames: one frame after the other, 80 ms each
    frames: HandOff = HandOff(2, "drop_oldest", "newest")
    running = threading.Event()
    running.set()
    priority = TrackingPriority(frames, running, cap_s=0.5)
    stop = threading.Event()

    def saturated() -> None:
        while not stop.is_set():
            with priority.tracking():
                time.sleep(0.08)

    tracker = threading.Thread(target=saturated)
    tracker.start()
    time.sleep(0.02)
    try:
        strict = priority.wait_for_tracking()  # tracking first: the cap ends it
        turns = [priority.wait_for_tracking(until_frame_ends=True) for _ in range(3)]
    finally:
        stop.set()
        tracker.join()
    assert strict >= 0.5 and priority.capped == 1
    assert all(w < 0.2 for w in turns) and priority.capped == 1  # each until the frame being tracked ends


# -- the mapping worker's schedule ----------------------------------------------------------------------

INTR = CameraIntrinsics(50.0, 50.0, 3.5, 2.5, 8, 6)


class KeyframeMapper:
    """Maps by recording the stamps; a frame is a keyframe when its x moved 0.25 m since the last one."""

    name = "keyframe-counting"
    mesher = None

    def __init__(self) -> None:
        self.stamps: list[float] = []
        self.keyframes: list[np.ndarray] = []

    def is_keyframe(self, pose) -> bool:
        return not self.keyframes or abs(pose[0, 3] - self.keyframes[-1][0, 3]) > 0.25

    def integrate(self, obs, pose) -> None:
        if self.is_keyframe(pose):
            self.keyframes.append(pose)
        self.stamps.append(obs.timestamp)

    def extract_mesh(self):
        return None

    def map_bytes(self) -> int:
        return 0


def test_mapper_with_a_backlog_skips_non_keyframes_up_to_the_newest() -> None:
    from slam.core.observation import Observation

    mapper = KeyframeMapper()
    pipeline = Pipeline.create(Engine(GroundTruthTracker(0.0), mapper), generation=1, observers=[])
    stages = Stages(HandOff(2, "drop_oldest", "newest"), HandOff(16, "block", "oldest"), pipeline)
    schedule = MappingSchedule(TrackingPriority(stages.frames, stages.running), max_share=0.0)
    worker = MappingWorker(stages, torch_threads=1, mesh=None, on_crash=lambda: None, schedule=schedule)
    xs = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]  # keyframes (from 0.0): 0.3 and 0.6
    for i, x in enumerate(xs):
        pose = np.eye(4)
        pose[0, 3] = x
        frame = RGBDFrame(i, float(i), np.ones((6, 8), np.float32), INTR, gt_pose=pose)
        result = TrackingResult(pose=pose, observation=Observation(frame))
        stages.map_queue.put(MapItem(frame, result, 1, available_at=time.perf_counter()))
    stages.map_queue.close()
    worker.start()
    worker.join(10.0)
    assert not worker.is_alive() and worker.error is None
    # 0: the first; then 1, 2 skipped for the keyframe 3; 4, 5 for 6; 7: the newest, nothing behind it
    assert mapper.stamps == [0.0, 3.0, 6.0, 7.0] and worker.skipped == 4 and worker.mapped == 4


def test_short_of_names_the_budget_that_runs_out() -> None:
    assert short_of(100, 30, 70, 0, None, 2.0) == "tracking"  # 30 % of the frames dropped
    assert short_of(100, 5, 95, 40, None, 2.0) == "mapping"  # 40 of 95 tracked frames not mapped
    assert short_of(100, 5, 95, 0, 3.5, 2.0) == "mapping"  # the newest mapped frame is 3.5 s old
    assert short_of(100, 5, 95, 5, 0.4, 2.0) is None
    assert short_of(100, 30, 70, 40, 3.5, 2.0) == "tracking"  # tracking first: mapping gets what it leaves


# -- faults in a running service ------------------------------------------------------------------------


class BurstSource(ListSource):
    """Delivers frames at their pace, stalls, then delivers ``burst`` frames at once (a USB hiccup)."""

    def __init__(self, frames, stall_after: int, stall_s: float) -> None:
        super().__init__(frames)
        self.stall_after, self.stall_s = stall_after, stall_s

    def __iter__(self):
        for i, frame in enumerate(self.frames):
            if i == self.stall_after:
                time.sleep(self.stall_s)
            yield frame


def test_frame_burst_publishes_the_newest_poses_and_counts_the_drops(demo_frames, tmp_path) -> None:
    # 10 frames at 30 Hz, then 30 frames stamped (and delivered) together after a stall: the tracker (20 ms
    # a frame) takes the newest of them, the rest are dropped and counted
    stamps = np.concatenate([np.arange(10) / 30.0, np.full(30, 1.0) + np.arange(30) * 1e-4])
    frames = retimed(demo_frames, stamps)
    cfg = service_config(tmp_path, tmp_path / "burst", service={"mode": "realtime", "save_map": False})
    publisher = RecordingPublisher()
    source = BurstSource(frames, stall_after=10, stall_s=0.3)
    service = SLAMService(cfg, source=source, engine=Engine(GroundTruthTracker(0.02)), publisher=publisher)
    result = service.run()
    s = result.stats
    assert s["frames_received"] == 40 and s["frames"] + s["frames_dropped"] == 40
    assert s["frames_dropped"] >= 20  # most of the burst
    published = [t for t, _, _ in publisher.poses]
    assert published[-1] == frames[-1].timestamp  # the newest frame of the burst was tracked and published
    assert np.all(np.diff(published) > 0)
    assert s["short_of"] == "tracking"  # the drops say: tracking could not keep up with the burst
    assert publisher.statuses[-1]["frames"]["dropped"] == s["frames_dropped"]


class SlowMapper:
    """Takes ``delay_s`` to map a frame (far slower than the frame rate)."""

    name = "slow"
    mesher = None
    keyframes: tuple = ()

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.mapped = 0

    def integrate(self, obs, pose) -> None:
        time.sleep(self.delay_s)
        self.mapped += 1

    def extract_mesh(self):
        return None

    def map_bytes(self) -> int:
        return 0


def test_mapper_far_behind_leaves_tracking_at_full_rate_and_reports_short_of_mapping(
    demo_frames, tmp_path
) -> None:
    frames = retimed(demo_frames, np.arange(60) / 30.0)  # 2 s at 30 Hz
    cfg = service_config(
        tmp_path,
        tmp_path / "slow",
        service={"mode": "realtime", "save_map": False, "publish": {"status_every_s": 0.2}},
    )
    publisher = RecordingPublisher()
    mapper = SlowMapper(0.3)  # ten frames' time a frame
    engine = Engine(GroundTruthTracker(0.005), mapper)
    result = SLAMService(cfg, source=ListSource(frames), engine=engine, publisher=publisher).run()
    s = result.stats
    # tracking goes on at the frame rate: (almost) every frame tracked and published
    assert s["frames"] >= 57 and len(publisher.poses) == s["frames"]
    # the mapper got ~7 of them; the map hand-off (2 places) dropped the rest, counted
    assert s["frames_not_mapped"] >= 40 and s["frames_mapped"] == mapper.mapped
    assert s["frames_mapped"] + s["frames_not_mapped"] == s["frames"]
    running = [st for st in publisher.statuses if st["state"] == "running"]
    assert running and running[-1]["short_of"] == "mapping"
    assert s["short_of"] == "mapping"
    assert 0.5 < s["mapping_share"] <= 1.0  # the mapper was busy most of the run


class TimedPublisher(RecordingPublisher):
    def __init__(self) -> None:
        super().__init__()
        self.mesh_times: list[float] = []

    def publish_mesh(self, *, stamp, seq, blocks, full) -> None:
        self.mesh_times.append(time.monotonic())
        super().publish_mesh(stamp=stamp, seq=seq, blocks=blocks, full=full)


def test_realtime_mapper_refines_in_spare_time_within_its_share(demo_root, demo_frames, tmp_path) -> None:
    # half the demo scene at 3 Hz: the small mapper needs a fraction of each frame's time (about 60 ms on
    # 2 idle cores, a few times that on busy ones), and spends the rest refining on keyframes, as long as
    # its share of the wall time allows
    frames = retimed(demo_frames[:12], np.arange(12) / 3.0)
    stats = {}
    for share in (0.0, 0.8):
        cfg = service_config(
            demo_root,
            tmp_path / f"share{share}",
            service={
                "mode": "realtime",
                "save_map": False,
                "mapping_max_share": share,
                # an update every 0.5 s plus its cost (~0.5 s on 2 busy cores): mesh_max_share would
                # space them by three times their cost
                "publish": {"mesh_every_s": 0.5},
                "mesh_max_share": 1.0,
            },
        )
        publisher = TimedPublisher()
        stats[share] = SLAMService(cfg, source=ListSource(frames), publisher=publisher).run().stats
        # mesh updates keep flowing from the mapping thread between its units of work
        times = np.array(publisher.mesh_times)
        assert len(times) >= 3 and np.diff(times).max() < 2.0
    off, on = stats[0.0], stats[0.8]
    assert off["mapping_refine_steps"] == 0 and on["mapping_refine_steps"] > 0
    assert on["mapping_steps_per_s"] > off["mapping_steps_per_s"]
    # refinement stops at the share (one step begun below it may end a little above)
    assert 0 < off["mapping_share"] and on["mapping_share"] <= 0.8 + 0.1
    for s in (off, on):
        assert s["frames_mapped"] > 0 and s["ate_rmse_m"] < 0.02
