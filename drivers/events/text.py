"""The Event Camera Dataset's text format (Mueggler et al., 2017): one event a line, ``t x y p``.

``t`` is seconds (a decimal), ``x``, ``y`` pixels and ``p`` polarity 0 / 1, separated by spaces. A first
line of exactly two integers (``width height``), which some converters write, is read as the sensor
size. A recording folder may also hold ``calib.txt`` (``fx fy cx cy k1 k2 p1 p2 k3``), ``images.txt``
(``t images/frame_NNNNNNNN.png``) and ``imu.txt`` (``t ax ay az gx gy gz``, m/s² and rad/s): see
``read_calibration``, ``read_image_index`` and ``read_imu``.

Parsing is vectorised over the bytes of a block of lines (``numpy.loadtxt`` and ``np.fromstring``
manage 1-1.5 M events/s here): token boundaries are the changes between whitespace and other bytes;
each column's tokens are read right-aligned as rows of a sliding-window view of the block's digit
values, and Horner's rule runs over the character positions, one vectorised step per position (the
timestamp's point skipped, its digits summed into an exact int64 mantissa then divided by a power of
ten: correctly rounded, so ``t`` is bit-identical to parsing the text as a float). Lines that do not
fit (wrong field count, signs, exponents, comments, a line cut short at the end of a truncated file)
go through a per-line slow path: parsed if they are valid numbers after all, else dropped, counted
and reported with their line number.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drivers.events.reader import EventFileError, EventReader
from slam.core.frames import ImuSamples

BLOCK_BYTES = 1 << 22  # 4 MiB of text per block (~230k events)
_POW10 = 10 ** np.arange(19, dtype=np.int64)
MAX_T_CHARS = 18  # characters of a timestamp the vectorised path reads (int64 holds 18 digits)
MAX_INT_CHARS = 6  # digits of x, y and p
_POINT = np.uint8((ord(".") - 48) % 256)  # a decimal point after subtracting b"0"
_PAD = MAX_T_CHARS  # zeros before a block's digit values: the widest token window


@dataclass
class ParsedBlock:
    t: np.ndarray
    x: np.ndarray
    y: np.ndarray
    p: np.ndarray
    bad_lines: np.ndarray  # indices (within the block) of the lines the fast path could not read
    n_lines: int


def _token_bounds(solid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) of every run of non-whitespace bytes, as int32."""
    padded = np.zeros(solid.size + 2, np.bool_)
    padded[1:-1] = solid
    edges = np.flatnonzero(padded[1:] != padded[:-1]).astype(np.int32)
    return edges[0::2], edges[1::2]


def _digit_values(raw: np.ndarray, solid: np.ndarray) -> np.ndarray:
    """byte - b'0' as uint8: 0-9 for digits, 0 for whitespace, > 9 (wrapped) for anything else;
    preceded by ``_PAD`` zeros so that reading left of any token stays inside the array."""
    values = np.zeros(raw.size + _PAD, np.uint8)
    body = values[_PAD:]
    np.subtract(raw, np.uint8(48), out=body)
    body *= solid
    return values


class _TokenDigits:
    """The tokens of one column right-aligned in an (n, width) matrix of digit values, read as rows of
    a sliding-window view (one row copy per token, no index matrix). ``column(k)`` is the k-th
    character from the right (1 = the last), 0 where a token is shorter than k: left of a token lie
    whitespace and the previous token."""

    def __init__(self, values: np.ndarray, starts: np.ndarray, ends: np.ndarray, max_width: int) -> None:
        self.lengths = ends - starts
        self.width = min(int(self.lengths.max()), max_width)
        self.shortest = int(self.lengths.min())
        windows = np.lib.stride_tricks.sliding_window_view(values, self.width)
        self.rows = windows[ends + (_PAD - self.width)]

    def column(self, k: int) -> np.ndarray:
        digits = self.rows[:, self.width - k]
        return digits * (self.lengths >= k) if k > self.shortest else digits


def _parse_uint(values: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unsigned integers of the tokens, and which tokens are not plain digits (or too long).
    Horner's rule from the right, one vectorised step per character position."""
    if starts.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.bool_)
    tokens = _TokenDigits(values, starts, ends, MAX_INT_CHARS)
    value = np.zeros(starts.size, np.int64)
    bad = tokens.lengths > MAX_INT_CHARS
    for k in range(1, tokens.width + 1):
        digit = tokens.column(k)
        bad |= digit > 9
        value += digit * _POW10[k - 1]
    return value, bad


def _parse_decimal(values: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative decimals (digits with at most one point) of the tokens, and which are not.

    The digits are summed into an exact int64 mantissa and divided by 10^(digits after the point):
    both exact, the division correctly rounded, so the result is the float nearest to the text."""
    if starts.size == 0:
        return np.empty(0, np.float64), np.empty(0, np.bool_)
    tokens = _TokenDigits(values, starts, ends, MAX_T_CHARS)
    bad = tokens.lengths > MAX_T_CHARS
    first = tokens.rows[0, tokens.width - tokens.lengths[0] :] if tokens.lengths[0] <= tokens.width else []
    point = [k for k in range(1, len(first) + 1) if first[len(first) - k] == _POINT]
    # the usual case: every timestamp has as many decimals as the first one
    if point and np.all(tokens.column(point[0]) == _POINT):
        mantissa = np.zeros(starts.size, np.int64)
        place = 0
        for k in range(1, tokens.width + 1):
            if k == point[0]:
                continue
            digit = tokens.column(k)
            bad |= digit > 9
            mantissa += digit * _POW10[place]
            place += 1
        return mantissa / float(_POW10[point[0] - 1]), bad
    return _parse_decimal_general(tokens, bad)


def _parse_decimal_general(tokens: _TokenDigits, bad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decimals with the point in any place, or none."""
    n = tokens.rows.shape[0]
    mantissa = np.zeros(n, np.int64)
    place = np.ones(n, np.int64)  # the place value of the next digit
    fraction_digits = np.zeros(n, np.int64)
    points = np.zeros(n, np.int64)
    for k in range(1, tokens.width + 1):
        digit = tokens.column(k)
        is_point = digit == _POINT
        points += is_point
        fraction_digits = np.where(is_point, k - 1, fraction_digits)
        digit = np.where(is_point, 0, digit)
        bad |= digit > 9
        mantissa += digit * place
        place = np.where(is_point, place, place * 10)
    bad |= points > 1
    return mantissa / _POW10[fraction_digits].astype(np.float64), bad


def parse_event_lines(block: bytes) -> ParsedBlock:
    """Parse complete ``t x y p`` lines (``block`` ends with a newline); see the module doc."""
    raw = np.frombuffer(block, np.uint8)
    newlines = np.flatnonzero(raw == 10)
    solid = raw > 32
    starts, ends = _token_bounds(solid)
    values = _digit_values(raw, solid)
    if starts.size == 4 * newlines.size and _four_tokens_per_line(starts, ends, newlines):
        line_ok = np.ones(newlines.size, np.bool_)
        columns = [(starts[k::4], ends[k::4]) for k in range(4)]
    else:
        line_ok, first_token = _lines_with_four_tokens(starts, newlines)
        first_token = first_token[line_ok]
        columns = [(starts[first_token + k], ends[first_token + k]) for k in range(4)]
    t, bad = _parse_decimal(values, *columns[0])
    ints = []
    for col_starts, col_ends in columns[1:]:
        value, bad_col = _parse_uint(values, col_starts, col_ends)
        ints.append(value)
        bad |= bad_col
    x, y, p = ints
    bad_lines = np.flatnonzero(~line_ok)
    if bad.any():
        bad_lines = np.sort(np.concatenate((bad_lines, np.flatnonzero(line_ok)[bad])))
        keep = ~bad
        t, x, y, p = t[keep], x[keep], y[keep], p[keep]
    return ParsedBlock(t, x, y, p, bad_lines, int(newlines.size))


def _four_tokens_per_line(starts: np.ndarray, ends: np.ndarray, newlines: np.ndarray) -> bool:
    """With 4·lines tokens: does every line hold exactly its four (tokens 4k..4k+3 inside line k)?"""
    line_start = np.concatenate(([-1], newlines[:-1]))
    return bool(np.all(starts[0::4] > line_start) and np.all(ends[3::4] <= newlines))


def _lines_with_four_tokens(starts: np.ndarray, newlines: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which lines hold exactly four tokens, and the index of each line's first token."""
    line_of_token = np.searchsorted(newlines, starts)
    counts = np.bincount(line_of_token, minlength=newlines.size)[: newlines.size]
    first_token = np.cumsum(counts) - counts
    return counts == 4, first_token


def _parse_line_slowly(line: bytes) -> tuple[float, int, int, int] | None:
    """One line the fast path could not read: a valid event after all, or None."""
    parts = line.split()
    if len(parts) != 4:
        return None
    try:
        t = float(parts[0])
        x, y, p = int(parts[1]), int(parts[2]), int(parts[3])
    except ValueError:
        return None
    return t, x, y, p


def _geometry_line(line: bytes) -> tuple[int, int] | None:
    parts = line.split()
    if len(parts) == 2 and all(part.isdigit() for part in parts):
        return int(parts[0]), int(parts[1])
    return None


class TextEventReader(EventReader):
    """``events.txt`` of the Event Camera Dataset (or a folder holding one), read in blocks of lines."""

    format = "text"

    def __init__(
        self,
        path: str | Path,
        width: int | None = None,
        height: int | None = None,
        block_bytes: int = BLOCK_BYTES,
    ) -> None:
        path = Path(path)
        if path.is_dir():
            path = path / "events.txt"
        super().__init__(path, width, height)
        self.block_bytes = int(block_bytes)
        with open(self.path, "rb") as f:
            geometry = _geometry_line(f.readline())
        self._skip_first_line = geometry is not None
        if geometry is not None:
            self.width = self.width or geometry[0]
            self.height = self.height or geometry[1]

    def _blocks(self) -> Iterator[bytes]:
        """Blocks of complete lines over the file."""
        with open(self.path, "rb") as f:
            if self._skip_first_line:
                f.readline()
            rest = b""
            while True:
                data = f.read(self.block_bytes)
                if not data:
                    break
                data = rest + data
                cut = data.rfind(b"\n") + 1
                if cut == 0:  # a line longer than a block: keep reading
                    rest = data
                    continue
                block, rest = data[:cut], data[cut:]
                yield block
            if rest.strip():  # the last line has no newline (a file cut short, or just no final newline)
                yield rest + b"\n"

    def _decode_chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        first_line = 2 if self._skip_first_line else 1
        for block in self._blocks():
            parsed = parse_event_lines(block)
            if parsed.bad_lines.size:
                yield self._with_slow_lines(first_line, block, parsed)
            else:
                yield parsed.t, parsed.x, parsed.y, parsed.p
            first_line += parsed.n_lines

    def _with_slow_lines(self, first_line: int, block: bytes, parsed: ParsedBlock) -> tuple[np.ndarray, ...]:
        """Merge the lines of ``bad_lines`` that parse after all back in file order; count the rest."""
        lines = block.split(b"\n")
        recovered: list[tuple[int, tuple[float, int, int, int]]] = []
        for index in parsed.bad_lines.tolist():
            line = lines[index]
            stripped = line.strip()
            if not stripped or stripped.startswith(b"#"):
                continue  # blank lines and comments are not errors
            event = _parse_line_slowly(line)
            if event is None:
                self.stats.malformed += 1
                self.stats.note(
                    f"{self.path}:{first_line + index}: not 't x y p', line dropped: {line[:60]!r}"
                )
            else:
                recovered.append((index, event))
        if not recovered:
            return parsed.t, parsed.x, parsed.y, parsed.p
        # put the recovered events back where their lines were
        bad = parsed.bad_lines
        good_index = np.setdiff1d(np.arange(len(lines) - 1), bad)
        order = np.argsort(np.concatenate((good_index, [i for i, _ in recovered])), kind="stable")
        extra = np.array([e for _, e in recovered], dtype=np.float64).T
        return tuple(
            np.concatenate((column, extra[k].astype(column.dtype)))[order]
            for k, column in enumerate((parsed.t, parsed.x, parsed.y, parsed.p))
        )


# ------------------------------------------------------------------------------------------------------
# the other files of an Event Camera Dataset recording
# ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventCalibration:
    """``calib.txt``: pinhole intrinsics and radial-tangential distortion (k1, k2, p1, p2, k3)."""

    fx: float
    fy: float
    cx: float
    cy: float
    distortion: tuple[float, ...]


def read_calibration(path: str | Path) -> EventCalibration:
    path = Path(path)
    try:
        values = [float(v) for v in path.read_text().split()]
    except (OSError, ValueError) as exc:
        raise EventFileError(f"{path}: cannot read the calibration: {exc}") from exc
    if len(values) not in (4, 8, 9):
        raise EventFileError(f"{path}: expected 'fx fy cx cy [k1 k2 p1 p2 [k3]]', got {len(values)} numbers")
    return EventCalibration(*values[:4], tuple(values[4:]))


def _read_table(path: Path, columns: int, what: str) -> np.ndarray:
    try:
        table = np.loadtxt(path, ndmin=2, comments="#")
    except (OSError, ValueError) as exc:
        raise EventFileError(f"{path}: cannot read the {what}: {exc}") from exc
    if table.size and table.shape[1] != columns:
        raise EventFileError(f"{path}: expected {columns} columns of {what}, got {table.shape[1]}")
    return table.reshape(-1, columns)


def read_imu(path: str | Path) -> ImuSamples:
    """``imu.txt``: ``t ax ay az gx gy gz`` (s, m/s², rad/s)."""
    table = _read_table(Path(path), 7, "IMU samples")
    return ImuSamples.same_clock(t=table[:, 0], accel=table[:, 1:4], gyro=table[:, 4:7])


def read_image_index(path: str | Path) -> tuple[np.ndarray, list[Path]]:
    """``images.txt``: timestamps and image paths (relative to the file's folder, made absolute)."""
    path = Path(path)
    times, files = [], []
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise EventFileError(f"{path}: cannot read the image index: {exc}") from exc
    for number, line in enumerate(lines, 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        try:
            if len(parts) != 2:
                raise ValueError(f"expected 't path', got {len(parts)} fields")
            times.append(float(parts[0]))
        except ValueError as exc:
            raise EventFileError(f"{path}:{number}: {exc}") from exc
        files.append(path.parent / parts[1])
    return np.array(times, dtype=np.float64), files
