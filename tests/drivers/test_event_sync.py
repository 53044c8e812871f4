"""Events attached to RGB-D frames: each frame gets exactly the events since the previous frame, on the
RGB-D clock, with the event camera's calibration; the calibration config rejects what is not one."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.base import Source
from drivers.events.sync import EventCameraConfig, EventSyncedSource, EventSynchronizer
from slam.app.config import ConfigError, load_config
from slam.core.frames import CameraIntrinsics, EventPacket, RGBDFrame

K = CameraIntrinsics(50.0, 50.0, 3.5, 2.5, 8, 6)


def frames_at(times) -> list[RGBDFrame]:
    return [RGBDFrame(i, float(t), np.ones((6, 8), np.float32), K) for i, t in enumerate(times)]


def event_stream(
    rng: np.random.Generator, n: int, t_end: float, chunk: int = 97
) -> tuple[list[EventPacket], np.ndarray]:
    t = rng.uniform(0.0, t_end, n)
    t[200:220] = 1.0 / 3.0  # events exactly at a frame's timestamp belong to that frame
    t.sort()
    x, y, p = rng.integers(0, 16, n), rng.integers(0, 12, n), rng.integers(0, 2, n)
    packets = [
        EventPacket(t[i : i + chunk], x[i : i + chunk], y[i : i + chunk], p[i : i + chunk], 16, 12)
        for i in range(0, n, chunk)
    ]
    return packets, t


def test_each_frame_gets_the_events_since_the_previous_frame():
    rng = np.random.default_rng(0)
    packets, t = event_stream(rng, 5000, 1.0)
    times = np.arange(1, 30) / 30.0  # frames at 1/30 ... 29/30 s; 1/3 s is frame 9
    sync = EventSynchronizer(packets, 16, 12)
    frames = list(sync.attach(frames_at(times)))
    assert len(frames[0].events) == 0  # no previous frame
    assert sync.stats.before_first_frame == np.count_nonzero(t <= times[0])
    for prev, frame in zip(times[:-1], frames[1:]):
        expected = t[(t > prev) & (t <= frame.timestamp)]
        assert np.array_equal(frame.events.t, expected)
        assert frame.events.timestamp == frame.timestamp and frame.events.index == frame.index
    assert sync.stats.attached == np.count_nonzero((t > times[0]) & (t <= times[-1]))
    assert frames[9].timestamp == 1.0 / 3.0 and np.count_nonzero(frames[9].events.t == 1.0 / 3.0) == 20


def test_time_offset_calibration_and_skipped_frames():
    rng = np.random.default_rng(1)
    packets, t = event_stream(rng, 3000, 1.0)
    transform = np.eye(4)
    transform[:3, 3] = [0.05, -0.01, 0.002]
    config = EventCameraConfig(
        fx=200.0, fy=201.0, cx=7.5, cy=5.5, time_offset_s=10.0, camera_from_sensor=transform.tolist()
    )
    times = 10.0 + np.array([0.1, 0.2, 0.5, 0.6])  # the RGB-D clock; frames 0.3 and 0.4 were skipped
    frames = list(EventSynchronizer(packets, 16, 12, config).attach(frames_at(times)))
    shifted = t + 10.0
    expected = shifted[(shifted > times[1]) & (shifted <= times[2])]
    np.testing.assert_allclose(frames[2].events.t, expected)  # the interval widens over the skipped frames
    assert frames[2].events.intrinsics == CameraIntrinsics(200.0, 201.0, 7.5, 5.5, 16, 12)
    assert np.array_equal(frames[2].events.camera_from_sensor, transform)


def test_frames_going_back_in_time_get_no_events():
    packets, _ = event_stream(np.random.default_rng(2), 1000, 1.0)
    sync = EventSynchronizer(packets, 16, 12)
    frames = list(sync.attach(frames_at([0.1, 0.5, 0.3, 0.7])))
    assert len(frames[2].events) == 0 and sync.stats.frames_out_of_order == 1
    assert np.all(frames[3].events.t > 0.5)  # resumes after the latest frame


class ListSource(Source):
    def __init__(self, frames):
        super().__init__()
        self._frames = frames
        self.frames_skipped = 2

    def __iter__(self):
        return iter(self._frames)

    def __len__(self):
        return len(self._frames)


def test_synced_source_reads_the_configured_recording(tmp_path):
    lines = [f"{0.001 * i:.3f} {i % 8} {i % 6} {i % 2}" for i in range(1, 301)]
    (tmp_path / "events.txt").write_text("\n".join(lines) + "\n")
    config = EventCameraConfig(path=tmp_path / "events.txt", width=8, height=6)
    with EventSyncedSource(ListSource(frames_at([0.05, 0.10, 0.20])), config) as source:
        frames = list(source)
    assert len(source) == 3 and source.frames_skipped == 2
    assert [len(f.events) for f in frames] == [0, 50, 100]
    np.testing.assert_allclose(frames[2].events.t[[0, -1]], [0.101, 0.200])


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ({"camera_from_sensor": [[2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]}, "not a rotation"),
        (
            {"camera_from_sensor": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]},
            "last row must be",
        ),
        ({"fx": 200.0, "fy": 200.0}, "intrinsics need fx, fy, cx and cy together; missing cx, cy"),
        ({"distortion": [0.1, 0.2]}, "events.distortion: Value error, expected 0, 4 or 5 coefficients"),
        ({"fx": -1.0, "fy": 1.0, "cx": 0.0, "cy": 0.0}, "events.fx: Input should be greater than 0"),
        ({"format": "mp4"}, "events.format: Input should be"),
    ],
)
def test_bad_event_camera_config_fails_at_load_naming_the_key(events, message):
    with pytest.raises(ConfigError, match="overrides: events") as info:
        load_config(None, {"events": events})
    assert message in str(info.value)
