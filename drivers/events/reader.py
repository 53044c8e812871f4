"""What every event-file reader shares: validation of decoded events, read statistics, and streaming.

A reader decodes its file in chunks of whatever size the format makes natural (a block of text lines,
an AEDAT packet, a run of EVT words, an HDF5 slice) and hands them to ``_accept``, which applies the one
bad-input policy of all formats:

* **coordinates outside the sensor** (x >= width or y >= height, or negative): dropped, counted in
  ``stats.out_of_bounds``;
* **unsorted timestamps**: a chunk whose times go backwards is sorted (stably) by time, and the events
  that were out of place are counted in ``stats.reordered``; an event earlier than the last event of an
  already delivered chunk is dropped and counted in ``stats.out_of_order``, so that what a consumer
  receives is always in time order (a stream is consumed forward, once, like a live sensor);
* **non-finite timestamps**: dropped, counted in ``stats.malformed``.

The format-specific problems (a malformed line, an undecodable packet, a truncated file) are counted
in ``stats.malformed`` / ``stats.truncated_bytes`` by the reader that finds them, with a message naming
the file and where; the first messages are kept in ``stats.problems``.

``iter_slices(duration_s=..., max_events=...)`` re-cuts the chunks into slices of fixed duration or
count without ever holding more than a slice and one chunk in memory, so a recording longer than memory
is read in pieces. ``EventCursor`` is that re-cutting, usable on any stream of ``EventPacket`` (the
synchronisation with RGB-D frames cuts at frame timestamps with it).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from slam.core.frames import EventPacket, concat_event_arrays

log = logging.getLogger(__name__)

MAX_PROBLEMS_KEPT = 20


class EventFileError(RuntimeError):
    """An event file cannot be read at all (missing, wrong format, unreadable header); names the file."""


@dataclass
class EventReadStats:
    """What one pass over a file delivered and what it dropped, and why."""

    events: int = 0  # events delivered
    out_of_bounds: int = 0  # dropped: outside the sensor's width × height
    out_of_order: int = 0  # dropped: earlier than an event already delivered in a previous chunk
    reordered: int = 0  # kept, but moved when an unsorted chunk was sorted by time
    malformed: int = 0  # dropped: lines, words, events or packets that could not be decoded
    truncated_bytes: int = 0  # bytes at the end of a truncated file that were dropped
    skipped_streams: dict[str, int] = field(default_factory=dict)  # AEDAT 4: packets not decoded, by stream
    problems: list[str] = field(default_factory=list)  # the first messages, for a run's report

    def note(self, message: str, level: int = logging.WARNING) -> None:
        """Log a problem and keep its message (the first ``MAX_PROBLEMS_KEPT`` only)."""
        log.log(level, "%s", message)
        if len(self.problems) < MAX_PROBLEMS_KEPT:
            self.problems.append(message)

    @property
    def dropped(self) -> int:
        return self.out_of_bounds + self.out_of_order + self.malformed


def empty_packet(width: int, height: int, timestamp: float = 0.0, index: int = 0) -> EventPacket:
    return EventPacket(
        np.empty(0, np.float64),
        np.empty(0, np.uint16),
        np.empty(0, np.uint16),
        np.empty(0, np.int8),
        width,
        height,
        timestamp=timestamp,
        index=index,
    )


def concatenate_packets(packets: list[EventPacket], width: int, height: int) -> EventPacket:
    if not packets:
        return empty_packet(width, height)
    if len(packets) == 1:
        return packets[0]
    return EventPacket(**concat_event_arrays(packets), width=width, height=height)


def _packet_slice(packet: EventPacket, start: int, stop: int) -> EventPacket:
    """Events start:stop of a packet as views, without ``__post_init__``: the arrays already have the
    packet's dtypes and values, and converting again would copy the polarities of every remainder."""
    part = object.__new__(EventPacket)
    part.__dict__.update(packet.__dict__)
    part.t, part.x, part.y, part.p = (
        packet.t[start:stop],
        packet.x[start:stop],
        packet.y[start:stop],
        packet.p[start:stop],
    )
    return part


class EventReader(ABC):
    """An event file, read forward in chunks; re-iterable (each pass opens the file again)."""

    #: short name of the format: "text", "aedat4", "evt3", "hdf5"
    format: ClassVar[str] = ""

    def __init__(self, path: str | Path, width: int | None = None, height: int | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise EventFileError(f"{self.path}: no such event file")
        # formats that store the sensor size set these from the file when not given
        self.width = width
        self.height = height
        self.stats = EventReadStats()
        self._last_t = -np.inf  # time of the last event delivered in this pass

    # -- what a format implements ----------------------------------------------------------------------

    @abstractmethod
    def _decode_chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """Decoded, not yet validated events in file order: (t seconds, x, y, polarity), any int dtypes."""

    # -- what every reader offers ----------------------------------------------------------------------

    def chunks(self) -> Iterator[EventPacket]:
        """Validated events in file order, in the format's natural chunks (sizes vary)."""
        self.require_geometry()
        self.stats = EventReadStats()
        self._last_t = -np.inf
        for t, x, y, p in self._decode_chunks():
            packet = self._accept(t, x, y, p)
            if len(packet):
                yield packet

    def iter_slices(
        self, duration_s: float | None = None, max_events: int | None = None
    ) -> Iterator[EventPacket]:
        """The stream cut into consecutive slices; see ``iter_slices``."""
        self.require_geometry()
        return iter_slices(self.chunks(), self.width, self.height, duration_s, max_events)

    def read_all(self) -> EventPacket:
        """Every event in one packet: for files that fit in memory (tests, small recordings)."""
        self.require_geometry()
        return concatenate_packets(list(self.chunks()), self.width, self.height)

    def close(self) -> None:  # noqa: B027 - readers that keep a handle open override it
        """Release the file. Safe to call twice."""

    def __enter__(self) -> EventReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the shared bad-input policy -------------------------------------------------------------------

    def require_geometry(self) -> None:
        """Fail, naming the file, when the sensor size is neither in the file nor given."""
        if not self.width or not self.height:
            raise EventFileError(
                f"{self.path}: the sensor size is not in the file; pass width and height "
                "(e.g. DVS128: 128x128, DAVIS240: 240x180, DAVIS346: 346x260)"
            )

    def _accept(self, t: np.ndarray, x: np.ndarray, y: np.ndarray, p: np.ndarray) -> EventPacket:
        t = np.asarray(t, dtype=np.float64)
        finite = np.isfinite(t)
        inside = (x < self.width) & (y < self.height)
        if x.dtype.kind != "u" or y.dtype.kind != "u":  # signed or float coordinates can be negative
            inside &= (x >= 0) & (y >= 0)
        keep = finite & inside
        if not keep.all():
            self._count_dropped(t, finite, inside)
            t, x, y, p = t[keep], x[keep], y[keep], p[keep]
        if t.size > 1 and np.any(t[1:] < t[:-1]):
            order = np.argsort(t, kind="stable")
            if self.stats.reordered == 0:
                self.stats.note(f"{self.path}: timestamps go backwards; chunk sorted by time", logging.INFO)
            self.stats.reordered += int(np.count_nonzero(t < np.maximum.accumulate(t)))
            t, x, y, p = t[order], x[order], y[order], p[order]
        if t.size and t[0] < self._last_t:
            start = int(np.searchsorted(t, self._last_t, side="left"))
            if self.stats.out_of_order == 0:
                self.stats.note(
                    f"{self.path}: events earlier than t={self._last_t:.6f}, already delivered, dropped"
                )
            self.stats.out_of_order += start
            t, x, y, p = t[start:], x[start:], y[start:], p[start:]
        if t.size:
            self._last_t = float(t[-1])
        self.stats.events += int(t.size)
        return EventPacket(t, x, y, p, self.width, self.height)

    def _count_dropped(self, t: np.ndarray, finite: np.ndarray, inside: np.ndarray) -> None:
        outside = finite & ~inside
        n_outside = int(np.count_nonzero(outside))
        n_nonfinite = t.size - int(np.count_nonzero(finite))
        if n_outside:
            if self.stats.out_of_bounds == 0:
                self.stats.note(
                    f"{self.path}: events outside the {self.width}x{self.height} sensor dropped "
                    f"(first at t={t[outside][0]:.6f})"
                )
            self.stats.out_of_bounds += n_outside
        if n_nonfinite:
            self.stats.malformed += n_nonfinite
            self.stats.note(f"{self.path}: {n_nonfinite} events with non-finite timestamps dropped")


# ------------------------------------------------------------------------------------------------------
# re-cutting a stream of packets
# ------------------------------------------------------------------------------------------------------


class EventCursor:
    """Reads a time-ordered stream of packets forward, handing out pieces cut by time and/or count.

    Pulled packets are kept in a list and joined once when a cut needs them, so cutting is linear in
    the number of events whatever the sizes of the incoming packets and of the pieces.
    """

    def __init__(self, packets: Iterable[EventPacket], width: int, height: int) -> None:
        self._packets = iter(packets)
        self.width, self.height = width, height
        self._pending: list[EventPacket] = []  # the first one may be a remainder
        self._pending_events = 0
        self._exhausted = False

    def _pull(self) -> bool:
        for packet in self._packets:
            if len(packet):
                self._pending.append(packet)
                self._pending_events += len(packet)
                return True
        self._exhausted = True
        return False

    def _joined(self) -> EventPacket:
        if len(self._pending) > 1:
            self._pending = [concatenate_packets(self._pending, self.width, self.height)]
        return self._pending[0] if self._pending else empty_packet(self.width, self.height)

    @property
    def next_time(self) -> float | None:
        """Time of the next event, or None at the end of the stream."""
        if not self._pending and not self._pull():
            return None
        return float(self._pending[0].t[0])

    @property
    def exhausted(self) -> bool:
        return not self._pending and (self._exhausted or not self._pull())

    def take_until(self, t_end: float, inclusive: bool = False, max_events: int | None = None) -> EventPacket:
        """The next events with t < t_end (t <= t_end when ``inclusive``), at most ``max_events``."""
        while not self._exhausted:
            if self._pending:
                last = self._pending[-1].t[-1]
                if (last > t_end if inclusive else last >= t_end) or (
                    max_events is not None and self._pending_events >= max_events
                ):
                    break
            if not self._pull():
                break
        joined = self._joined()
        if not len(joined):
            return joined
        stop = int(np.searchsorted(joined.t, t_end, side="right" if inclusive else "left"))
        if max_events is not None:
            stop = min(stop, max_events)
        return self._cut(joined, stop)

    def take(self, n: int) -> EventPacket:
        """The next ``n`` events (fewer at the end of the stream)."""
        while not self._exhausted and self._pending_events < n:
            self._pull()
        return self._cut(self._joined(), n)

    def _cut(self, joined: EventPacket, stop: int) -> EventPacket:
        if stop >= len(joined):
            self._pending, self._pending_events = [], 0
            return joined
        self._pending = [_packet_slice(joined, stop, len(joined))]
        self._pending_events = len(joined) - stop
        return _packet_slice(joined, 0, stop)


def iter_slices(
    packets: Iterable[EventPacket],
    width: int,
    height: int,
    duration_s: float | None = None,
    max_events: int | None = None,
) -> Iterator[EventPacket]:
    """Cut a time-ordered stream into consecutive slices.

    * ``duration_s`` only: windows [t0 + k·d, t0 + (k+1)·d) from the first event's time t0, empty
      windows included (so slice k always covers the same interval); ``timestamp`` is the window's end.
    * ``max_events`` only: ``max_events`` events per slice (the last may hold fewer); ``timestamp`` is
      the time of the slice's last event.
    * both: a window is split further so that no slice holds more than ``max_events`` events.

    ``index`` counts the slices from 0.
    """
    if duration_s is None and max_events is None:
        raise ValueError("iter_slices needs duration_s or max_events")
    if duration_s is not None and not duration_s > 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s}")
    if max_events is not None and max_events < 1:
        raise ValueError(f"max_events must be >= 1, got {max_events}")
    cursor = EventCursor(packets, width, height)
    index = 0
    if duration_s is None:
        while not cursor.exhausted:
            piece = cursor.take(max_events)
            piece.timestamp, piece.index = float(piece.t[-1]), index
            index += 1
            yield piece
        return
    t0 = cursor.next_time
    if t0 is None:
        return
    window = 0
    while not cursor.exhausted:
        t_end = t0 + (window + 1) * duration_s  # from t0, not accumulated, so windows do not drift
        piece = cursor.take_until(t_end, max_events=max_events)
        piece.timestamp, piece.index = t_end, index
        index += 1
        yield piece
        next_time = cursor.next_time
        if next_time is None or next_time >= t_end:
            window += 1
