"""The tracking and mapping threads.

Tracking takes a frame from the driver's queue (the newest one in live and realtime mode), tracks it
with the current pipeline's engine (observers publish the pose and record the trajectory) and hands
the frame and its pose to the mapper's queue. After the very first frame it waits until the mapper
has fitted it: tracking against an empty map would only lose frames.

Mapping integrates queued frames one at a time and, every ``publish.mesh_every_s`` (or less often,
so that meshing stays within ``service.mesh_max_share`` of its time), re-meshes the blocks that
changed and publishes them. An exception in mapping is logged and reported on status; the
thread ends and tracking goes on against the map as it was (``reset`` or ``load_map`` start a new one).

Each thread holds its stage lock (``track_lock`` / ``map_lock``) only while it works on one item, so
control commands that swap the pipeline or read the mapper wait for at most one frame.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from slam.service.driver import QueuedFrame
from slam.service.meshes import changed_blocks
from slam.service.pipeline import MapItem
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
    ) -> None:
        super().__init__(name="slam-tracking", daemon=True)
        self.stages = stages
        self.torch_threads = torch_threads
        self.mapping_alive = mapping_alive
        self.request_shutdown = request_shutdown
        self.on_done = on_done
        self.error: str | None = None

    def run(self) -> None:
        svc = self.stages
        torch.set_num_threads(self.torch_threads)
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
        svc, frame = self.stages, item.frame
        with svc.track_lock:
            pipeline = svc.pipeline
            if pipeline.resume_pending:
                pipeline.engine.tracker.resume(pipeline.resume_guess(frame))
                pipeline.resume_pending = False
            result = pipeline.engine.track(frame)
            svc.latency.record(frame.timestamp, item.available_at, result.finished_at, time.perf_counter())
            hand_over = pipeline.engine.wants_mapping(result) and self.mapping_alive()
        if not hand_over:
            return
        svc.map_queue.put(
            MapItem(frame, result, pipeline.generation), give_up=lambda: not self.mapping_alive()
        )
        if result.info.get("first"):
            # the first frame defines the map: wait until it is fitted (or mapping is gone, or a reset or
            # load_map replaced this pipeline meanwhile)
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


class MappingWorker(threading.Thread):
    """Maps the frames of ``stages.map_queue`` into ``stages.pipeline``; with ``mesh`` (None: nothing
    is published) it also re-meshes and publishes the changed blocks. ``on_crash`` is called when it fails."""

    def __init__(
        self,
        stages: Stages,
        torch_threads: int,
        mesh: MeshUpdates | None,
        on_crash: Callable[[], None],
    ) -> None:
        super().__init__(name="slam-mapping", daemon=True)
        self.stages = stages
        self.torch_threads = torch_threads
        self.mesh = mesh
        self.on_crash = on_crash
        self.error: str | None = None
        self.mapped = 0
        self.stale = 0  # queued before a reset / load_map, discarded
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
        torch.set_num_threads(self.torch_threads)
        try:
            while not self.abort.is_set():
                item = svc.map_queue.get(timeout=0.1)
                if item is END:
                    break
                if item is not None:
                    self._map(item)
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
            self.busy = True
            try:
                pipeline.engine.map(item.result)
            finally:
                self.busy = False
            self.mapped += 1
            self._unmeshed = True
            pipeline.ready.set()
        svc.last_mapped_stamp = item.frame.timestamp

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
            blocks = changed_blocks(mesher, mesh.budget_s)
        cost = time.monotonic() - t0
        self.mesh_ms.append(cost * 1e3)
        self._unmeshed = bool(mesher.dirty)  # blocks left for the next update
        # keep meshing to mesh_max_share of this thread's time: a slow update spaces out the next ones
        gap = max(mesh.every_s, cost * (1.0 - mesh.max_share) / mesh.max_share)
        self._next_mesh = time.monotonic() + gap
        if blocks:
            mesh.publish(blocks, False)
