"""slam.engine.baseline: the Open3D odometry tracker's lost frames."""

from __future__ import annotations

import numpy as np

from slam.core.frames import CameraIntrinsics, RGBDFrame
from slam.core.observation import Observation
from slam.engine.baseline import OdometryTrackerConfig, Open3DOdometryTracker

INTR = CameraIntrinsics(100.0, 100.0, 31.5, 23.5, 64, 48)


def test_a_frame_open3d_cannot_register_is_lost_and_the_run_goes_on() -> None:
    # blank depth: Open3D's 6x6 system is singular and it raises; the tracker reports the frame lost and
    # keeps the predicted pose (identity motion without the constant-velocity prior), as bench/rgbd's peer did
    tracker = Open3DOdometryTracker(OdometryTrackerConfig(constant_velocity=False))
    start = np.eye(4)
    start[:3, 3] = [0.5, -0.2, 1.0]
    wall = np.full((48, 64), 1.5, np.float32)
    first = tracker.track(Observation(RGBDFrame(0, 0.0, wall, INTR, gt_pose=start)))
    np.testing.assert_array_equal(first.pose, start)
    blank = tracker.track(Observation(RGBDFrame(1, 0.1, np.zeros((48, 64), np.float32), INTR)))
    assert blank.lost and blank.inlier_ratio == 0.0 and np.isnan(blank.residual)
    np.testing.assert_array_equal(blank.pose, start)
