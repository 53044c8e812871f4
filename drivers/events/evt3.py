"""Prophesee EVT 3.0 raw files: an ASCII header of ``% key value`` lines, then little-endian 16-bit words.

The top 4 bits of a word are its type; the decoder is a state machine over them:

======  ==================  ==================================================================
type    name                payload (12 bits)
======  ==================  ==================================================================
0x0     EVT_ADDR_Y          y (11 bits); sets the row of the events that follow
0x2     EVT_ADDR_X          x (11 bits), polarity (bit 11): one event at (x, row) now
0x3     VECT_BASE_X         x (11 bits), polarity (bit 11): start of a vector of events
0x4     VECT_12             12-bit mask: events at base + i for each set bit i; base += 12
0x5     VECT_8              8-bit mask: events at base + i; base += 8
0x6     EVT_TIME_LOW        the low 12 bits of the 24-bit microsecond time
0x8     EVT_TIME_HIGH       the high 12 bits; the 24-bit time wraps every 16.78 s
0xA...  triggers, others    ignored here
======  ==================  ==================================================================

It is decoded without a Python loop per word: each piece of state (time high, time low, row, vector
base and polarity) is the payload of the latest word of its type, found for every word at once by
``np.maximum.accumulate`` over the indices of the words of that type; the running vector base adds the
cumulative sum of the 12/8 increments since its VECT_BASE_X. State carries over from one chunk to the
next, so a file is decoded in chunks of any size with the same result.

**Timestamps.** By the format, the time of an event is time_high·4096 + time_low (plus 2^24 per wrap of
time_high). The reference decoding shipped with the shared sample (``*.decoded.npy``) differs: it also
counts every *decrease* of time_low as a wrap into time_high. On that sample time_low dips by a few µs
about once per millisecond (0x32b → 0x320, 0x713 → 0x710, ...), so the reference adds 4096 µs there
and stretches an 8.8 ms recording to 54 ms, with three quarters of its 256 µs bins empty. Decoding by
the format gives a monotonic, gap-free 8.8 ms. ``time_low_wrap=True`` reproduces the reference exactly;
the default follows the format (x, y and polarity are the same either way).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drivers.events.reader import EventFileError, EventReader

WORDS_PER_CHUNK = 1 << 20  # 2 MiB of raw data per chunk (decoding temporaries are ~40x that)

EVT_ADDR_Y = 0x0
EVT_ADDR_X = 0x2
VECT_BASE_X = 0x3
VECT_12 = 0x4
VECT_8 = 0x5
EVT_TIME_LOW = 0x6
EVT_TIME_HIGH = 0x8
TWELVE_BITS = 1 << 12  # µs per time_high step, and time_high steps per wrap of the 24-bit time
# time_high going back by more than this is a wrap of the 24-bit time, not jitter
TIME_HIGH_WRAP_DROP = 1 << 11

# sensor generations named in headers that carry no explicit geometry
GEOMETRY_BY_SENSOR = {
    "gen41": (1280, 720),
    "imx636": (1280, 720),
    "imx646": (1280, 720),
    "gen31": (640, 480),
    "gen3": (640, 480),
    "imx648": (1280, 720),
    "genx320": (320, 320),
}


@dataclass
class RawHeader:
    """The ``% key value`` lines of a Prophesee raw file and where the binary data starts."""

    fields: dict[str, str]
    data_offset: int
    width: int | None
    height: int | None


def read_header(path: Path) -> RawHeader:
    """Parse the header lines; the geometry comes from ``geometry``, ``format`` or the sensor's name."""
    fields: dict[str, str] = {}
    offset = 0
    with open(path, "rb") as f:
        while True:
            line = f.readline()
            if not line.startswith(b"%"):
                break
            offset += len(line)
            text = line[1:].decode("ascii", errors="replace").strip()
            if text == "end":  # Metavision writes "% end" as the last header line
                break
            key, _, value = text.partition(" ")
            fields[key] = value.strip()
    version = fields.get("evt")
    fmt = fields.get("format", "")
    if version is not None and version != "3.0":
        raise EventFileError(f"{path}: header says evt {version}; only EVT 3.0 is decoded here")
    if fmt and not fmt.upper().startswith("EVT3"):
        raise EventFileError(f"{path}: header says format {fmt.split(';')[0]}; only EVT 3.0 is decoded here")
    width, height = _header_geometry(fields)
    return RawHeader(fields, offset, width, height)


def _header_geometry(fields: dict[str, str]) -> tuple[int | None, int | None]:
    match = re.fullmatch(r"(\d+)x(\d+)", fields.get("geometry", ""))
    if match:
        return int(match[1]), int(match[2])
    fmt = dict(part.split("=", 1) for part in fields.get("format", "").split(";") if "=" in part)
    if "width" in fmt and "height" in fmt:
        return int(fmt["width"]), int(fmt["height"])
    names = " ".join(fields.get(k, "") for k in ("plugin_name", "sensor_generation", "sensor_name")).lower()
    for name, size in GEOMETRY_BY_SENSOR.items():
        if re.search(rf"(^|[^a-z0-9]){name}([^a-z0-9.]|$)", names):
            return size
    return None, None


@dataclass
class DecoderState:
    """What an EVT 3.0 stream remembers between words; -1 means "not seen yet"."""

    time_high: int = -1  # last EVT_TIME_HIGH payload, wraps of the 24-bit time included (×4096 µs)
    time_high_raw: int = -1  # its 12-bit payload, to detect wraps
    time_low: int = 0  # last EVT_TIME_LOW payload
    time_low_raw: int = -1  # the same, -1 until one is seen (for time_low_wrap)
    time_low_wraps: int = 0  # decreases of time_low so far (time_low_wrap mode only)
    y: int = -1
    base_x: int = -1  # the next vector's first x (after the increments of earlier vectors)
    polarity: int = 0


_POPCOUNT = np.array([bin(v).count("1") for v in range(1 << 12)], dtype=np.int64)
# _NTH_SET_BIT[12 * mask + n]: the position of the n-th set bit (from bit 0) of a 12-bit mask
_NTH_SET_BIT = np.zeros((1 << 12, 12), dtype=np.int64)
for _mask in range(1 << 12):
    _bits = [b for b in range(12) if _mask >> b & 1]
    _NTH_SET_BIT[_mask, : len(_bits)] = _bits
_NTH_SET_BIT = _NTH_SET_BIT.ravel()


def _latest(mask: np.ndarray) -> np.ndarray:
    """For each word, the index of the latest word at or before it where ``mask`` holds, else -1."""
    return np.maximum.accumulate(np.where(mask, np.arange(mask.size, dtype=np.int32), np.int32(-1)))


def _fill_at(mask: np.ndarray, values: np.ndarray, initial: int, at: np.ndarray) -> np.ndarray:
    """At the words ``at``: ``values`` of the latest word where ``mask`` holds; ``initial`` before any."""
    latest = _latest(mask)[at]
    return np.where(latest >= 0, values[np.maximum(latest, 0)], initial)


class Evt3Decoder:
    """Decodes EVT 3.0 words chunk by chunk; ``decode`` returns (t µs int64, x, y, polarity) arrays."""

    def __init__(self, time_low_wrap: bool = False) -> None:
        self.time_low_wrap = time_low_wrap
        self.state = DecoderState()
        self.words_without_state = 0  # event words seen before the time, row or vector base was known

    def decode(self, words: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        words = np.asarray(words, dtype=np.uint16)
        if words.size == 0:
            empty = np.empty(0, np.int64)
            return empty, empty.astype(np.uint16), empty.astype(np.uint16), empty.astype(np.uint8)
        kind = words >> 12
        payload = (words & 0xFFF).astype(np.int64)
        is_x = kind == EVT_ADDR_X
        w = np.flatnonzero(is_x | (kind == VECT_12) | (kind == VECT_8))  # the event-producing words
        time = self._time(kind, payload, w)  # at w; advances the time part of the state
        is_y = kind == EVT_ADDR_Y
        row = _fill_at(is_y, payload & 0x7FF, self.state.y, w)
        if is_y.any():
            self.state.y = int(payload[np.flatnonzero(is_y)[-1]] & 0x7FF)
        base_x, base_pol = self._vector_bases(kind, payload)  # advances the vector part of the state
        base_x, base_pol = base_x[w], base_pol[w]
        complete = (time >= 0) & (row >= 0) & (is_x[w] | (base_x >= 0))
        self.words_without_state += int(w.size - np.count_nonzero(complete))
        if not complete.all():
            w, time, row, base_x, base_pol = (
                w[complete],
                time[complete],
                row[complete],
                base_x[complete],
                base_pol[complete],
            )
        return self._expand(kind[w], payload[w], time, row, base_x, base_pol)

    @staticmethod
    def _expand(
        kinds: np.ndarray,
        payloads: np.ndarray,
        time: np.ndarray,
        row: np.ndarray,
        base_x: np.ndarray,
        base_pol: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The events of the producing words (their kinds, payloads and state), in word order and,
        within a vector, in bit order.

        Every producing word is (first x, bit mask, polarity), a single event being mask 1 at its own
        x; ``np.repeat`` lays out one row per event and a table gives each event's bit in its mask."""
        single = kinds == EVT_ADDR_X
        mask = np.where(single, 1, np.where(kinds == VECT_12, payloads, payloads & 0xFF))
        first_x = np.where(single, payloads & 0x7FF, base_x)
        pol = np.where(single, payloads >> 11, base_pol)
        counts = _POPCOUNT[mask]
        starts = np.cumsum(counts) - counts
        rank = np.arange(int(counts.sum())) - np.repeat(starts, counts)  # which set bit of its word
        bit = _NTH_SET_BIT[np.repeat(mask * 12, counts) + rank]
        return (
            np.repeat(time, counts),
            (np.repeat(first_x, counts) + bit).astype(np.uint16),
            np.repeat(row, counts).astype(np.uint16),
            np.repeat(pol, counts).astype(np.uint8),
        )

    def _time(self, kind: np.ndarray, payload: np.ndarray, at: np.ndarray) -> np.ndarray:
        """Microseconds at the words ``at`` (-1 before the first EVT_TIME_HIGH); advances the time
        state to the end of the chunk."""
        s = self.state
        is_high = kind == EVT_TIME_HIGH
        high_raw = payload[is_high]
        previous = np.concatenate(([s.time_high_raw], high_raw[:-1]))
        wraps = np.cumsum((previous >= 0) & (previous - high_raw > TIME_HIGH_WRAP_DROP))
        wraps_before = s.time_high // TWELVE_BITS if s.time_high >= 0 else 0
        high_full = np.zeros(payload.size, np.int64)
        high_full[is_high] = high_raw + (wraps_before + wraps) * TWELVE_BITS
        high = _fill_at(is_high, high_full, s.time_high, at)
        is_low = kind == EVT_TIME_LOW
        low = _fill_at(is_low, payload, s.time_low, at)
        time = high * TWELVE_BITS + low
        if self.time_low_wrap:
            low_raw = payload[is_low]
            prev_low = np.concatenate(([s.time_low_raw], low_raw[:-1]))
            drops = np.zeros(payload.size, np.int64)
            drops[is_low] = (prev_low >= 0) & (low_raw < prev_low)
            low_wraps = s.time_low_wraps + np.cumsum(drops)
            time += low_wraps[at] * TWELVE_BITS
            s.time_low_wraps = int(low_wraps[-1])
        if high_raw.size:
            s.time_high, s.time_high_raw = int(high_full[np.flatnonzero(is_high)[-1]]), int(high_raw[-1])
        if is_low.any():
            s.time_low = s.time_low_raw = int(payload[np.flatnonzero(is_low)[-1]])
        return np.where(high >= 0, time, -1)

    def _vector_bases(self, kind: np.ndarray, payload: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per word: the first x a vector word there covers (-1 if no base yet) and the vector's
        polarity; advances the vector state. Only meaningful at vector words, and computed on the vector
        and VECT_BASE_X words alone, which are a small part of the stream."""
        s = self.state
        at = np.flatnonzero((kind >= VECT_BASE_X) & (kind <= VECT_8))
        sub_kind, sub_payload = kind[at], payload[at]
        step = np.where(sub_kind == VECT_12, 12, np.where(sub_kind == VECT_8, 8, 0))
        before = np.cumsum(step) - step  # increments of the vector words before this one
        latest = _latest(sub_kind == VECT_BASE_X)
        anchor = np.maximum(latest, 0)
        from_state = np.where(s.base_x >= 0, s.base_x + before, -1)
        sub_base = np.where(latest >= 0, (sub_payload[anchor] & 0x7FF) + before - before[anchor], from_state)
        sub_pol = np.where(latest >= 0, sub_payload[anchor] >> 11, s.polarity)
        base_x = np.full(kind.size, -1, np.int64)
        polarity = np.zeros(kind.size, np.int64)
        base_x[at], polarity[at] = sub_base, sub_pol
        if at.size and sub_base[-1] >= 0:  # the next chunk's vectors continue from here
            s.base_x, s.polarity = int(sub_base[-1] + step[-1]), int(sub_pol[-1])
        return base_x, polarity


class Evt3Reader(EventReader):
    """A Prophesee EVT 3.0 ``.raw`` file; the sensor size comes from the header when it says it."""

    format = "evt3"

    def __init__(
        self,
        path: str | Path,
        width: int | None = None,
        height: int | None = None,
        time_low_wrap: bool = False,
        words_per_chunk: int = WORDS_PER_CHUNK,
    ) -> None:
        super().__init__(path, width, height)
        self.header = read_header(self.path)
        self.width = self.width or self.header.width
        self.height = self.height or self.header.height
        self.time_low_wrap = time_low_wrap
        self.words_per_chunk = int(words_per_chunk)

    def decode_raw(self) -> np.ndarray:
        """The whole file decoded, unvalidated, as a structured array (t µs int64, x, y int16, p uint8):
        the layout of the reference ``.npy`` decodings."""
        parts = [np.rec.fromarrays(chunk, names="t,x,y,p") for chunk in self._decode_words()]
        dtype = np.dtype([("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "u1")], align=True)
        if not parts:
            return np.empty(0, dtype)
        joined = np.concatenate(parts)
        out = np.empty(joined.size, dtype)
        for name in dtype.names:
            out[name] = joined[name]
        return out

    def _decode_words(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        decoder = Evt3Decoder(self.time_low_wrap)
        with open(self.path, "rb") as f:
            f.seek(self.header.data_offset)
            while True:
                data = f.read(2 * self.words_per_chunk)
                if not data:
                    break
                if len(data) % 2:
                    self.stats.truncated_bytes += 1
                    self.stats.note(
                        f"{self.path}: truncated: odd number of data bytes, the last byte (offset "
                        f"{f.tell() - 1}) dropped"
                    )
                    data = data[:-1]
                yield decoder.decode(np.frombuffer(data, dtype="<u2"))
        if decoder.words_without_state:
            self.stats.malformed += decoder.words_without_state
            self.stats.note(
                f"{self.path}: {decoder.words_without_state} event words before the first time, row or "
                "vector base word dropped"
            )

    def _decode_chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        for t_us, x, y, p in self._decode_words():
            yield t_us * 1e-6, x, y, p
