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


class Tracker(Protocol):
    name: str

    @property
    def map(self) -> NeuralSDFMap | None:
        """The neural map it tracks against (saved, loaded, sized by the service); None for trackers
        without one (the Open3D odometry baseline)."""
        ...

    def track(self, frame: Frame) -> TrackingResult:
        """Estimate the pose of ``frame``; the first frame defines the map origin (its gt pose if known)."""
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

    def integrate(self, frame: Frame, pose: np.ndarray) -> None: ...

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
    """Tracking then mapping for each frame.

    ``process`` runs both in the caller's thread (``slam replay``); the service calls ``track`` in its
    tracking thread and ``map`` in its mapping thread, so the per-frame logic lives here once.
    """

    def __init__(self, tracker: Tracker, mapper: Mapper | None = None) -> None:
        self.tracker = tracker
        self.mapper = mapper
        self.observers: list[EngineObserver] = []
        self.stats = EngineStats()

    def subscribe(self, observer: EngineObserver) -> None:
        self.observers.append(observer)

    def track(self, frame: Frame) -> TrackingResult:
        """Track one frame and tell the observers; does not map it."""
        t0 = time.perf_counter()
        result = self.tracker.track(frame)
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

    def map(self, frame: Frame, result: TrackingResult) -> None:
        """Integrate a tracked frame into the map (a no-op for lost frames or without a mapper)."""
        if not self.wants_mapping(result):
            return
        assert self.mapper is not None
        t1 = time.perf_counter()
        self.mapper.integrate(frame, result.pose)
        self.stats.mapping_ms.append((time.perf_counter() - t1) * 1e3)

    def process(self, frame: Frame) -> TrackingResult:
        result = self.track(frame)
        self.map(frame, result)
        return result
