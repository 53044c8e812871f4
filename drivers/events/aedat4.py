"""AEDAT 4 files (iniVation DV): events, APS frames and IMU samples, decoded with numpy.

The container: the magic line ``#!AER-DAT4.0\\r\\n``, a little-endian u32 length and an ``IOHE``
flatbuffer (compression, the offset of the trailing file-data table, and an XML description of the
streams: id, type identifier, sensor size), then packets of ``[i32 stream id][i32 size][payload]``
up to that table. A payload is an LZ4- or Zstd-compressed (or plain), size-prefixed flatbuffer whose
4-character identifier is the stream's type: ``EVTS`` (a vector of 16-byte event structs: int64 t µs,
int16 x, int16 y, bool polarity), ``FRME`` (one frame table), ``IMUS`` (a vector of IMU tables),
``TRIG`` (triggers) and others that DV modules define.

Why not the PyPI decoders: ``aedat`` 2.3 rejects a whole file at open when one stream has a type it
does not know ("unsupported stream type"), so a recording with, say, a pose stream could not be read
at all; ``dv-processing`` (a 58 MB wheel) skips such streams but refuses a truncated file at open,
losing everything in it. This reader decodes the three stream types SLAM uses, skips every other
stream (counted in ``stats.skipped_streams`` by type, with a warning for types it does not know), and
on a truncated file delivers every complete packet and drops the last, partial one (counted in
``stats.truncated_bytes``, the message naming the file and offset). The tests check it against the
``aedat`` package on the shared DAVIS346 recording.
"""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drivers.events.reader import EventFileError, EventReader
from drivers.events.samples import STANDARD_GRAVITY, ApsFrame
from slam.core.frames import ImuSamples

MAGIC = b"#!AER-DAT4.0\r\n"
DECODED_TYPES = ("EVTS", "FRME", "IMUS")
KNOWN_TYPES = (*DECODED_TYPES, "TRIG")  # TRIG: known, not used by SLAM: skipped without a warning
COMPRESSION = {0: "none", 1: "lz4", 2: "lz4", 3: "zstd", 4: "zstd"}

# the Event struct: int64 t, int16 x, int16 y, bool on, padded to 8-byte alignment
EVENT_DTYPE = np.dtype([("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("on", "u1")], align=True)
# IMU table fields in schema order: t, temperature, accelerometer xyz (g), gyroscope xyz (°/s), magnetometer xyz (µT)
IMU_FIELDS = 11
# frame formats (OpenCV type codes): channels and bytes per channel
FRAME_FORMATS = {0: (1, 1), 2: (1, 2), 16: (3, 1), 18: (3, 2), 24: (4, 1), 26: (4, 2)}


@dataclass(frozen=True)
class StreamInfo:
    """One stream the file's description declares."""

    id: int
    type: str  # 4-character flatbuffer identifier
    name: str  # originalOutputName, e.g. "events", "frames", "imu"
    width: int | None
    height: int | None


# ------------------------------------------------------------------------------------------------------
# flatbuffers: just what these schemas need
# ------------------------------------------------------------------------------------------------------


class _Table:
    """A flatbuffer table at ``pos`` of ``buf``: typed access to its fields by index."""

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf, self.pos = buf, pos
        self.vtable = pos - struct.unpack_from("<i", buf, pos)[0]
        self.vtable_size = struct.unpack_from("<H", buf, self.vtable)[0]

    def _offset(self, field: int) -> int:
        at = 4 + 2 * field
        return struct.unpack_from("<H", self.buf, self.vtable + at)[0] if at < self.vtable_size else 0

    def scalar(self, field: int, fmt: str, default: int | float = 0) -> int | float:
        offset = self._offset(field)
        return struct.unpack_from(fmt, self.buf, self.pos + offset)[0] if offset else default

    def vector(self, field: int) -> tuple[int, int]:
        """(position of the first element, element count); (0, 0) when absent."""
        offset = self._offset(field)
        if not offset:
            return 0, 0
        at = self.pos + offset
        start = at + struct.unpack_from("<I", self.buf, at)[0]
        return start + 4, struct.unpack_from("<I", self.buf, start)[0]

    def string(self, field: int) -> str:
        start, n = self.vector(field)
        return self.buf[start : start + n].decode("utf-8", errors="replace")


def _gather(buf: np.ndarray, offsets: np.ndarray, dtype: str) -> np.ndarray:
    """Values of ``dtype`` at arbitrary byte offsets of ``buf``, vectorised."""
    size = np.dtype(dtype).itemsize
    return buf[offsets[:, None] + np.arange(size)].copy().view(dtype)[:, 0]


def _vector_of_tables(buf: bytes, start: int, n: int, fields: list[tuple[int, str]]) -> list[np.ndarray]:
    """Decode ``fields`` [(index, dtype)] of the n tables of a flatbuffer vector at once (missing = 0)."""
    data = np.frombuffer(buf, np.uint8)
    slots = start + 4 * np.arange(n)
    tables = slots + _gather(data, slots, "<u4").astype(np.int64)
    vtables = tables - _gather(data, tables, "<i4").astype(np.int64)
    vtable_sizes = _gather(data, vtables, "<u2").astype(np.int64)
    out = []
    for index, dtype in fields:
        at = 4 + 2 * index
        present = vtable_sizes > at
        offsets = np.where(present, _gather(data, np.where(present, vtables + at, vtables), "<u2"), 0)
        values = _gather(data, tables + offsets.astype(np.int64), dtype)
        out.append(np.where(offsets > 0, values, 0))
    return out


# ------------------------------------------------------------------------------------------------------
# the container
# ------------------------------------------------------------------------------------------------------


def _decompressor(compression: str, path: Path):
    if compression == "none":
        return lambda data: data
    if compression == "lz4":
        import lz4.frame

        return lz4.frame.decompress
    try:
        from compression import zstd  # Python >= 3.14
    except ImportError:
        try:
            from backports import zstd
        except ImportError as exc:
            raise EventFileError(f"{path}: Zstd-compressed; install backports.zstd to read it") from exc
    return zstd.decompress


def _parse_streams(description: str, path: Path) -> dict[int, StreamInfo]:
    try:
        root = ET.fromstring(description)
    except ET.ParseError as exc:
        raise EventFileError(f"{path}: the stream description is not valid XML: {exc}") from exc
    out_info = next((n for n in root.iter("node") if n.get("name") == "outInfo"), None)
    if out_info is None:
        raise EventFileError(f"{path}: the stream description has no outInfo node")
    streams = {}
    for node in out_info.findall("node"):
        attrs = {a.get("key"): (a.text or "") for a in node.iter("attr")}
        try:
            stream_id = int(node.get("name", ""))
        except ValueError:
            raise EventFileError(f"{path}: stream node {node.get('name')!r} has no numeric id") from None
        size_x, size_y = attrs.get("sizeX"), attrs.get("sizeY")
        streams[stream_id] = StreamInfo(
            stream_id,
            attrs.get("typeIdentifier", "?"),
            attrs.get("originalOutputName", ""),
            int(size_x) if size_x else None,
            int(size_y) if size_y else None,
        )
    if not streams:
        raise EventFileError(f"{path}: the stream description declares no stream")
    return streams


@dataclass
class _Header:
    streams: dict[int, StreamInfo]
    compression: str
    data_start: int
    data_end: int  # where the packets end (the file-data table, or the end of the file)


def read_header(path: Path) -> _Header:
    with open(path, "rb") as f:
        magic = f.read(len(MAGIC))
        if magic != MAGIC:
            raise EventFileError(f"{path}: not an AEDAT 4 file (magic {magic[:14]!r})")
        raw_length = f.read(4)
        if len(raw_length) < 4:
            raise EventFileError(f"{path}: truncated inside the header")
        length = struct.unpack("<I", raw_length)[0]
        buf = f.read(length)
        size = f.seek(0, 2)
    if len(buf) < length:
        raise EventFileError(f"{path}: truncated inside the header ({len(buf)} of {length} bytes)")
    try:
        if buf[4:8] != b"IOHE":
            raise ValueError(f"identifier {buf[4:8]!r}, expected b'IOHE'")
        table = _Table(buf, struct.unpack_from("<I", buf, 0)[0])
        compression_code = int(table.scalar(0, "<i", 0))
        data_table = int(table.scalar(1, "<q", -1))
        description = table.string(2)
    except (struct.error, ValueError) as exc:
        raise EventFileError(f"{path}: unreadable header: {exc}") from exc
    if compression_code not in COMPRESSION:
        raise EventFileError(f"{path}: unknown compression code {compression_code}")
    data_start = len(MAGIC) + 4 + length
    data_end = data_table if data_table > 0 else size
    return _Header(_parse_streams(description, path), COMPRESSION[compression_code], data_start, data_end)


class Aedat4Reader(EventReader):
    """An AEDAT 4 file: ``chunks``/``iter_slices`` give its events, ``iter_frames`` its APS frames and
    ``iter_imu`` its IMU samples; each is a pass over the file that skips the other streams' packets.

    ``stream``: the event stream's id or name when the file has several (default: the first ``EVTS``).
    ``stats`` describe the latest pass.
    """

    format = "aedat4"

    def __init__(
        self,
        path: str | Path,
        width: int | None = None,
        height: int | None = None,
        stream: int | str | None = None,
    ) -> None:
        super().__init__(path, width, height)
        self.header = read_header(self.path)
        self.streams = self.header.streams
        self._decompress = _decompressor(self.header.compression, self.path)
        self.event_stream = self._pick("EVTS", stream)
        if self.event_stream is not None:
            self.width = self.width or self.event_stream.width
            self.height = self.height or self.event_stream.height

    def _pick(self, type_id: str, wanted: int | str | None) -> StreamInfo | None:
        matching = [s for s in sorted(self.streams.values(), key=lambda s: s.id) if s.type == type_id]
        if wanted is None:
            return matching[0] if matching else None
        for s in matching:
            if wanted in (s.id, s.name, str(s.id)):
                return s
        names = ", ".join(f"{s.id} ({s.name})" for s in matching) or "none"
        raise EventFileError(f"{self.path}: no {type_id} stream {wanted!r}; the file has: {names}")

    # -- packets ---------------------------------------------------------------------------------------

    def _packets(self, wanted: set[int]) -> Iterator[tuple[int, bytes, int]]:
        """(stream id, decompressed payload, file offset) of the packets of ``wanted`` streams, in file
        order; other packets are skipped unread and counted."""
        warned: set[str] = set()
        end = self.header.data_end
        with open(self.path, "rb") as f:
            f.seek(self.header.data_start)
            size = f.seek(0, 2)
            f.seek(self.header.data_start)
            while (offset := f.tell()) < end:
                head = f.read(8)
                if len(head) == 0:  # every packet is complete, but the file-data table is missing
                    self.stats.note(
                        f"{self.path}: ends at byte {offset}, before its file-data table at {end}"
                    )
                    return
                stream_id, length = struct.unpack("<ii", head) if len(head) == 8 else (-1, 0)
                if len(head) < 8 or length < 0 or offset + 8 + length > size:
                    self._truncated(offset, size)
                    return
                if stream_id not in wanted:
                    self._skip(stream_id, offset, warned)
                    f.seek(length, 1)
                    continue
                payload = self._payload(f.read(length), stream_id, offset)
                if payload is not None:
                    yield stream_id, payload, offset

    def _truncated(self, offset: int, size: int) -> None:
        self.stats.truncated_bytes += size - offset
        self.stats.note(
            f"{self.path}: truncated: the packet at byte {offset} is incomplete; "
            f"its {size - offset} bytes dropped"
        )

    def _skip(self, stream_id: int, offset: int, warned: set[str]) -> None:
        """Count a packet this pass does not read, if no pass of this reader reads its stream."""
        info = self.streams.get(stream_id)
        if info is not None and info.type in DECODED_TYPES:
            return  # events, frames or IMU: another pass reads them
        key = info.type if info is not None else f"undeclared stream {stream_id}"
        self.stats.skipped_streams[key] = self.stats.skipped_streams.get(key, 0) + 1
        if key in warned or key in KNOWN_TYPES:
            return
        warned.add(key)
        what = f"stream {stream_id} of unknown type {key!r}" if info is not None else key
        self.stats.note(f"{self.path}: packets of {what} skipped (first at byte {offset})")

    def _payload(self, raw: bytes, stream_id: int, offset: int) -> bytes | None:
        expected = self.streams[stream_id].type
        try:
            data = self._decompress(raw)
            if data[8:12] != expected.encode():
                raise ValueError(f"payload identifier {data[8:12]!r}, expected {expected!r}")
        except Exception as exc:  # noqa: BLE001 - any decoder failure: this packet is corrupt
            self.stats.malformed += 1
            self.stats.note(
                f"{self.path}: packet at byte {offset} (stream {stream_id}) undecodable, dropped: {exc}"
            )
            return None
        return data

    @staticmethod
    def _root(payload: bytes) -> _Table:
        # size-prefixed flatbuffer: [u32 size][u32 root offset][identifier]...
        return _Table(payload, 4 + struct.unpack_from("<I", payload, 4)[0])

    # -- events ----------------------------------------------------------------------------------------

    def _decode_chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        if self.event_stream is None:
            raise EventFileError(f"{self.path}: the file has no event (EVTS) stream")
        for _, payload, offset in self._packets({self.event_stream.id}):
            try:
                start, n = self._root(payload).vector(0)
                events = np.frombuffer(payload, EVENT_DTYPE, count=n, offset=start)
            except (struct.error, ValueError) as exc:
                self.stats.malformed += 1
                self.stats.note(f"{self.path}: event packet at byte {offset} malformed, dropped: {exc}")
                continue
            yield events["t"] * 1e-6, events["x"], events["y"], events["on"]

    # -- frames and IMU --------------------------------------------------------------------------------

    def iter_frames(self, stream: int | str | None = None) -> Iterator[ApsFrame]:
        """The APS frames of the first ``FRME`` stream (or of ``stream``), in file order."""
        info = self._pick("FRME", stream)
        if info is None:
            return
        self.stats = type(self.stats)()
        for index, (_, payload, offset) in enumerate(self._packets({info.id})):
            try:
                yield self._frame(payload, index)
            except (struct.error, ValueError) as exc:
                self.stats.malformed += 1
                self.stats.note(f"{self.path}: frame packet at byte {offset} malformed, dropped: {exc}")

    def _frame(self, payload: bytes, index: int) -> ApsFrame:
        table = self._root(payload)
        fmt = int(table.scalar(5, "<b", 0))
        if fmt not in FRAME_FORMATS:
            raise ValueError(f"unknown frame format {fmt}")
        channels, depth = FRAME_FORMATS[fmt]
        width, height = int(table.scalar(6, "<h")), int(table.scalar(7, "<h"))
        start, n = table.vector(10)
        if n != width * height * channels * depth:
            raise ValueError(
                f"{n} pixel bytes for a {width}x{height}x{channels} frame of {depth}-byte values"
            )
        pixels = np.frombuffer(payload, np.uint8 if depth == 1 else "<u2", count=n // depth, offset=start)
        shape = (height, width) if channels == 1 else (height, width, channels)
        return ApsFrame(
            timestamp=table.scalar(0, "<q") * 1e-6,
            image=pixels.reshape(shape).copy(),
            exposure_begin=table.scalar(3, "<q") * 1e-6,
            exposure_end=table.scalar(4, "<q") * 1e-6,
            offset_x=int(table.scalar(8, "<h")),
            offset_y=int(table.scalar(9, "<h")),
            index=index,
        )

    def iter_imu(self, stream: int | str | None = None) -> Iterator[ImuSamples]:
        """The IMU samples of the first ``IMUS`` stream (or of ``stream``), one batch per packet, in SI
        units (the file stores g and °/s)."""
        info = self._pick("IMUS", stream)
        if info is None:
            return
        self.stats = type(self.stats)()
        fields = [(0, "<i8")] + [(k, "<f4") for k in range(1, IMU_FIELDS)]
        for _, payload, offset in self._packets({info.id}):
            try:
                start, n = self._root(payload).vector(0)
                t, temperature, *xyz = _vector_of_tables(payload, start, n, fields)
            except (struct.error, ValueError, IndexError) as exc:
                self.stats.malformed += 1
                self.stats.note(f"{self.path}: IMU packet at byte {offset} malformed, dropped: {exc}")
                continue
            accel = np.stack(xyz[0:3], axis=1).astype(np.float64) * STANDARD_GRAVITY
            gyro = np.deg2rad(np.stack(xyz[3:6], axis=1).astype(np.float64))
            yield ImuSamples.same_clock(
                t * 1e-6, accel, gyro, temperature.astype(np.float64), np.stack(xyz[6:9], axis=1)
            )

    def read_imu(self, stream: int | str | None = None) -> ImuSamples:
        """Every IMU sample of the file in one batch."""
        batches = list(self.iter_imu(stream))
        if not batches:
            return ImuSamples.same_clock(np.empty(0), np.empty((0, 3)), np.empty((0, 3)))
        return ImuSamples.same_clock(
            np.concatenate([b.t for b in batches]),
            np.concatenate([b.accel for b in batches]),
            np.concatenate([b.gyro for b in batches]),
            np.concatenate([b.temperature for b in batches]),
            np.concatenate([b.magnetometer for b in batches]),
        )


def describe(path: str | Path) -> list[StreamInfo]:
    """The streams an AEDAT 4 file declares (for `slam`-side tooling and error messages)."""
    return sorted(read_header(Path(path)).streams.values(), key=lambda s: s.id)
