"""The mapping and tracking workers on their own: they need the stages (queues, locks, current
pipeline) and a few callbacks, not a service."""

from __future__ import annotations

import numpy as np

from slam.core.frames import CameraIntrinsics, LidarScan, RGBDFrame
from slam.core.observation import Observation
from slam.engine.engine import Engine, TrackingResult
from slam.frontends.rgbd import RgbdFrontend
from slam.service.driver import QueuedFrame
from slam.service.pipeline import MapItem, Pipeline
from slam.service.queues import HandOff
from slam.service.state import Stages
from slam.service.workers import MappingWorker, TrackingWorker

INTR = CameraIntrinsics(50.0, 50.0, 3.5, 2.5, 8, 6)


class PoseTracker:
    name = "gt"
    map = None

    def track(self, obs) -> TrackingResult:
        return TrackingResult(pose=obs.gt_pose.copy())


class CountingMapper:
    name = "counting"
    mesher = None
    keyframes: tuple = ()

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def integrate(self, obs, pose) -> None:
        self.stamps.append(obs.timestamp)

    def extract_mesh(self):
        return None

    def map_bytes(self) -> int:
        return 0


def _frame(i: int) -> RGBDFrame:
    pose = np.eye(4)
    pose[0, 3] = 0.1 * i
    return RGBDFrame(i, 0.1 * i, np.ones((6, 8), np.float32), INTR, gt_pose=pose)


def _stages(mapper: CountingMapper) -> Stages:
    pipeline = Pipeline.create(Engine(PoseTracker(), mapper), generation=2, observers=[])
    return Stages(HandOff(8, "block", "oldest"), HandOff(8, "block", "oldest"), pipeline)


def test_mapping_worker_maps_the_current_generation_and_discards_older_work() -> None:
    mapper = CountingMapper()
    stages = _stages(mapper)
    crashes: list[int] = []
    worker = MappingWorker(stages, torch_threads=1, mesh=None, on_crash=lambda: crashes.append(1))
    for i, generation in enumerate([1, 2, 2, 1, 2]):  # generation 1: queued before a reset
        frame = _frame(i)  # a tracked result carries what was tracked to the mapper
        stages.map_queue.put(
            MapItem(frame, TrackingResult(pose=np.eye(4), observation=Observation(frame)), generation)
        )
    stages.map_queue.close()
    worker.start()
    worker.join(10.0)
    assert not worker.is_alive() and worker.error is None and not crashes
    assert mapper.stamps == [0.1, 0.2, 0.4] and (worker.mapped, worker.stale) == (3, 2)
    assert stages.last_mapped_stamp == 0.4 and stages.pipeline.ready.is_set()


def test_tracking_worker_tracks_every_queued_frame_and_hands_them_to_mapping() -> None:
    mapper = CountingMapper()
    stages = _stages(mapper)
    done, shutdowns = [], []
    worker = TrackingWorker(
        stages,
        torch_threads=1,
        mapping_alive=lambda: True,
        request_shutdown=shutdowns.append,
        on_done=lambda: done.append(True),
    )
    for i in range(4):
        stages.frames.put(QueuedFrame(_frame(i), available_at=0.0))
    stages.frames.close()
    worker.start()
    worker.join(10.0)
    assert done == [True] and not shutdowns and worker.error is None
    stamps, poses = stages.pipeline.trajectory()
    np.testing.assert_allclose(stamps, [0.0, 0.1, 0.2, 0.3])
    np.testing.assert_allclose(poses[:, 0, 3], [0.0, 0.1, 0.2, 0.3])
    assert len(stages.map_queue) == 4 and len(stages.latency.rows()) == 4


def test_tracking_worker_stops_the_run_on_a_frame_it_cannot_track() -> None:
    # the engine's frontend takes RGB-D frames; a LiDAR scan is a frame it cannot track
    engine = Engine(PoseTracker(), CountingMapper(), RgbdFrontend())
    stages = Stages(
        HandOff(8, "block", "oldest"), HandOff(8, "block", "oldest"), Pipeline.create(engine, 2, [])
    )
    shutdowns: list[str] = []
    worker = TrackingWorker(stages, 1, lambda: True, shutdowns.append, lambda: None)
    stages.frames.put(QueuedFrame(LidarScan(0, 0.0, np.zeros((3, 3))), available_at=0.0))
    stages.frames.close()
    worker.start()
    worker.join(10.0)
    assert shutdowns == ["tracking failed"] and "takes RGB-D frames, not LidarScan" in worker.error
