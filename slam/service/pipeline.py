"""``Pipeline``: one map's engine (tracker, mapper) and trajectory; the service swaps it as a whole on
``reset`` and ``load_map``, so the threads never see half of an old map and half of a new one."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from slam.app.outputs import TrajectoryRecorder
from slam.app.persistence import SessionSnapshot
from slam.core.frames import Frame
from slam.engine.engine import Engine, Mapper, TrackingResult

if TYPE_CHECKING:
    from slam.map.neural_map import NeuralSDFMap


@dataclass
class Pipeline:
    engine: Engine
    generation: int  # bumped by every swap; queued work of an older generation is discarded
    recorder: TrajectoryRecorder = field(default_factory=TrajectoryRecorder)
    #: set once the map can be tracked against: the first frame mapped, or a map loaded
    ready: threading.Event = field(default_factory=threading.Event)
    #: a loaded map's session: its saved trajectory, and where the first frame is re-localised from
    history: SessionSnapshot | None = None
    resume_pending: bool = False

    @classmethod
    def create(
        cls, engine: Engine, generation: int, observers: list[Any], history: SessionSnapshot | None = None
    ) -> Pipeline:
        pipeline = cls(engine, generation, history=history, resume_pending=history is not None)
        engine.subscribe(pipeline.recorder)
        for observer in observers:
            engine.subscribe(observer)
        if history is not None:
            pipeline.ready.set()
        return pipeline

    @property
    def mapper(self) -> Mapper | None:
        return self.engine.mapper

    @property
    def neural_map(self) -> NeuralSDFMap | None:
        """The neural map (None for the baseline pipeline)."""
        return self.engine.tracker.map

    def resume_guess(self, frame: Frame) -> np.ndarray:
        """Where the first frame in a loaded map is re-localised from: its ground truth when the
        recording has it (the map was built in the same frame), else the saved trajectory's last pose."""
        gt = getattr(frame, "gt_pose", None)
        if gt is not None:
            return gt
        if self.history is not None and len(self.history.poses):
            return self.history.poses[-1]
        return np.eye(4)

    def trajectory(self) -> tuple[np.ndarray, np.ndarray]:
        """This pipeline's tracked (timestamps, poses) so far; safe while the tracker appends."""
        rec = self.recorder
        n = len(rec.poses)  # timestamps are appended first, so the first n of both belong together
        return np.array(rec.timestamps[:n], dtype=np.float64), np.array(rec.poses[:n]).reshape(-1, 4, 4)


@dataclass
class MapItem:
    frame: Frame
    result: TrackingResult
    generation: int
    available_at: float = 0.0  # time.perf_counter() when the driver got the frame (status: mapped age)
