"""slam.core: the observation the engine consumes, the shared depth-noise model, SE(3) helpers."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic import box_room, look_at, render_frame

from drivers.sim.depth_noise import DepthNoiseParams
from slam.core.depth_noise import axial_sigma
from slam.core.geometry import apply_scaled_twist, se3_exp, skew, transform_points
from slam.core.observation import Observation
from slam.core.robust import geman_mcclure_weight


def test_one_depth_noise_model_for_the_simulator_and_the_tracker_weights() -> None:
    z = np.array([0.4, 1.0, 2.5, 4.0])
    theta = np.radians([0.0, 30.0, 60.0, 80.0])
    np.testing.assert_array_equal(DepthNoiseParams().axial_sigma(z, theta), axial_sigma(z, theta))
    # Nguyen et al. 2012 facing the surface: 1.2 mm + 1.9 mm (z - 0.4 m)^2
    assert axial_sigma(2.5) == pytest.approx(0.0012 + 0.0019 * 2.1**2)
    assert axial_sigma(2.5, np.radians(60)) > axial_sigma(2.5)  # oblique surfaces are noisier
    custom = DepthNoiseParams(sigma_a=0.002, sigma_b=0.0)
    assert custom.axial_sigma(3.0) == pytest.approx(0.002)


def test_apply_scaled_twist_is_the_exponential_of_each_points_share_of_the_twist() -> None:
    rng = np.random.default_rng(0)
    points = rng.normal(size=(50, 3)) * 5
    scale = rng.uniform(-1.0, 0.0, 50)
    twist = np.array([0.8, -0.1, 0.05, 0.02, -0.01, 0.3])
    expected = np.array([transform_points(se3_exp(s * twist), p[None])[0] for s, p in zip(scale, points)])
    np.testing.assert_allclose(apply_scaled_twist(points, scale, twist), expected, atol=1e-9)
    np.testing.assert_allclose(
        apply_scaled_twist(points, scale, np.r_[twist[:3], 0, 0, 0]), points + scale[:, None] * twist[:3]
    )
    v = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(skew(v) @ points[0], np.cross(v, points[0]))


def test_geman_mcclure_weight_is_one_at_zero_and_a_sixteenth_at_the_scale() -> None:
    r = np.array([0.0, 0.02, 0.2])
    w = geman_mcclure_weight(r, 0.02)
    assert w[0] == 1.0 and w[1] == pytest.approx(0.25) and w[2] < 1e-3


def test_an_observation_carries_its_frame_and_builds_rays_only_through_its_frontend() -> None:
    frame = render_frame(
        box_room(), look_at(np.array([0.0, 0.0, 0.4]), np.array([1.0, 0.0, 0.4])), 32, 24, 30.0
    )
    bare = Observation(frame)
    assert bare.timestamp == frame.timestamp and bare.gt_pose is frame.gt_pose
    assert bare.points is None and bare.mapping_rays(np.eye(4), np.random.default_rng(0)) is None
    calls = []
    obs = Observation(frame, rays=lambda pose, rng: calls.append(pose) or "rays")
    assert obs.mapping_rays(np.eye(4), np.random.default_rng(0)) == "rays" and len(calls) == 1
