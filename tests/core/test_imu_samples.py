"""slam.core.frames.ImuSamples on one clock (event cameras' IMUs) and on two (RealSense)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from slam.core.frames import FrameError, ImuSamples


def test_one_clock_counts_each_sample_once_and_keeps_the_extras() -> None:
    t = np.array([0.001, 0.002, 0.003])
    accel = np.array([[0.1, -9.8, 0.2], [0.1, -9.7, 0.2], [0.0, -9.81, 0.1]])
    gyro = np.array([[0.01, 0.02, 0.03], [0.01, 0.02, 0.04], [0.0, 0.0, 0.05]])
    mag = np.ones((3, 3), np.float32) * 40.0
    imu = ImuSamples.same_clock(t, accel, gyro, temperature=np.array([30.0, 30.5, 31.0]), magnetometer=mag)
    assert len(imu) == 3 and imu.shared_clock
    np.testing.assert_array_equal(imu.t, t)
    np.testing.assert_array_equal(imu.gyro_t, t)
    assert np.array_equal(imu.accel, accel) and imu.accel.dtype == np.float64  # SI values kept exactly
    assert np.array_equal(imu.magnetometer, mag) and imu.temperature[2] == 31.0
    assert len(dataclasses.replace(imu, frame_id="imu2")) == 3  # a copy stays on one clock


def test_two_clocks_count_both_and_have_no_common_time() -> None:
    imu = ImuSamples([0.1, 0.2], np.zeros((2, 3)), [0.1, 0.2], np.zeros((2, 3)))  # equal, but two clocks
    assert len(imu) == 4 and not imu.shared_clock
    with pytest.raises(FrameError, match="their own times"):
        _ = imu.t


def test_one_clock_checks_shapes() -> None:
    with pytest.raises(FrameError, match="gyro has 1 samples but 2 times"):
        ImuSamples.same_clock([0.1, 0.2], np.zeros((2, 3)), np.zeros((1, 3)))
    empty = ImuSamples.same_clock(np.empty(0), np.empty((0, 3)), np.empty((0, 3)))
    assert len(empty) == 0 and empty.accel.shape == (0, 3)
