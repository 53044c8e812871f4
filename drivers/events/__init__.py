"""Event cameras: readers for the common recording formats, an event-stream source, and the
synchronisation that attaches events to RGB-D frames.

    from drivers.events import open_event_reader
    reader = open_event_reader("recording.aedat4")            # or .txt, .raw (EVT 3.0), .h5
    for packet in reader.iter_slices(duration_s=0.01):       # slam.core.frames.EventPacket, time-ordered
        ...
    print(reader.stats)                                       # what was dropped, and why

Readers: ``text`` (Event Camera Dataset ``t x y p``), ``aedat4`` (iniVation DV; also APS frames and
IMU), ``evt3`` (Prophesee EVT 3.0 raw), ``hdf5`` (``events/{t,x,y,p}``). ``drivers.events.reader``
states the bad-input policy they share.
"""

from drivers.events.formats import detect_format, open_event_reader
from drivers.events.reader import EventCursor, EventFileError, EventReader, EventReadStats, iter_slices

__all__ = [
    "EventCursor",
    "EventFileError",
    "EventReadStats",
    "EventReader",
    "detect_format",
    "iter_slices",
    "open_event_reader",
]
