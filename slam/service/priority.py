"""``TrackingPriority``: in realtime and live runs the tracking thread has the cores first.

On 2 cores, a tracker and a mapper that run at once (each with torch and numba work) slow each other
down: tracking took about twice its replay time and frames were dropped. So the mapper works in small
units (allocation, then one optimiser step at a time) and, before each unit, ``wait_for_tracking``
blocks while the tracking thread is tracking a frame or a frame waits in the driver → tracking hand-off.
A unit already begun runs to its end (tens of ms), so tracking waits for at most one of them.

``cap_s`` bounds each wait, so a wedged tracker cannot starve the map. A tracker slower than the frame
rate is always busy, and strict priority would leave the map one unit per ``cap_s``: the tracker soon
loses a map that no longer covers its view. So the mapper can ask to wait only ``until_frame_ends``
(the frame being tracked, or the one waiting, is done): tracking and mapping then take turns, a frame
and a step, which the mapping worker does once the frame it maps has waited too long. While the tracker waits for the
mapper (the first map, a full blocking map hand-off) or the run is paused, waiting frames do not count.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any


class TrackingPriority:
    def __init__(self, frames: Any, running: threading.Event, cap_s: float = 0.5) -> None:
        """``frames``: the driver → tracking hand-off (anything with ``len``); ``running``: cleared while
        paused (waiting frames are left alone then, nobody is about to track them)."""
        self.frames, self.running, self.cap_s = frames, running, cap_s
        self._cond = threading.Condition()
        self._busy = False  # tracking a frame
        self._waiting_on_mapper = 0  # >0: the tracker waits for the mapper, which must not wait for it
        self.tracked = 0  # frames tracked so far (a turn ends when it grows)
        self.waits = 0  # waits that found tracking wanting the cores
        self.waited_s = 0.0  # total time the mapper waited
        self.capped = 0  # waits that ended at cap_s with tracking still wanting the cores

    def tracking_wants_cores(self) -> bool:
        if self._waiting_on_mapper:
            return False
        return self._busy or (len(self.frames) > 0 and self.running.is_set())

    @contextlib.contextmanager
    def tracking(self) -> Iterator[None]:
        """Around ``engine.track``: the mapper holds back meanwhile."""
        with self._cond:
            self._busy = True
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self.tracked += 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def waiting_on_mapper(self) -> Iterator[None]:
        """Around the tracker's waits for the mapper (handing a frame over, the first map)."""
        with self._cond:
            self._waiting_on_mapper += 1
            self._cond.notify_all()
        try:
            yield
        finally:
            with self._cond:
                self._waiting_on_mapper -= 1

    def wait_for_tracking(self, until_frame_ends: bool = False) -> float:
        """Block while tracking wants the cores (``until_frame_ends``: only until the frame tracked or
        waiting now is done), at most ``cap_s``; returns the seconds waited."""
        with self._cond:
            if not self.tracking_wants_cores():
                return 0.0
            t0 = time.monotonic()
            deadline = t0 + self.cap_s
            # the frame being tracked, or the one waiting (the tracker takes it at once), is the next done
            turn_ends = self.tracked + 1 if until_frame_ends else None
            self.waits += 1
            while self.tracking_wants_cores() and (turn_ends is None or self.tracked < turn_ends):
                left = deadline - time.monotonic()
                if left <= 0:
                    self.capped += 1
                    break
                # woken when tracking ends a frame or starts waiting for the mapper; a waiting frame
                # needs no wake-up of its own: the tracker takes it at once and ``tracking()`` follows
                self._cond.wait(left)
            waited = time.monotonic() - t0
            self.waited_s += waited
            return waited
