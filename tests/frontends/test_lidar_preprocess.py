"""LiDAR preprocessing (slam.frontends.lidar_preprocess) on generated clouds with known answers: range crop, voxel
downsampling, deskew under a known constant-velocity motion, ground segmentation on sloped ground."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError
from scipy.spatial.transform import Rotation

from slam.core.frames import LidarScan
from slam.core.geometry import invert_pose, se3_exp, se3_log, transform_points
from slam.frontends.lidar_preprocess import (
    GroundSegmentationConfig,
    LidarPreprocessConfig,
    deskew,
    preprocess_scan,
    range_mask,
    segment_ground,
    voxel_downsample,
)

PERIOD = 0.1

# ---------------------------------------------------------------------------------------------- range crop


def test_range_mask_keeps_the_closed_interval() -> None:
    directions = Rotation.random(7, random_state=1).apply([1.0, 0.0, 0.0])
    ranges = np.array([0.5, 1.0, 1.5, 10.0, 99.9, 100.0, 100.1])
    mask = range_mask(directions * ranges[:, None], 1.0, 100.0)
    assert mask.tolist() == [False, True, True, True, True, True, False]


# ---------------------------------------------------------------------------------------- voxel downsample


def test_voxel_downsample_keeps_the_first_point_of_each_voxel() -> None:
    rng = np.random.default_rng(0)
    voxel = 0.5
    occupied = rng.choice(20**3, size=300, replace=False)
    cells = np.stack(np.unravel_index(occupied, (20, 20, 20)), axis=1) - 10  # negative cells too
    copies = rng.integers(1, 6, size=len(cells))
    cell_of_point = np.repeat(np.arange(len(cells)), copies)
    rng.shuffle(cell_of_point)
    points = (cells[cell_of_point] + rng.uniform(0.01, 0.99, (len(cell_of_point), 3))) * voxel

    kept = voxel_downsample(points, voxel)

    assert len(kept) == len(cells)
    assert np.all(np.diff(kept) > 0)  # input order
    assert sorted(cell_of_point[kept]) == list(range(len(cells)))  # one point per occupied voxel
    first = {c: i for i, c in reversed(list(enumerate(cell_of_point)))}
    assert kept.tolist() == sorted(first.values())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_voxel_downsample_agrees_with_the_reference(dtype) -> None:
    """The hashing pass keeps exactly the indices the sort of packed keys keeps: a scan-like cloud (rings of
    noisy ranges, many points a voxel), points on voxel faces, negative coordinates and a far point."""
    from slam.frontends.lidar_preprocess import voxel_downsample_reference

    rng = np.random.default_rng(3)
    az = rng.uniform(-np.pi, np.pi, 60000)
    el = rng.uniform(-0.4, 0.05, 60000)
    r = rng.uniform(2.0, 80.0, 60000)
    ring = np.stack([r * np.cos(el) * np.cos(az), r * np.cos(el) * np.sin(az), r * np.sin(el)], axis=1)
    faces = rng.integers(-50, 50, (2000, 3)) * 0.4  # exactly on voxel boundaries
    points = np.concatenate([ring, faces, [[-4000.0, 3.0, 0.0]]]).astype(dtype)
    for voxel in (0.4, 0.25, 1.0):
        expected = voxel_downsample_reference(points, voxel)
        kept = voxel_downsample(points, voxel)
        assert 1000 < len(kept) < len(points)
        np.testing.assert_array_equal(kept, expected)


def test_voxel_downsample_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="voxel_size"):
        voxel_downsample(np.zeros((3, 3)), 0.0)
    with pytest.raises(ValueError, match="too far"):
        voxel_downsample(np.array([[1e6, 0.0, 0.0]]), 0.1)
    assert voxel_downsample(np.zeros((0, 3)), 0.1).size == 0


# ------------------------------------------------------------------------------------------------ deskew


def _distorted_sweep(twist_per_s: np.ndarray, times: np.ndarray, seed: int = 0):
    """World points seen by a sensor moving at constant body-frame velocity: the sensor pose at time τ
    (relative to the end of the sweep) is T_end · exp(τ ξ). Returns (points as measured, points in the
    end frame)."""
    rng = np.random.default_rng(seed)
    t_end = se3_exp([3.0, -2.0, 0.5, 0.1, -0.05, 0.7])
    world = rng.uniform(-30, 30, (len(times), 3))
    in_end_frame = transform_points(invert_pose(t_end), world)
    measured = np.empty_like(world)
    for tau in np.unique(times):  # one pose per firing time, as a spinning sensor's columns
        sel = times == tau
        pose = t_end @ se3_exp(tau * twist_per_s)
        measured[sel] = transform_points(invert_pose(pose), world[sel])
    return measured, in_end_frame


@pytest.mark.parametrize(
    "twist",
    [
        np.array([10.0, 0.5, 0.1, 0.02, -0.01, 0.6]),  # driving and turning
        np.array([8.0, 0.0, 0.0, 0.0, 0.0, 0.0]),  # straight: the pure-translation branch
        np.array([0.0, 0.0, 0.0, 0.0, 0.0, 2.0]),  # spinning on the spot
    ],
)
def test_deskew_recovers_the_end_of_sweep_frame(twist: np.ndarray) -> None:
    times = -PERIOD + (np.arange(2048) % 512 + 1) * PERIOD / 512  # 512 columns, last one at the end
    measured, truth = _distorted_sweep(twist, times)
    relative_motion = se3_exp(twist * PERIOD)  # the motion over one period: T_prev⁻¹ · T_curr

    out, ref = deskew(measured, times, relative_motion, PERIOD)

    assert ref == pytest.approx(0.0)
    assert np.abs(out - truth).max() < 1e-4  # float32 output of points tens of metres away
    assert np.abs(measured - truth).max() > 0.5  # the distortion was real


def test_deskew_reference_is_the_latest_point_time_whatever_the_time_origin() -> None:
    twist = np.array([6.0, 0.2, 0.0, 0.0, 0.0, 0.4])
    times = -PERIOD + (np.arange(1000) % 100 + 1) * PERIOD / 100
    measured, truth = _distorted_sweep(twist, times, seed=1)
    # the same sweep stamped at its start (as Ouster does): times in (0, T]
    out, ref = deskew(measured, times + PERIOD, se3_exp(twist * PERIOD), PERIOD)
    assert ref == pytest.approx(PERIOD)
    assert np.abs(out - truth).max() < 1e-4
    # an explicit reference instant: the start of the sweep
    start, _ = deskew(measured, times, se3_exp(twist * PERIOD), PERIOD, reference_time=-PERIOD)
    expected = transform_points(invert_pose(se3_exp(-PERIOD * twist)), truth)
    assert np.abs(start - expected).max() < 1e-4


def test_deskew_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="point_times"):
        deskew(np.zeros((3, 3)), np.zeros(2), np.eye(4), PERIOD)
    with pytest.raises(ValueError, match="scan_period"):
        deskew(np.zeros((3, 3)), np.zeros(3), np.eye(4), 0.0)


def test_se3_log_inverts_exp() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        xi = np.concatenate([rng.normal(0, 5, 3), Rotation.random(random_state=rng).as_rotvec() * 0.9])
        assert np.allclose(se3_log(se3_exp(xi)), xi, atol=1e-9)
    assert np.allclose(se3_log(np.eye(4)), 0.0)


# ------------------------------------------------------------------------------------ ground segmentation


def _ground_height(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sensor frame: the ground 1.7 m below, a cross slope, a 14° ramp starting 5 m ahead, and a
    rounded hump behind."""
    ramp = np.where(x > 5.0, 0.25 * (x - 5.0), 0.0)
    hump = 1.5 * np.exp(-((x + 25.0) ** 2 + (y - 5.0) ** 2) / (2 * 8.0**2))
    return -1.7 + 0.05 * y + ramp + hump


def _box_surface(rng, lo, hi, n) -> np.ndarray:
    """``n`` points on the four sides and the top of the box [lo, hi] (xy), standing on the ground."""
    lo, hi = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
    height = hi[2] - lo[2]
    side = rng.integers(0, 5, n)
    u, v = rng.uniform(0, 1, n), rng.uniform(0, 1, n)
    x = np.select([side == 0, side == 1], [lo[0], hi[0]], lo[0] + u * (hi[0] - lo[0]))
    y = np.select([side == 2, side == 3], [lo[1], hi[1]], lo[1] + v * (hi[1] - lo[1]))
    y = np.where(side < 2, lo[1] + u * (hi[1] - lo[1]), y)
    z = np.where(side == 4, height, v * height)
    base = _ground_height(x, y)
    return np.stack([x, y, base + z], axis=1)


def _cylinder_surface(rng, x0, y0, radius, height, n) -> np.ndarray:
    ang, z = rng.uniform(0, 2 * np.pi, n), rng.uniform(0, height, n)
    x, y = x0 + radius * np.cos(ang), y0 + radius * np.sin(ang)
    return np.stack([x, y, _ground_height(x, y) + z], axis=1)


@pytest.fixture(scope="module")
def street_cloud() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(points, is_ground, height above ground) of a synthetic street with sloped ground."""
    rng = np.random.default_rng(7)
    n = 60_000
    r = 45 * np.sqrt(rng.uniform(0.002, 1, n))
    a = rng.uniform(-np.pi, np.pi, n)
    gx, gy = r * np.cos(a), r * np.sin(a)
    ground = np.stack([gx, gy, _ground_height(gx, gy) + rng.normal(0, 0.02, n)], axis=1)
    objects = [
        _box_surface(rng, [10, 8, 0], [25, 20, 12], 8000),  # a building on the ramp
        _box_surface(rng, [-20, -25, 0], [-8, -12, 6], 6000),  # a building
        _box_surface(rng, [-15, 5, 0], [-10.5, 6.8, 1.5], 2000),  # a parked car
        _box_surface(rng, [-30, 10, 0], [0, 10.3, 1.0], 2000),  # a low garden wall
    ]
    objects += [
        _cylinder_surface(rng, x, y, 0.15, 7.0, 500) for x, y in [(6, 3), (12, -4), (-6, -6), (20, 0)]
    ]
    objects.append(_cylinder_surface(rng, -28, 3, 0.3, 3.0, 400))  # a tree trunk on the hump
    crown = rng.normal(0, 1, (1500, 3))
    crown = crown / np.linalg.norm(crown, axis=1, keepdims=True) * 2.0 + [
        -28,
        3,
        _ground_height(-28, 3) + 5.0,
    ]
    objects.append(crown)
    obj = np.concatenate(objects)
    points = np.concatenate([ground, obj])
    is_ground = np.r_[np.ones(n, bool), np.zeros(len(obj), bool)]
    height = points[:, 2] - _ground_height(points[:, 0], points[:, 1])
    return points.astype(np.float32), is_ground, height


def test_ground_segmentation_on_sloped_street(street_cloud) -> None:
    points, is_ground, height = street_cloud
    ground = segment_ground(points)
    recall = ground[is_ground].mean()
    # object points below the threshold (the foot of a wall) may be called ground either way
    false_positive = ground[~is_ground & (height > 0.3)].mean()
    assert recall > 0.98, recall
    assert false_positive < 0.005, false_positive
    ramp = is_ground & (points[:, 0] > 10)  # 14° up, 5–45 m ahead
    assert ground[ramp].mean() > 0.97


def test_ground_segmentation_rejects_steep_slopes() -> None:
    rng = np.random.default_rng(2)
    xy = rng.uniform(-20, 20, (20_000, 2))
    flat = np.column_stack([xy, np.full(len(xy), -1.7)])
    steep_xy = rng.uniform([25, -20], [40, 20], (5000, 2))
    steep = np.column_stack([steep_xy, -1.7 + (steep_xy[:, 0] - 25.0)])  # 45°
    ground = segment_ground(np.concatenate([flat, steep]), GroundSegmentationConfig(max_slope_deg=25))
    assert ground[: len(flat)].all()
    assert ground[len(flat) :].mean() < 0.02
    assert segment_ground(np.zeros((0, 3))).shape == (0,)


def test_ground_segmentation_is_invariant_to_point_order(street_cloud) -> None:
    points = street_cloud[0]
    order = np.random.default_rng(0).permutation(len(points))
    assert np.array_equal(segment_ground(points)[order], segment_ground(points[order]))


# ------------------------------------------------------------------------------------------ the pipeline


def test_preprocess_scan_deskews_crops_labels_and_downsamples(street_cloud) -> None:
    points, is_ground, _ = street_cloud
    twist = np.array([8.0, 0.0, 0.0, 0.0, 0.0, 0.3])
    times = -PERIOD + (np.arange(len(points)) % 256 + 1) * PERIOD / 256
    # the scan stamped at the START of its sweep: deskewing moves its timestamp to the end
    measured = np.empty_like(points, dtype=np.float64)
    for tau in np.unique(times):
        sel = times == tau
        measured[sel] = transform_points(invert_pose(se3_exp(tau * twist)), points[sel].astype(np.float64))
    scan = LidarScan(
        index=3,
        timestamp=100.0 - PERIOD,
        points=measured,
        intensity=np.arange(len(points)) % 97,
        point_times=times + PERIOD,
    )
    config = LidarPreprocessConfig(min_range=2.0, max_range=40.0, voxel_size=0.3)

    out = preprocess_scan(scan, config, relative_motion=se3_exp(twist * PERIOD), scan_period=PERIOD)

    assert out.deskewed and out.timestamp == pytest.approx(100.0)
    assert out.point_times.max() == pytest.approx(0.0) and out.point_times.min() > -PERIOD
    src = out.source_indices
    assert np.abs(out.points - points[src]).max() < 1e-4  # deskewed: the undistorted cloud
    assert np.array_equal(out.intensity, scan.intensity[src])
    # cropped and downsampled as measured (the crop is about the sensor, which moves with the vehicle)
    ranges = np.linalg.norm(measured[src], axis=1)
    assert ranges.min() >= 2.0 and ranges.max() <= 40.0
    cells = np.floor(measured[src] / 0.3).astype(np.int64)
    assert len(np.unique(cells, axis=0)) == len(out.points)  # one point per voxel
    in_range = measured[range_mask(measured, 2.0, 40.0)]
    assert len(out.points) == len(np.unique(np.floor(in_range / 0.3).astype(np.int64), axis=0))  # every voxel
    # about as many points as the undistorted cloud has voxels: the surfaces are sampled as densely (within
    # 15 %: here a point's time follows its index, not its azimuth, so neighbours move apart by up to 0.8 m)
    full, _ = deskew(scan.points, scan.point_times, se3_exp(twist * PERIOD), PERIOD)
    full_cells = np.unique(np.floor(full[range_mask(full, 2.0, 40.0)] / 0.3).astype(np.int64), axis=0)
    assert len(out.points) == pytest.approx(len(full_cells), rel=0.15)
    assert (out.ground == is_ground[src]).mean() > 0.97


def test_preprocess_scan_without_times_or_motion_does_not_deskew(street_cloud) -> None:
    points = street_cloud[0]
    scan = LidarScan(index=0, timestamp=5.0, points=points)
    out = preprocess_scan(scan, LidarPreprocessConfig(voxel_size=0.0), relative_motion=np.eye(4))
    assert not out.deskewed and out.timestamp == 5.0 and out.point_times is None
    assert np.array_equal(out.points, points[out.source_indices])
    assert len(out.points) == range_mask(points, 1.0, 100.0).sum()


def test_config_validation_names_the_problem() -> None:
    with pytest.raises(ValidationError, match="max_range"):
        LidarPreprocessConfig(min_range=5.0, max_range=2.0)
    with pytest.raises(ValidationError, match="patch_size"):
        GroundSegmentationConfig(cell_size=2.0, patch_size=1.0)
    with pytest.raises(ValidationError, match="voxel_siz"):
        LidarPreprocessConfig.model_validate({"voxel_siz": 0.2})
    assert LidarPreprocessConfig.model_validate({"ground": {"enabled": False}}).ground.enabled is False


# ------------------------------------------------------------------------------------------- normals


def test_compiled_pca_normals_agree_with_numpys_eigh() -> None:
    """The compiled Jacobi eigen-solve gives eigh's smallest eigenvector (up to sign) on noisy planes in every
    orientation, blobs and lines; where the two smallest eigenvalues (nearly) tie, any unit vector of that
    eigenspace is right, so there it must give that eigenvalue."""
    from slam.frontends.lidar_preprocess import pca_normals, pca_normals_reference

    rng = np.random.default_rng(7)
    n, k = 3000, 10
    normal = rng.normal(size=(n, 3))
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    u = np.cross(normal, rng.normal(size=(n, 3)))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    w = np.cross(normal, u)
    a, b = rng.normal(size=(2, n, k, 1))
    noise = rng.choice([1e-3, 0.05, 1.0, 0.0], size=(n, 1, 1))  # planes, thick planes, blobs, exact planes
    points = (
        rng.normal(size=(n, 1, 3)) * 20 + a * u[:, None] + b * w[:, None] + noise * rng.normal(size=(n, k, 3))
    )
    points[:200] = rng.normal(size=(200, 1, 3)) + a[:200] * u[:200, None]  # lines: a tied smallest pair
    pts = points.reshape(-1, 3)
    nbr = np.arange(n * k).reshape(n, k)
    got = pca_normals(pts, nbr)
    ref = pca_normals_reference(pts, nbr)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-12)
    local = points - points.mean(axis=1, keepdims=True)
    cov = np.einsum("nki,nkj->nij", local, local)
    eigval = np.linalg.eigvalsh(cov)
    scale = eigval[:, 2:3]
    # an eigenvector of the smallest eigenvalue: C·n = λ₀·n, relative to the largest eigenvalue
    residual = np.einsum("nij,nj->ni", cov, got) - eigval[:, :1] * got
    assert np.abs(residual / scale).max() < 1e-9
    gap = (eigval[:, 1] - eigval[:, 0]) / scale[:, 0]
    clear = gap > 1e-3
    assert clear.sum() > 2000
    np.testing.assert_allclose(np.abs(np.einsum("ij,ij->i", got[clear], ref[clear])), 1.0, atol=1e-9)
    # and the same normals where planes were sampled: against the plane's true normal
    planar = clear & (noise[:, 0, 0] <= 1e-3)
    planar[:200] = False
    assert np.abs(np.einsum("ij,ij->i", got[planar], normal[planar])).min() > 0.999
