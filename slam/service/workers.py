"""The tracking and mapping threads.

Tracking takes a frame from the driver's queue (the newest one in live and realtime mode), tracks it
with the current pipeline's engine (observers publish the pose and record the trajectory) and hands
the frame and its pose to the mapper's queue. After the very first frame it waits until the mapper
has fitted it: tracking against an empty map would only lose frames.

Mapping integrates queued frames one at a time and, every ``publish.mesh_every_s`` (or less often,
so that meshing stays within ``service.mesh_max_share`` of its time), re-meshes the blocks that
changed and publishes them. An exception in mapping is logged and reported on status; the
thread ends and tracking goes on against the map as it was (``reset`` or ``load_map`` start a new one).

In realtime and live runs tracking has the cores first (``slam.service.priority``): the mapper waits
before each allocation and optimiser step while a frame is being tracked or waits to be (once the
frame it maps has waited ``MappingSchedule.turns_after_s``, only until the frame being tracked ends: the
two take turns), and spends what tracking leaves by a time budget (``MappingSchedule``): with a backlog
it skips queued frames that would not be keyframes (the newest is kept); with nothing queued it refines
the map on its keyframes, as long as mapping took less than ``service.mapping_max_share`` of the recent
wall time.

Each thread holds its stage lock (``track_lock`` / ``map_lock``) only while it works on one item, so
control commands that swap the pipeline or read the mapper wait for at most one frame.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from slam.map.neural_map import set_compute_threads
from slam.service.driver import QueuedFrame
from slam.service.meshes import changed_blocks
from slam.service.pipeline import MapItem
from slam.service.priority import TrackingPriority
from slam.service.queues import END
from slam.transport.wire import MeshBlock

if TYPE_CHECKING:
    from slam.service.state import Stages

log = logging.getLogger(__name__)


class TrackingWorker(threading.Thread):
    """Tracks the driver's frames with ``stages.pipeline``; ``mapping_alive`` says whether handing a
    frame to the mapper is worth it, ``request_shutdown`` ends the run when tracking fails, and
    ``on_done`` is called when the thread ends."""

    def __init__(
        self,
        stages: Stages,
        torch_threads: int,
        mapping_alive: Callable[[], bool],
        request_shutdown: Callable[[str], None],
        on_done: Callable[[], None],
        priority: TrackingPriority | None = None,
    ) -> None:
        super().__init__(name="slam-tracking", daemon=True)
        self.stages = stages
        self.torch_threads = torch_threads
        self.priority = priority
        self.mapping_alive = mapping_alive
        self.request_shutdown = request_shutdown
        self.on_done = on_done
        self.error: str | None = None

    def run(self) -> None:
        svc = self.stages
        set_compute_threads(self.torch_threads)
        try:
            while True:
                if not svc.running.is_set() and not svc.stopping.is_set():
                    svc.running.wait(0.1)  # paused: leave frames in the queue (live: they are dropped there)
                    continue
                item = svc.frames.get(timeout=0.1)
                if item is END:
                    break
                if item is not None:
                    self._track(item)
        except (
            Exception
        ) as exc:  # a tracker bug or a frame the engine cannot take: stop the run, keep the outputs
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("tracking thread failed; shutting down")
            self.request_shutdown("tracking failed")
        finally:
            self.on_done()

    def _track(self, item: QueuedFrame) -> None:
        svc, frame, priority = self.stages, item.frame, self.priority
        with svc.track_lock, priority.tracking() if priority is not None else contextlib.nullcontext():
            pipeline = svc.pipeline
            if pipeline.resume_pending:
                pipeline.engine.tracker.resume(pipeline.resume_guess(frame))
                pipeline.resume_pending = False
            result = pipeline.engine.track(frame)
            svc.latency.record(frame.timestamp, item.available_at, result.finished_at, time.perf_counter())
            svc.last_tracked_stamp = frame.timestamp
            hand_over = pipeline.engine.wants_mapping(result) and self.mapping_alive()
        if not hand_over:
            return
        # the mapper must not hold back for a tracker that is waiting for it
        with priority.waiting_on_mapper() if priority is not None else contextlib.nullcontext():
            svc.map_queue.put(
                MapItem(frame, result, pipeline.generation, item.available_at),
                give_up=lambda: not self.mapping_alive(),
            )
            if result.info.get("first"):
                # the first frame defines the map: wait until it is fitted (or mapping is gone, or a reset
                # or load_map replaced this pipeline meanwhile)
                while not pipeline.ready.wait(0.1):
                    if not self.mapping_alive() or svc.aborting.is_set() or svc.pipeline is not pipeline:
                        break


@dataclass(frozen=True)
class MeshUpdates:
    """How the mapping thread re-meshes and publishes what changed (see the module doc)."""

    publish: Callable[[list[MeshBlock], bool], None]  # (blocks, full)
    every_s: float  # service.publish.mesh_every_s
    max_share: float  # service.mesh_max_share
    budget_s: float | None  # service.mesh_update_budget_s


@dataclass(frozen=True)
class MappingSchedule:
    """How the mapping thread shares the cores with tracking (realtime and live runs; see the module doc)."""

    priority: TrackingPriority  # the mapper waits on it before each unit of work
    max_share: float  # service.mapping_max_share: refine only while mapping took less of the wall time
    #: a frame that arrived longer ago than this is mapped taking turns with tracking (a step per frame
    #: tracked), not after it: a tracker slower than the frames would otherwise starve the map it needs
    turns_after_s: float = 0.0
    window_s: float = 2.0  # over which that share is measured


class WorkMeter:
    """The mapping thread's work: (end time, seconds of work, optimiser steps) per unit, for its share of
    the wall time and its step rate, over a recent window and over the run."""

    def __init__(self, keep_s: float = 10.0) -> None:
        self.keep_s = keep_s
        self.started = time.monotonic()
        self.busy_s = 0.0
        self.steps = 0
        self._units: deque[tuple[float, float, int]] = deque()
        self._lock = threading.Lock()  # the mapping thread adds while status reads

    def add(self, now: float, busy_s: float, steps: int) -> None:
        with self._lock:
            self.busy_s += busy_s
            self.steps += steps
            self._units.append((now, busy_s, steps))
            while self._units and self._units[0][0] < now - self.keep_s:
                self._units.popleft()

    def recent(self, now: float, window_s: float) -> tuple[float, float]:
        """(share of the wall time spent working, steps per second) over the last ``window_s`` (or since
        the start, when that is shorter)."""
        span = min(window_s, now - self.started)
        if span <= 0:
            return 0.0, 0.0
        start = now - span
        with self._lock:
            units = [(end, busy, steps) for end, busy, steps in self._units if end > start]
        # a unit that began before the window counts only with its part inside it
        busy = sum(min(b, end - start) for end, b, _ in units)
        return min(1.0, busy / span), sum(n for _, _, n in units) / span

    def overall(self, now: float) -> tuple[float, float]:
        span = now - self.started
        if span <= 0:
            return 0.0, 0.0
        return min(1.0, self.busy_s / span), self.steps / span


class MappingWorker(threading.Thread):
    """Maps the frames of ``stages.map_queue`` into ``stages.pipeline``; with ``mesh`` (None: nothing
    is published) it also re-meshes and publishes the changed blocks. ``on_crash`` is called when it fails."""

    def __init__(
        self,
        stages: Stages,
        torch_threads: int,
        mesh: MeshUpdates | None,
        on_crash: Callable[[], None],
        schedule: MappingSchedule | None = None,
    ) -> None:
        """``schedule``: None (fast runs) maps every queued frame as it comes, at once."""
        super().__init__(name="slam-mapping", daemon=True)
        self.stages = stages
        self.torch_threads = torch_threads
        self.mesh = mesh
        self.on_crash = on_crash
        self.schedule = schedule
        self.error: str | None = None
        self.mapped = 0
        self.stale = 0  # queued before a reset / load_map, discarded
        self.skipped = 0  # not mapped: a newer frame was queued and this one would not be a keyframe
        self.refine_steps = 0
        self.meter = WorkMeter()
        self.waited_s = 0.0  # in the mapper's before_step hook, for tracking
        self.last_mapped_available_at: float | None = None  # perf_counter() when the driver got it
        self._arrived_at: float | None = None  # that of the frame being mapped (None: refining)
        self.mapped_age_s: list[float] = []  # per mapped frame: seconds from its arrival to its map
        self.busy = False
        self.abort = threading.Event()  # drain deadline passed: stop after the current frame
        self._next_mesh = time.monotonic() + (mesh.every_s if mesh is not None else 0.0)
        self._unmeshed = False
        self.mesh_ms: list[float] = []

    @property
    def state(self) -> str:
        if self.error is not None:
            return "crashed"
        if not self.is_alive():
            return "stopped" if self.ident is not None else "starting"
        return "mapping" if self.busy else "idle"

    def run(self) -> None:
        svc = self.stages
        set_compute_threads(self.torch_threads)
        self.meter = WorkMeter()
        try:
            while not self.abort.is_set():
                refine = self._may_refine()
                item = svc.map_queue.get(timeout=0.0 if refine else 0.1)
                if item is END:
                    break
                if item is not None:
                    self._map(self._newest_worth_mapping(item))
                elif refine:
                    self._refine()
                self._publish_mesh_if_due()
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("mapping thread crashed; tracking continues on the last map")
            self.on_crash()

    def _map(self, item: MapItem) -> None:
        svc = self.stages
        with svc.map_lock:
            pipeline = svc.pipeline
            if item.generation != pipeline.generation:
                self.stale += 1
                return
            with self._working(pipeline.mapper, item.available_at):
                pipeline.engine.map(item.result)
            self.mapped += 1
            self._unmeshed = True
            pipeline.ready.set()
        svc.last_mapped_stamp = item.frame.timestamp
        self.last_mapped_available_at = item.available_at
        if item.available_at:
            self.mapped_age_s.append(time.perf_counter() - item.available_at)

    def _newest_worth_mapping(self, item: MapItem) -> MapItem:
        """With a backlog, skip queued frames that would not be keyframes, up to the newest: the cores
        go to the frames that add to the map (realtime and live runs only)."""
        queue = self.stages.map_queue
        is_keyframe = getattr(self.stages.pipeline.mapper, "is_keyframe", None)
        if self.schedule is None or is_keyframe is None:
            return item
        while len(queue) and not is_keyframe(item.result.pose):
            newer = queue.get(timeout=0.0)
            if newer is None or newer is END:  # only this thread takes from the queue; closed meanwhile
                break
            self.skipped += 1
            item = newer
        return item

    def _may_refine(self) -> bool:
        """Spare time: nothing queued, the map fitted, and mapping below its share of the wall time."""
        schedule, svc = self.schedule, self.stages
        if schedule is None or len(svc.map_queue) or svc.stopping.is_set() or not svc.running.is_set():
            return False
        pipeline = svc.pipeline
        mapper = pipeline.mapper
        if not pipeline.ready.is_set() or not hasattr(mapper, "refine") or not len(mapper.keyframes):
            return False
        share, _ = self.meter.recent(time.monotonic(), schedule.window_s)
        return share < schedule.max_share

    def _refine(self) -> None:
        with self.stages.map_lock:
            mapper = self.stages.pipeline.mapper
            if mapper is None:
                return
            with self._working(mapper):
                steps = mapper.refine(1)  # type: ignore[attr-defined]  # checked by _may_refine
            self.refine_steps += steps

    @contextlib.contextmanager
    def _working(self, mapper: Any, arrived_at: float | None = None):
        """One unit of mapping work (a frame that ``arrived_at``, or refinement): the priority hook
        installed, its time and steps metered (less the time spent waiting for tracking)."""
        hooked = self.schedule is not None and hasattr(mapper, "before_step")
        if hooked:
            mapper.before_step = self._before_step
        self._arrived_at = arrived_at or None  # 0: not known (a MapItem built without it)
        steps0 = getattr(mapper, "steps_done", 0)
        t0, waited0 = time.monotonic(), self.waited_s
        self.busy = True
        try:
            yield
        finally:
            self.busy = False
            now = time.monotonic()
            busy = max(0.0, now - t0 - (self.waited_s - waited0))
            self.meter.add(now, busy, getattr(mapper, "steps_done", 0) - steps0)

    def _before_step(self) -> None:
        schedule, arrived = self.schedule, self._arrived_at
        assert schedule is not None
        late = arrived is not None and time.perf_counter() - arrived > schedule.turns_after_s
        self.waited_s += schedule.priority.wait_for_tracking(until_frame_ends=late)

    def _mesh_pause(self) -> None:
        assert self.schedule is not None
        # turns, not strict priority: a tracker that is always busy (LiDAR at 10 Hz) would hold every batch
        # for the whole cap, and a mapper starved so lets the vehicle drive out of its map
        self.waited_s += self.schedule.priority.wait_for_tracking(until_frame_ends=True)

    def _publish_mesh_if_due(self) -> None:
        svc, mesh = self.stages, self.mesh
        if not (mesh is not None and self._unmeshed) or time.monotonic() < self._next_mesh:
            return
        t0 = time.monotonic()
        with svc.map_lock:
            mapper = svc.pipeline.mapper
            mesher = mapper.mesher if mapper is not None else None
            if mesher is None:  # the TSDF baseline: whole meshes on request only (full_mesh)
                return
            # meshing waits for tracking like a mapping step: an update of a few hundred ms that ran beside
            # the tracker doubled its frames' time
            waited0 = self.waited_s
            blocks = changed_blocks(mesher, mesh.budget_s, self._mesh_pause if self.schedule else None)
        cost = time.monotonic() - t0 - (self.waited_s - waited0)
        self.mesh_ms.append(cost * 1e3)
        self._unmeshed = bool(mesher.dirty)  # blocks left for the next update
        # keep meshing to mesh_max_share of this thread's time: a slow update spaces out the next ones
        gap = max(mesh.every_s, cost * (1.0 - mesh.max_share) / mesh.max_share)
        self._next_mesh = time.monotonic() + gap
        if blocks:
            mesh.publish(blocks, False)
