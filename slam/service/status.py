"""What the service reports: the status dictionary (status topic, ``status`` command, stats.json) and
the thread that publishes it periodically."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from slam.core.resources import current_rss_mb

if TYPE_CHECKING:
    from slam.app.service_config import ServiceConfig
    from slam.service.state import RunRecord, Stages, Threads

log = logging.getLogger(__name__)


class LatencyLog:
    """Per tracked frame: recording stamp, when the source delivered it, when tracking ended and when
    the observers (the pose publisher among them) had returned; all ``time.perf_counter()``."""

    def __init__(self, keep: int = 100_000) -> None:
        self._rows: deque[tuple[float, float, float, float]] = deque(maxlen=keep)
        self._lock = threading.Lock()  # the tracking thread appends while status readers iterate

    def record(self, stamp: float, available_at: float, tracked_at: float, published_at: float) -> None:
        with self._lock:
            self._rows.append((stamp, available_at, tracked_at, published_at))

    def rows(self) -> np.ndarray:
        """N×4 array (stamp, available_at, tracked_at, published_at)."""
        with self._lock:
            rows = list(self._rows)
        return np.array(rows, dtype=np.float64).reshape(-1, 4)

    def fps(self, window_s: float = 2.0) -> float:
        """Frames tracked per second over the last ``window_s``."""
        now = time.perf_counter()
        with self._lock:
            recent = 0
            for row in reversed(self._rows):
                if row[2] <= now - window_s:
                    break
                recent += 1
        return recent / window_s

    def summary(self) -> dict[str, float | None]:
        rows = self.rows()
        if len(rows) == 0:
            return {"publish_ms_median": None, "frame_to_pose_ms_median": None}
        return {
            "publish_ms_median": round(float(np.median(rows[:, 3] - rows[:, 2])) * 1e3, 3),
            "frame_to_pose_ms_median": round(float(np.median(rows[:, 3] - rows[:, 1])) * 1e3, 3),
        }


#: short of tracking when more than this share of the frames received were dropped (the tracker took newer
#: ones); short of mapping when more than this share of the frames tracked were dropped by the map hand-off
SHORT_SHARE = 0.1
SHORT_WINDOW_S = 5.0  # status: over the last seconds (stats.json: over the run)


def short_of(
    received: int, dropped: int, tracked: int, not_mapped: int, mapped_age_s: float | None, max_age_s: float
) -> str | None:
    """Which budget a run is short of, from counts over one stretch of time: "tracking" (frames dropped:
    tracking is slower than the frame rate; it comes first, as the mapper only gets what tracking leaves),
    "mapping" (tracked frames the map hand-off dropped, or the newest mapped frame older than
    ``max_age_s`` while newer ones were tracked), or None."""
    if received and dropped > SHORT_SHARE * received:
        return "tracking"
    if (tracked and not_mapped > SHORT_SHARE * tracked) or (
        mapped_age_s is not None and mapped_age_s > max_age_s
    ):
        return "mapping"
    return None


class BudgetWatch:
    """The counts behind ``short_of`` over the last ``window_s``: samples taken at each status."""

    def __init__(self, window_s: float = SHORT_WINDOW_S) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, int, int, int, int]] = deque()
        self._lock = threading.Lock()  # status is read by the status thread, commands and the shutdown

    def deltas(
        self, now: float, received: int, dropped: int, tracked: int, not_mapped: int
    ) -> tuple[int, ...]:
        with self._lock:
            samples = self._samples
            samples.append((now, received, dropped, tracked, not_mapped))
            while len(samples) > 2 and now - samples[1][0] >= self.window_s:
                samples.popleft()
            first = samples[0]
        return tuple(b - a for a, b in zip(first[1:], (received, dropped, tracked, not_mapped)))


def mapping_lag(stages: Stages, threads: Threads) -> tuple[float | None, float | None]:
    """(wall seconds since the newest mapped frame arrived from the driver, recording seconds between the
    newest tracked and the newest mapped frame); both None before anything was mapped, and the age None
    while nothing newer was tracked (a caught-up mapper is not late, however long ago its frame came)."""
    worker = threads.mapping
    arrived = worker.last_mapped_available_at if worker is not None else None
    if arrived is None:
        return None, None
    lag = max(0.0, stages.last_tracked_stamp - stages.last_mapped_stamp)
    age = time.perf_counter() - arrived if lag > 0 else None
    return (None if age is None else round(age, 3)), round(lag, 3)


def service_status(
    state: str,
    run: RunRecord,
    stages: Stages,
    threads: Threads,
    source: Any | None,
    scfg: ServiceConfig | None = None,
) -> dict[str, Any]:
    """The status of a run in ``state`` (``SLAMService.state``) reading ``source``; ``scfg`` gives the
    thresholds of ``short_of`` (the defaults without)."""
    pipeline = stages.pipeline
    engine = pipeline.engine
    mapper = pipeline.mapper
    neural_map = pipeline.neural_map
    mapping = threads.mapping
    tracked = engine.stats.frames
    received = threads.driver.delivered if threads.driver is not None else 0
    skipped = mapping.skipped if mapping is not None else 0
    not_mapped = stages.map_queue.dropped
    age_s, lag_s = mapping_lag(stages, threads)
    now = time.monotonic()
    share, steps_per_s = mapping.meter.recent(now, SHORT_WINDOW_S) if mapping is not None else (0.0, 0.0)
    window = run.budget.deltas(now, received, stages.frames.dropped, run.tracked_before + tracked, not_mapped)
    max_age_s = scfg.mapping_max_age_s if scfg is not None else 2.0
    return {
        "state": state,
        "mode": run.mode,
        "localize_only": mapper is None,
        "uptime_s": round(time.monotonic() - run.started_monotonic, 3) if run.started_monotonic else 0.0,
        "fps": round(stages.latency.fps(), 2),
        "frames": {
            "received": received,
            "tracked": run.tracked_before + tracked,
            "lost": engine.stats.frames_lost,
            "dropped": stages.frames.dropped,  # never tracked: the tracker took a newer frame
            "not_mapped": not_mapped,  # tracked, but the map hand-off was full (or the mapper gone)
            "map_skipped": skipped,  # tracked, skipped by a mapper with a backlog (not a keyframe)
            "mapped": mapping.mapped if mapping is not None else 0,
            "skipped": source.frames_skipped
            if source is not None
            else 0,  # undecodable, skipped by the driver
        },
        "queues": {"frames": len(stages.frames), "mapping": len(stages.map_queue)},
        "tracking_ms": _median_ms(engine.stats.tracking_ms),
        "mapping_ms": _median_ms(engine.stats.mapping_ms),
        "map": {
            "blocks": neural_map.grids[0].num_blocks if neural_map is not None else None,
            "mb": _map_mb(neural_map, mapper),
            "keyframes": len(mapper.keyframes) if mapper is not None else None,
            "generation": pipeline.generation,
        },
        "mapping": {
            "state": "off" if mapper is None else (mapping.state if mapping is not None else "starting"),
            "error": mapping.error if mapping is not None else None,
            # over the last SHORT_WINDOW_S: share of the wall time spent mapping, optimiser steps a second
            "share": round(share, 3),
            "steps_per_s": round(steps_per_s, 2),
            "refine_steps": mapping.refine_steps if mapping is not None else 0,
            "waited_for_tracking_s": round(mapping.waited_s, 3) if mapping is not None else 0.0,
            "newest_mapped_age_s": age_s,
            "mapped_stamp_lag_s": lag_s,
        },
        "short_of": short_of(*window, age_s, max_age_s),
        "driver_error": threads.driver_error(),
        # the sensor link (live cameras: streaming / disconnected / reconnecting, drops, USB); null for recordings
        "sensor": _sensor_health(source),
        "memory": {"rss_mb": round(current_rss_mb(), 1)},
    }


def _sensor_health(source: Any | None) -> dict[str, Any] | None:
    health = getattr(source, "health", None)
    return health() if callable(health) else None


def _map_mb(neural_map: Any | None, mapper: Any | None) -> float | None:
    sized = neural_map if neural_map is not None else mapper  # the TSDF baseline sizes its map itself
    return round(sized.map_bytes() / 2**20, 3) if sized is not None else None


def _median_ms(values: list[float], last: int = 30) -> float | None:
    recent = values[-last:]
    return round(float(np.median(recent)), 3) if recent else None


class DropWatch:
    """Tells when a realtime or live run tracks too few of the frames it receives: more than ``share`` of
    those received over the last ``window_s`` seconds were dropped (the tracker took newer ones). Once per
    episode: it warns again only after the share fell below half of ``share``."""

    def __init__(self, window_s: float = 10.0, share: float = 0.3, min_frames: int = 10) -> None:
        self.window_s, self.share, self.min_frames = window_s, share, min_frames
        self._samples: deque[tuple[float, int, int]] = deque()
        self.warned = False

    def update(self, now: float, received: int, dropped: int, tracking_ms: float | None = None) -> str | None:
        """Record the counters at ``now`` (seconds); the warning to log, or None."""
        samples = self._samples
        samples.append((now, received, dropped))
        while len(samples) > 2 and now - samples[1][0] >= self.window_s:
            samples.popleft()
        t0, received0, dropped0 = samples[0]
        frames = received - received0
        if now - t0 < 0.5 * self.window_s or frames < self.min_frames:
            return None
        share = (dropped - dropped0) / frames
        if self.warned:
            self.warned = share >= 0.5 * self.share
            return None
        if share <= self.share:
            return None
        self.warned = True
        cost = f" (tracking takes {tracking_ms:.0f} ms a frame)" if tracking_ms is not None else ""
        return (
            f"falling behind the sensor: {share:.0%} of the last {frames} frames were dropped{cost}; poses "
            "between tracked frames are not estimated and tracking may be lost. Replay recordings in fast "
            "mode (without --realtime), or see the README on speed (LiDAR: mapper.every)"
        )


class StatusThread(threading.Thread):
    """Publishes the status (``status()``) with ``publish`` every ``period_s`` (and moves the progress bar,
    when there is one); in realtime and live runs, warns when tracking falls behind the sensor (``DropWatch``)."""

    def __init__(
        self,
        status: Callable[[], dict[str, Any]],
        publish: Callable[[dict[str, Any]], None],
        period_s: float,
        progress: Any | None = None,
    ) -> None:
        super().__init__(name="slam-status", daemon=True)
        self.status, self.publish = status, publish
        self.period_s, self.progress = period_s, progress
        self.stop = threading.Event()
        self.drops = DropWatch()

    def run(self) -> None:
        while not self.stop.wait(self.period_s):
            self.tick()

    def tick(self) -> None:
        status = self.status()
        self.publish(status)
        if status["mode"] != "fast" and status["state"] == "running":
            frames = status["frames"]
            warning = self.drops.update(
                time.monotonic(), frames["received"], frames["dropped"], status["tracking_ms"]
            )
            if warning:
                log.warning(warning)
        if self.progress is not None:
            self.progress.n = status["frames"]["tracked"]
            self.progress.set_postfix(fps=status["fps"], dropped=status["frames"]["dropped"], refresh=False)
            self.progress.refresh()
