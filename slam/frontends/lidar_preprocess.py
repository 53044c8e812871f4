"""LiDAR scan preprocessing: range crop, deskew, ground segmentation and voxel downsampling.

Every step is vectorised over the points (numpy) or, where a profile of a 64 × 2048 replay showed it, one
compiled pass (numba, ``nogil``): voxel downsampling (a hash of the voxel keys instead of a sort of them:
~50 of a scan's ~90 ms of preprocessing) and the principal-component normals (``local_normals``). The numpy
versions stay as ``*_reference`` and the tests check that both agree; without numba they are used.

**Which instant a deskewed scan refers to.** A spinning LiDAR measures each point from the pose the
sensor had at that point's own time. :func:`deskew` re-expresses every point in the sensor frame at one
instant, which is the **end of the sweep** (the latest point time) unless told otherwise, as KISS-ICP
does. :func:`preprocess_scan` moves the scan's timestamp to that instant, so the pose estimated from a
deskewed scan is the pose at ``PreprocessedScan.timestamp`` and must be compared with ground truth at that
same instant (the generated sequence of ``drivers.sim.lidar_dataset`` stamps its scans and poses at the end
of each sweep for this reason).

**Constant velocity.** Deskewing needs the motion during the sweep; it is taken to be a recent relative
motion (``T_prev⁻¹ · T_curr`` over ``scan_period`` seconds; the tracker passes the last
``LidarConfig.deskew_window_s`` seconds of motion, which averages out the pose noise) continued at constant velocity:
the sensor pose at time τ relative to the reference instant is ``T_ref · exp(τ · ξ)`` with the body-frame
twist ``ξ = log(relative_motion) / scan_period``.

**Ground segmentation** (:func:`segment_ground`) works on sloped and uneven ground: the lowest point of
each small cell (``cell_size``) is a ground candidate; candidates are grouped into patches
(``patch_size``), and each patch gets its own plane, fitted by least squares while candidates lying above
the plane (car roofs, bushes, the foot of a wall seen from above) are trimmed away: the trimming band
shrinks each round and, in the first rounds, only points *above* the plane are dropped, since obstacles
are always above the ground. A patch whose plane is steeper than ``max_slope_deg`` is not ground. Points
within ``distance_threshold`` of their patch's plane are ground.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import Field, model_validator
from scipy.spatial import cKDTree

from slam.core.config import StrictConfig

try:
    import numba
except ImportError:  # pragma: no cover - numba is a dependency; the numpy references run without it
    numba = None
from slam.core.frames import LidarScan
from slam.core.geometry import apply_scaled_twist, se3_log
from slam.map.kernels import jit

# voxel and cell keys are packed into one int64: 21 bits a coordinate
_KEY_BITS = 21
_KEY_HALF = 1 << (_KEY_BITS - 1)


class GroundSegmentationConfig(StrictConfig):
    enabled: bool = Field(
        True, description="label ground points (they get their own handling in tracking and mapping)"
    )
    cell_size: float = Field(
        1.0, gt=0, description="side (m) of the cells whose lowest point is a ground candidate"
    )
    patch_size: float = Field(
        4.0,
        gt=0,
        description="side (m) of the patches that each get their own ground plane (a whole number of cells)",
    )
    distance_threshold: float = Field(
        0.2, gt=0, description="points within this distance (m) of their patch's plane are ground"
    )
    max_slope_deg: float = Field(
        25.0, gt=0, lt=90, description="a patch plane steeper than this (deg) is not ground"
    )
    iterations: int = Field(
        4, ge=1, description="plane fits per patch (each trims candidates above the plane)"
    )
    max_step: float = Field(
        0.4,
        ge=0,
        description="neighbouring ground patches meet within this height (m); higher ones (roofs, car tops) are "
        "not ground. 0 disables the check",
    )
    step_per_metre: float = Field(
        0.02, ge=0, description="extra height difference (m) allowed per metre of gap between ground patches"
    )
    seed_radius: float = Field(
        10.0,
        gt=0,
        description="ground grows outwards from the level patches within this distance (m) of the sensor",
    )
    trim_start: float = Field(
        1.0,
        gt=0,
        description="first trimming band (m) above the plane; halves each round down to distance_threshold",
    )

    @model_validator(mode="after")
    def _patch_holds_cells(self) -> GroundSegmentationConfig:
        if self.patch_size < self.cell_size:
            raise ValueError(f"patch_size ({self.patch_size}) must be >= cell_size ({self.cell_size})")
        return self


class LidarPreprocessConfig(StrictConfig):
    """How a LiDAR scan is prepared for tracking and mapping (``preprocess_scan``)."""

    min_range: float = Field(
        1.0, ge=0, description="drop points closer than this (m): the vehicle itself, rain, dust"
    )
    max_range: float = Field(100.0, gt=0, description="drop points farther than this (m)")
    voxel_size: float = Field(
        0.25, ge=0, description="keep one point per voxel of this side (m); 0 keeps every point"
    )
    deskew: bool = Field(
        True,
        description="motion-compensate with per-point times (when the scan has them) to the end of the sweep",
    )
    ground: GroundSegmentationConfig = Field(
        default_factory=GroundSegmentationConfig, description="ground segmentation"
    )

    @model_validator(mode="after")
    def _ranges_ordered(self) -> LidarPreprocessConfig:
        if self.max_range <= self.min_range:
            raise ValueError(f"max_range ({self.max_range}) must be > min_range ({self.min_range})")
        return self


# ------------------------------------------------------------------------------------------- range crop


def range_mask(points: np.ndarray, min_range: float, max_range: float) -> np.ndarray:
    """Boolean mask of the points whose distance from the sensor lies in [min_range, max_range]."""
    sq = np.einsum("ij,ij->i", points, points, dtype=np.float64)
    return (sq >= min_range * min_range) & (sq <= max_range * max_range)


# ------------------------------------------------------------------------------------- voxel downsample


def _pack_keys(cells: np.ndarray) -> np.ndarray:
    """N×k int64 cell coordinates (k = 2 or 3) to one int64 key each."""
    if cells.size and (cells.min() < -_KEY_HALF or cells.max() >= _KEY_HALF):
        raise ValueError(
            f"cell coordinates exceed ±{_KEY_HALF} cells: points too far from the origin for this cell size"
        )
    key = np.zeros(cells.shape[0], dtype=np.int64)
    for column in range(cells.shape[1]):
        key = (key << _KEY_BITS) | (cells[:, column] + _KEY_HALF)
    return key


@jit
def _first_per_voxel(points, voxel_size, half, bits, out):  # pragma: no cover - compiled
    """Writes into ``out`` the index of the first point of each occupied voxel, in input order; returns
    their count, or -1 when a cell coordinate lies outside ±``half`` (the keys' range). Open addressing
    over a table of at least twice the points: one pass, no sort."""
    n = points.shape[0]
    size = 16
    while size < 2 * n:
        size *= 2
    mask = size - 1
    table = np.full(size, -1, dtype=np.int64)  # key of each slot (keys are ≥ 0)
    count = 0
    for i in range(n):
        # the same float64 division and floor as the reference, so the same voxels
        cx = np.int64(np.floor(np.float64(points[i, 0]) / voxel_size))
        cy = np.int64(np.floor(np.float64(points[i, 1]) / voxel_size))
        cz = np.int64(np.floor(np.float64(points[i, 2]) / voxel_size))
        if cx < -half or cx >= half or cy < -half or cy >= half or cz < -half or cz >= half:
            return -1
        key = (((cx + half) << bits) | (cy + half)) << bits | (cz + half)
        h = (key * np.int64(-7046029254386353131)) >> np.int64(29)  # a multiplicative (Fibonacci) hash
        slot = h & mask
        while True:
            k = table[slot]
            if k == -1:
                table[slot] = key
                out[count] = i
                count += 1
                break
            if k == key:
                break
            slot = (slot + 1) & mask
    return count


def voxel_downsample(points: np.ndarray, voxel_size: float) -> np.ndarray:
    """Indices (ascending) of one point per occupied voxel: the first one in input order.

    An original point is kept rather than the voxel's centroid, so per-point attributes (intensity,
    time, ground label) follow by indexing and no point is moved off its surface. Compiled (one hashing
    pass) when numba imports; :func:`voxel_downsample_reference` gives the same indices.
    """
    if numba is None:  # pragma: no cover
        return voxel_downsample_reference(points, voxel_size)
    if voxel_size <= 0:
        raise ValueError(f"voxel_size must be positive, got {voxel_size}")
    pts = np.asarray(points)
    if len(pts) == 0:
        return np.zeros(0, dtype=np.int64)
    if pts.dtype not in (np.float32, np.float64):
        pts = pts.astype(np.float64)
    out = np.empty(len(pts), dtype=np.int64)
    count = _first_per_voxel(pts, float(voxel_size), _KEY_HALF, _KEY_BITS, out)
    if count < 0:
        raise ValueError(
            f"cell coordinates exceed ±{_KEY_HALF} cells: points too far from the origin for this cell size"
        )
    return out[:count].copy()


@jit
def _pca_normals(points, neighbors, out):  # pragma: no cover - compiled
    """For each row of ``neighbors`` (N×k indices into ``points``): the unit eigenvector of the smallest
    eigenvalue of its points' scatter matrix, by cyclic Jacobi rotations of the 3×3 matrix, into ``out``."""
    n, k = neighbors.shape
    a = np.empty((3, 3))
    v = np.empty((3, 3))
    for i in range(n):
        mx = my = mz = 0.0
        for j in range(k):
            p = neighbors[i, j]
            mx += points[p, 0]
            my += points[p, 1]
            mz += points[p, 2]
        mx /= k
        my /= k
        mz /= k
        a[:, :] = 0.0
        for j in range(k):
            p = neighbors[i, j]
            dx = points[p, 0] - mx
            dy = points[p, 1] - my
            dz = points[p, 2] - mz
            a[0, 0] += dx * dx
            a[0, 1] += dx * dy
            a[0, 2] += dx * dz
            a[1, 1] += dy * dy
            a[1, 2] += dy * dz
            a[2, 2] += dz * dz
        a[1, 0] = a[0, 1]
        a[2, 0] = a[0, 2]
        a[2, 1] = a[1, 2]
        v[:, :] = 0.0
        v[0, 0] = v[1, 1] = v[2, 2] = 1.0
        for _sweep in range(50):
            off = a[0, 1] ** 2 + a[0, 2] ** 2 + a[1, 2] ** 2
            scale = a[0, 0] ** 2 + a[1, 1] ** 2 + a[2, 2] ** 2
            if off <= 1e-32 * scale or off == 0.0:
                break
            for pq in range(3):
                p = 0 if pq < 2 else 1
                q = 1 if pq == 0 else 2
                apq = a[p, q]
                if apq == 0.0:
                    continue
                theta = (a[q, q] - a[p, p]) / (2.0 * apq)
                t = 1.0 / (abs(theta) + np.sqrt(theta * theta + 1.0))
                if theta < 0.0:
                    t = -t
                c = 1.0 / np.sqrt(t * t + 1.0)
                s = t * c
                for r in range(3):  # A J, then Jᵀ (A J), and V J (Numerical Recipes' rotation)
                    arp = a[r, p]
                    arq = a[r, q]
                    a[r, p] = c * arp - s * arq
                    a[r, q] = s * arp + c * arq
                for r in range(3):
                    apr = a[p, r]
                    aqr = a[q, r]
                    a[p, r] = c * apr - s * aqr
                    a[q, r] = s * apr + c * aqr
                for r in range(3):
                    vrp = v[r, p]
                    vrq = v[r, q]
                    v[r, p] = c * vrp - s * vrq
                    v[r, q] = s * vrp + c * vrq
        m = 0
        if a[1, 1] < a[m, m]:
            m = 1
        if a[2, 2] < a[m, m]:
            m = 2
        norm = np.sqrt(v[0, m] ** 2 + v[1, m] ** 2 + v[2, m] ** 2)
        out[i, 0] = v[0, m] / norm
        out[i, 1] = v[1, m] / norm
        out[i, 2] = v[2, m] / norm


def pca_normals(points: np.ndarray, neighbors: np.ndarray) -> np.ndarray:
    """N×3 unit normals: for each row of ``neighbors`` (N×k indices into the M×3 ``points``), the direction of
    least spread of those points (the smallest eigenvector of their scatter matrix; its sign is arbitrary).
    Compiled when numba imports (a 64 × 2048 scan's ~3000 non-ground points: 26 -> 1 ms);
    :func:`pca_normals_reference` is numpy's ``eigh``."""
    if numba is None:  # pragma: no cover
        return pca_normals_reference(points, neighbors)
    out = np.empty((len(neighbors), 3))
    if len(neighbors):
        _pca_normals(np.asarray(points, dtype=np.float64), np.asarray(neighbors, dtype=np.int64), out)
    return out


def pca_normals_reference(points: np.ndarray, neighbors: np.ndarray) -> np.ndarray:
    """:func:`pca_normals` by numpy (batched ``eigh``): the reference."""
    pts = np.asarray(points, dtype=np.float64)
    local = pts[neighbors] - pts[neighbors].mean(axis=1, keepdims=True)  # N×k×3
    cov = np.einsum("nki,nkj->nij", local, local)
    _, vec = np.linalg.eigh(cov)
    return vec[:, :, 0]


def voxel_downsample_reference(points: np.ndarray, voxel_size: float) -> np.ndarray:
    """:func:`voxel_downsample` by sorting the packed voxel keys (numpy): the reference."""
    if voxel_size <= 0:
        raise ValueError(f"voxel_size must be positive, got {voxel_size}")
    if len(points) == 0:
        return np.zeros(0, dtype=np.int64)
    cells = np.floor(np.asarray(points, dtype=np.float64) / voxel_size).astype(np.int64)
    _, first = np.unique(_pack_keys(cells), return_index=True)
    return np.sort(first)


# ------------------------------------------------------------------------------------------------ deskew


def deskew(
    points: np.ndarray,
    point_times: np.ndarray,
    relative_motion: np.ndarray,
    scan_period: float,
    reference_time: float | None = None,
) -> tuple[np.ndarray, float]:
    """Motion-compensate a sweep under constant velocity; returns (points, reference_time).

    ``points`` (N×3) are each in the sensor frame at their own time ``point_times`` (seconds, any common
    origin). ``relative_motion`` is the 4×4 motion of the last ``scan_period`` seconds,
    ``T_prev⁻¹ · T_curr`` (the later sensor pose in the earlier sensor frame). The result is every point
    in the sensor frame at ``reference_time``, by default the end of the sweep (the latest point time).
    """
    points = np.asarray(points)
    times = np.asarray(point_times, dtype=np.float64)
    if times.shape != (len(points),):
        raise ValueError(f"point_times must have shape ({len(points)},), got {times.shape}")
    if not scan_period > 0:
        raise ValueError(f"scan_period must be positive, got {scan_period}")
    if len(points) == 0:
        return points.astype(np.float32), float(reference_time or 0.0)
    ref = float(times.max()) if reference_time is None else float(reference_time)
    twist = se3_log(np.asarray(relative_motion, dtype=np.float64)) / scan_period
    out = apply_scaled_twist(points, times - ref, twist)
    return out.astype(np.float32), ref


# ------------------------------------------------------------------------------------ ground segmentation


def _group(keys: np.ndarray) -> tuple[np.ndarray, int]:
    """Dense group ids 0..G-1 for int64 keys, and G."""
    _, inverse = np.unique(keys, return_inverse=True)
    inverse = inverse.reshape(-1)
    return inverse, int(inverse.max()) + 1 if inverse.size else 0


def _lowest_per_cell(points: np.ndarray, cell_id: np.ndarray) -> np.ndarray:
    """Index of the lowest point (min z) of each cell, in cell-id order."""
    by_height = np.argsort(points[:, 2], kind="stable")
    _, first = np.unique(cell_id[by_height], return_index=True)  # each cell's first point from the bottom
    return by_height[first]


def _weighted_planes(
    xyz: np.ndarray, group: np.ndarray, weight: np.ndarray, n_groups: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares plane of each group's weighted points: (centroid G×3, eigenvalues G×3 ascending,
    eigenvectors G×3×3 in columns, weight sums G)."""
    wsum = np.bincount(group, weight, n_groups)
    denom = np.maximum(wsum, 1e-12)[:, None]
    centroid = np.stack([np.bincount(group, weight * xyz[:, i], n_groups) for i in range(3)], axis=1) / denom
    d = xyz - centroid[group]
    cov = np.empty((n_groups, 3, 3))
    for i in range(3):
        for j in range(i, 3):
            cov[:, i, j] = cov[:, j, i] = np.bincount(group, weight * d[:, i] * d[:, j], n_groups)
    cov /= denom[:, :, None]
    eigval, eigvec = np.linalg.eigh(cov)
    return centroid, eigval, eigvec, wsum


def _plane_normals(eigval: np.ndarray, eigvec: np.ndarray, wsum: np.ndarray) -> np.ndarray:
    """Upward unit normal of each group's plane.

    Candidates along a line (a single far ring, the foot of a wall) do not fix a plane: there the normal
    is the vertical made orthogonal to the line, i.e. the plane that contains the line and is as level as
    possible. With fewer than two candidates the normal is vertical.
    """
    normal = eigvec[:, :, 0].copy()
    line = eigvec[:, :, 2]
    up = np.array([0.0, 0.0, 1.0])
    degenerate = (eigval[:, 1] < 1e-2 * np.maximum(eigval[:, 2], 1e-12)) | (eigval[:, 1] < 1e-6)
    levelled = up - line[:, 2:3] * line
    norm = np.linalg.norm(levelled, axis=1, keepdims=True)
    levelled = np.where(norm > 1e-9, levelled / np.maximum(norm, 1e-12), up)
    normal[degenerate] = levelled[degenerate]
    normal[wsum < 2] = up
    normal *= np.where(normal[:, 2:3] < 0, -1.0, 1.0)
    return normal


def _fit_patch_planes(
    cand_xyz: np.ndarray, patch_of_cand: np.ndarray, n_patches: int, config: GroundSegmentationConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Trimmed least-squares plane ``n·p + d = 0`` of each patch's candidates: (normals P×3, offsets P)."""
    weight = np.ones(len(cand_xyz))
    band = config.trim_start
    for it in range(config.iterations):
        centroid, eigval, eigvec, wsum = _weighted_planes(cand_xyz, patch_of_cand, weight, n_patches)
        normal = _plane_normals(eigval, eigvec, wsum)
        offset = -np.einsum("ij,ij->i", normal, centroid)
        if it == config.iterations - 1:
            break
        residual = np.einsum("ij,ij->i", cand_xyz, normal[patch_of_cand]) + offset[patch_of_cand]
        band = max(band, config.distance_threshold)
        # early rounds: the plane sits too high (pulled up by obstacles), so only drop what is above it
        within = residual < band if it < config.iterations - 2 else np.abs(residual) < band
        keep = within & (weight > 0)  # trimming only removes: a dropped candidate stays dropped
        # a patch that would lose every candidate keeps its current ones (its slope is still judged below)
        kept = np.bincount(patch_of_cand, keep.astype(np.float64), n_patches)
        keep |= (kept[patch_of_cand] == 0) & (weight > 0)
        weight = keep.astype(np.float64)
        band = band / 2.0
    return normal, offset


def _plane_height(normal: np.ndarray, offset: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """z of the planes ``n·p + d = 0`` above the points ``xy`` (planes are never vertical here)."""
    return -(normal[..., 0] * xy[..., 0] + normal[..., 1] * xy[..., 1] + offset) / normal[..., 2]


def _connected_ground(
    patch_ij: np.ndarray,
    normal: np.ndarray,
    offset: np.ndarray,
    level: np.ndarray,
    config: GroundSegmentationConfig,
) -> np.ndarray:
    """Which level patches are ground: those linked to the ground around the sensor by a chain of patches
    whose planes meet, halfway between neighbours in the chain, within ``max_step`` plus
    ``step_per_metre`` for every metre of gap between them (far rings of a sparse sensor are metres apart).

    A flat roof, the top of a car or a tree crown is level too, but stands off the ground next to it.
    """
    centre = (patch_ij + 0.5) * config.patch_size
    with np.errstate(divide="ignore", invalid="ignore"):  # steep (non-level) patches: their height is unused
        height = _plane_height(normal, offset, centre)
    near = level & (np.linalg.norm(centre, axis=1) < config.seed_radius)
    if not near.any():
        return level  # nothing to grow from: judge by slope alone
    ground = near & (height <= np.median(height[near]) + config.max_step)
    while True:  # each round links the level patches whose nearest ground patch agrees with them
        pending = np.flatnonzero(level & ~ground)
        if pending.size == 0:
            return ground
        anchors = np.flatnonzero(ground)
        gap, nearest = cKDTree(centre[anchors]).query(centre[pending])
        other = anchors[nearest]
        midpoint = (centre[pending] + centre[other]) / 2
        step = np.abs(
            _plane_height(normal[pending], offset[pending], midpoint)
            - _plane_height(normal[other], offset[other], midpoint)
        )
        tolerance = config.max_step + config.step_per_metre * np.maximum(gap - config.patch_size, 0.0)
        linked = pending[step < tolerance]
        if linked.size == 0:
            return ground
        ground[linked] = True


def segment_ground(points: np.ndarray, config: GroundSegmentationConfig | None = None) -> np.ndarray:
    """Boolean ground mask for points in a sensor frame whose z axis points roughly up."""
    return segment_ground_with_normals(points, config)[0]


def segment_ground_with_normals(
    points: np.ndarray, config: GroundSegmentationConfig | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(ground mask N, N×3 upward unit normal of each point's ground patch plane): the normals are those
    of the fitted patch planes, meaningful where the mask is set (the mapper's point-to-plane targets)."""
    config = config or GroundSegmentationConfig()
    pts = np.asarray(points, dtype=np.float64)
    if len(pts) == 0:
        return np.zeros(0, dtype=bool), np.zeros((0, 3))
    cell_xy = np.floor(pts[:, :2] / config.cell_size).astype(np.int64)
    cell_of_point, _ = _group(_pack_keys(cell_xy))
    cand = _lowest_per_cell(pts, cell_of_point)  # cand[c] is the lowest point of cell c
    # patches are whole blocks of cells, so a point's patch is its cell's patch
    cells_per_patch = max(1, round(config.patch_size / config.cell_size))
    cand_patch_ij = np.floor_divide(cell_xy[cand], cells_per_patch)
    patch_of_cell, n_patches = _group(_pack_keys(cand_patch_ij))
    patch_ij = np.zeros((n_patches, 2), dtype=np.int64)
    patch_ij[patch_of_cell] = cand_patch_ij

    normal, offset = _fit_patch_planes(pts[cand], patch_of_cell, n_patches, config)
    ground_patch = normal[:, 2] >= np.cos(np.deg2rad(config.max_slope_deg))
    if config.max_step > 0:
        ground_patch = _connected_ground(patch_ij, normal, offset, ground_patch, config)
    point_patch = patch_of_cell[cell_of_point]
    distance = np.einsum("ij,ij->i", pts, normal[point_patch]) + offset[point_patch]
    return (np.abs(distance) < config.distance_threshold) & ground_patch[point_patch], normal[point_patch]


# ------------------------------------------------------------------------------------------ the pipeline


@dataclass
class PreprocessedScan:
    """A scan ready for tracking and mapping.

    ``points`` are in the sensor frame at ``timestamp`` (the end of the sweep when deskewed);
    ``source_indices`` index the input scan's points, so any per-point attribute can follow.
    """

    points: np.ndarray  # M×3 float32
    ground: np.ndarray  # M bool
    timestamp: float
    source_indices: np.ndarray  # M int64
    intensity: np.ndarray | None = None
    point_times: np.ndarray | None = None  # seconds relative to ``timestamp`` (≤ 0 after deskewing)
    deskewed: bool = False
    ground_normals: np.ndarray | None = None  # M×3 upward normal of each point's ground patch plane
    origins: np.ndarray | None = None  # M×3 where the sensor was when each point fired (None: the origin)


def preprocess_scan(
    scan: LidarScan,
    config: LidarPreprocessConfig | None = None,
    relative_motion: np.ndarray | None = None,
    scan_period: float | None = None,
    reference_time: float | None = None,
) -> PreprocessedScan:
    """Crop by range and keep one point per voxel (of the points as measured), deskew the points kept (when
    the scan has per-point times and a ``relative_motion`` is given), then label the ground on them.

    ``relative_motion`` is the motion over the last ``scan_period`` seconds (see :func:`deskew`);
    ``scan_period`` defaults to the span of the scan's point times (a spinning LiDAR's sweep lasts one
    period). ``reference_time`` (in the scan's point-time clock, e.g. 0 for the scan's own timestamp) is the
    instant the scan is deskewed to; by default the latest point time (the end of the sweep).
    """
    config = config or LidarPreprocessConfig()
    points = scan.points
    times = None if scan.point_times is None else scan.point_times.astype(np.float64)
    timestamp = float(scan.timestamp)
    # crop and downsample before deskewing, which then moves only the points kept (a sixth of a 64-beam
    # scan at 0.4 m), and the ground is segmented on those too: the crop's min_range is about the vehicle,
    # which moves with the sensor, and a point per measured voxel samples the surfaces as densely as a
    # point per deskewed voxel
    keep = np.flatnonzero(range_mask(points, config.min_range, config.max_range))
    if config.voxel_size > 0:
        keep = keep[voxel_downsample(points[keep], config.voxel_size)]
    kept_points = points[keep]
    kept_times = None if times is None else times[keep]
    deskewed = False
    if config.deskew and times is not None and relative_motion is not None and len(points):
        # the sweep's period and end come from all of its points, not only the kept ones
        period = float(np.ptp(times)) if scan_period is None else float(scan_period)
        if period > 0:
            ref = float(times.max()) if reference_time is None else float(reference_time)
            kept_points, _ = deskew(kept_points, kept_times, relative_motion, period, ref)
            timestamp += ref
            kept_times = kept_times - ref
            deskewed = True
    ground_normals = None
    if config.ground.enabled:
        ground, ground_normals = segment_ground_with_normals(kept_points, config.ground)
    else:
        ground = np.zeros(len(keep), dtype=bool)
    return PreprocessedScan(
        points=np.asarray(kept_points, dtype=np.float32),
        ground=ground,
        timestamp=timestamp,
        source_indices=keep.astype(np.int64),
        intensity=None if scan.intensity is None else scan.intensity[keep],
        point_times=None if kept_times is None else kept_times.astype(np.float32),
        deskewed=deskewed,
        ground_normals=None if ground_normals is None else ground_normals.astype(np.float32),
    )
