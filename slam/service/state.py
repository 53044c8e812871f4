"""The service's state, split by who needs it, so that each thread and report takes only its part.

``Stages``: what the tracking and mapping threads share with the service (the hand-offs, the stage
locks, the run flags, the current pipeline). ``RunRecord``: the run's counters and history, which status
and stats.json report. ``Threads``: the running threads, whose counters and errors are reported too.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from slam.service.driver import QueuedFrame
from slam.service.pipeline import MapItem, Pipeline
from slam.service.queues import HandOff
from slam.service.status import BudgetWatch, LatencyLog

if TYPE_CHECKING:
    from slam.service.driver import DriverThread
    from slam.service.status import StatusThread
    from slam.service.workers import MappingWorker, TrackingWorker


@dataclass
class Stages:
    """The driver → tracking → mapping hand-offs and what guards them.

    ``pipeline`` is the current one: ``reset`` and ``load_map`` replace it while holding both stage
    locks (``map_lock`` then ``track_lock``), and each thread holds its own lock while it works on one item.
    """

    frames: HandOff[QueuedFrame]  # driver → tracking
    map_queue: HandOff[MapItem]  # tracking → mapping
    pipeline: Pipeline
    track_lock: threading.Lock = field(default_factory=threading.Lock)
    map_lock: threading.Lock = field(default_factory=threading.Lock)
    running: threading.Event = field(default_factory=threading.Event)  # cleared while paused
    stopping: threading.Event = field(default_factory=threading.Event)  # shutdown begun: stop reading
    aborting: threading.Event = field(default_factory=threading.Event)  # no more waiting on the mapper
    latency: LatencyLog = field(default_factory=LatencyLog)  # written by tracking, read by status
    last_mapped_stamp: float = 0.0  # recording time of the last frame mapped (mesh messages' stamp)
    last_tracked_stamp: float = 0.0  # recording time of the last frame tracked

    def __post_init__(self) -> None:
        self.running.set()


@dataclass
class RunRecord:
    """The run's figures that outlive a pipeline: for status and stats.json."""

    mode: str
    started_monotonic: float = 0.0  # time.monotonic() at start; 0 before
    tracked_before: int = 0  # frames tracked by pipelines that reset / load_map replaced
    segments: list[str] = field(default_factory=list)  # trajectories of replaced pipelines
    mapping_crashes: int = 0
    shutdown_reason: str | None = None
    budget: BudgetWatch = field(default_factory=BudgetWatch)  # status: short_of over recent seconds


@dataclass
class Threads:
    """The service's threads once started (None before)."""

    driver: DriverThread | None = None
    tracking: TrackingWorker | None = None
    mapping: MappingWorker | None = None
    status: StatusThread | None = None

    def mapping_alive(self) -> bool:
        worker = self.mapping
        return worker is not None and worker.is_alive() and worker.error is None

    def driver_error(self) -> str | None:
        error = self.driver.error if self.driver is not None else None
        return None if error is None else f"{type(error).__name__}: {error}"
