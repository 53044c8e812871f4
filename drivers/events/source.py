"""The event stream of a recording as a ``Source`` (registered as ``events``): one ``EventPacket`` per
slice of ``slice_s`` seconds (or of ``max_events`` events), in time order.

``first``/``last``/``stride`` select slices by index. What the reader dropped, and why, is in
``stats`` (``drivers.events.reader.EventReadStats``) after iterating.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from drivers.base import Source, SourceError
from drivers.events.formats import EventFormat, open_event_reader
from drivers.events.reader import EventFileError, EventReadStats
from slam.core.frames import EventPacket

DEFAULT_SLICE_S = 0.01


class EventSource(Source):
    name = "events"
    sensor = "events"

    def __init__(
        self,
        path: Path,
        first: int = 0,
        last: int | None = None,
        stride: int = 1,
        format: EventFormat = "auto",
        slice_s: float | None = DEFAULT_SLICE_S,
        max_events: int | None = None,
        **reader_options: Any,
    ) -> None:
        """``reader_options``: width, height (text files need them), time_low_wrap (EVT 3.0), stream
        (AEDAT 4), group and time_unit (HDF5)."""
        super().__init__()
        if first < 0 or stride < 1 or (last is not None and last < first):
            raise SourceError(f"events: bad slice selection first={first} last={last} stride={stride}")
        if slice_s is None and max_events is None:
            raise SourceError("events: give slice_s or max_events")
        self.first, self.last, self.stride = first, last, stride
        self.slice_s, self.max_events = slice_s, max_events
        try:
            self.reader = open_event_reader(path, format, **reader_options)
            self.reader.require_geometry()
        except EventFileError as exc:
            raise SourceError(str(exc)) from exc

    @property
    def stats(self) -> EventReadStats:
        return self.reader.stats

    def __iter__(self) -> Iterator[EventPacket]:
        slices = self.reader.iter_slices(self.slice_s, self.max_events)
        stop = None if self.last is None else self.last + 1
        yield from islice(slices, self.first, stop, self.stride)

    def close(self) -> None:
        self.reader.close()
