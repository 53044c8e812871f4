"""slam.frontends.events: the event residual's Jacobian against a finite difference, pose propagation from
simulated events, and the tracker hook (a no-op without events)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from synthetic import box_room, look_at, map_frame, render_frame, rgbd_frontend

from drivers.sim.events import DepthWarper, EventSimConfig, EventSimulator, interpolate_pose, log_intensity
from slam.core.frames import CameraIntrinsics, RGBDFrame
from slam.core.geometry import se3_exp, se3_log
from slam.core.observation import PosePrior
from slam.engine.engine import Engine
from slam.engine.mapper import Mapper, MapperConfig
from slam.engine.tracker import Tracker
from slam.frontends.events import EventFrontend, EventOdometry, EventTrackingConfig, event_image
from slam.map.neural_map import NeuralMapConfig, NeuralSDFMap

INTR = CameraIntrinsics(100.0, 100.0, 59.5, 44.5, 120, 90)


def textured_scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A grey image (0-255) of smooth blobs, a depth of two slanted planes, and a camera pose."""
    rng = np.random.default_rng(0)
    img = gaussian_filter(rng.uniform(0, 255, (INTR.height, INTR.width)), 2.5)
    img = 128 + (img - img.mean()) * (90 / img.std())
    u, v = np.meshgrid(np.arange(INTR.width), np.arange(INTR.height))
    depth = np.where(u < 60, 1.5 + 0.004 * v, 2.5 - 0.003 * u).astype(np.float32)
    pose = look_at(np.array([0.1, -0.2, 0.3]), np.array([1.0, 2.0, 0.5]))
    return np.clip(img, 1, 255).astype(np.float32), depth, pose


def _frame(img: np.ndarray, depth: np.ndarray, pose: np.ndarray, t: float = 0.0) -> RGBDFrame:
    color = np.repeat(np.clip(np.round(img), 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    return RGBDFrame(0, t, depth, INTR, color=color, gt_pose=pose)


def test_event_image_sums_polarities_times_the_threshold():
    x = np.array([1, 1, 2, 0], np.uint16)
    y = np.array([0, 0, 1, 1], np.uint16)
    p = np.array([1, 1, -1, 1], np.int8)
    img = event_image(x, y, p, 3, 2, 0.25, 0.0)
    np.testing.assert_allclose(img, [[0, 0.5, 0], [0.25, 0, -0.25]])


@pytest.mark.parametrize("axis", range(6))
def test_predicted_brightness_change_matches_a_warp(axis):
    """-A ξ (the model's ΔL) against the actual change of the smoothed log image under the motion ξ."""
    img, depth, pose = textured_scene()
    cfg = EventTrackingConfig(smoothing_px=1.0, target_median=float(np.median(img)), points=2000, binning=1)
    odo = EventOdometry(cfg)
    key = odo.keyframe(_frame(img, depth, pose), pose, INTR)
    log = gaussian_filter(np.log(np.round(img) / 255.0 + cfg.log_eps).astype(np.float32), 1.0)
    xi = np.zeros(6)
    xi[axis] = 0.004 if axis < 3 else 0.003
    moved = se3_exp(xi) @ pose
    change = DepthWarper(INTR).warp(log, depth, pose, moved) - log
    a, e, _ = odo.window_system(key, pose, change, INTR)
    predicted = -a @ xi
    assert np.corrcoef(predicted, e)[0, 1] > 0.9
    assert 0.8 < (predicted @ e) / (predicted @ predicted) < 1.2


def simulate_motion(img, depth, pose, end_pose, duration=0.05, steps=40):
    """Events of the keyframe image warped along the motion from pose to end_pose."""
    warper = DepthWarper(INTR)
    cfg = EventSimConfig(contrast_threshold=0.15, threshold_sigma=0.02, refractory_s=0.0)
    sim = EventSimulator(INTR.width, INTR.height, cfg)
    sim.reset(log_intensity(img), 0.0)
    parts = []
    for i in range(1, steps + 1):
        a = i / steps
        parts.append(
            sim.step(
                log_intensity(warper.warp(img, depth, pose, interpolate_pose(pose, end_pose, a))),
                a * duration,
            )
        )
    from drivers.sim.events import Events

    return Events.concat(parts).packet(INTR.width, INTR.height, timestamp=duration, intrinsics=INTR)


def test_propagation_recovers_a_known_motion_from_simulated_events():
    img, depth, pose = textured_scene()
    motion = np.array([0.01, -0.005, 0.008, 0.004, -0.006, 0.003])  # 1.4 cm, 0.45 degrees
    end_pose = se3_exp(motion) @ pose
    packet = simulate_motion(img, depth, pose, end_pose)
    assert len(packet) > 500
    cfg = EventTrackingConfig(
        contrast_threshold=0.15,
        target_median=float(np.median(img)),
        window_s=0.05 / 8,
        smoothing_px=2.0,
        binning=1,
    )
    odo = EventOdometry(cfg)
    key = odo.keyframe(_frame(img, depth, pose), pose, INTR)
    prop = odo.propagate(key, pose, packet, 0.0, 0.05)
    assert prop is not None and len(prop.windows) >= 6
    moved = np.linalg.norm(end_pose[:3, 3] - pose[:3, 3])
    turned = np.linalg.norm(se3_log(end_pose @ np.linalg.inv(pose))[3:])
    t_err = np.linalg.norm(prop.pose[:3, 3] - end_pose[:3, 3])
    r_err = np.linalg.norm(se3_log(prop.pose @ np.linalg.inv(end_pose))[3:])
    assert t_err < 0.35 * moved and r_err < 0.35 * turned, (t_err, moved, r_err, turned)
    assert odo.events_processed == len(packet)
    assert np.all(np.linalg.eigvalsh(prop.information) > 0)


@pytest.fixture(scope="module")
def room_setup():
    room = box_room()
    torch.manual_seed(0)
    m = NeuralSDFMap(NeuralMapConfig(voxel_size=0.04, device="cpu", color=False))
    mapper = Mapper(
        m, MapperConfig(first_frame_iterations=60, iterations=10, truncation=0.08, rays=1024), seed=0
    )
    target = np.array([0.6, -0.4, -0.6])
    poses = [look_at(np.array([-1.3 + 0.3 * s, 0.9 - 0.2 * s, 0.4]), target) for s in np.linspace(0, 1, 5)]
    frames = [render_frame(room, p, index=i) for i, p in enumerate(poses)]
    for f in frames[::2]:
        map_frame(mapper, f, f.gt_pose)
    for i, f in enumerate(frames):
        f.timestamp = i / 10.0
        f.color = np.full((*f.depth.shape, 3), 128, np.uint8)
    return m, frames


def test_event_frontend_without_events_equals_the_rgbd_frontend(room_setup):
    m, frames = room_setup
    plain = Engine(Tracker(m), None, rgbd_frontend())
    aided = Engine(Tracker(m), None, EventFrontend(rgbd_frontend()))
    for f in frames:
        a, b = plain.track(f), aided.track(f)
        np.testing.assert_array_equal(a.pose, b.pose)
        assert a.iterations == b.iterations
    assert aided.tracker_name == plain.tracker_name == Tracker.name  # no "+events": never used


@pytest.mark.parametrize("compare_velocity", [False, True])
def test_a_pose_prior_term_pulls_towards_its_pose(room_setup, compare_velocity):
    m, frames = room_setup
    tracker, frontend = Tracker(m), rgbd_frontend()
    tracker.track(frontend.observe(frames[0], tracker))
    target = frames[1].gt_pose @ se3_exp(np.array([0.03, 0, 0, 0, 0, 0]))
    big = np.eye(6) * 1e6

    def term(pose):
        return big, big @ se3_log(pose @ np.linalg.inv(target))

    obs = frontend.observe(frames[1], tracker)
    obs.prior = PosePrior(target, term, compare_velocity=compare_velocity)
    result = tracker.track(obs)
    if compare_velocity:  # registered from constant velocity without the term too: the depth fits better
        assert result.info["chose_velocity"]
        assert np.linalg.norm(result.pose[:3, 3] - frames[1].gt_pose[:3, 3]) < 5e-3
    else:
        assert not result.info["chose_velocity"]
        assert np.linalg.norm(result.pose[:3, 3] - target[:3, 3]) < 2e-3


def test_deblurring_with_events_sharpens_a_blurred_keyframe():
    from drivers.sim.events import log_intensity as log_i
    from slam.frontends.events import deblur

    img, depth, pose = textured_scene()
    end_pose = se3_exp(np.array([0.03, 0.0, 0.0, 0.0, 0.01, 0.0])) @ pose  # several pixels of motion
    warper = DepthWarper(INTR)
    steps = 24
    subs = [
        warper.warp(img, depth, pose, interpolate_pose(pose, end_pose, i / steps)) for i in range(steps + 1)
    ]
    blurred = np.mean(subs, axis=0)
    sharp = subs[-1]
    sim = EventSimulator(
        INTR.width,
        INTR.height,
        EventSimConfig(contrast_threshold=0.1, threshold_sigma=0.0, refractory_s=0.0, log_eps=1e-3),
    )
    sim.reset(log_i(subs[0], 1e-3), 0.0)
    from drivers.sim.events import Events

    ev = Events.concat([sim.step(log_i(s, 1e-3), i / steps * 0.03) for i, s in enumerate(subs[1:], 1)])
    packet = ev.packet(INTR.width, INTR.height, intrinsics=INTR)
    restored = deblur(blurred.astype(np.float32), packet, 0.03, 0.03, 0.1, samples=12)
    inner = (slice(8, -8), slice(8, -8))
    before = np.abs(blurred - sharp)[inner].mean()
    after = np.abs(restored - sharp)[inner].mean()
    assert after < 0.6 * before, (before, after)
    # no events: unchanged
    empty = Events.empty().packet(INTR.width, INTR.height)
    np.testing.assert_array_equal(deblur(sharp, empty, 0.03, 0.03, 0.1), sharp)


def test_binned_event_image_is_the_mean_over_its_cells():
    rng = np.random.default_rng(2)
    x = rng.integers(0, 8, 200).astype(np.uint16)
    y = rng.integers(0, 6, 200).astype(np.uint16)
    p = rng.choice([-1, 1], 200).astype(np.int8)
    full = event_image(x, y, p, 8, 6, 0.2, 0.0)
    binned = event_image(x, y, p, 8, 6, 0.2, 0.0, binning=2)
    np.testing.assert_allclose(binned, full.reshape(3, 2, 4, 2).mean(axis=(1, 3)), atol=1e-6)


def test_event_aided_tracker_uses_events_and_tracks_the_room(room_setup):
    from drivers.sim.events import rgbd_sequence_events
    from slam.core.geometry import backproject

    m, frames = room_setup
    textured = []
    for f in frames:
        pts, idx = backproject(f.depth, f.intrinsics)
        world = pts @ f.gt_pose[:3, :3].T + f.gt_pose[:3, 3]
        grey = np.zeros(f.depth.size, np.float32)
        grey[idx] = 128 + 90 * np.sin(9 * world[:, 0]) * np.sin(7 * world[:, 1] + 1) * np.cos(8 * world[:, 2])
        color = np.repeat(np.clip(grey, 0, 255).astype(np.uint8).reshape(f.depth.shape)[..., None], 3, axis=2)
        textured.append(
            RGBDFrame(f.index, f.timestamp, f.depth, f.intrinsics, color=color, gt_pose=f.gt_pose)
        )
    intr = frames[0].intrinsics
    for f, ev in rgbd_sequence_events(textured, intr, EventSimConfig(seed=0)):
        f.events = ev.packet(intr.width, intr.height, timestamp=f.timestamp, index=f.index, intrinsics=intr)
    frontend = EventFrontend(rgbd_frontend(), EventTrackingConfig(smoothing_px=2.0, binning=1))
    engine = Engine(Tracker(m), None, frontend)
    for f in textured:
        result = engine.track(f)
        if f.index > 0:
            assert result.info["event_windows"] > 0 and result.info["events"] > 0
            assert not result.lost
            assert np.linalg.norm(result.pose[:3, 3] - f.gt_pose[:3, 3]) < 0.01
    assert frontend.odometry.events_processed > 0
    assert engine.tracker_name == Tracker.name + "+events"


def test_window_information_counts_independent_observations_only():
    """The smoothing correlates neighbouring residuals: a window's information handed to the depth term is
    scaled by N_eff / N (N_eff = area / (4π σ²)); the pose estimate itself does not change."""
    img, depth, pose = textured_scene()
    motion = np.array([0.01, -0.005, 0.008, 0.004, -0.006, 0.003])
    packet = simulate_motion(img, depth, pose, se3_exp(motion) @ pose)
    kw = dict(
        contrast_threshold=0.15,
        target_median=float(np.median(img)),
        window_s=0.05 / 8,
        smoothing_px=2.0,
        binning=1,
    )
    out = {}
    for decorrelate in (False, True):
        odo = EventOdometry(EventTrackingConfig(decorrelate=decorrelate, **kw))
        key = odo.keyframe(_frame(img, depth, pose), pose, INTR)
        out[decorrelate] = (
            odo.propagate(key, pose, packet, 0.0, 0.05),
            odo.independent_share(len(key.points), INTR),
        )
    (plain, one), (dec, share) = out[False], out[True]
    assert one == 1.0 and share == pytest.approx(INTR.width * INTR.height / (4 * np.pi * 4.0) / 3000)
    np.testing.assert_allclose(dec.pose, plain.pose)
    ratio = np.trace(dec.information) / np.trace(plain.information)
    assert 0.5 * share < ratio < 2.0 * share
