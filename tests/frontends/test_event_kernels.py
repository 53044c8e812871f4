"""The event term's compiled kernels (slam.frontends.events) against their numpy references."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from synthetic import look_at

from drivers.sim.events import DepthWarper
from slam.core.frames import CameraIntrinsics, EventPacket, RGBDFrame
from slam.core.geometry import se3_exp, skew
from slam.frontends.events import (
    EventOdometry,
    EventTrackingConfig,
    deblur,
    deblur_reference,
    event_image,
    event_image_reference,
    gaussian_smooth,
)

INTR = CameraIntrinsics(100.0, 100.0, 59.5, 44.5, 120, 90)


def _scene():
    rng = np.random.default_rng(0)
    img = gaussian_filter(rng.uniform(0, 255, (INTR.height, INTR.width)), 2.5)
    img = np.clip(128 + (img - img.mean()) * (90 / img.std()), 1, 255).astype(np.float32)
    u, v = np.meshgrid(np.arange(INTR.width), np.arange(INTR.height))
    depth = np.where(u < 60, 1.5 + 0.004 * v, 2.5 - 0.003 * u).astype(np.float32)
    pose = look_at(np.array([0.1, -0.2, 0.3]), np.array([1.0, 2.0, 0.5]))
    color = np.repeat(np.round(img).astype(np.uint8)[..., None], 3, axis=2)
    return img, depth, pose, RGBDFrame(0, 0.0, depth, INTR, color=color, gt_pose=pose)


def _events(rng, n, width, height):
    x = rng.integers(0, width, n).astype(np.uint16)
    y = rng.integers(0, height, n).astype(np.uint16)
    p = rng.choice([-1, 1], n).astype(np.int8)
    return x, y, p


@pytest.mark.parametrize(("binning", "sigma"), [(1, 0.0), (1, 2.0), (2, 0.0), (2, 3.0), (3, 4.0)])
def test_event_image_equals_the_reference(binning, sigma):
    rng = np.random.default_rng(binning)
    x, y, p = _events(rng, 5000, 121, 91)  # sizes that the binning does not divide
    ours = event_image(x, y, p, 121, 91, 0.2, sigma, binning)
    ref = event_image_reference(x, y, p, 121, 91, 0.2, sigma, binning)
    assert ours.dtype == ref.dtype == np.float32 and ours.shape == ref.shape
    np.testing.assert_array_equal(ours, ref)  # same sums in the same order: bit for bit


def test_event_image_rejects_events_outside_the_sensor():
    x, y, p = np.array([3, 120], np.uint16), np.array([2, 5], np.uint16), np.array([1, 1], np.int8)
    with pytest.raises(ValueError, match="outside"):
        event_image(x, y, p, 120, 90, 0.2, 0.0)


def _window(binning: int):
    img, depth, pose, frame = _scene()
    cfg = EventTrackingConfig(smoothing_px=1.5, target_median=float(np.median(img)), binning=binning)
    odo = EventOdometry(cfg)
    key = odo.keyframe(frame, pose, INTR)
    moved = se3_exp(np.array([0.01, -0.004, 0.006, 0.01, -0.008, 0.005])) @ pose
    log = np.log(img / 255.0 + cfg.log_eps).astype(np.float32)
    change = DepthWarper(INTR).warp(log, depth, pose, moved) - log
    x, y = np.meshgrid(np.arange(INTR.width), np.arange(INTR.height))
    # the change as an event image (so that binning applies), and a pose where part of the points leave
    reps = np.clip(np.round(np.abs(change.reshape(-1)) / 0.05), 0, 20).astype(np.int64)
    ex, ey = (
        np.repeat(x.reshape(-1), reps).astype(np.uint16),
        np.repeat(y.reshape(-1), reps).astype(np.uint16),
    )
    ep = np.repeat(np.sign(change.reshape(-1)), reps).astype(np.int8)
    image = event_image(ex, ey, ep, INTR.width, INTR.height, 0.05, cfg.smoothing_px, binning)
    at = se3_exp(np.array([0.05, 0.02, -0.03, 0.02, 0.06, -0.01])) @ pose
    return odo, key, at, image


@pytest.mark.parametrize("binning", [1, 2])
def test_window_system_equals_the_reference(binning):
    odo, key, pose, image = _window(binning)
    a_ref, e_ref, inside_ref = odo.window_system_reference(key, pose, image, INTR)
    assert 30 < inside_ref.sum() < inside_ref.size  # some points leave the view: the mask matters
    a, e, inside = odo.window_system(key, pose, image, INTR)
    np.testing.assert_array_equal(inside, inside_ref)
    np.testing.assert_allclose(a, a_ref, rtol=1e-10, atol=1e-12 * np.abs(a_ref).max())
    np.testing.assert_allclose(e, e_ref, rtol=1e-10, atol=1e-12 * np.abs(e_ref).max())
    # with the constant-velocity motion folded into e and the camera-centre rows A·m, as propagate uses them
    xi_cv = np.array([0.003, -0.001, 0.002, 0.004, 0.001, -0.002])
    m = np.eye(6)
    m[:3, 3:] = skew(pose[:3, 3])
    a2, e2, _ = odo.window_system(key, pose, image, INTR, xi_cv, m)
    np.testing.assert_allclose(a2, a_ref @ m, rtol=1e-10, atol=1e-12 * np.abs(a_ref).max())
    np.testing.assert_allclose(e2, e_ref + a_ref @ xi_cv, rtol=1e-9, atol=1e-12 * np.abs(e_ref).max())


def test_window_system_is_none_with_too_few_points_in_view():
    odo, key, pose, image = _window(1)
    behind = pose @ se3_exp(np.array([0, 0, 0, 0, np.pi, 0]))  # turned around: nothing in view
    assert odo.window_system_reference(key, behind, image, INTR) is None
    assert odo.window_system(key, behind, image, INTR) is None


@pytest.mark.parametrize("with_prior", [False, True])
def test_solve_equals_the_reference(with_prior):
    odo, key, pose, image = _window(2)
    a, e, _ = odo.window_system_reference(key, pose, image, INTR)
    rng = np.random.default_rng(5)
    e = e.copy()
    e[rng.choice(e.size, e.size // 10, replace=False)] += rng.normal(0, 1.0, e.size // 10)  # outliers
    prior = np.diag([1e3, 2e3, 3e3, 10.0, 20.0, 30.0]) if with_prior else None
    xi_ref, h_ref, rms_ref = odo.solve_reference(a, e, prior)
    xi, h, rms = odo.solve(a, e, prior)
    assert np.linalg.norm(xi_ref) > 1e-4  # a real step, not the trivial zero
    np.testing.assert_allclose(xi, xi_ref, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(h, h_ref, rtol=1e-8, atol=1e-10 * np.abs(h_ref).max())
    assert rms == pytest.approx(rms_ref, rel=1e-9)


def test_solve_of_a_singular_system_gives_up_as_the_reference():
    odo = EventOdometry(EventTrackingConfig(damping=0.0))
    a = np.zeros((100, 6))
    a[:, 0] = 1.0  # only one direction observed, no damping: singular
    e = np.full(100, 0.01)
    xi_ref, h_ref, rms_ref = odo.solve_reference(a, e)
    xi, h, rms = odo.solve(a, e)
    np.testing.assert_array_equal(xi, xi_ref)
    np.testing.assert_array_equal(h, h_ref)
    assert np.isnan(rms) and np.isnan(rms_ref)


@pytest.mark.parametrize(
    ("shape", "sigma"),
    [((120, 160), 4.0), ((240, 320), 8.0), ((91, 121), 1.5), ((5, 7), 3.0), ((1, 9), 1.0), ((31, 17), 0.1)],
)
def test_gaussian_smooth_equals_scipy(shape, sigma):
    """Bit for bit, including kernels wider than the image (borders reflected more than once)."""
    img = np.random.default_rng(3).normal(size=shape).astype(np.float32)
    ours = gaussian_smooth(img, sigma)
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, gaussian_filter(img, sigma))


@pytest.mark.parametrize("samples", [2, 8])
def test_deblur_equals_the_reference(samples):
    rng = np.random.default_rng(samples)
    grey = rng.uniform(5, 250, (INTR.height, INTR.width)).astype(np.float32)
    n = 20000
    # events before, inside and at the end of the exposure (0.02, 0.05], clustered on a third of the pixels
    t = np.sort(rng.uniform(0.0, 0.06, n))
    x, y, _ = _events(rng, n, INTR.width // 3, INTR.height)
    p = rng.choice([-1, 1], n, p=[0.3, 0.7])
    packet = EventPacket(t, x * 3, y, p, INTR.width, INTR.height)
    ours = deblur(grey, packet, 0.05, 0.03, 0.2, samples)
    ref = deblur_reference(grey, packet, 0.05, 0.03, 0.2, samples)
    assert ours.dtype == ref.dtype == np.float32
    assert not np.array_equal(ref, grey)  # the events changed the image
    np.testing.assert_array_equal(ours[:, 1::3], grey[:, 1::3])  # pixels without events stay
    np.testing.assert_allclose(ours, ref, rtol=1e-6)
