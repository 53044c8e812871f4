"""Reading a device that may disappear: exponential backoff and a reconnecting frame reader.

Pure Python (no device library): the reader takes a factory that opens a ``FrameStream``, so the logic
is tested with a fake device. The RealSense driver (drivers/realsense/) is its first user.

States reported through ``on_state(state, message)``:

- ``streaming``: frames arrive;
- ``disconnected``: the device was lost (unplugged, USB reset, no frame for ``lost_after_s``); the next
  attempt comes after a backoff delay;
- ``reconnecting``: trying to open the device again;
- ``stopped``: the reader was stopped (``stop`` event) or the recording ended;
- ``failed``: ``max_attempts`` reconnection attempts failed; the reader raises ``DeviceUnavailable``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)


class DeviceUnavailable(RuntimeError):
    """The device cannot be opened (not plugged in, busy, ...)."""


class DeviceLost(RuntimeError):
    """An open device stopped delivering (unplugged, USB reset)."""


class StreamEnded(Exception):
    """A recording reached its end: not an error, the reader just stops."""


class FrameStream(Protocol):
    def read(self, timeout_s: float) -> Any | None:
        """The next item, or None when nothing came within ``timeout_s``; raises ``DeviceLost`` or
        ``StreamEnded``."""
        ...

    def close(self) -> None: ...


@dataclass
class Backoff:
    """Delays before successive reconnection attempts: ``initial_s``, times ``factor`` each failure, at
    most ``max_s``; ``reset`` after a success."""

    initial_s: float = 0.5
    factor: float = 2.0
    max_s: float = 5.0

    def __post_init__(self) -> None:
        if not (self.initial_s > 0 and self.factor >= 1 and self.max_s >= self.initial_s):
            raise ValueError(
                f"backoff: need initial_s > 0, factor >= 1, max_s >= initial_s; got {self.initial_s}, "
                f"{self.factor}, {self.max_s}"
            )
        self._next = self.initial_s

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self._next * self.factor, self.max_s)
        return delay

    def reset(self) -> None:
        self._next = self.initial_s


StateCallback = Callable[[str, str], None]


class ReconnectingReader:
    """Yields the items of a stream; when the device is lost, reopens it with backoff and goes on.

    ``open_stream`` opens the device (raising ``DeviceUnavailable`` when it cannot); ``initial`` is a
    stream already opened (the caller opens the first one itself, so that a missing device fails at
    start with its own message instead of being retried forever).
    """

    def __init__(
        self,
        open_stream: Callable[[], FrameStream],
        *,
        initial: FrameStream | None = None,
        backoff: Backoff | None = None,
        max_attempts: int | None = None,
        read_timeout_s: float = 0.5,
        lost_after_s: float = 3.0,
        stop: threading.Event | None = None,
        on_state: StateCallback | None = None,
        clock: Callable[[], float] = time.monotonic,
        what: str = "device",
    ) -> None:
        self.open_stream = open_stream
        self._stream = initial
        self.backoff = backoff or Backoff()
        self.max_attempts = max_attempts
        self.read_timeout_s = read_timeout_s
        self.lost_after_s = lost_after_s
        self.stop = stop or threading.Event()
        self.on_state = on_state or (lambda state, message: None)
        self.clock = clock
        self.what = what
        self.reconnects = 0  # successful reconnections
        self.disconnects = 0

    def __iter__(self) -> Iterator[Any]:
        stream = self._stream
        last_item = self.clock()
        if stream is not None:
            self.on_state("streaming", f"{self.what} streaming")
        try:
            while not self.stop.is_set():
                if stream is None:
                    stream = self._reconnect()
                    if stream is None:
                        return
                    last_item = self.clock()
                try:
                    item = stream.read(self.read_timeout_s)
                except StreamEnded:
                    self.on_state("stopped", f"{self.what}: end of stream")
                    return
                except DeviceLost as exc:
                    stream = self._lost(stream, str(exc))
                    continue
                if item is None:
                    silent = self.clock() - last_item
                    if silent > self.lost_after_s:
                        stream = self._lost(stream, f"no frame for {silent:.1f} s")
                    continue
                last_item = self.clock()
                yield item
        finally:
            self._stream = None
            if stream is not None:
                _close_quietly(stream)

    def _lost(self, stream: FrameStream, why: str) -> None:
        self.disconnects += 1
        _close_quietly(stream)
        message = f"{self.what} disconnected ({why}); reconnecting"
        log.warning("%s", message)
        self.on_state("disconnected", message)
        return None

    def _reconnect(self) -> FrameStream | None:
        """Open the device again, waiting ``backoff`` between attempts; None when stopped."""
        attempt = 0
        while True:
            attempt += 1
            if self.max_attempts is not None and attempt > self.max_attempts:
                message = f"{self.what}: gave up after {self.max_attempts} reconnection attempts"
                self.on_state("failed", message)
                raise DeviceUnavailable(message)
            delay = self.backoff.next_delay()
            self.on_state(
                "disconnected", f"{self.what} disconnected; reconnection attempt {attempt} in {delay:.1f} s"
            )
            if self.stop.wait(delay):
                self.on_state("stopped", f"{self.what}: stopped while reconnecting")
                return None
            self.on_state("reconnecting", f"{self.what}: reconnection attempt {attempt}")
            try:
                stream = self.open_stream()
            except DeviceUnavailable as exc:
                log.warning("%s: reconnection attempt %d failed: %s", self.what, attempt, exc)
                continue
            self.reconnects += 1
            self.backoff.reset()
            log.warning("%s reconnected after %d attempt(s)", self.what, attempt)
            self.on_state("streaming", f"{self.what} reconnected")
            return stream


def _close_quietly(stream: FrameStream) -> None:
    try:
        stream.close()
    except Exception as exc:  # a device that vanished may fail to close; it is gone either way
        log.debug("closing a lost stream: %s", exc)
