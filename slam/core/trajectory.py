"""Trajectories: the :class:`Trajectory` container, TUM/KITTI readers and writers, timestamp association.

Poses are camera-to-world 4×4 float64 matrices. Readers fail with :class:`TrajectoryError` whose message
starts with ``file:line:`` so a bad file can be fixed without guessing.

File formats
------------
* TUM: one pose a line, ``t tx ty tz qx qy qz qw`` (whitespace separated, quaternion scalar last),
  lines starting with ``#`` are comments. Timestamps must be strictly increasing (see ``duplicates``).
* KITTI: one pose a line, the 12 numbers of the top 3×4 of the matrix, row-major, no timestamps. A
  separate times file (one number a line) gives timestamps; without one the pose index is used and
  :attr:`Trajectory.has_timestamps` is ``False``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from slam.core.geometry import pose_from_tum, pose_to_tum

__all__ = [
    "Trajectory",
    "TrajectoryError",
    "associate",
    "associate_indices",
    "read_kitti",
    "read_trajectory",
    "read_tum",
    "write_kitti",
    "write_tum",
]

TUM_COLUMNS = 8
KITTI_COLUMNS = 12

DuplicatePolicy = Literal["error", "keep", "first"]


class TrajectoryError(ValueError):
    """A trajectory file or trajectory pair that cannot be used; the message names the file (and line)."""


@dataclass
class Trajectory:
    """A sequence of camera-to-world poses.

    ``timestamps`` is float64 (N,), in seconds, or the pose index when ``has_timestamps`` is False (KITTI
    files read without a times file). ``poses`` is float64 (N, 4, 4). ``name`` is used in messages.
    """

    timestamps: np.ndarray
    poses: np.ndarray
    name: str | None = None
    has_timestamps: bool = True

    def __post_init__(self) -> None:
        self.timestamps = np.asarray(self.timestamps, dtype=np.float64).reshape(-1)
        poses = np.asarray(self.poses, dtype=np.float64)
        if poses.size == 0:
            poses = poses.reshape(0, 4, 4)
        if poses.ndim != 3 or poses.shape[1:] != (4, 4):
            raise TrajectoryError(f"{self.label}: poses must have shape (N, 4, 4), got {poses.shape}")
        if poses.shape[0] != self.timestamps.shape[0]:
            raise TrajectoryError(
                f"{self.label}: {self.timestamps.shape[0]} timestamps but {poses.shape[0]} poses"
            )
        self.poses = poses

    @property
    def label(self) -> str:
        return self.name or "trajectory"

    def __len__(self) -> int:
        return int(self.timestamps.shape[0])

    @property
    def positions(self) -> np.ndarray:
        """Camera centres in the world frame, (N, 3)."""
        return self.poses[:, :3, 3]

    def subset(self, indices: np.ndarray | Sequence[int]) -> Trajectory:
        """A copy holding only the poses at ``indices`` (repeats allowed), in that order."""
        idx = np.asarray(indices, dtype=np.int64)
        return Trajectory(self.timestamps[idx].copy(), self.poses[idx].copy(), self.name, self.has_timestamps)

    @classmethod
    def from_tum_array(cls, data: np.ndarray, name: str | None = None) -> Trajectory:
        """From an (N, 8) array of TUM rows ``t tx ty tz qx qy qz qw``."""
        data = np.atleast_2d(np.asarray(data, dtype=np.float64))
        return cls(data[:, 0].copy(), pose_from_tum(data[:, 1:8]), name)

    def to_tum_array(self) -> np.ndarray:
        """(N, 8) TUM rows ``t tx ty tz qx qy qz qw``."""
        if len(self) == 0:
            return np.zeros((0, 8))
        return np.concatenate([self.timestamps[:, None], pose_to_tum(self.poses)], axis=1)


# --------------------------------------------------------------------------------------------- reading


def _data_lines(path: Path) -> tuple[list[int], list[list[str]]]:
    """Line numbers (1-based) and whitespace-split fields of the non-comment, non-blank lines."""
    if not path.exists():
        raise TrajectoryError(f"{path}: file not found")
    if not path.is_file():
        raise TrajectoryError(f"{path}: not a regular file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TrajectoryError(f"{path}: not a text file ({exc.reason})") from None
    numbers: list[int] = []
    rows: list[list[str]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        numbers.append(lineno)
        rows.append(stripped.split())
    return numbers, rows


def _to_matrix(path: Path, numbers: list[int], rows: list[list[str]], ncols: int, what: str) -> np.ndarray:
    """Rows of strings to an (N, ncols) float64 array; errors name the first offending line."""
    for lineno, row in zip(numbers, rows, strict=True):
        if len(row) != ncols:
            raise TrajectoryError(f"{path}:{lineno}: expected {ncols} columns ({what}), found {len(row)}")
    try:
        data = np.array(rows, dtype=np.float64).reshape(len(rows), ncols)
    except ValueError:
        for lineno, row in zip(numbers, rows, strict=True):
            for field in row:
                try:
                    float(field)
                except ValueError:
                    raise TrajectoryError(f"{path}:{lineno}: not a number: {field!r}") from None
        raise  # pragma: no cover - numpy rejected something float() accepts
    bad = ~np.isfinite(data).all(axis=1)
    if bad.any():
        first = int(np.argmax(bad))
        raise TrajectoryError(f"{path}:{numbers[first]}: non-finite value (NaN or inf)")
    return data


def _check_increasing(
    path: Path, numbers: list[int], stamps: np.ndarray, duplicates: DuplicatePolicy
) -> None:
    diffs = np.diff(stamps)
    bad = diffs <= 0 if duplicates == "error" else diffs < 0
    if not bad.any():
        return
    k = int(np.argmax(bad))
    if diffs[k] < 0:
        raise TrajectoryError(
            f"{path}:{numbers[k + 1]}: timestamps not sorted: {float(stamps[k + 1])!r} comes after "
            f"{float(stamps[k])!r} (line {numbers[k]})"
        )
    raise TrajectoryError(
        f"{path}:{numbers[k + 1]}: duplicate timestamp {float(stamps[k + 1])!r} (also on line {numbers[k]}); "
        "pass duplicates='keep' (CLI: --duplicates keep) to keep both poses as evo does"
    )


def read_tum(path: str | Path, duplicates: DuplicatePolicy = "error") -> Trajectory:
    """Read a TUM trajectory file (``t tx ty tz qx qy qz qw`` a line, ``#`` comments).

    Timestamps must increase. Repeated timestamps are an error unless ``duplicates`` is ``"keep"`` (keep
    every pose, like evo does) or ``"first"`` (keep the first pose of each run of equal timestamps). Some
    published ground truth has them, e.g. TUM fr2/desk repeats 1311868229.5760.
    """
    if duplicates not in ("error", "keep", "first"):
        raise ValueError(f"duplicates must be 'error', 'keep' or 'first', not {duplicates!r}")
    path = Path(path)
    numbers, rows = _data_lines(path)
    if not rows:
        raise TrajectoryError(f"{path}: no poses (empty or only comments)")
    data = _to_matrix(path, numbers, rows, TUM_COLUMNS, "t tx ty tz qx qy qz qw")
    qnorm = np.linalg.norm(data[:, 4:8], axis=1)
    if (qnorm < 1e-12).any():
        first = int(np.argmax(qnorm < 1e-12))
        raise TrajectoryError(f"{path}:{numbers[first]}: zero quaternion")
    _check_increasing(path, numbers, data[:, 0], duplicates)
    if duplicates == "first":
        keep = np.concatenate([[True], np.diff(data[:, 0]) != 0])
        data = data[keep]
    return Trajectory.from_tum_array(data, name=str(path))


def _read_times(path: Path, count: int, poses_path: Path) -> np.ndarray:
    numbers, rows = _data_lines(path)
    data = _to_matrix(path, numbers, rows, 1, "one timestamp") if rows else np.zeros((0, 1))
    if data.shape[0] != count:
        raise TrajectoryError(f"{path}: {data.shape[0]} timestamps but {poses_path} has {count} poses")
    stamps = data[:, 0]
    _check_increasing(path, numbers, stamps, "error")
    return stamps


def read_kitti(path: str | Path, times: str | Path | None = None) -> Trajectory:
    """Read a KITTI pose file (12 numbers a line: row-major top 3×4 of the camera-to-world matrix).

    ``times`` is an optional file with one timestamp a line (KITTI ``times.txt``); without it the
    timestamps are the pose indices 0, 1, 2, … and ``has_timestamps`` is False. The matrices are kept as
    written (not re-orthonormalised), as evo does.
    """
    path = Path(path)
    numbers, rows = _data_lines(path)
    if not rows:
        raise TrajectoryError(f"{path}: no poses (empty or only comments)")
    data = _to_matrix(path, numbers, rows, KITTI_COLUMNS, "row-major 3x4 pose")
    poses = np.tile(np.eye(4), (data.shape[0], 1, 1))
    poses[:, :3, :4] = data.reshape(-1, 3, 4)
    if times is None:
        return Trajectory(np.arange(len(poses), dtype=np.float64), poses, str(path), has_timestamps=False)
    stamps = _read_times(Path(times), len(poses), path)
    return Trajectory(stamps, poses, str(path))


def _first_data_columns(path: Path) -> int:
    if not path.exists():
        raise TrajectoryError(f"{path}: file not found")
    if not path.is_file():
        raise TrajectoryError(f"{path}: not a regular file")
    try:
        with path.open(encoding="utf-8-sig") as handle:
            for line in handle:
                stripped = line.strip()
                if stripped and not stripped.startswith("#"):
                    return len(stripped.split())
    except UnicodeDecodeError as exc:
        raise TrajectoryError(f"{path}: not a text file ({exc.reason})") from None
    raise TrajectoryError(f"{path}: no poses (empty or only comments)")


def read_trajectory(
    path: str | Path,
    fmt: Literal["auto", "tum", "kitti"] = "auto",
    *,
    times: str | Path | None = None,
    duplicates: DuplicatePolicy = "error",
) -> Trajectory:
    """Read a TUM or KITTI trajectory. ``fmt="auto"`` looks at the first data line: 7 or 8 columns are
    read as TUM (which needs 8: a 7-column file gets the TUM reader's column error), 12 as KITTI.
    ``times`` only applies to KITTI files, ``duplicates`` only to TUM files (see :func:`read_tum`)."""
    path = Path(path)
    if fmt == "auto":
        ncols = _first_data_columns(path)
        if ncols in (7, 8):
            fmt = "tum"
        elif ncols == KITTI_COLUMNS:
            fmt = "kitti"
        else:
            raise TrajectoryError(
                f"{path}: cannot tell the format from {ncols} columns (TUM has 8: t tx ty tz qx qy qz qw; "
                "KITTI has 12)"
            )
    if fmt == "tum":
        if times is not None:
            raise TrajectoryError(f"{path}: a times file only applies to KITTI files, TUM has timestamps")
        return read_tum(path, duplicates=duplicates)
    if fmt == "kitti":
        return read_kitti(path, times)
    raise ValueError(f"fmt must be 'auto', 'tum' or 'kitti', not {fmt!r}")


# --------------------------------------------------------------------------------------------- writing


def write_tum(path: str | Path, traj: Trajectory, header: str | None = None) -> None:
    """Write ``traj`` as a TUM file; numbers are written in full (shortest repr that reads back exactly)."""
    rows = traj.to_tum_array()
    lines = [f"# {line}" for line in header.splitlines()] if header else []
    lines += ["# timestamp tx ty tz qx qy qz qw"]
    lines += [" ".join(map(repr, row)) for row in rows.tolist()]
    Path(path).write_text("\n".join(lines) + "\n")


def write_kitti(path: str | Path, traj: Trajectory) -> None:
    """Write ``traj`` as a KITTI pose file (timestamps are dropped; numbers written in full)."""
    flat = traj.poses[:, :3, :4].reshape(-1, 12)
    Path(path).write_text("".join(" ".join(map(repr, row)) + "\n" for row in flat.tolist()))


# ----------------------------------------------------------------------------------------- association


def associate_indices(
    stamps_1: np.ndarray, stamps_2: np.ndarray, max_diff: float = 0.01, offset_2: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """For each stamp of ``stamps_1``, the nearest stamp of ``stamps_2 + offset_2`` within ``max_diff``.

    Returns the matched indices into both arrays, in ``stamps_1`` order. Same rule and tie-breaks as
    evo's ``sync.matching_time_indices``: binary search when ``stamps_2`` is sorted (an exact tie between
    the neighbour before and after goes to the one before), nearest by brute force otherwise (first
    minimum). Several stamps of ``stamps_1`` may match the same stamp of ``stamps_2``.
    """
    s1 = np.asarray(stamps_1, dtype=np.float64).reshape(-1)
    s2 = np.asarray(stamps_2, dtype=np.float64).reshape(-1) + offset_2
    if s1.size == 0 or s2.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if not np.all(np.diff(s2) >= 0):
        idx1_parts, idx2_parts = [], []
        chunk = max(1, 2_000_000 // s2.size)
        for start in range(0, s1.size, chunk):
            block = s1[start : start + chunk]
            diffs = np.abs(s2[None, :] - block[:, None])
            best = np.argmin(diffs, axis=1)
            ok = diffs[np.arange(block.size), best] <= max_diff
            idx1_parts.append(np.flatnonzero(ok) + start)
            idx2_parts.append(best[ok])
        return np.concatenate(idx1_parts).astype(np.int64), np.concatenate(idx2_parts).astype(np.int64)

    in_range = (s1 >= s2[0] - max_diff) & (s1 <= s2[-1] + max_diff)
    upper = np.minimum(np.searchsorted(s2, s1, side="right"), s2.size - 1)
    diff_ub = s2[upper] - s1
    diff_lb = np.where(upper > 0, s1 - s2[np.maximum(upper - 1, 0)], np.inf)
    take_ub = (diff_ub <= max_diff) & (diff_ub < diff_lb)
    take_lb = ~take_ub & (diff_lb <= max_diff) & (diff_lb <= diff_ub)
    ok = in_range & (take_ub | take_lb)
    best = np.where(take_ub, upper, upper - 1)
    return np.flatnonzero(ok).astype(np.int64), best[ok].astype(np.int64)


def associate(
    ref: Trajectory, est: Trajectory, max_diff: float = 0.01, offset: float = 0.0
) -> tuple[Trajectory, Trajectory]:
    """Pair up the poses of ``ref`` and ``est`` by nearest timestamp; returns copies of equal length.

    Mirrors evo's ``sync.associate_trajectories`` (nearest-time method) so the pairs are identical: every
    pose of the shorter trajectory (``est`` on equal length) looks for the nearest timestamp of the longer
    one within ``max_diff`` seconds, ``offset`` is added to ``est``'s timestamps for the matching only.
    Like evo, the matching is not strictly one-to-one: two poses of the shorter trajectory can take the
    same pose of the longer one. Raises :class:`TrajectoryError` when nothing matches.
    """
    second_longer = len(est) > len(ref)
    short, long_ = (ref, est) if second_longer else (est, ref)
    idx_short, idx_long = associate_indices(
        short.timestamps, long_.timestamps, max_diff, offset if second_longer else -offset
    )
    if idx_short.size == 0:
        raise TrajectoryError(
            f"no matching timestamps between {ref.label} and {est.label} with max. time difference "
            f"{max_diff} s and offset {offset} s"
        )
    short_sub, long_sub = short.subset(idx_short), long_.subset(idx_long)
    return (short_sub, long_sub) if second_longer else (long_sub, short_sub)
