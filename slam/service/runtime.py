"""``SLAMService``: the driver, tracking, mapping and status threads around one engine pipeline, the
publisher and the control server, and the orderly end of a run.

Lifecycle: construct (everything that can fail at start fails here: mode, source, map file, sockets),
``start()``, ``wait()`` until the recording ends or a shutdown is requested (signal, control command,
tracking failure), then ``shutdown()``: stop the driver, let the tracker finish the frames already
read, let the mapper work through its queue (up to ``service.drain_timeout_s``), then write the
trajectory first (it is what matters most), the map, the mesh and ``stats.json``.

Thread ownership: the tracking thread alone calls the tracker, the mapping thread alone calls the
mapper (and its mesher); anything else that needs them (control commands, shutdown) takes the stage
lock, ``track_lock`` or ``map_lock`` (in that order: map, then track, when both), which the threads
hold for one frame at a time.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from drivers.base import Source
from slam.app.build import build_engine, open_configured_source
from slam.app.config import SLAMConfig, torch_threads
from slam.app.outputs import RunResult
from slam.app.persistence import (
    SessionSnapshot,
    capture,
    open_map,
    restore_mapper,
    save_session,
    write_mesh_atomic,
    write_trajectory_atomic,
)
from slam.engine.engine import Engine
from slam.service.driver import DriverThread, Pacer, QueuedFrame, carry_over_dropped
from slam.service.meshes import all_blocks, whole_mesh_block
from slam.service.outputs import service_stats, write_outputs
from slam.service.pipeline import MapItem, Pipeline
from slam.service.priority import TrackingPriority
from slam.service.queues import HandOff
from slam.service.startup import ServiceError, check_source
from slam.service.state import RunRecord, Stages, Threads
from slam.service.status import LatencyLog, StatusThread, service_status
from slam.service.workers import MappingSchedule, MappingWorker, MeshUpdates, TrackingWorker
from slam.transport.control import ControlServer
from slam.transport.publishers import ServicePublisher
from slam.transport.wire import MeshBlock

log = logging.getLogger(__name__)


class SLAMService:
    def __init__(
        self,
        cfg: SLAMConfig,
        source: Source | None = None,
        engine: Engine | None = None,
        publisher: Any | None = None,
    ) -> None:
        """``source``, ``engine`` and ``publisher`` replace the configured ones (tests, benchmarks)."""
        self.cfg = cfg
        scfg = cfg.service
        source_cls, mode = check_source(cfg, source)
        self.run_record = RunRecord(mode)
        self.source_name = cfg.source.kind if source is None else (source.name or source_cls.__name__)
        self.sensor = source_cls.sensor  # which frontend the engines of this run take
        self.torch_threads = torch_threads(cfg)
        fast = mode == "fast"
        frames: HandOff[QueuedFrame] = HandOff(
            scfg.frame_queue,
            "block" if fast else "drop_oldest",
            "oldest" if fast else "newest",
            carry=carry_over_dropped,
        )
        map_every_frame = fast if scfg.map_every_frame is None else scfg.map_every_frame
        map_queue: HandOff[MapItem] = HandOff(
            scfg.map_queue, "block" if map_every_frame else "drop_oldest", "oldest"
        )

        self.tracking_done = threading.Event()
        self._wake = threading.Event()  # the main thread's: end of stream or shutdown requested
        self._mesh_seq = 0
        self._generation = 0
        self._t0 = 0.0
        self.threads = Threads()
        self._result: RunResult | None = None

        self.publisher_enabled = publisher is not None or scfg.publish.enabled
        self.source: Source | None = None
        self.publisher: Any | None = None
        self.control: ControlServer | None = None
        self._observers: list[Any] = []
        try:
            # cheap checks first: a bad map file fails before the source is opened (the demo may render
            # its scene) and before anything binds a port
            start_engine, history = self._initial_engine(engine)
            self.source = source if source is not None else open_configured_source(cfg)
            self.publisher = publisher if publisher is not None else ServicePublisher(scfg.publish)
            self._observers = [self.publisher] if self.publisher_enabled else []
            self.stages = Stages(frames, map_queue, self._pipeline(start_engine, history))
            # realtime and live: tracking has the cores first, the mapper spends what it leaves (fast runs
            # track and map every frame, both at once)
            self.priority = (
                TrackingPriority(frames, self.stages.running, scfg.mapping_yield_cap_s)
                if not fast and scfg.tracking_priority
                else None
            )
            if scfg.control.enabled:
                from slam.service.commands import ServiceCommands

                self.control = ControlServer(scfg.control, ServiceCommands(self))
        except BaseException:
            self._close_resources()
            raise

    # -- construction of pipelines ---------------------------------------------------------------
    def _initial_engine(self, engine: Engine | None) -> tuple[Engine, SessionSnapshot | None]:
        if engine is not None:
            return engine, None
        if self.cfg.service.load_map is not None:
            return self._loaded_engine(self.cfg.service.load_map, self.cfg.service.localize_only)
        return build_engine(self.cfg, self.sensor), None

    def _loaded_engine(self, path: Path, localize_only: bool) -> tuple[Engine, SessionSnapshot]:
        """An engine around a saved map (``MapFileError`` names the file when it cannot be read)."""
        neural_map, snapshot = open_map(path, device=self.cfg.map.device)
        try:
            engine = build_engine(self.cfg, self.sensor, neural_map, with_mapper=not localize_only)
        except ValueError as exc:
            raise ServiceError(f"{path}: {exc}") from None
        if engine.mapper is not None:
            restore_mapper(engine.mapper, snapshot)
        log.info(
            "loaded %s: %d blocks, %d keyframes",
            path,
            neural_map.grids[0].num_blocks,
            len(snapshot.keyframes),
        )
        return engine, snapshot

    def _pipeline(self, engine: Engine, history: SessionSnapshot | None = None) -> Pipeline:
        return Pipeline.create(engine, self._next_generation(), self._observers, history=history)

    def _next_generation(self) -> int:
        self._generation += 1
        return self._generation

    # -- the parts of the state that others read -------------------------------------------------
    @property
    def mode(self) -> str:
        return self.run_record.mode

    @property
    def pipeline(self) -> Pipeline:
        """The current pipeline (``reset`` and ``load_map`` replace it)."""
        return self.stages.pipeline

    @property
    def latency(self) -> LatencyLog:
        return self.stages.latency

    @property
    def mapping_worker(self) -> MappingWorker | None:
        return self.threads.mapping

    @property
    def shutdown_reason(self) -> str | None:
        return self.run_record.shutdown_reason

    # -- running ---------------------------------------------------------------------------------
    def start(self) -> None:
        assert self.source is not None
        st, scfg = self.stages, self.cfg.service
        self.run_record.started_monotonic = time.monotonic()
        self._t0 = time.perf_counter()
        pacer = Pacer(scfg.speed) if self.mode == "realtime" else None
        hold = self.mode == "realtime" and scfg.hold_until_initialised
        self.threads.driver = DriverThread(
            self.source,
            st.frames,
            st.stopping,
            st.running,
            pacer,
            hold_when_paused=self.mode != "live",
            wait_ready=self._first_map_ready if hold else None,
        )
        self.threads.tracking = TrackingWorker(
            st,
            self.cfg.service.tracking_threads or self.torch_threads,
            mapping_alive=self.threads.mapping_alive,
            request_shutdown=self.request_shutdown,
            on_done=self._on_tracking_done,
            priority=self.priority,
        )
        self._ensure_mapping_thread()
        self.threads.status = StatusThread(
            self.status, self.publish_status, scfg.publish.status_every_s, self._progress_bar()
        )
        if self.control is not None:
            self.control.start()
        self.threads.tracking.start()
        self.threads.driver.start()
        self.threads.status.start()
        log.info("service running: mode %s, source %s", self.mode, self.source_name)

    def _ensure_mapping_thread(self) -> None:
        """A mapping thread for the current pipeline, started anew after a crash (reset / load_map)."""
        if self.pipeline.mapper is None or self.stages.stopping.is_set():
            return
        if self.threads.mapping is not None and self.threads.mapping.is_alive():
            return
        scfg = self.cfg.service
        mesh = None
        if self.publisher_enabled:
            mesh = MeshUpdates(
                self.publish_mesh, scfg.publish.mesh_every_s, scfg.mesh_max_share, scfg.mesh_update_budget_s
            )
        schedule = (
            MappingSchedule(self.priority, scfg.mapping_max_share, turns_after_s=scfg.mapping_turns_after_s)
            if self.priority is not None
            else None
        )
        self.threads.mapping = MappingWorker(
            self.stages, self.torch_threads, mesh, on_crash=self._on_mapping_crashed, schedule=schedule
        )
        self.threads.mapping.start()

    def _progress_bar(self) -> Any | None:
        if not self.cfg.output.progress:
            return None
        from tqdm import tqdm

        assert self.source is not None
        return tqdm(total=self.source.length(), unit="frame", desc=self.mode, dynamic_ncols=True, leave=False)

    def wait(self, timeout: float | None = None) -> bool:
        """True once the run should end (the source ended or a shutdown was requested)."""
        return self._wake.wait(timeout)

    def request_shutdown(self, reason: str) -> None:
        """Ask for a graceful shutdown (signals, the shutdown command); the main thread carries it out."""
        if self.run_record.shutdown_reason is None:
            self.run_record.shutdown_reason = reason
        self._wake.set()

    def run(self) -> RunResult:
        """start, wait for the end, shut down; with the signal handlers of ``shutdown_on_signals``."""
        self.start()
        while not self.wait(0.2):
            pass
        return self.shutdown()

    # -- state -----------------------------------------------------------------------------------
    @property
    def state(self) -> str:
        if self._result is not None:
            return "stopped"
        if self.stages.stopping.is_set():
            return "stopping"
        if not self.stages.running.is_set():
            return "paused"
        if not self.pipeline.ready.is_set():
            return "initialising"
        return "running"

    def _first_map_ready(self) -> bool:
        """Whether the tracker can go on after the first frame: its map is fitted, or none will be."""
        return (
            self.pipeline.ready.is_set() or self.pipeline.mapper is None or not self.threads.mapping_alive()
        )

    def _on_mapping_crashed(self) -> None:
        self.run_record.mapping_crashes += 1
        self.stages.map_queue.clear()
        self.pipeline.ready.set()  # a tracker waiting for the first map must not wait forever

    def _on_tracking_done(self) -> None:
        self.tracking_done.set()
        self._wake.set()

    def status(self) -> dict[str, Any]:
        return service_status(
            self.state, self.run_record, self.stages, self.threads, self.source, self.cfg.service
        )

    # -- publishing ------------------------------------------------------------------------------
    def publish_status(self, status: dict[str, Any]) -> None:
        if self.publisher_enabled and self.publisher is not None:
            self.publisher.publish_status(status)

    def publish_mesh(self, blocks: list[MeshBlock], full: bool) -> None:
        if not (self.publisher_enabled and self.publisher is not None):
            return
        seq, self._mesh_seq = self._mesh_seq, self._mesh_seq + 1
        self.publisher.publish_mesh(stamp=self.stages.last_mapped_stamp, seq=seq, blocks=blocks, full=full)

    def publish_full_mesh(self) -> int:
        """Publish the whole mesh now (``full: true``); returns the number of blocks."""
        with self.stages.map_lock:
            mapper = self.pipeline.mapper
            if mapper is None:
                raise ServiceError("no mesh: this run does not map (localize_only)")
            mesher = mapper.mesher
            blocks = all_blocks(mesher) if mesher is not None else whole_mesh_block(mapper)
        self.publish_mesh(blocks, full=True)
        return len(blocks)

    # -- commands --------------------------------------------------------------------------------
    def pause(self) -> None:
        self.stages.running.clear()

    def resume(self) -> None:
        self.stages.running.set()

    def reset(self) -> str | None:
        """Back to how the run started (an empty map, or the loaded map read again); the trajectory so
        far is kept in a segment file, whose path is returned (None when nothing was tracked)."""
        self._refuse_while_stopping("reset")
        scfg = self.cfg.service
        if scfg.load_map is not None:
            fresh = self._pipeline(*self._loaded_engine(scfg.load_map, scfg.localize_only))
        else:
            fresh = self._pipeline(build_engine(self.cfg, self.sensor))
        return self._swap(fresh)

    def load_map(self, path: Path, localize_only: bool) -> dict[str, Any]:
        self._refuse_while_stopping("load_map")
        segment = self._swap(self._pipeline(*self._loaded_engine(path, localize_only)))
        neural_map = self.pipeline.neural_map
        return {
            "path": str(path),
            "blocks": neural_map.grids[0].num_blocks,
            "keyframes": len(self.pipeline.history.keyframes) if self.pipeline.history else 0,
            "localize_only": localize_only,
            "segment": segment,
        }

    def _swap(self, fresh: Pipeline) -> str | None:
        st = self.stages
        with st.map_lock, st.track_lock:
            old = st.pipeline
            segment = self._archive_trajectory(old)
            self.run_record.tracked_before += old.engine.stats.frames
            st.map_queue.clear()
            st.pipeline = fresh
        if self.threads.tracking is not None:  # started: the new mapper needs a thread
            self._ensure_mapping_thread()
        return segment

    def _archive_trajectory(self, pipeline: Pipeline) -> str | None:
        stamps, poses = pipeline.trajectory()
        if len(stamps) == 0:
            return None
        segments = self.run_record.segments
        path = Path(self.cfg.output.dir) / f"trajectory-segment-{len(segments) + 1}.txt"
        write_trajectory_atomic(path, stamps, poses)
        segments.append(str(path))
        return str(path)

    def _refuse_while_stopping(self, what: str) -> None:
        if self.stages.stopping.is_set():
            raise ServiceError(f"{what}: the service is shutting down")

    def save_map(self, path: Path) -> dict[str, Any]:
        """Map, keyframes and trajectory (a loaded map's saved one first) to ``path``, atomically."""
        snapshot = self._snapshot()
        save_session(path, snapshot)
        return {"path": str(path), "bytes": path.stat().st_size, "poses": len(snapshot.timestamps)}

    def _snapshot(self) -> SessionSnapshot:
        with self.stages.map_lock:
            pipeline = self.pipeline
            if pipeline.neural_map is None:
                raise ServiceError(
                    "save_map: the baseline pipeline's TSDF map cannot be saved (pipeline: neural can)"
                )
            stamps, poses = pipeline.trajectory()
            history = pipeline.history
            if history is not None:
                stamps = np.concatenate([history.timestamps, stamps])
                poses = np.concatenate([history.poses, poses])
            snapshot = capture(pipeline.neural_map, pipeline.mapper, stamps, poses)
        if pipeline.mapper is None and history is not None:  # localising only: the loaded keyframes stand
            snapshot.keyframes, snapshot.frames_integrated = (
                list(history.keyframes),
                history.frames_integrated,
            )
        return snapshot

    def save_mesh(self, path: Path) -> dict[str, Any]:
        with self.stages.map_lock:
            mapper = self.pipeline.mapper
            mesh = mapper.extract_mesh() if mapper is not None else None
        if mesh is None or len(mesh.triangles) == 0:
            raise ServiceError("save_mesh: nothing is mapped yet")
        write_mesh_atomic(path, mesh)
        return {"path": str(path), "vertices": len(mesh.vertices), "triangles": len(mesh.triangles)}

    # -- the end ---------------------------------------------------------------------------------
    def shutdown(self) -> RunResult:
        """Stop, drain and write the outputs; returns the run's result. Safe to call twice."""
        if self._result is not None:
            return self._result
        interrupted = self.shutdown_reason is not None and not self.tracking_done.is_set()
        self.stages.stopping.set()
        self.stages.running.set()  # a paused run still drains
        self._stop_threads()
        wall_s = time.perf_counter() - self._t0 if self._t0 else 0.0
        try:
            assert self.source is not None
            self._result = write_outputs(
                self.cfg, self.source, self.pipeline, self._service_stats, self.save_map, wall_s, interrupted
            )
            self.publish_status(self.status())
        finally:
            self._close_resources()
        return self._result

    def _service_stats(self) -> dict[str, Any]:
        publisher_stats = (
            self.publisher.stats() if self.publisher_enabled and self.publisher is not None else None
        )
        return service_stats(
            self.status(),
            self.run_record,
            self.stages,
            self.threads,
            publisher_stats,
            self.cfg.service.mapping_max_age_s,
        )

    def _stop_threads(self) -> None:
        st, threads = self.stages, self.threads
        if threads.driver is not None:
            threads.driver.join(
                timeout=10.0
            )  # it checks `stopping` between frames; a hung sensor is left behind
            if threads.driver.is_alive():
                log.warning("the driver did not stop within 10 s (sensor read blocked); leaving it")
        st.frames.close()
        if threads.tracking is not None:
            threads.tracking.join()  # it tracks what the driver had queued, then ends
        st.map_queue.close()
        worker = threads.mapping
        if worker is not None and worker.is_alive():
            worker.join(timeout=self.cfg.service.drain_timeout_s)
            if worker.is_alive():
                log.warning(
                    "mapping did not drain within %.0f s; the rest of its queue is not mapped",
                    self.cfg.service.drain_timeout_s,
                )
                st.aborting.set()
                worker.abort.set()
                worker.join()
        st.map_queue.clear()
        if threads.status is not None:
            threads.status.stop.set()
            threads.status.join()
            if threads.status.progress is not None:
                threads.status.progress.close()

    def _close_resources(self) -> None:
        if self.control is not None:
            self.control.stop()
        if self.publisher is not None:
            self.publisher.close()
        if self.source is not None:
            self.source.close()


@contextlib.contextmanager
def shutdown_on_signals(service: SLAMService) -> Iterator[None]:
    """SIGINT and SIGTERM request a graceful shutdown (main thread only); a second signal while the
    outputs are being written is reported and otherwise ignored, so they are not cut short."""

    def handler(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if service.shutdown_reason is not None:
            log.warning("%s: already shutting down, writing the outputs", name)
            return
        log.warning("%s: shutting down (finishing queued frames, then saving)", name)
        service.request_shutdown(name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
