"""Which reader reads a file: by the ``format`` named, else by suffix, else by the file's first bytes."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Literal

from drivers.events.reader import EventFileError, EventReader

EventFormat = Literal["auto", "text", "aedat4", "evt3", "hdf5"]

# format -> "module:Class"; imported on use, so h5py is loaded only for HDF5 files
READERS = {
    "text": "drivers.events.text:TextEventReader",
    "aedat4": "drivers.events.aedat4:Aedat4Reader",
    "evt3": "drivers.events.evt3:Evt3Reader",
    "hdf5": "drivers.events.hdf5:Hdf5EventReader",
}
SUFFIXES = {
    ".txt": "text",
    ".aedat4": "aedat4",
    ".raw": "evt3",
    ".h5": "hdf5",
    ".hdf5": "hdf5",
    ".hdf": "hdf5",
}
MAGICS = ((b"#!AER-DAT4.0", "aedat4"), (b"\x89HDF\r\n\x1a\n", "hdf5"), (b"%", "evt3"))


def detect_format(path: str | Path) -> str:
    path = Path(path)
    if path.is_dir():
        if (path / "events.txt").is_file():
            return "text"
        raise EventFileError(f"{path}: a folder without events.txt; name an event file")
    if not path.is_file():
        raise EventFileError(f"{path}: no such event file")
    if path.suffix.lower() in SUFFIXES:
        return SUFFIXES[path.suffix.lower()]
    with open(path, "rb") as f:
        head = f.read(16)
    for magic, name in MAGICS:
        if head.startswith(magic):
            return name
    raise EventFileError(
        f"{path}: cannot tell the event format from the name or the first bytes; "
        f"say which ({', '.join(READERS)})"
    )


def open_event_reader(path: str | Path, format: EventFormat = "auto", **options: Any) -> EventReader:
    """The reader for ``path``; ``options`` go to the reader (width, height, time_low_wrap, ...)."""
    name = detect_format(path) if format == "auto" else format
    if name not in READERS:
        raise EventFileError(f"{path}: unknown event format {name!r}; known: {', '.join(READERS)}")
    module_name, _, class_name = READERS[name].partition(":")
    reader_class = getattr(importlib.import_module(module_name), class_name)
    try:
        return reader_class(path, **options)
    except TypeError as exc:  # an option the format does not take
        raise EventFileError(f"{path}: {name} reader: {exc}") from exc
