"""RealSense playback without a camera: recordings made with pyrealsense2's software_device and its
recorder, played back through drivers/realsense/; values, intrinsics, alignment, timestamps and IMU
samples are checked against what was recorded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

rs = pytest.importorskip("pyrealsense2", reason="pyrealsense2 wheels exist for x86_64 / aarch64 only")

from realsense_recording import Intr, Recording, plane_recording, write_recording  # noqa: E402

from drivers.base import SourceError, open_source  # noqa: E402
from drivers.realsense import RealSenseSource  # noqa: E402


def _play(path: Path, **options) -> tuple[list, RealSenseSource]:
    with RealSenseSource(path, **options) as source:
        frames = list(source)
    return frames, source


def test_playback_round_trips_depth_colour_intrinsics_and_timestamps(tmp_path: Path) -> None:
    rec = plane_recording(6)
    # timestamps on the recorder's resolution (it stores nanoseconds): they come back exactly
    rec.stamps_ms = [1000.0 + 33.333 * i for i in range(6)]
    path = write_recording(tmp_path / "plane.db3", rec)
    # same size and intrinsics for both cameras: unaligned, the depth comes back untouched (aligning
    # forward-projects pixels and leaves holes where fx != fy rounds two pixels onto one)
    frames, source = _play(path, align_to_color=False)
    assert not source.live and source.device is not None and source.device.serial == rec.serial
    assert [f.index for f in frames] == list(range(6))
    assert [f.timestamp for f in frames] == [round(t, 6) / 1000.0 for t in rec.stamps_ms]
    for i, f in enumerate(frames):
        assert (f.intrinsics.fx, f.intrinsics.fy, f.intrinsics.cx, f.intrinsics.cy) == (
            50.0,
            51.0,
            31.5,
            23.5,
        )
        assert (f.intrinsics.width, f.intrinsics.height) == (64, 48)
        # depth units 0.001 (stored as float32 by the device): 1000 + i units is 1 + i mm
        np.testing.assert_allclose(f.depth, (1000 + i) * 0.001, rtol=1e-6)
        assert f.color is not None and f.color.dtype == np.uint8
        np.testing.assert_array_equal(f.color, rec.color[i])
        assert f.imu is None
    assert source.frames_dropped == 0 and source.frames_skipped == 0
    assert source.health()["state"] == "stopped"
    assert source.health()["timestamp_domain"] == "hardware_clock"  # as the recording's frames were stamped


def test_open_source_by_name_and_selection(tmp_path: Path) -> None:
    path = write_recording(tmp_path / "plane.db3", plane_recording(7), pace=False)
    with open_source("realsense", path, first=1, last=5, stride=2) as source:
        frames = list(source)
    assert [f.index for f in frames] == [1, 3, 5]
    np.testing.assert_allclose([f.depth[0, 0] for f in frames], [1.001, 1.003, 1.005], rtol=1e-6)


def test_alignment_to_a_colour_camera_of_another_size(tmp_path: Path) -> None:
    """Depth 64×48 (f 50) aligned to a colour camera 80×60 (f 70) 5 cm to the side: the aligned depth
    has the colour camera's size and intrinsics; a plane at z = 1.5 m stays at 1.5 m."""
    di, ci = Intr(64, 48, 50.0, 50.0, 31.5, 23.5), Intr(80, 60, 70.0, 70.0, 39.5, 29.5)
    n = 3
    depth = [np.full((48, 64), 1500, np.uint16) for _ in range(n)]
    color = [np.full((60, 80, 3), 7 * i, np.uint8) for i in range(n)]
    rec = Recording(
        depth, color, di, ci, [2000.0 + 40.0 * i for i in range(n)], depth_to_color_m=(0.05, 0, 0)
    )
    path = write_recording(tmp_path / "aligned.db3", rec, pace=False)
    frames, _ = _play(path)
    assert len(frames) == n
    f = frames[0]
    assert (f.intrinsics.width, f.intrinsics.height, f.intrinsics.fx, f.intrinsics.cx) == (80, 60, 70.0, 39.5)
    assert f.depth.shape == (60, 80) and f.color.shape == (60, 80, 3)
    valid = f.depth > 0
    # the 64×48 depth image at f 50 spans ±0.96 m × ±0.72 m at 1.5 m: the colour camera (±0.86 × ±0.64 m)
    # sees it everywhere except a strip on the side the 5 cm baseline uncovers
    assert valid.mean() > 0.9
    np.testing.assert_allclose(f.depth[valid], 1.5, rtol=1e-6)
    # the colour camera is 5 cm to the right (+x): the uncovered columns are on its right edge
    cols = valid.mean(axis=0)
    assert cols[:40].min() == 1.0
    unaligned, _ = _play(path, align_to_color=False)
    assert unaligned[0].depth.shape == (48, 64) and unaligned[0].intrinsics.fx == 50.0
    assert unaligned[0].color is None  # colour of another size cannot be attached to unaligned depth


def test_imu_samples_ride_along_with_the_frames(tmp_path: Path) -> None:
    rec = plane_recording(3, depth_to_imu_m=(0.005, 0.006, 0.007))  # registered, but not recorded
    rec.imu = []
    for i, t in enumerate(rec.stamps_ms):
        accel = [(t - 12 + 5 * k, 0.1 * i, 9.81, float(k)) for k in range(3)]
        gyro = [(t - 11 + 5 * k, 0.01, 0.02 * i, float(k)) for k in range(3)]
        rec.imu.append((accel, gyro))
    path = write_recording(tmp_path / "imu.db3", rec)
    frames, _ = _play(path)
    assert len(frames) == 3
    for i, f in enumerate(frames):
        # every sample, each with the frame after it (IMU times are in the frames' clock)
        accel, gyro = rec.imu[i]
        assert f.imu is not None
        np.testing.assert_allclose(
            f.imu.accel_t, [round(a[0], 6) / 1000.0 for a in accel], rtol=0, atol=1e-12
        )
        np.testing.assert_allclose(f.imu.accel, [a[1:] for a in accel], rtol=1e-6)
        np.testing.assert_allclose(f.imu.gyro_t, [round(g[0], 6) / 1000.0 for g in gyro], rtol=0, atol=1e-12)
        np.testing.assert_allclose(f.imu.gyro, [g[1:] for g in gyro], rtol=1e-6)
        assert np.all(f.imu.accel_t <= f.timestamp)
        # the recorder keeps the video streams' extrinsics only (measured): the IMU's pose is not known
        assert f.imu.camera_from_imu is None


def test_imu_playback_is_finished_only_after_it_played(tmp_path: Path) -> None:
    """The second playback that reads a recording's IMU reports "stopped" before its thread starts as well
    as after it ends: ``finished`` must not take the first for the second, or the first frames are handed
    out before their IMU samples arrive (a race that lost frame 0's IMU under load)."""
    from drivers.realsense import ImuBuffer, ImuPlayback

    rec = plane_recording(3, depth_to_imu_m=(0.005, 0.006, 0.007))
    rec.imu = []
    for i, t in enumerate(rec.stamps_ms):
        rec.imu.append(([(t - 12 + 5 * k, 0.1 * i, 9.81, 0.0) for k in range(3)], [(t - 11, 0.01, 0.0, 0.0)]))
    path = write_recording(tmp_path / "imu.db3", rec)
    buffer = ImuBuffer(keep=None)
    playback = ImuPlayback(path, buffer)
    try:
        if playback.finished():  # only once everything was delivered
            assert len(buffer.take_until(float("inf")).accel_t) == 9
        assert buffer.wait_past(rec.stamps_ms[-1], playback.finished)
    finally:
        playback.close()


def test_missing_colour_and_bad_files(tmp_path: Path) -> None:
    rec = plane_recording(4)
    rec.skip_color = {2}  # frame 2's colour never comes: it is paired with the newest colour seen
    path = write_recording(tmp_path / "gap.db3", rec, pace=False)
    frames, _ = _play(path)
    assert [f.index for f in frames] == [0, 1, 2, 3]
    assert frames[2].color is not None and frames[2].color[0, 0, 0] == 10  # frame 1's colour
    assert frames[3].color[0, 0, 0] == 30

    with pytest.raises(SourceError, match=r"realsense: recording .*missing\.db3 not found"):
        RealSenseSource(tmp_path / "missing.db3")
    junk = tmp_path / "junk.db3"
    junk.write_bytes(b"not a database")
    with pytest.raises(SourceError, match=r"realsense: cannot play .*junk\.db3"):
        RealSenseSource(junk)
    junk_bag = tmp_path / "junk.bag"  # not playable directly: converted to .db3 first, which fails
    junk_bag.write_bytes(b"not a bag")
    with pytest.raises(SourceError, match=r"cannot read .*junk\.bag as a RealSense \.bag recording"):
        RealSenseSource(junk_bag)
    other = tmp_path / "frames.txt"
    other.write_text("x")
    with pytest.raises(SourceError, match=r"frames\.txt: expected a \.db3 or \.bag recording"):
        RealSenseSource(other)
