"""Trajectory error metrics: Umeyama alignment, absolute trajectory error (ATE) and relative pose error (RPE).

The definitions follow evo (``evo_ape`` / ``evo_rpe``, https://github.com/MichaelGrupp/evo) so that the
figures agree with it on the same inputs:

* ATE is evo's APE with ``-r trans_part`` (its default): the distance between estimated and reference
  camera positions after the optional Umeyama alignment of the estimate onto the reference.
* RPE uses evo's relative error ``E = (Q_i⁻¹ Q_j)⁻¹ (P_i⁻¹ P_j)`` (Q reference, P estimate); the
  translation error is ``‖trans(E)‖`` in metres, the rotation error the angle of ``rot(E)`` in degrees.
  Pairs are chosen like evo's ``filters.filter_pairs_by_index`` (``unit="frames"``) and
  ``filters.filter_pairs_by_path`` (``unit="meters"``), from the estimate's poses unless
  ``pairs_from_reference`` is set (evo's default and its ``--pairs_from_reference`` flag).
* ``unit="seconds"`` is this project's extension (evo has no time-based RPE): see :func:`rpe_pairs`.

Inputs that are not yet paired pose-for-pose are associated by timestamp first (:func:`pair_up`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy.spatial.transform import Rotation

from slam.core.geometry import invert_pose
from slam.core.trajectory import Trajectory, TrajectoryError, associate

__all__ = [
    "ATEResult",
    "Alignment",
    "ErrorStats",
    "RPEResult",
    "align_trajectory",
    "ate",
    "pair_up",
    "rpe",
    "rpe_pairs",
    "umeyama_alignment",
]

AlignMode = Literal["none", "se3", "sim3"]
DeltaUnit = Literal["frames", "meters", "seconds"]
ALIGN_MODES = ("none", "se3", "sim3")
DELTA_UNITS = ("frames", "meters", "seconds")
# Timestamps such as index / 30 are not exact in binary; 1 ns of slack keeps t_j - t_i >= delta from
# missing a pair over a rounding error.
TIME_EPS = 1e-9


# ------------------------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class ErrorStats:
    """Summary of an error array (same statistics as evo: std is the population std)."""

    rmse: float
    mean: float
    median: float
    std: float
    min: float
    max: float
    sse: float
    n: int

    @classmethod
    def from_errors(cls, errors: np.ndarray) -> ErrorStats:
        errors = np.asarray(errors, dtype=np.float64)
        if errors.size == 0:
            raise ValueError("no errors to summarise")
        sq = errors**2
        return cls(
            rmse=float(np.sqrt(np.mean(sq))),
            mean=float(np.mean(errors)),
            median=float(np.median(errors)),
            std=float(np.std(errors)),
            min=float(np.min(errors)),
            max=float(np.max(errors)),
            sse=float(np.sum(sq)),
            n=int(errors.size),
        )

    def as_dict(self, suffix: str = "") -> dict[str, float | int]:
        """The statistics as a flat dict; ``suffix`` is appended to every key but ``n`` (e.g. ``"_m"``)."""
        keys = ("rmse", "mean", "median", "std", "min", "max", "sse")
        out: dict[str, float | int] = {f"{k}{suffix}": getattr(self, k) for k in keys}
        out["n"] = self.n
        return out


# ------------------------------------------------------------------------------------------- alignment


def umeyama_alignment(
    src: np.ndarray, dst: np.ndarray, with_scale: bool = False
) -> tuple[np.ndarray, np.ndarray, float]:
    """Least-squares similarity (Umeyama 1991) mapping points ``src`` (N×3) onto ``dst`` (N×3).

    Returns ``(R, t, s)`` minimising ``Σ ‖dst_i − (s R src_i + t)‖²``; ``s`` is 1 unless ``with_scale``.
    Raises ValueError for mismatched shapes or a degenerate configuration (all points on a line or
    coincident), as evo does.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2:
        raise ValueError(f"point sets must have the same (N, dim) shape, got {src.shape} and {dst.shape}")
    n, dim = src.shape
    if n == 0:
        raise ValueError("cannot align empty point sets")
    mean_src = src.mean(axis=0)
    mean_dst = dst.mean(axis=0)
    src_c = src - mean_src
    dst_c = dst - mean_dst
    var_src = float(np.sum(src_c**2)) / n
    cov = dst_c.T @ src_c / n
    u, d, vt = np.linalg.svd(cov)
    # Rank test as numpy's matrix_rank (relative tolerance); evo's absolute eps misses collinear input.
    if np.count_nonzero(d > d.max() * max(n, dim) * np.finfo(d.dtype).eps) < dim - 1:
        raise ValueError("degenerate point configuration (collinear or coincident): cannot align")
    sign = np.eye(dim)
    if np.linalg.det(u) * np.linalg.det(vt) < 0.0:
        sign[-1, -1] = -1.0
    rot = u @ sign @ vt
    scale = float(np.trace(np.diag(d) @ sign) / var_src) if with_scale else 1.0
    trans = mean_dst - scale * rot @ mean_src
    return rot, trans, scale


@dataclass(frozen=True)
class Alignment:
    """A similarity ``x ↦ s R x + t`` applied to an estimate (identity for mode ``"none"``)."""

    rotation: np.ndarray
    translation: np.ndarray
    scale: float = 1.0
    mode: str = "none"

    @classmethod
    def identity(cls) -> Alignment:
        return cls(np.eye(3), np.zeros(3), 1.0, "none")

    @property
    def matrix(self) -> np.ndarray:
        """The 4×4 Sim(3) matrix ``[[sR, t], [0, 1]]``."""
        out = np.eye(4)
        out[:3, :3] = self.scale * self.rotation
        out[:3, 3] = self.translation
        return out

    def apply(self, traj: Trajectory) -> Trajectory:
        """Transform every pose: position ``s R p + t``, orientation ``R R_p`` (rotations stay proper)."""
        poses = traj.poses.copy()
        poses[:, :3, :3] = self.rotation @ traj.poses[:, :3, :3]
        poses[:, :3, 3] = self.scale * traj.positions @ self.rotation.T + self.translation
        return Trajectory(traj.timestamps.copy(), poses, traj.name, traj.has_timestamps)


def _check_mode(align: str) -> None:
    if align not in ALIGN_MODES:
        raise ValueError(f"align must be one of {', '.join(ALIGN_MODES)}, not {align!r}")


def align_trajectory(
    est: Trajectory, ref: Trajectory, mode: AlignMode = "se3"
) -> tuple[Trajectory, Alignment]:
    """Align ``est`` onto ``ref`` (already paired pose-for-pose) by their positions.

    ``mode`` is ``"none"`` (identity), ``"se3"`` (rotation + translation, ``evo -a``) or ``"sim3"``
    (plus scale, ``evo -as``). Returns the aligned copy of ``est`` and the :class:`Alignment` used.
    """
    _check_mode(mode)
    if len(est) != len(ref):
        raise ValueError(f"cannot align {len(est)} poses to {len(ref)}: pair the trajectories first")
    if mode == "none":
        return Alignment.identity().apply(est), Alignment.identity()
    rot, trans, scale = umeyama_alignment(est.positions, ref.positions, with_scale=mode == "sim3")
    alignment = Alignment(rot, trans, scale, mode)
    return alignment.apply(est), alignment


# ------------------------------------------------------------------------------------------- pairing


def pair_up(
    ref: Trajectory, est: Trajectory, max_diff: float = 0.01, offset: float = 0.0
) -> tuple[Trajectory, Trajectory]:
    """Make ``ref`` and ``est`` correspond pose-for-pose.

    Trajectories with identical timestamps (and ``offset`` 0) are used as they are. If either has no
    timestamps (KITTI without a times file) they are paired by index and must have the same length; the
    one without timestamps then takes the other's.
    Otherwise :func:`~slam.core.trajectory.associate` matches them by nearest timestamp, like evo.
    """
    if not (ref.has_timestamps and est.has_timestamps):
        if len(ref) != len(est):
            which = ref if not ref.has_timestamps else est
            raise TrajectoryError(
                f"{which.label} has no timestamps, so poses are paired by index, but {ref.label} has "
                f"{len(ref)} poses and {est.label} {len(est)}; give a times file or trim the trajectories"
            )
        # Paired by index, pose k of one is pose k of the other: share the real timestamps if one has them.
        if ref.has_timestamps:
            est = Trajectory(ref.timestamps.copy(), est.poses, est.name, True)
        elif est.has_timestamps:
            ref = Trajectory(est.timestamps.copy(), ref.poses, ref.name, True)
        return ref, est
    if offset == 0.0 and len(ref) == len(est) and np.array_equal(ref.timestamps, est.timestamps):
        return ref, est
    return associate(ref, est, max_diff=max_diff, offset=offset)


# ------------------------------------------------------------------------------------------- ATE


@dataclass
class ATEResult:
    """Absolute trajectory error (translation part, metres) over ``n`` paired poses."""

    rmse: float
    mean: float
    median: float
    std: float
    min: float
    max: float
    sse: float
    n: int
    align: str
    errors: np.ndarray = field(repr=False)
    ref: Trajectory = field(repr=False)
    est_aligned: Trajectory = field(repr=False)
    alignment: Alignment = field(repr=False)

    @property
    def scale(self) -> float:
        return self.alignment.scale

    @property
    def stats(self) -> ErrorStats:
        return ErrorStats(self.rmse, self.mean, self.median, self.std, self.min, self.max, self.sse, self.n)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary: ``{"metric": "ate", "align": …, "rmse_m": …, …, "n": …, "scale": …}``."""
        return {"metric": "ate", "align": self.align, **self.stats.as_dict("_m"), "scale": self.scale}


def ate(
    ref: Trajectory,
    est: Trajectory,
    align: AlignMode = "none",
    *,
    max_diff: float = 0.01,
    offset: float = 0.0,
) -> ATEResult:
    """Absolute trajectory error of ``est`` against ``ref``, like ``evo_ape ref est -r trans_part [-a|-as]``.

    The trajectories are paired first (:func:`pair_up`: timestamp association within ``max_diff`` s,
    ``offset`` added to ``est``'s timestamps), then ``est`` is aligned with ``align``
    (``"none"``/``"se3"``/``"sim3"``), and the error of each pose is ``‖p_est − p_ref‖`` in metres.
    """
    _check_mode(align)
    ref_p, est_p = pair_up(ref, est, max_diff, offset)
    aligned, alignment = align_trajectory(est_p, ref_p, align)
    errors = np.linalg.norm(aligned.positions - ref_p.positions, axis=1)
    s = ErrorStats.from_errors(errors)
    return ATEResult(
        s.rmse, s.mean, s.median, s.std, s.min, s.max, s.sse, s.n, align, errors, ref_p, aligned, alignment
    )


# ------------------------------------------------------------------------------------------- RPE


def _pairs_by_index(n: int, delta: int, all_pairs: bool) -> np.ndarray:
    if all_pairs:
        i = np.arange(max(n - delta, 0))
        return np.stack([i, i + delta], axis=1)
    ids = np.arange(0, n, delta)
    return np.stack([ids[:-1], ids[1:]], axis=1)


def _pairs_by_path(positions: np.ndarray, delta: float, tol: float, all_pairs: bool) -> np.ndarray:
    if all_pairs:
        # evo: for each i, the j > i whose travelled distance from i is nearest to delta (first on ties),
        # kept if within tol. Evaluated in blocks of rows with the same float operations.
        dist = np.concatenate([[0.0], np.cumsum(np.linalg.norm(positions[:-1] - positions[1:], axis=1))])
        n = dist.size
        out = []
        block = max(1, 1_000_000 // max(n, 1))
        cols = np.arange(n)
        for start in range(0, n - 1, block):
            rows = np.arange(start, min(start + block, n - 1))
            gap = np.abs((dist[None, :] - dist[rows, None]) - delta)
            gap[cols[None, :] <= rows[:, None]] = np.inf
            best = np.argmin(gap, axis=1)
            ok = gap[np.arange(rows.size), best] <= tol
            out.append(np.stack([rows[ok], best[ok]], axis=1))
        return np.concatenate(out) if out else np.zeros((0, 2), dtype=np.int64)
    # evo: walk the path, start a new pair each time the distance since the last start reaches delta.
    steps = np.linalg.norm(np.diff(positions, axis=0), axis=1).tolist()
    ids = [0]
    travelled = 0.0
    for i, step in enumerate(steps, start=1):
        travelled += step
        if travelled >= delta:
            ids.append(i)
            travelled = 0.0
    ids_arr = np.asarray(ids)
    return np.stack([ids_arr[:-1], ids_arr[1:]], axis=1)


def _pairs_by_time(stamps: np.ndarray, delta: float, all_pairs: bool) -> np.ndarray:
    n = stamps.size
    # First j with t_j - t_i >= delta (minus TIME_EPS); j == n means none.
    nxt = np.searchsorted(stamps, stamps + (delta - TIME_EPS), side="left")
    nxt = np.maximum(nxt, np.arange(n) + 1)  # j > i even for delta <= 0
    if all_pairs:
        i = np.flatnonzero(nxt < n)
        return np.stack([i, nxt[i]], axis=1)
    ids = [0]
    while nxt[ids[-1]] < n:
        ids.append(int(nxt[ids[-1]]))
    ids_arr = np.asarray(ids)
    return np.stack([ids_arr[:-1], ids_arr[1:]], axis=1)


def rpe_pairs(
    traj: Trajectory,
    delta: float = 1,
    unit: DeltaUnit = "frames",
    all_pairs: bool = False,
    rel_delta_tol: float = 0.1,
) -> np.ndarray:
    """Index pairs (K×2, i < j) over which the relative error is measured.

    * ``"frames"``: like evo's ``filter_pairs_by_index``: (0, d), (d, 2d), … or, with ``all_pairs``,
      every (i, i + d).
    * ``"meters"``: like evo's ``filter_pairs_by_path``: walking along the path, a pair ends (and the
      next begins) at the first pose where the distance travelled since the pair's start reaches
      ``delta``; with ``all_pairs``, for every i the j whose path distance from i is nearest to
      ``delta``, kept if within ``delta * rel_delta_tol``.
    * ``"seconds"`` (our extension, not in evo): j is the first index with ``t_j − t_i ≥ delta`` (1 ns
      of slack for rounding). Consecutive mode chains the pairs like the other units, (0, j₁), (j₁, j₂),
      …; ``all_pairs`` takes such a pair for every i that has one. A gap in the timestamps makes a pair
      longer than ``delta``. Needs real timestamps.
    """
    n = len(traj)
    if unit == "frames":
        if float(delta) != int(delta) or int(delta) < 1:
            raise ValueError(f"delta must be a positive integer for unit 'frames', got {delta}")
        pairs = _pairs_by_index(n, int(delta), all_pairs)
    elif unit == "meters":
        if delta <= 0:
            raise ValueError(f"delta must be positive, got {delta}")
        pairs = _pairs_by_path(traj.positions, float(delta), float(delta) * rel_delta_tol, all_pairs)
    elif unit == "seconds":
        if delta <= 0:
            raise ValueError(f"delta must be positive, got {delta}")
        if not traj.has_timestamps:
            raise ValueError(
                f"{traj.label} has no timestamps: RPE per seconds needs them (give a times file)"
            )
        pairs = _pairs_by_time(traj.timestamps, float(delta), all_pairs)
    else:
        raise ValueError(f"unit must be one of {', '.join(DELTA_UNITS)}, not {unit!r}")
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)


@dataclass
class RPEResult:
    """Relative pose error: translation statistics in metres, rotation statistics in degrees."""

    trans: ErrorStats
    rot: ErrorStats
    delta: float
    unit: str
    all_pairs: bool
    align: str
    pairs: np.ndarray = field(repr=False)
    trans_errors: np.ndarray = field(repr=False)
    rot_errors: np.ndarray = field(repr=False)
    alignment: Alignment = field(repr=False)

    @property
    def n(self) -> int:
        return self.trans.n

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary with ``trans_*_m`` and ``rot_*_deg`` keys."""
        trans = {f"trans_{k}": v for k, v in self.trans.as_dict("_m").items() if k != "n"}
        rot = {f"rot_{k}": v for k, v in self.rot.as_dict("_deg").items() if k != "n"}
        return {
            "metric": "rpe",
            "delta": self.delta,
            "unit": self.unit,
            "all_pairs": self.all_pairs,
            "align": self.align,
            **trans,
            **rot,
            "n": self.n,
        }


def rpe(
    ref: Trajectory,
    est: Trajectory,
    delta: float = 1,
    unit: DeltaUnit = "frames",
    all_pairs: bool = False,
    *,
    align: AlignMode = "none",
    pairs_from_reference: bool = False,
    rel_delta_tol: float = 0.1,
    max_diff: float = 0.01,
    offset: float = 0.0,
) -> RPEResult:
    """Relative pose error of ``est`` against ``ref``, like ``evo_rpe ref est -r {trans_part,angle_deg}
    -d delta -u {f,m}``.

    The trajectories are paired (:func:`pair_up`), ``est`` is optionally aligned (only ``"sim3"``
    changes the result: its scale), pairs are chosen by :func:`rpe_pairs` on the estimate (or on the
    reference with ``pairs_from_reference``), and for each pair (i, j)
    ``E = (Q_i⁻¹ Q_j)⁻¹ (P_i⁻¹ P_j)``. Raises ValueError when ``delta`` yields no pair (e.g. a
    trajectory shorter than one second for ``delta=1, unit="seconds"``).
    """
    _check_mode(align)
    ref_p, est_p = pair_up(ref, est, max_diff, offset)
    est_a, alignment = align_trajectory(est_p, ref_p, align)
    pairs = rpe_pairs(ref_p if pairs_from_reference else est_a, delta, unit, all_pairs, rel_delta_tol)
    if pairs.shape[0] == 0:
        raise ValueError(
            f"delta = {delta} ({unit}) gives no pose pairs over {len(est_a)} poses: use a smaller delta"
        )
    i, j = pairs[:, 0], pairs[:, 1]
    q_rel = invert_pose(ref_p.poses[i]) @ ref_p.poses[j]
    p_rel = invert_pose(est_a.poses[i]) @ est_a.poses[j]
    err = invert_pose(q_rel) @ p_rel
    trans_errors = np.linalg.norm(err[:, :3, 3], axis=1)
    # scipy's angle (via quaternion) is accurate near 0 where arccos((tr R − 1)/2) loses digits; it is
    # also what evo uses, so the figures agree to the last digits.
    rot_errors = np.degrees(Rotation.from_matrix(err[:, :3, :3]).magnitude())
    return RPEResult(
        trans=ErrorStats.from_errors(trans_errors),
        rot=ErrorStats.from_errors(rot_errors),
        delta=float(delta),
        unit=unit,
        all_pairs=all_pairs,
        align=align,
        pairs=pairs,
        trans_errors=trans_errors,
        rot_errors=rot_errors,
        alignment=alignment,
    )
