"""slam.engine.tracker: registration of depth points to a neural SDF map built by the mapper, on the synthetic
box room (exact depth, known poses) and on real 7-Scenes frames; lost / recovered reporting."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from synthetic import box_room, look_at, map_frame, render_frame, rgbd_engine, rgbd_frontend

from slam.core.frames import RGBDFrame
from slam.core.geometry import invert_pose, se3_exp, transform_points
from slam.engine.mapper import Mapper, MapperConfig
from slam.engine.tracker import Tracker, TrackerConfig
from slam.map.neural_map import NeuralMapConfig, NeuralSDFMap

TARGET = np.array([0.6, -0.4, -0.6])


def pose_along(s: float) -> np.ndarray:
    """A camera sliding 36 cm through the box room while looking at the table, the block and the sphere."""
    eye = np.array([-1.3 + 0.3 * s, 0.9 - 0.2 * s, 0.4])
    return look_at(eye, TARGET)


def pose_error(estimate: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(translation error in m, rotation error in degrees) of a camera-to-world estimate."""
    rel = invert_pose(truth) @ estimate
    # scipy projects onto the nearest rotation: 7-Scenes poses are orthonormal only to ~1e-4, which
    # arccos((tr R - 1) / 2) (slam.core.geometry.rotation_angle) turns into phantom rotations of ~1 degree
    return float(np.linalg.norm(rel[:3, 3])), float(np.degrees(Rotation.from_matrix(rel[:3, :3]).magnitude()))


def perturbation(rng: np.random.Generator, trans: float, rot_deg: float) -> np.ndarray:
    """A random 6-DoF motion of exactly ``trans`` metres and ``rot_deg`` degrees (applied in the camera
    frame: ``pose @ perturbation``)."""
    v, w = rng.normal(size=3), rng.normal(size=3)
    w *= np.radians(rot_deg) / np.linalg.norm(w)
    delta = se3_exp(np.concatenate([np.zeros(3), w]))
    delta[:3, 3] = v * trans / np.linalg.norm(v)
    return delta


@pytest.fixture(scope="module")
def room():
    return box_room()


@pytest.fixture(scope="module")
def room_map(room) -> NeuralSDFMap:
    """The map of four frames along the path, integrated at their true poses."""
    torch.manual_seed(0)
    m = NeuralSDFMap(NeuralMapConfig(voxel_size=0.04, device="cpu", color=False))
    mapper = Mapper(
        m, MapperConfig(first_frame_iterations=80, iterations=15, truncation=0.08, rays=1024), seed=0
    )
    for i, s in enumerate(np.linspace(0.0, 1.0, 4)):
        frame = render_frame(room, pose_along(s), index=i)
        map_frame(mapper, frame, frame.gt_pose)
    assert len(mapper.keyframes) == 4  # 12 cm apart: each frame is past the 10 cm keyframe threshold
    return m


# -- registration ----------------------------------------------------------------------------------
def _recovery_failures(room, room_map: NeuralSDFMap, config: TrackerConfig, trials: int) -> list:
    """Register a frame between the mapped ones from ``trials`` random 3 cm / 2° perturbations of its true
    pose; returns the failures (error above 5 mm or 0.3°) as (t_err, r_err, report)."""
    tracker = Tracker(room_map, config)
    frame = render_frame(room, pose_along(0.5), index=50)
    points = rgbd_frontend(config).sample_points(frame)
    assert points.shape[0] > 500
    rng = np.random.default_rng(0)
    failures = []
    for _ in range(trials):
        init = frame.gt_pose @ perturbation(rng, 0.03, 2.0)
        t0, r0 = pose_error(init, frame.gt_pose)
        assert t0 == pytest.approx(0.03) and r0 == pytest.approx(2.0)
        pose, report = tracker.register(points, init)
        t_err, r_err = pose_error(pose, frame.gt_pose)
        if not (t_err < 5e-3 and r_err < 0.3):
            failures.append((t_err, r_err, report))
            continue
        # (a stricter min_hits leaves fewer points in trusted space: valid and inliers are lower then)
        assert report["valid"] > 0.5 * points.shape[0]
        assert report["inlier_ratio"] > 0.5
        assert report["residual"] < 0.01
        assert 1 <= report["iterations"] <= tracker.cfg.iterations
    return failures


def test_register_recovers_perturbed_poses(room, room_map: NeuralSDFMap) -> None:
    # stricter than the defaults (see the xfail test below): trust only space fitted >= 100 times, and
    # allow 20 iterations (the Geman-McClure reweighting converges slowly along weakly constrained axes)
    config = TrackerConfig(min_hits=100, iterations=20)
    assert _recovery_failures(room, room_map, config, trials=12) == []


@pytest.mark.xfail(
    reason="default TrackerConfig: several trials end cm away (one converges 9 cm off along world y with "
    "inlier_ratio 0.61, so it would not be reported lost). Points that leave allocated / fitted space stop "
    "voting, so sliding a surface's points out of the thin allocated band costs nothing; with min_hits=20 "
    "the barely fitted far edge of the band behind a surface can also hold a spurious near-zero SDF",
    strict=False,
)
def test_register_recovers_perturbed_poses_with_default_config(room, room_map: NeuralSDFMap) -> None:
    assert _recovery_failures(room, room_map, TrackerConfig(), trials=12) == []


def test_register_keeps_a_correct_pose(room, room_map: NeuralSDFMap) -> None:
    tracker = Tracker(room_map)
    frame = render_frame(room, pose_along(0.25), index=51)
    pose, report = tracker.register(rgbd_frontend().sample_points(frame), frame.gt_pose)
    t_err, r_err = pose_error(pose, frame.gt_pose)
    assert t_err < 3e-3 and r_err < 0.2, (t_err, r_err, report)


# -- per-frame tracking ----------------------------------------------------------------------------
def test_track_follows_a_sequence(room, room_map: NeuralSDFMap) -> None:
    engine = rgbd_engine(room_map, TrackerConfig())
    tracker = engine.tracker
    frames = [render_frame(room, pose_along(s), index=i) for i, s in enumerate(np.linspace(0.0, 1.0, 9))]
    first = engine.track(frames[0])
    assert first.info.get("first") and np.array_equal(first.pose, frames[0].gt_pose)
    for frame in frames[1:]:
        result = engine.track(frame)
        assert not result.lost and not result.recovered
        assert result.inlier_ratio > 0.8, result
        t_err, r_err = pose_error(result.pose, frame.gt_pose)
        assert t_err < 5e-3 and r_err < 0.3, (frame.index, t_err, r_err)
    assert len(tracker.poses) == len(frames)


def noise_frame(like: RGBDFrame, seed: int) -> RGBDFrame:
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.3, 3.9, size=like.depth.shape).astype(np.float32)
    return RGBDFrame(index=like.index, timestamp=like.timestamp, depth=depth, intrinsics=like.intrinsics)


def unmapped_frame(room, like: RGBDFrame) -> RGBDFrame:
    """Seen from the same place, but looking back at walls no mapped frame saw."""
    eye = like.gt_pose[:3, 3]
    frame = render_frame(room, look_at(eye, 2 * eye - TARGET), index=like.index)
    return RGBDFrame(
        index=frame.index, timestamp=frame.timestamp, depth=frame.depth, intrinsics=frame.intrinsics
    )


@pytest.mark.parametrize("bad", ["noise", "unmapped"])
def test_lost_then_recovered(room, room_map: NeuralSDFMap, bad: str) -> None:
    engine = rgbd_engine(room_map, TrackerConfig())
    tracker = engine.tracker
    s = np.linspace(0.0, 1.0, 9)
    good = [render_frame(room, pose_along(v), index=i) for i, v in enumerate(s)]
    for frame in good[:4]:
        assert not engine.track(frame).lost
    # a bad frame: it is lost, and its pose is the prediction, not the result of a failed registration
    prediction = tracker.predict()
    bad_frame = noise_frame(good[4], 1) if bad == "noise" else unmapped_frame(room, good[4])
    if bad == "unmapped":
        world = transform_points(good[4].gt_pose, engine.frontend.sample_points(bad_frame)).astype(np.float32)
        q = room_map.query(torch.from_numpy(world))
        assert float(q.valid.float().mean()) < 0.2  # really looking at unmapped space
    result = engine.track(bad_frame)
    assert result.lost and not result.recovered
    assert (
        not result.inlier_ratio >= tracker.cfg.min_inlier_ratio
        or not result.residual <= tracker.cfg.max_residual
    )
    np.testing.assert_allclose(result.pose, prediction)
    assert tracker.lost_streak == 1
    # the next good frame re-localises from the last good pose
    result = engine.track(good[5])
    assert not result.lost and result.recovered, result
    assert tracker.lost_streak == 0
    t_err, r_err = pose_error(result.pose, good[5].gt_pose)
    assert t_err < 5e-3 and r_err < 0.3, (t_err, r_err)
    # and tracking goes on normally
    result = engine.track(good[6])
    assert not result.lost and not result.recovered
    t_err, r_err = pose_error(result.pose, good[6].gt_pose)
    assert t_err < 1e-2 and r_err < 0.5, (t_err, r_err)


def test_two_bad_frames_in_a_row_stay_lost(room, room_map: NeuralSDFMap) -> None:
    engine = rgbd_engine(room_map, TrackerConfig())
    tracker = engine.tracker
    good = [render_frame(room, pose_along(v), index=i) for i, v in enumerate(np.linspace(0.0, 0.5, 5))]
    for frame in good[:3]:
        assert not engine.track(frame).lost
    last_good = tracker.last_good.copy()
    for k in range(2):
        result = engine.track(noise_frame(good[3], 10 + k))
        assert result.lost and not result.recovered
    assert tracker.lost_streak == 2
    np.testing.assert_array_equal(tracker.last_good, last_good)
    result = engine.track(good[4])
    assert result.recovered and not result.lost
    assert pose_error(result.pose, good[4].gt_pose)[0] < 5e-3


# -- real data -------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def kitchen_map(path: Path) -> tuple[dict[int, RGBDFrame], NeuralSDFMap]:
    """redkitchen frames 0, 10 and 20, and a map of frame 0 integrated at its ground-truth pose (built once
    for the module's tests)."""
    from drivers.sevenscenes import SevenScenesSource

    frames = {f.index: f for f in SevenScenesSource(path, first=0, last=20, stride=10, load_color=False)}
    assert sorted(frames) == [0, 10, 20]
    torch.manual_seed(0)
    m = NeuralSDFMap(NeuralMapConfig(device="cpu"))
    map_frame(Mapper(m, MapperConfig(first_frame_iterations=80), seed=0), frames[0], frames[0].gt_pose)
    return frames, m


@pytest.mark.shared_data
@pytest.mark.slow
def test_register_real_frame_from_previous_pose(redkitchen: Path) -> None:
    frames, m = kitchen_map(redkitchen)
    tracker, frontend = Tracker(m), rgbd_frontend()
    f0 = frames[0]
    # frame 10 (9 mm / 0.53 degrees from frame 0) with the default iteration budget; frame 20 (24 mm /
    # 1.59 degrees) with 20 iterations, enough to converge from there. Bounds about 1.5x the measured
    # errors: frame 10 9.9 mm / 0.28 degrees, frame 20 5.2 mm / 0.16 degrees. Frame 10's translation ends
    # no closer than it started (this one-frame map puts it ~7-10 mm from the ground truth, from the
    # perturbed starts below too): there only the rotation tells a working tracker from a frozen one
    bounds = {10: (0.012, 0.4), 20: (0.008, 0.3)}
    for index, iterations in ((10, None), (20, 20)):
        f = frames[index]
        pose, report = tracker.register(frontend.sample_points(f), f0.gt_pose, iterations=iterations)
        gt_rel = invert_pose(f0.gt_pose) @ f.gt_pose
        est_rel = invert_pose(f0.gt_pose) @ pose
        t_err, r_err = pose_error(est_rel, gt_rel)
        t_start, r_start = pose_error(np.eye(4), gt_rel)
        t_max, r_max = bounds[index]
        assert t_err < t_max and r_err < r_max, (index, t_err, r_err, report)
        assert r_err < 0.75 * r_start, (index, r_start, r_err)
        assert report["inlier_ratio"] > 0.7, report


@pytest.mark.shared_data
@pytest.mark.slow
def test_register_real_frame_from_perturbed_ground_truth(redkitchen: Path) -> None:
    frames, m = kitchen_map(redkitchen)
    tracker = Tracker(m)
    f0, f = frames[0], frames[10]
    points = rgbd_frontend().sample_points(f)
    gt_rel = invert_pose(f0.gt_pose) @ f.gt_pose
    rng = np.random.default_rng(1)
    for _ in range(3):
        init = f.gt_pose @ perturbation(rng, 0.02, 1.0)
        # 20 iterations: converged (the default budget is tuned for frame-to-frame motion, not 2 cm)
        pose, report = tracker.register(points, init, iterations=20)
        t_err, r_err = pose_error(invert_pose(f0.gt_pose) @ pose, gt_rel)
        # it did move towards the truth, well inside the 2 cm / 1° it started from: measured 6.4-7.4 mm,
        # 0.19-0.21° (frame 10 converges ~7-10 mm from the ground truth, see above)
        assert t_err < 0.010 and r_err < 0.35, (t_err, r_err, report)


def test_constant_velocity_prediction_scales_with_the_time_between_frames():
    from slam.core.geometry import se3_exp

    tracker = Tracker(NeuralSDFMap(NeuralMapConfig(device="cpu")))
    step = se3_exp(np.array([0.02, -0.01, 0.005, 0.01, 0.02, -0.015]))  # one 1/30 s frame's motion
    start = np.eye(4)
    tracker.poses = [start, start @ step]
    tracker.timestamps = [0.0, 1 / 30, 1 / 30 + 4 / 30]  # three frames dropped before the current one
    np.testing.assert_allclose(tracker.predict(), start @ step @ np.linalg.matrix_power(step, 4), atol=1e-9)
    tracker.timestamps = [0.0, 1 / 30, 2 / 30]  # evenly spaced: the last motion once
    np.testing.assert_allclose(tracker.predict(), start @ step @ step, atol=1e-12)


@pytest.mark.parametrize("second_guess", [True, False])
def test_a_wrong_velocity_is_caught_by_registering_from_the_last_pose(room, room_map, second_guess) -> None:
    # the camera stops at pose_along(0.5), but the last two poses say it moves 15 cm per frame
    truth = pose_along(0.5)
    config = TrackerConfig(min_hits=100, iterations=20, second_guess_drop=0.85 if second_guess else 0.0)
    engine = rgbd_engine(room_map, config)
    tracker = engine.tracker
    tracker.poses = [pose_along(0.0), truth]
    tracker.timestamps = [0.0, 0.1]
    tracker.last_good = truth
    tracker.recent_inliers.extend([0.9, 0.9, 0.9])  # how well recent frames fitted
    frame = render_frame(room, truth, index=52)
    frame.timestamp = 0.2
    result = engine.track(frame)
    t_err, _ = pose_error(result.pose, truth)
    if second_guess:
        assert result.info["second_guess"] and t_err < 5e-3
    else:  # the prediction is 15 cm off, outside the registration's basin
        assert not result.info["second_guess"] and t_err > 0.03


def test_mapper_every_maps_only_every_nth_frame(room) -> None:
    m = NeuralSDFMap(NeuralMapConfig(voxel_size=0.04, device="cpu", color=False))
    mapper = Mapper(m, MapperConfig(first_frame_iterations=2, rays=256, every=3), seed=0)
    frames = [render_frame(room, pose_along(s), index=i) for i, s in enumerate(np.linspace(0.0, 1.0, 7))]
    corners = []
    for frame in frames:
        map_frame(mapper, frame, frame.gt_pose)
        corners.append(m.grids[0].num_corners)
    assert mapper.frames_integrated == 3  # frames 0, 3 and 6
    # skipped frames neither allocate nor fit: the map grows only at mapped frames
    assert corners[1] == corners[2] == corners[0] and corners[4] == corners[5] == corners[3]
    assert corners[3] > corners[0] and corners[6] > corners[3]


class AnalyticStreetMap:
    """A stand-in for NeuralSDFMap with an exact SDF: a street (ground plane z = 0 and two facades at y = ±8 m,
    each with a post every 6 m) around ``origin``: what a vehicle's LiDAR sees, placed anywhere in the world."""

    def __init__(self, origin: np.ndarray) -> None:
        self.origin = torch.tensor(origin, dtype=torch.float64)

    def _sdf(self, x: torch.Tensor) -> torch.Tensor:
        p = x.double() - self.origin
        ground = p[:, 2]
        facades = 8.0 - p[:, 1].abs()
        # posts: vertical cylinders of radius 0.3 m at x = 6k, y = ±5 m
        dx = p[:, 0] - 6.0 * torch.round(p[:, 0] / 6.0)
        dy = p[:, 1].abs() - 5.0
        posts = torch.sqrt(dx * dx + dy * dy) - 0.3
        return torch.minimum(torch.minimum(ground, facades), posts)

    def query(self, points: torch.Tensor, gradient: bool = False, color: bool = False, min_hits: int = 0):
        from slam.map.neural_map import MapQuery

        x = points.detach().double().requires_grad_(True)
        with torch.enable_grad():
            sdf = self._sdf(x)
            (grad,) = torch.autograd.grad(sdf.sum(), x)
        valid = torch.ones(points.shape[0], dtype=torch.bool)
        return MapQuery(sdf.detach().float(), valid, grad.float() if gradient else None)


def street_scan(rng: np.random.Generator, n: int = 3000) -> np.ndarray:
    """Sensor-frame points (sensor 1.7 m above the ground, mid-street) on the surfaces of AnalyticStreetMap."""
    x = rng.uniform(-30, 30, n)
    kind = rng.integers(0, 3, n)
    pts = np.stack([x, rng.uniform(-8, 8, n), np.full(n, -1.7)], axis=1)  # ground
    side = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    facade = kind == 1
    pts[facade, 1] = 8.0 * side[facade]
    pts[facade, 2] = rng.uniform(-1.7, 6.0, int(facade.sum()))
    post = kind == 2
    ang = rng.uniform(0, 2 * np.pi, int(post.sum()))
    pts[post, 0] = 6.0 * np.round(x[post] / 6.0) + 0.3 * np.cos(ang)
    pts[post, 1] = 5.0 * side[post] + 0.3 * np.sin(ang)
    pts[post, 2] = rng.uniform(-1.7, 3.0, int(post.sum()))
    return pts


@pytest.mark.parametrize("where", [(0.0, 0.0, 0.0), (800.0, -600.0, 40.0)])
def test_registration_does_not_depend_on_where_the_world_origin_is(where) -> None:
    """The same street scan, perturbed the same way, registers as well (same error, same iterations) next to
    the world origin and a kilometre away from it. With the perturbation about the world origin, far away
    every small rotation drags a large translation along and the damping swamps it: there it stopped
    converging within the budget."""
    rng = np.random.default_rng(3)
    points = street_scan(rng)
    truth = np.eye(4)
    truth[:3, 3] = np.asarray(where) + (0.0, 0.0, 1.7)
    cfg = TrackerConfig(
        iterations=12,
        coarse_iterations=0,
        robust_scale=0.2,
        inlier_threshold=0.2,
        min_hits=0,
        converged_delta=1e-3,
    )
    tracker = Tracker(AnalyticStreetMap(np.asarray(where)), cfg)  # type: ignore[arg-type]
    errors, iterations = [], []
    for k in range(4):
        init = truth @ perturbation(np.random.default_rng(10 + k), 0.15, 1.0)
        pose, report = tracker.register(points, init)
        errors.append(pose_error(pose, truth))
        iterations.append(report["iterations"])
    trans, rot = np.max(errors, axis=0)
    assert trans < 0.01 and rot < 0.05, (errors, iterations)
    assert max(iterations) < 12, iterations  # converged, not stopped by the budget


def test_about_sensor_update_is_the_conjugated_exponential() -> None:
    from slam.engine.tracker import about_sensor_to_world, apply_about_sensor

    rng = np.random.default_rng(0)
    pose = se3_exp(rng.normal(size=6))
    pose[:3, 3] = (300.0, -50.0, 12.0)
    xi = rng.normal(size=6) * 0.05
    shift, back = np.eye(4), np.eye(4)
    shift[:3, 3], back[:3, 3] = pose[:3, 3], -pose[:3, 3]
    assert np.allclose(apply_about_sensor(xi, pose), shift @ se3_exp(xi) @ back @ pose, atol=1e-9)
    assert np.allclose(se3_exp(about_sensor_to_world(pose) @ xi), shift @ se3_exp(xi) @ back, atol=1e-9)


def test_yaw_search_brings_a_turn_back_into_the_basin() -> None:
    """A heading off by 4 degrees (a turn's prediction when scans were dropped) puts far points metres from
    their surfaces, beyond the robust kernel: registration alone stays off, the heading search first brings
    it back. Without an error the search keeps the prediction."""
    rng = np.random.default_rng(5)
    points = street_scan(rng)
    truth = np.eye(4)
    truth[:3, 3] = (0.0, 0.0, 1.7)
    off = truth.copy()
    off[:3, :3] = Rotation.from_euler("z", 4.0, degrees=True).as_matrix()
    base = dict(iterations=8, coarse_iterations=0, robust_scale=0.1, inlier_threshold=0.2, min_hits=0)
    street = AnalyticStreetMap(np.zeros(3))
    plain = Tracker(street, TrackerConfig(**base))  # type: ignore[arg-type]
    searching = Tracker(street, TrackerConfig(**base, yaw_search_deg=6.0))  # type: ignore[arg-type]
    assert pose_error(plain.register(points, off)[0], truth)[1] > 1.0
    start = searching.search_yaw(points, off)
    assert pose_error(start, truth)[1] <= 0.75
    assert pose_error(searching.register(points, start)[0], truth)[1] < 0.05
    assert np.array_equal(searching.search_yaw(points, truth), truth)


def test_travel_search_finds_the_braking_offset_along_the_street() -> None:
    """A prediction 0.6 m ahead of the truth along the street (braking over dropped scans): facades and
    ground cannot pull it back and the posts are out of reach, so registration alone stays off; the search
    along the predicted travel brings it back. Without an error the search keeps the prediction."""
    rng = np.random.default_rng(6)
    points = street_scan(rng)
    truth = np.eye(4)
    truth[:3, 3] = (0.0, 0.0, 1.7)
    last = truth.copy()
    last[0, 3] -= 2.0
    ahead = truth.copy()
    ahead[0, 3] += 0.6
    base = dict(iterations=8, coarse_iterations=0, robust_scale=0.1, inlier_threshold=0.2, min_hits=0)
    street = AnalyticStreetMap(np.zeros(3))
    plain = Tracker(street, TrackerConfig(**base))  # type: ignore[arg-type]
    searching = Tracker(street, TrackerConfig(**base, travel_search_m=1.0))  # type: ignore[arg-type]
    assert pose_error(plain.register(points, ahead)[0], truth)[0] > 0.3
    start = searching.search_travel(points, ahead, last)
    assert pose_error(start, truth)[0] <= 0.1
    assert pose_error(searching.register(points, start)[0], truth)[0] < 0.01
    assert np.array_equal(searching.search_travel(points, truth, last), truth)


def test_travel_search_without_a_velocity_tries_a_horizontal_grid() -> None:
    """The second scan of a run that starts while moving: the prediction is the first pose (no velocity yet),
    0.6 m behind along the street and 0.2 m to the side; the grid search finds where the scan fits."""
    rng = np.random.default_rng(8)
    points = street_scan(rng)
    truth = np.eye(4)
    truth[:3, 3] = (0.0, 0.0, 1.7)
    first = truth.copy()
    first[:3, 3] -= (0.6, 0.2, 0.0)
    cfg = TrackerConfig(
        iterations=8,
        coarse_iterations=0,
        robust_scale=0.1,
        inlier_threshold=0.2,
        min_hits=0,
        travel_search_m=1.0,
    )
    searching = Tracker(AnalyticStreetMap(np.zeros(3)), cfg)  # type: ignore[arg-type]
    assert pose_error(searching.register(points, first)[0], truth)[0] > 0.3  # registration alone stays behind
    start = searching.search_travel(points, first, first)
    assert pose_error(start, truth)[0] <= 0.15
    assert pose_error(searching.register(points, start)[0], truth)[0] < 0.01
    assert np.array_equal(searching.search_travel(points, truth, truth), truth)


def test_deskew_motion_over_a_window_averages_out_pose_noise() -> None:
    """last_motion(window) spans the last tracked frames within the window (at least one interval): a roll
    error of ±0.3° that alternates from frame to frame makes the one-frame angular rate 6°/s wrong, the
    three-frame (0.3 s) rate 2°/s. Frames further apart (dropped scans) fall back to the last interval."""
    from slam.core.geometry import se3_log

    twist = np.array([8.0, 0.0, 0.0, 0.0, 0.0, np.radians(5.0)])  # 8 m/s, turning at 5°/s
    tracker = Tracker(AnalyticStreetMap(np.zeros(3)), TrackerConfig())  # type: ignore[arg-type]
    assert tracker.last_motion(0.3) == (None, None)
    for i in range(6):
        noise = se3_exp(np.array([0, 0, 0, np.radians(0.3) * (-1) ** i, 0, 0]))
        tracker.poses.append(se3_exp(twist * 0.1 * i) @ noise)
        tracker.timestamps.append(0.1 * i)
    motion1, dt1 = tracker.last_motion(0.0)
    motion3, dt3 = tracker.last_motion(0.3)
    assert dt1 == pytest.approx(0.1) and dt3 == pytest.approx(0.3)
    err1 = np.degrees(np.abs(se3_log(motion1)[3:] / dt1 - twist[3:])).max()
    err3 = np.degrees(np.abs(se3_log(motion3)[3:] / dt3 - twist[3:])).max()
    assert err1 == pytest.approx(6.0, abs=0.3) and err3 == pytest.approx(2.0, abs=0.2)
    tracker.timestamps = [0.0, 0.5, 1.0, 1.5, 1.6, 2.1]  # gaps of dropped scans
    assert tracker.last_motion(0.3)[1] == pytest.approx(0.5)
    tracker.poses, tracker.timestamps = tracker.poses[:2], [0.0, 0.1]
    assert tracker.last_motion(0.3)[1] == pytest.approx(0.1)  # only one interval tracked yet


def test_sweep_motion_is_estimated_with_the_pose() -> None:
    """A sweep taken while the sensor drove 0.8 m and turned a few tenths of a degree (rolling, pitching,
    turning: a body rocking on its suspension), deskewed with the forward motion only (what the last scans
    predict): registered as rigid, the bent scan leaves the orientation half a degree off; with each point's
    firing time the tracker recovers the pose and the sweep's turn together."""
    from slam.core.geometry import apply_scaled_twist

    rng = np.random.default_rng(7)
    end_points = street_scan(rng, 4000)  # in the sensor frame at the end of the sweep
    azimuth = np.arctan2(end_points[:, 1], end_points[:, 0])
    fractions = (azimuth + np.pi) / (2 * np.pi) - 1.0  # a spinning sensor: firing time follows azimuth
    sweep = np.array([0.8, 0.0, 0.0, 0.006, -0.008, 0.01])  # (v m, ω rad) over the whole sweep, body frame
    predicted = np.array([0.8, 0.0, 0.0, 0.0, 0.0, 0.0])
    # each point in the sensor frame when it fired (exp(-u·δ) of its end-frame position), then deskewed
    # with the predicted motion
    scan = apply_scaled_twist(apply_scaled_twist(end_points, -fractions, sweep), fractions, predicted)
    truth = np.eye(4)
    truth[:3, 3] = (0.0, 0.0, 1.7)
    base = dict(iterations=8, coarse_iterations=0, robust_scale=0.1, inlier_threshold=0.2, min_hits=0)
    tracker = Tracker(AnalyticStreetMap(np.zeros(3)), TrackerConfig(**base, converged_delta=1e-4))  # type: ignore[arg-type]
    rigid_error = pose_error(tracker.register(scan, truth)[0], truth)
    pose, report = tracker.register(scan, truth, sweep_fractions=fractions, sweep_prior=0.01)
    error = pose_error(pose, truth)
    assert rigid_error[1] > 0.3, rigid_error
    assert error[0] < 0.01 and error[1] < 0.12, error
    correction = report["sweep_correction"]
    assert np.abs(correction[:3]).max() < 0.01, correction  # the forward motion was right
    assert np.abs(correction[4:] - sweep[4:]).max() < 0.001, (
        correction
    )  # pitch and yaw rates (roll: weak here)
    # without point times, or with the prior off, the sweep is not estimated
    assert "sweep_correction" not in tracker.register(scan, truth)[1]
    assert (
        "sweep_correction" not in tracker.register(scan, truth, sweep_fractions=fractions, sweep_prior=0.0)[1]
    )


def test_offset_searches_run_only_when_the_prediction_spans_more_than_a_sweep(monkeypatch) -> None:
    """At the sensor's rate a constant-velocity prediction covers one sweep and the searches (600 points
    scored per offset) are skipped; they run for the second scan (no velocity yet) and after a gap."""
    from slam.core.frames import LidarScan

    rng = np.random.default_rng(9)
    points = street_scan(rng, 3000).astype(np.float32)
    azimuth = np.arctan2(points[:, 1], points[:, 0])
    times = ((azimuth + np.pi) / (2 * np.pi) - 1.0) * 0.1  # a 0.1 s sweep ending at the timestamp
    cfg = TrackerConfig(
        iterations=4,
        coarse_iterations=0,
        robust_scale=0.1,
        inlier_threshold=0.2,
        max_residual=0.2,
        min_hits=0,
        yaw_search_deg=3.0,
        travel_search_m=0.4,
    )
    from slam.engine.engine import Engine
    from slam.frontends.lidar import LidarFrontend

    tracker = Tracker(AnalyticStreetMap(np.zeros(3)), cfg)  # type: ignore[arg-type]
    engine = Engine(tracker, None, LidarFrontend())
    calls: list[float] = []
    original = tracker.search_yaw
    monkeypatch.setattr(
        tracker, "search_yaw", lambda pts, init: calls.append(len(tracker.poses)) or original(pts, init)
    )
    start = np.eye(4)
    start[2, 3] = 1.7
    for i, t in enumerate([0.0, 0.1, 0.2, 0.3, 0.7, 0.8]):  # the same place: a vehicle at rest, then a gap
        scan = LidarScan(i, t, points, point_times=times.astype(np.float32), gt_pose=start)
        result = engine.track(scan)
        assert not result.lost
    # scans 1 (no velocity yet) and 4 (0.4 s after scan 3) searched; 2, 3 and 5 did not
    assert calls == [1, 4], calls
