"""The engine: tracks each frame, hands tracked frames to the mapper, and emits events to observers.

It knows nothing of files, sockets or progress bars: replay, the live service and the benchmarks
attach observers (trajectory writers, publishers, displays) and feed it frames from any Source.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from slam.core.frames import Frame
from slam.core.observation import Frontend, Observation

if TYPE_CHECKING:
    from collections.abc import Sequence

    from slam.map.meshing import BlockMesher
    from slam.map.neural_map import NeuralSDFMap


@dataclass
class TrackingResult:
    """What the tracker reports for one frame."""

    pose: np.ndarray  # 4×4 camera-to-world estimate
    iterations: int = 0
    residual: float = float("nan")  # final robust residual (tracker-specific units)
    inlier_ratio: float = float("nan")
    lost: bool = False  # tracking failed; ``pose`` is the best guess (e.g. the prediction)
    recovered: bool = False  # tracking was lost before and this frame re-localised
    time_ms: float = 0.0
    finished_at: float = 0.0  # time.perf_counter() when tracking of the frame ended (latency measurements)
    info: dict[str, Any] = field(default_factory=dict)
    observation: Observation | None = None  # what was tracked; the mapper fits its rays (set by the engine)


class Tracker(Protocol):
    name: str

    @property
    def map(self) -> NeuralSDFMap | None:
        """The neural map it tracks against (saved, loaded, sized by the service); None for trackers
        without one (the Open3D odometry baseline)."""
        ...

    def track(self, obs: Observation) -> TrackingResult:
        """Estimate the pose of an observation; the first defines the map origin (its gt pose if known)."""
        ...


class Mapper(Protocol):
    name: str

    @property
    def mesher(self) -> BlockMesher | None:
        """The block mesher that re-meshes what changed (the service publishes its blocks); None for
        mappers that only extract whole meshes (the TSDF baseline)."""
        ...

    @property
    def keyframes(self) -> Sequence[Any]:
        """The keyframes the map is optimised over (saved with the map; counted in the status); empty
        for mappers without any."""
        ...

    def integrate(self, obs: Observation, pose: np.ndarray) -> None: ...

    def extract_mesh(self) -> Any | None:
        """An ``open3d.geometry.TriangleMesh`` of the map, or None when nothing is mapped yet."""
        ...

    def map_bytes(self) -> int:
        """Memory held by the map (stats and status)."""
        ...


class EngineObserver(Protocol):
    def on_tracked(self, frame: Frame, result: TrackingResult) -> None: ...


@dataclass
class EngineStats:
    frames: int = 0
    frames_lost: int = 0
    tracking_ms: list[float] = field(default_factory=list)
    mapping_ms: list[float] = field(default_factory=list)


class Engine:
    """Observation, tracking, then mapping, for each frame.

    The sensor's frontend turns each frame into an :class:`~slam.core.observation.Observation` (without
    one, the tracker gets the bare frame: the classical baseline and test doubles). ``process`` tracks and
    maps in the caller's thread (``slam replay``); the service calls ``track`` in its tracking thread and
    ``map`` in its mapping thread, so the per-frame logic lives here once.
    """

    def __init__(
        self, tracker: Tracker, mapper: Mapper | None = None, frontend: Frontend | None = None
    ) -> None:
        self.tracker = tracker
        self.mapper = mapper
        self.frontend = frontend
        self.observers: list[EngineObserver] = []
        self.stats = EngineStats()

    @property
    def tracker_name(self) -> str:
        """The tracker's name, with the frontend's mark when it changed how frames were tracked."""
        return self.tracker.name + (self.frontend.tracker_suffix if self.frontend is not None else "")

    def frontend_stats(self) -> dict[str, Any]:
        """What the frontend adds to a run's stats ({} without one)."""
        return self.frontend.stats() if self.frontend is not None else {}

    def subscribe(self, observer: EngineObserver) -> None:
        self.observers.append(observer)

    def observe(self, frame: Frame) -> Observation:
        if self.frontend is None:
            return Observation(frame)
        return self.frontend.observe(frame, self.tracker)  # type: ignore[arg-type]  # the tracker's past poses

    def track(self, frame: Frame) -> TrackingResult:
        """Observe and track one frame, let the frontend learn from the result, and tell the observers;
        does not map it."""
        t0 = time.perf_counter()
        obs = self.observe(frame)
        result = self.tracker.track(obs)
        if self.frontend is not None:
            self.frontend.tracked(obs, result.pose, result.lost, result.info)
        result.info.update(obs.info)
        result.observation = obs
        result.finished_at = time.perf_counter()
        result.time_ms = (result.finished_at - t0) * 1e3
        self.stats.frames += 1
        self.stats.frames_lost += int(result.lost)
        self.stats.tracking_ms.append(result.time_ms)
        for observer in self.observers:
            observer.on_tracked(frame, result)
        return result

    def wants_mapping(self, result: TrackingResult) -> bool:
        """Whether a tracked frame should reach the mapper: a lost frame's pose is only a guess."""
        return self.mapper is not None and not result.lost

    def map(self, result: TrackingResult) -> None:
        """Integrate a tracked observation into the map (a no-op for lost frames or without a mapper)."""
        if not self.wants_mapping(result):
            return
        assert self.mapper is not None and result.observation is not None
        t1 = time.perf_counter()
        self.mapper.integrate(result.observation, result.pose)
        self.stats.mapping_ms.append((time.perf_counter() - t1) * 1e3)

    def process(self, frame: Frame) -> TrackingResult:
        result = self.track(frame)
        self.map(result)
        return result
