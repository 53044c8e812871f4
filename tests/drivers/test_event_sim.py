"""Event simulator (drivers.sim.events): known answers on synthetic ramps, refractory period, threshold
noise, warping, and the colour degradations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from drivers.sim.events import (
    DepthWarper,
    Events,
    EventSimConfig,
    EventSimulator,
    interpolate_pose,
    log_intensity,
    low_light,
    motion_blur,
    simulate,
)
from slam.core.frames import CameraIntrinsics, EventPacket
from slam.core.geometry import se3_exp


def ramp(levels: np.ndarray, steps: int, h: int = 6, w: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Log images going linearly from 0 to ``levels`` (one per pixel, H×W) over 1 s in ``steps`` steps."""
    times = np.linspace(0.0, 1.0, steps + 1)
    return times[:, None, None] * levels[None], times


def test_linear_ramp_gives_the_expected_events_per_pixel_and_polarity():
    h, w = 6, 8
    levels = np.linspace(-1.05, 1.05, h * w).reshape(h, w)  # some pixels up, some down, by up to 1.05
    cfg = EventSimConfig(contrast_threshold=0.2, threshold_sigma=0.0, refractory_s=0.0)
    imgs, times = ramp(levels, steps=7)
    ev = simulate(imgs, times, cfg)
    expected = np.floor(np.abs(levels) / 0.2 + 1e-12).astype(int)
    counts = np.zeros((h, w), int)
    np.add.at(counts, (ev.y.astype(int), ev.x.astype(int)), 1)
    np.testing.assert_array_equal(counts, expected)
    assert np.all(ev.p == np.sign(levels[ev.y, ev.x]).astype(np.int8))
    assert np.all(np.diff(ev.t) >= 0)
    # the k-th event of a pixel fires when the ramp reaches k·C: t = k·C / |level|
    for y, x in ((0, 0), (h - 1, w - 1), (2, 3)):
        sel = (ev.y == y) & (ev.x == x)
        k = np.arange(1, expected[y, x] + 1)
        np.testing.assert_allclose(ev.t[sel], k * 0.2 / abs(levels[y, x]), atol=1e-9)
    # and the result does not depend on how finely the ramp is sampled
    imgs2, times2 = ramp(levels, steps=50)
    ev2 = simulate(imgs2, times2, cfg)
    np.testing.assert_allclose(np.sort(ev2.t), np.sort(ev.t), atol=1e-9)


def test_back_and_forth_gives_opposite_polarities_and_no_drift():
    cfg = EventSimConfig(contrast_threshold=0.25, threshold_sigma=0.0, refractory_s=0.0)
    sim = EventSimulator(1, 1, cfg)
    sim.reset(np.zeros((1, 1)), 0.0)
    up = sim.step(np.full((1, 1), 1.0), 1.0)
    down = sim.step(np.zeros((1, 1)), 2.0)
    assert len(up) == 4 and np.all(up.p == 1)
    assert len(down) == 4 and np.all(down.p == -1)
    np.testing.assert_allclose(down.t, [1.25, 1.5, 1.75, 2.0])  # crossings of 0.75, 0.5, 0.25, 0


def test_refractory_period_is_enforced():
    h, w = 4, 5
    levels = np.full((h, w), 3.01)  # 15 crossings in 1 s at C = 0.2: one every 66.4 ms
    refr = 0.15
    cfg = EventSimConfig(contrast_threshold=0.2, threshold_sigma=0.0, refractory_s=refr)
    imgs, times = ramp(levels, steps=13)  # the refractory period spans steps
    ev = simulate(imgs, times, cfg)
    for pix in range(h * w):
        t = ev.t[(ev.y.astype(int) * w + ev.x) == pix]
        assert np.all(np.diff(t) >= refr - 1e-9)
        # greedy: crossings at k·0.2/3.01 s, kept every third one (the next at least 0.15 s later)
        np.testing.assert_allclose(t, np.array([1, 4, 7, 10, 13]) * 0.2 / 3.01, atol=1e-9)
    # without it all 15 fire
    ev_all = simulate(
        imgs, times, EventSimConfig(contrast_threshold=0.2, threshold_sigma=0.0, refractory_s=0.0)
    )
    assert len(ev_all) == 15 * h * w


def test_threshold_noise_statistics_and_determinism():
    cfg = EventSimConfig(contrast_threshold=0.3, threshold_sigma=0.05, seed=3)
    sim = EventSimulator(200, 150, cfg)
    for c in (sim.c_on, sim.c_off):
        assert abs(c.mean() - 0.3) < 0.002
        assert abs(c.std() - 0.05) < 0.002
    assert abs(np.corrcoef(sim.c_on, sim.c_off)[0, 1]) < 0.02
    again = EventSimulator(200, 150, cfg)
    np.testing.assert_array_equal(again.c_on, sim.c_on)
    other = EventSimulator(200, 150, EventSimConfig(contrast_threshold=0.3, threshold_sigma=0.05, seed=4))
    assert not np.array_equal(other.c_on, sim.c_on)
    # with noisy thresholds each pixel fires floor(level / its own threshold) times
    levels = np.full((150, 200), 1.0)
    sim.reset(np.zeros((150, 200)), 0.0)
    ev = sim.step(levels, 1.0)
    counts = np.bincount(ev.y.astype(int) * 200 + ev.x, minlength=200 * 150)
    np.testing.assert_array_equal(counts, np.floor(1.0 / sim.c_on))


def test_events_make_a_valid_packet_and_slice():
    levels = np.linspace(0.1, 1.0, 12).reshape(3, 4)
    ev = simulate(*ramp(levels, 4), EventSimConfig(threshold_sigma=0.0, refractory_s=0.0))
    packet = ev.packet(4, 3, timestamp=1.0)
    assert isinstance(packet, EventPacket) and len(packet) == len(ev) > 0
    part = ev.between(0.25, 0.5)
    assert np.all((part.t > 0.25) & (part.t <= 0.5))
    assert len(ev.between(0.0, 0.25)) + len(part) + len(ev.between(0.5, 1.0)) == len(ev)


def test_log_intensity_and_static_scene_gives_no_events():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (10, 12, 3)).astype(np.uint8)
    log = log_intensity(img)
    assert log.shape == (10, 12) and log.dtype == np.float32
    ev = simulate(np.stack([log] * 5), np.arange(5) * 0.01, EventSimConfig())
    assert len(ev) == 0


def test_interpolate_pose_endpoints_and_midpoint():
    a = se3_exp(np.array([0.1, -0.2, 0.3, 0.05, 0.1, -0.02]))
    b = a @ se3_exp(np.array([0.2, 0.0, 0.0, 0.0, 0.0, 0.4]))
    np.testing.assert_allclose(interpolate_pose(a, b, 0.0), a, atol=1e-12)
    np.testing.assert_allclose(interpolate_pose(a, b, 1.0), b, atol=1e-12)
    mid = interpolate_pose(a, b, 0.5)
    np.testing.assert_allclose(
        interpolate_pose(a, mid, 1.0) @ np.linalg.inv(a), mid @ np.linalg.inv(a), atol=1e-12
    )
    np.testing.assert_allclose(
        np.linalg.inv(a) @ mid @ np.linalg.inv(a) @ mid, np.linalg.inv(a) @ b, atol=1e-9
    )


def _synthetic_view():
    intr = CameraIntrinsics(60.0, 60.0, 31.5, 23.5, 64, 48)
    u, v = np.meshgrid(np.arange(64), np.arange(48))
    img = (128 + 60 * np.sin(u / 3.0) * np.cos(v / 4.0)).astype(np.float32)
    depth = np.full((48, 64), 2.0, np.float32)
    return intr, img, depth


def test_warp_translation_of_a_plane_shifts_the_image():
    intr, img, depth = _synthetic_view()
    warper = DepthWarper(intr)
    src = np.eye(4)
    dst = np.eye(4)
    dst[0, 3] = 2.0 * 2 / 60.0  # camera 2 px to the right at 2 m: the image moves 2 px left
    out = warper.warp(img, depth, src, dst)
    np.testing.assert_allclose(out[:, :-2], img[:, 2:], atol=1e-3)


@pytest.mark.shared_data
def test_warping_a_real_frame_by_the_identity_gives_no_events(redkitchen: Path):
    from drivers.sevenscenes import SevenScenesSource

    with SevenScenesSource(redkitchen, first=0, last=0) as src:
        frame = next(iter(src))
    warper = DepthWarper(frame.intrinsics)
    img = frame.color.astype(np.float32)
    out = warper.warp(img, frame.depth, frame.gt_pose, frame.gt_pose)
    assert np.max(np.abs(out - img)) < 1e-3
    sim = EventSimulator(frame.intrinsics.width, frame.intrinsics.height, EventSimConfig(threshold_sigma=0.0))
    sim.reset(log_intensity(img), 0.0)
    assert len(sim.step(log_intensity(out), 0.01)) == 0
    # a real motion does give events
    moved = warper.warp(
        img, frame.depth, frame.gt_pose, frame.gt_pose @ se3_exp(np.array([0.01, 0, 0, 0, 0.01, 0]))
    )
    assert len(sim.step(log_intensity(moved), 0.02)) > 1000


def test_motion_blur_of_a_static_scene_is_the_identity_and_averages_otherwise():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (9, 7, 3)).astype(np.uint8)
    np.testing.assert_array_equal(motion_blur([img] * 6), img)
    shifted = np.roll(img, 1, axis=1)
    blurred = motion_blur([img, shifted])
    np.testing.assert_array_equal(blurred, np.round((img.astype(float) + shifted) / 2).astype(np.uint8))


def test_low_light_reduces_range_and_adds_noise_deterministically():
    img = np.full((100, 100, 3), 200, np.uint8)
    dark = low_light(img, np.random.default_rng(0), scale=0.2)
    assert dark.dtype == np.uint8
    assert abs(dark.mean() - 40.0) < 1.0  # 200 · 0.2
    assert dark.std() > 2.0  # shot + read noise
    np.testing.assert_array_equal(dark, low_light(img, np.random.default_rng(0), scale=0.2))


def test_empty_events_and_concat():
    assert len(Events.empty()) == 0
    e = Events(np.array([0.1]), np.array([1], np.uint16), np.array([2], np.uint16), np.array([1], np.int8))
    assert len(Events.concat([Events.empty(), e, e])) == 2


@pytest.mark.shared_data
def test_rgbd_sequence_events_are_sorted_and_inside_each_interval(redkitchen: Path):
    from drivers.sevenscenes import SevenScenesSource
    from drivers.sim.events import rgbd_sequence_events

    with SevenScenesSource(redkitchen, first=0, last=2) as src:
        frames = list(src)
    intr = frames[0].intrinsics.scaled(0.25)
    out = list(rgbd_sequence_events(frames, intr, EventSimConfig(seed=1)))
    assert len(out[0][1]) == 0
    for (prev, _), (frame, ev) in zip(out[:-1], out[1:], strict=True):
        assert len(ev) > 0  # the camera barely moves over the first frames
        assert np.all(np.diff(ev.t) >= 0) and ev.t[0] > prev.timestamp and ev.t[-1] <= frame.timestamp + 1e-12
        assert ev.x.max() < intr.width and ev.y.max() < intr.height
    again = list(rgbd_sequence_events(frames, intr, EventSimConfig(seed=1)))
    np.testing.assert_array_equal(again[2][1].t, out[2][1].t)


def test_demo_events_render_the_continuous_path():
    from drivers.sim.events import demo_events

    intr = CameraIntrinsics(26.25, 26.25, 15.5, 11.5, 32, 24)
    per_frame, worst = demo_events(0, 3, 30.0, intr, EventSimConfig(), max_flow=0.25, max_substeps=8)
    assert len(per_frame) == 3 and len(per_frame[0]) == 0
    assert all(len(e) > 0 for e in per_frame[1:])
    assert per_frame[1].t.max() <= 1 / 30 + 1e-12 < per_frame[2].t.min()
    assert 0 < worst < 0.5  # the estimate from the previous render's depth keeps it near max_flow
