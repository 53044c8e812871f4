"""The driver thread: reads frames from a Source and hands them to the tracker.

In realtime mode a ``Pacer`` releases each recorded frame at its timestamp (relative to the first
frame, scaled by the playback speed), so a recording behaves like the sensor that made it; in fast and
live mode frames go out as soon as the source yields them (a live sensor paces itself). Pausing holds a
recording where it is (the pacing clock is shifted by the pause); a live sensor keeps being read, so
its frames pile up at the queue and are dropped there. A recording can also be held after its first
frame until the first map is ready (``wait_ready``): fitting the first map takes seconds, and a camera
that moved on meanwhile would be lost at its second frame.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from drivers.base import Source
from slam.core.frames import Frame, carry_over
from slam.service.queues import HandOff

log = logging.getLogger(__name__)


@dataclass
class QueuedFrame:
    frame: Frame
    available_at: float  # time.perf_counter() when the source delivered it (end-to-end latency)


def carry_over_dropped(dropped: QueuedFrame, successor: QueuedFrame) -> None:
    """The frame hand-off's ``carry``: a frame dropped before tracking hands what it alone observed
    (events since the previous frame) to the next one (``slam.core.frames.carry_over``)."""
    carry_over(dropped.frame, successor.frame)


class Pacer:
    """Sleeps until each timestamp's turn on the wall clock; reports how late a frame was."""

    def __init__(self, speed: float = 1.0) -> None:
        self.speed = speed
        self._origin: tuple[float, float] | None = None  # (wall clock, recording time) of the first frame
        self.max_lag_s = 0.0

    def wait(self, stamp: float, stop: threading.Event) -> None:
        now = time.monotonic()
        if self._origin is None:
            self._origin = (now, stamp)
            return
        due = self._origin[0] + (stamp - self._origin[1]) / self.speed
        if due > now:
            stop.wait(due - now)
        else:
            self.max_lag_s = max(self.max_lag_s, now - due)

    def shift(self, seconds: float) -> None:
        """Delay the rest of the recording (after a pause)."""
        if self._origin is not None:
            self._origin = (self._origin[0] + seconds, self._origin[1])


class DriverThread(threading.Thread):
    def __init__(
        self,
        source: Source,
        frames: HandOff[QueuedFrame],
        stop: threading.Event,
        running: threading.Event,
        pacer: Pacer | None,
        hold_when_paused: bool,
        wait_ready: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__(name="slam-driver", daemon=True)
        self.source, self.frames, self.stop, self.running = source, frames, stop, running
        self.pacer, self.hold_when_paused = pacer, hold_when_paused
        self.wait_ready = wait_ready
        self.held_s = 0.0  # time the recording was held for the first map
        self.delivered = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for frame in self.source:
                if self.stop.is_set():
                    break
                self._hold_while_paused()
                if self.pacer is not None:
                    self.pacer.wait(frame.timestamp, self.stop)
                if self.stop.is_set():
                    break
                self.delivered += 1
                self.frames.put(QueuedFrame(frame, time.perf_counter()), give_up=self.stop.is_set)
                if self.delivered == 1 and self.wait_ready is not None:
                    self._hold_until_ready(self.wait_ready)
        except (
            Exception
        ) as exc:  # a sensor unplugged, a recording gone: end the stream, keep what was tracked
            self.error = exc
            log.error("driver %s stopped: %s", self.source.name or type(self.source).__name__, exc)
        finally:
            self.frames.close()
            self.source.close()

    def _hold_until_ready(self, ready: Callable[[], bool]) -> None:
        t0 = time.monotonic()
        while not ready() and not self.stop.wait(0.02):
            pass
        self.held_s = time.monotonic() - t0
        if self.pacer is not None:
            self.pacer.shift(self.held_s)
        log.info("recording held %.1f s while the first map was fitted", self.held_s)

    def _hold_while_paused(self) -> None:
        if not self.hold_when_paused or self.running.is_set():
            return
        t0 = time.monotonic()
        while not self.running.wait(0.1) and not self.stop.is_set():
            pass
        if self.pacer is not None:
            self.pacer.shift(time.monotonic() - t0)
