"""slam.frontends.rgbd: depth points for tracking (range, budget, noise weights), rays and normals for
mapping."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic import box_room, look_at, render_frame, rgbd_frontend

from slam.engine.tracker import TrackerConfig
from slam.frontends.rgbd import normals_at, surface_pixels

TARGET = np.array([0.6, -0.4, -0.6])


def test_sample_points_respects_range_and_budget() -> None:
    frame = render_frame(
        box_room(), look_at(np.array([-1.3, 0.9, 0.4]), TARGET), width=320, height=240, f=260.0
    )
    pts = rgbd_frontend(TrackerConfig(points=1000, depth_max=3.0)).sample_points(frame)
    assert pts.shape == (1000, 3) and pts.dtype == np.float32
    assert float(pts[:, 2].max()) < 3.0 and float(pts[:, 2].min()) > 0.1


def test_ray_normals_of_a_tilted_plane_and_edges() -> None:
    fx = fy = 100.0
    cx, cy = 40.0, 30.0
    vs, us = np.mgrid[0:60, 0:80]
    # the plane z = 2 + 0.5 x: depth along each pixel ray where it meets the plane
    rx = (us - cx) / fx
    depth = (2.0 / (1.0 - 0.5 * rx)).astype(np.float32)
    depth[:, 60:] += 1.0  # a step edge at column 60
    ok = surface_pixels(depth, 0.1, 10.0)
    assert not ok[:, [0, 59, 60, 79]].any() and not ok[[0, 59]].any()
    assert ok[1:-1, 1:59].all() and ok[1:-1, 61:79].all()
    pv, pu = np.nonzero(ok[:, :59])
    n = normals_at(depth, pv, pu, fx, fy, cx, cy)
    expected = np.array([-0.5, 0.0, 1.0]) / np.linalg.norm([-0.5, 0.0, 1.0])
    assert np.allclose(np.abs(n @ expected), 1.0, atol=1e-4)


def test_depth_weights_follow_the_sensor_noise_model() -> None:
    points = np.array([[0.0, 0.0, 1.0], [0.5, 0.2, 2.0], [0.0, 0.0, 3.5]])
    weights = rgbd_frontend(TrackerConfig(depth_weight_power=1)).depth_weights(points)
    assert weights[0] == pytest.approx(1.0) and weights[0] > weights[1] > weights[2]
    # power 1 is sigma(1 m) / sigma(z): 1.2 + 1.9 * 0.36 mm at 1 m against 1.2 + 1.9 * 9.61 mm at 3.5 m
    assert weights[2] == pytest.approx((0.0012 + 0.0019 * 0.36) / (0.0012 + 0.0019 * 9.61))
    assert rgbd_frontend(TrackerConfig(depth_weight_power=0)).depth_weights(points) is None


def test_observe_gives_points_after_the_first_frame_and_rays_at_the_tracked_pose() -> None:
    from slam.core.frames import LidarScan
    from slam.engine.tracker import Tracker
    from slam.map.neural_map import NeuralMapConfig, NeuralSDFMap

    pose = look_at(np.array([-1.3, 0.9, 0.4]), TARGET)
    frame = render_frame(box_room(), pose)
    frontend, history = rgbd_frontend(), Tracker(NeuralSDFMap(NeuralMapConfig(device="cpu")))
    first = frontend.observe(frame, history)
    assert first.points is None and first.prior is None  # the first frame defines the map's origin
    history.poses.append(pose)
    later = frontend.observe(frame, history)
    # a 160 x 120 image at stride 4: every valid pixel in range (fewer than the 2500 budget)
    assert 1000 < len(later.points) < 2500 and later.weights.shape == (len(later.points),)
    rays = later.mapping_rays(pose, np.random.default_rng(0))
    # the rays end on the depth image's surface: z-depth = distance along the ray x its z component
    ends = rays.dirs.numpy() * rays.ray_depth.numpy()[:, None]
    assert len(rays) > 500 and np.array_equal(rays.pose, pose) and rays.origins is None
    assert np.all((ends[:, 2] > 0.1) & (ends[:, 2] < 4.0))
    with pytest.raises(TypeError, match="takes RGB-D frames, not LidarScan"):
        frontend.observe(LidarScan(0, 0.0, np.zeros((3, 3))), history)
