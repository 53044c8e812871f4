"""Reading LiDAR files and per-point fields, with errors that name the file: KITTI ``.bin`` scans,
``.ply`` / ``.pcd`` clouds, timestamp lists, and the conversion of per-point time fields to seconds.

Non-finite points (NaN or inf in any field) are dropped and counted, never passed on; a scan left with
no point is a ``FrameDecodeError`` so that the sequence skips and counts it.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Literal

import numpy as np

from drivers.base import FrameDecodeError, SourceError

TimeUnit = Literal["auto", "s", "ms", "us", "ns"]
_UNIT_SECONDS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
# per-point times beyond this many seconds are absolute (epoch) times, not offsets within a sweep
ABSOLUTE_TIME_S = 1e6

#: names of per-point attributes, in the order they are looked for
TIME_FIELDS = ("t", "time", "timestamp", "timestamps", "time_stamp", "offset_time")
INTENSITY_FIELDS = ("intensity", "scalar_intensity", "reflectance", "i")
RING_FIELDS = ("ring", "channel", "line", "laser_id")

KITTI_BIN_FIELDS = 4  # float32 x y z intensity


def natural_key(path: Path) -> list:
    """Sort key that orders ``scan2`` before ``scan10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def finite_rows(*columns: np.ndarray | None) -> np.ndarray:
    """Mask of the rows where every given per-point array (N or N×k) is finite."""
    mask: np.ndarray | None = None
    for column in columns:
        if column is None:
            continue
        col = np.asarray(column)
        ok = np.isfinite(col) if col.ndim == 1 else np.isfinite(col).all(axis=1)
        mask = ok if mask is None else mask & ok
    if mask is None:
        raise ValueError("finite_rows needs at least one array")
    return mask


def read_kitti_bin(path: Path) -> np.ndarray:
    """A KITTI velodyne scan: N×4 float32 (x, y, z, intensity), little-endian."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise FrameDecodeError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    record = 4 * KITTI_BIN_FIELDS
    if len(raw) == 0:
        raise FrameDecodeError(f"{path}: empty scan (0 bytes)")
    if len(raw) % record:
        raise FrameDecodeError(
            f"{path}: truncated: {len(raw)} bytes is not a multiple of {record} (float32 x y z intensity)"
        )
    return np.frombuffer(raw, dtype="<f4").reshape(-1, KITTI_BIN_FIELDS)


def read_float32_sidecar(path: Path, count: int) -> np.ndarray:
    """One little-endian float32 per point (e.g. per-point times next to a KITTI scan)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise FrameDecodeError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if len(raw) != 4 * count:
        raise FrameDecodeError(
            f"{path}: {len(raw)} bytes, expected {4 * count} (one float32 for each of {count} points)"
        )
    return np.frombuffer(raw, dtype="<f4")


def read_point_cloud_file(path: Path) -> dict[str, np.ndarray]:
    """A ``.ply`` or ``.pcd`` file's per-point arrays by attribute name (``positions`` is N×3).

    Open3D reports an unreadable file by returning an empty cloud, so emptiness is the error signal; but
    it reads some broken files without complaint (a truncated binary PLY comes back zero-filled, a PCD
    header without POINTS as garbage of any size), so headers and sizes are checked first.
    """
    import open3d as o3d

    if not path.is_file():
        raise FrameDecodeError(f"{path}: file not found")
    check_point_cloud_header(path)
    cloud = o3d.t.io.read_point_cloud(str(path))
    if cloud.is_empty() or "positions" not in cloud.point:
        raise FrameDecodeError(f"{path}: no points (empty, truncated or not a point cloud)")
    out: dict[str, np.ndarray] = {}
    for name in cloud.point:
        values = cloud.point[name].numpy()
        out[name] = values[:, 0] if values.ndim == 2 and values.shape[1] == 1 else values
    return out


_PCD_REQUIRED = ("FIELDS", "SIZE", "TYPE", "POINTS", "DATA")
_PLY_SIZES = {
    "char": 1,
    "uchar": 1,
    "int8": 1,
    "uint8": 1,
    "short": 2,
    "ushort": 2,
    "int16": 2,
    "uint16": 2,
    "int": 4,
    "uint": 4,
    "int32": 4,
    "uint32": 4,
    "float": 4,
    "float32": 4,
    "double": 8,
    "float64": 8,
}
_HEADER_LIMIT = 65536


def _header_lines(path: Path, terminator: bytes) -> tuple[list[str], int, int]:
    """Header lines up to and including the first starting with ``terminator``, the header's size in
    bytes and the file's size."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(_HEADER_LIMIT)
    lines, offset = [], 0
    for raw in head.splitlines(keepends=True):
        offset += len(raw)
        line = raw.decode("ascii", errors="replace").strip()
        lines.append(line)
        if raw.lstrip().startswith(terminator):
            return lines, offset, size
    raise FrameDecodeError(
        f"{path}: header has no {terminator.decode()} line (truncated or not a point cloud)"
    )


def _check_pcd(path: Path) -> None:
    lines, header_bytes, size = _header_lines(path, b"DATA")
    fields = {}
    for line in lines:
        if line and not line.startswith("#"):
            key, *values = line.split()
            fields[key.upper()] = values
    missing = [key for key in _PCD_REQUIRED if key not in fields]
    if missing:
        raise FrameDecodeError(f"{path}: PCD header lacks {', '.join(missing)}")
    names, sizes = fields["FIELDS"], fields["SIZE"]
    counts = fields.get("COUNT", ["1"] * len(names))
    try:
        points = int(fields["POINTS"][0])
        row = sum(int(a) * int(b) for a, b in zip(sizes, counts, strict=True))
    except (ValueError, IndexError) as exc:
        raise FrameDecodeError(f"{path}: PCD header has bad POINTS, SIZE or COUNT ({exc})") from exc
    if len(fields["TYPE"]) != len(names) or points < 0:
        raise FrameDecodeError(f"{path}: PCD header: FIELDS, SIZE, TYPE and COUNT disagree")
    data = fields["DATA"][0].lower() if fields["DATA"] else ""
    if data == "binary" and size < header_bytes + points * row:
        raise FrameDecodeError(
            f"{path}: truncated: {points} points of {row} bytes need {header_bytes + points * row} bytes, "
            f"the file has {size}"
        )


def _check_ply(path: Path) -> None:
    lines, header_bytes, size = _header_lines(path, b"end_header")
    if not lines or lines[0] != "ply":
        raise FrameDecodeError(f"{path}: not a PLY file")
    binary = any(line.startswith("format binary") for line in lines)
    elements: list[tuple[str, int, int | None]] = []  # (name, count, row bytes or None if variable)
    for line in lines:
        parts = line.split()
        if parts[:1] == ["element"] and len(parts) == 3:
            elements.append((parts[1], int(parts[2]), 0))
        elif parts[:1] == ["property"] and elements:
            name, count, row = elements[-1]
            fixed = None if parts[1] == "list" or row is None else row + _PLY_SIZES.get(parts[1], 0)
            elements[-1] = (name, count, fixed)
    if not binary:
        return
    needed = header_bytes
    for _, count, row in elements:  # elements are stored in order: check up to the first variable one
        if row is None:
            break
        needed += count * row
    if size < needed:
        raise FrameDecodeError(f"{path}: truncated: the header describes {needed} bytes, the file has {size}")


def check_point_cloud_header(path: Path) -> None:
    """Reject a ``.pcd`` / ``.ply`` file whose header is incomplete or whose binary data is shorter
    than the header says."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".pcd":
            _check_pcd(path)
        elif suffix == ".ply":
            _check_ply(path)
    except OSError as exc:
        raise FrameDecodeError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    except ValueError as exc:
        raise FrameDecodeError(f"{path}: malformed header ({exc})") from exc


def first_present(names: tuple[str, ...], available) -> str | None:
    """The first of ``names`` (case-insensitive) that ``available`` holds, in its own spelling."""
    lower = {str(a).lower(): a for a in available}
    for name in names:
        if name in lower:
            return lower[name]
    return None


def point_times_seconds(
    values: np.ndarray, unit: TimeUnit = "auto", stamp: float | None = None, what: str = "point times"
) -> np.ndarray:
    """Per-point times (any numeric dtype) to float64 seconds relative to ``stamp``.

    ``unit="auto"``: floating-point values are seconds, integer values nanoseconds (Ouster's ``t``,
    Livox's ``offset_time``). Values beyond ``ABSOLUTE_TIME_S`` seconds are absolute times (Hesai,
    Robosense) and ``stamp`` (the scan's timestamp, seconds) is subtracted; smaller ones are offsets
    from the scan's timestamp already (Velodyne's ``time``, Ouster's ``t``).
    """
    values = np.asarray(values)
    if unit == "auto":
        unit = "s" if values.dtype.kind == "f" else "ns"
    if unit not in _UNIT_SECONDS:
        raise ValueError(f"{what}: unknown time unit {unit!r}; use one of auto, s, ms, us, ns")
    if values.dtype.kind in "iu":
        # integers: subtract the smallest value first so that float64 keeps full precision of epoch ns
        base = int(values.min()) if values.size else 0
        offsets = (values.astype(np.int64) - base).astype(np.float64) * _UNIT_SECONDS[unit]
        seconds_base = base * _UNIT_SECONDS[unit]
    else:
        offsets = values.astype(np.float64) * _UNIT_SECONDS[unit]
        seconds_base = 0.0
    absolute = values.size > 0 and abs(seconds_base + float(np.median(offsets))) > ABSOLUTE_TIME_S
    if not absolute:
        return offsets + seconds_base
    if stamp is None:
        raise ValueError(f"{what}: times are absolute (epoch) but the scan has no timestamp to refer them to")
    return offsets + (seconds_base - stamp)


def read_times_file(path: Path, count: int | None, what: str) -> np.ndarray:
    """A text file of one timestamp (seconds) a line, finite and increasing; ``count`` lines when given."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"{what}: cannot read {path} ({exc})") from exc
    stamps: list[float] = []
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        fields = stripped.split()
        try:
            value = float(fields[0]) if len(fields) == 1 else math.nan
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise SourceError(f"{what}: {path}:{number}: expected one finite number, got {stripped!r}")
        if stamps and value <= stamps[-1]:
            raise SourceError(
                f"{what}: {path}:{number}: timestamps must increase ({value} after {stamps[-1]})"
            )
        stamps.append(value)
    if count is not None and len(stamps) != count:
        raise SourceError(f"{what}: {path} has {len(stamps)} timestamps for {count} scans")
    return np.array(stamps, dtype=np.float64)
