"""HDF5 event files in the common layout: a group (``events`` by default) holding equally long 1-D
datasets ``t``, ``x``, ``y`` and ``p``, read in slices of rows so a file larger than memory streams.

Time unit: integer ``t`` is microseconds and floating ``t`` is seconds unless ``time_unit`` says
otherwise; a scalar or 1-element ``t_offset`` dataset at the root or in the group (DSEC stores one, in
µs) is added. The sensor size is taken from ``width``/``height`` attributes of the group or the file
(or a ``sensor_resolution`` / ``resolution`` pair, (width, height)) when not given.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np

from drivers.events.reader import EventFileError, EventReader

ROWS_PER_CHUNK = 1 << 21
FIELDS = ("t", "x", "y", "p")
SECONDS_PER_UNIT = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


def _import_h5py():
    try:
        import h5py
    except ImportError as exc:  # a core dependency; only a broken install gets here
        raise EventFileError("reading HDF5 event files needs h5py: pip install h5py") from exc
    return h5py


def _attribute_geometry(*nodes) -> tuple[int | None, int | None]:
    for node in nodes:
        attrs = node.attrs
        if "width" in attrs and "height" in attrs:
            return int(attrs["width"]), int(attrs["height"])
        for key in ("sensor_resolution", "resolution"):
            if key in attrs and len(attrs[key]) == 2:
                return int(attrs[key][0]), int(attrs[key][1])
    return None, None


class Hdf5EventReader(EventReader):
    """``events/{t,x,y,p}`` in an HDF5 file (the group name is ``group``)."""

    format = "hdf5"

    def __init__(
        self,
        path: str | Path,
        width: int | None = None,
        height: int | None = None,
        group: str = "events",
        time_unit: Literal["auto", "s", "ms", "us", "ns"] = "auto",
        rows_per_chunk: int = ROWS_PER_CHUNK,
    ) -> None:
        super().__init__(path, width, height)
        self.group = group
        self.rows_per_chunk = int(rows_per_chunk)
        h5py = _import_h5py()
        try:
            with h5py.File(self.path, "r") as f:
                self._inspect(f, time_unit)
        except OSError as exc:  # h5py reports truncation and non-HDF5 files as OSError
            raise EventFileError(f"{self.path}: cannot open as HDF5: {exc}") from exc

    def _inspect(self, f, time_unit: str) -> None:
        if self.group not in f:
            raise EventFileError(
                f"{self.path}: no group {self.group!r} (has: {', '.join(f.keys()) or 'nothing'})"
            )
        group = f[self.group]
        missing = [name for name in FIELDS if name not in group]
        if missing:
            raise EventFileError(f"{self.path}: {self.group}/ lacks dataset(s) {', '.join(missing)}")
        lengths = {name: group[name].shape for name in FIELDS}
        if any(len(shape) != 1 for shape in lengths.values()) or len({s[0] for s in lengths.values()}) != 1:
            described = ", ".join(f"{self.group}/{k}{v}" for k, v in lengths.items())
            raise EventFileError(f"{self.path}: the event datasets must be 1-D and equally long: {described}")
        self.n_events = lengths["t"][0]
        t_kind = group["t"].dtype.kind
        if time_unit == "auto":
            time_unit = "us" if t_kind in "iu" else "s"
        if time_unit not in SECONDS_PER_UNIT:
            raise EventFileError(f"{self.path}: unknown time_unit {time_unit!r}")
        self.seconds_per_unit = SECONDS_PER_UNIT[time_unit]
        self.t_offset = 0
        for node in (group, f):
            if "t_offset" in node:
                self.t_offset = int(np.asarray(node["t_offset"][()]).reshape(-1)[0])
                break
        width, height = _attribute_geometry(group, f)
        self.width = self.width or width
        self.height = self.height or height

    def _decode_chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        h5py = _import_h5py()
        with h5py.File(self.path, "r") as f:
            group = f[self.group]
            for start in range(0, self.n_events, self.rows_per_chunk):
                stop = min(start + self.rows_per_chunk, self.n_events)
                try:
                    t, x, y, p = (group[name][start:stop] for name in FIELDS)
                except OSError as exc:  # a damaged chunk: drop these rows, go on
                    self.stats.malformed += stop - start
                    self.stats.note(
                        f"{self.path}: rows {start}-{stop} of {self.group}/ unreadable, dropped: {exc}"
                    )
                    continue
                if t.dtype.kind in "iu":
                    # integers: add the offset exactly before converting, so µs survive large offsets
                    seconds = (t.astype(np.int64) + self.t_offset) * self.seconds_per_unit
                else:
                    seconds = (t.astype(np.float64) + self.t_offset) * self.seconds_per_unit
                yield seconds, x, y, p
