"""The live side of the RealSense driver without a camera: the reconnect state machine against a fake
device, frame pairing and drop counting, USB 2 fallback, device lookup against a fake context, the
clear errors when no camera is plugged in, and real-time playback's dropped frames."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from drivers.base import available_sources, source_class
from drivers.reconnect import Backoff, DeviceLost, DeviceUnavailable, ReconnectingReader, StreamEnded
from slam.app.config import load_config
from slam.cli import app
from slam.core.frames import FrameError, ImuSamples
from slam.service.launch import load_launch
from slam.service.startup import check_source

LAUNCH = Path(__file__).resolve().parents[2] / "launch"


# -- reconnect state machine ----------------------------------------------------------------------------
class FakeStream:
    """Yields ``items``; then raises ``end`` (DeviceLost: unplugged, StreamEnded: end of file)."""

    def __init__(self, items: list, end: BaseException, silent_reads: int = 0) -> None:
        self.items, self.end, self.silent_reads = list(items), end, silent_reads
        self.closed = False

    def read(self, timeout_s: float):
        if self.silent_reads:
            self.silent_reads -= 1
            return None
        if self.items:
            return self.items.pop(0)
        raise self.end

    def close(self) -> None:
        self.closed = True


class FakeDevice:
    """A device factory scripted as a list: a FakeStream opens, an exception fails that attempt."""

    def __init__(self, script: list) -> None:
        self.script = list(script)
        self.opened: list[FakeStream] = []

    def __call__(self) -> FakeStream:
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        self.opened.append(step)
        return step


class FakeStop(threading.Event):
    """Records the backoff delays instead of sleeping them."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        return self.is_set()


def test_reconnect_with_backoff_after_an_unplug() -> None:
    first = FakeStream([1, 2, 3], DeviceLost("USB device disconnected"))
    device = FakeDevice(
        [
            DeviceUnavailable("not found"),
            DeviceUnavailable("not found"),
            FakeStream([4, 5], DeviceLost("again")),
            FakeStream([6], StreamEnded()),
        ]
    )
    states: list[tuple[str, str]] = []
    stop = FakeStop()
    reader = ReconnectingReader(
        device,
        initial=first,
        backoff=Backoff(0.5, 2.0, 1.5),
        stop=stop,
        on_state=lambda s, m: states.append((s, m)),
        what="RealSense 123",
    )
    assert list(reader) == [1, 2, 3, 4, 5, 6]
    # 0.5, 1.0, then 1.5 (capped) before the third attempt succeeds; reset to 0.5 after it
    assert stop.waits == [0.5, 1.0, 1.5, 0.5]
    assert reader.reconnects == 2 and reader.disconnects == 2
    assert first.closed and all(s.closed for s in device.opened)
    kinds = [s for s, _ in states]
    assert kinds[0] == "streaming" and kinds[-1] == "stopped"
    assert kinds.count("reconnecting") == 4 and kinds.count("streaming") == 3
    lost = [m for s, m in states if s == "disconnected"][0]
    assert "RealSense 123 disconnected (USB device disconnected)" in lost


def test_reconnect_gives_up_after_max_attempts_and_stops_on_request() -> None:
    states: list[str] = []
    reader = ReconnectingReader(
        FakeDevice([DeviceUnavailable("x")] * 3),
        initial=FakeStream([1], DeviceLost("gone")),
        max_attempts=3,
        stop=FakeStop(),
        on_state=lambda s, m: states.append(s),
    )
    got = []
    with pytest.raises(DeviceUnavailable, match="gave up after 3 reconnection attempts"):
        for item in reader:
            got.append(item)
    assert got == [1] and states[-1] == "failed"

    stop = FakeStop()
    stop.set()  # stopped while waiting to retry: the reader ends quietly
    reader = ReconnectingReader(
        FakeDevice([]),
        initial=FakeStream([], DeviceLost("gone")),
        stop=threading.Event(),
        on_state=lambda s, m: states.append(s),
    )
    reader.stop = stop
    assert list(reader) == []


def test_a_silent_device_counts_as_lost() -> None:
    clock = iter(np.arange(0.0, 100.0, 1.0))
    reader = ReconnectingReader(
        FakeDevice([FakeStream([2], StreamEnded())]),
        initial=FakeStream([1], DeviceLost("x"), silent_reads=0),
        stop=FakeStop(),
        lost_after_s=2.5,
        clock=lambda: float(next(clock)),
    )
    reader._stream = FakeStream([], DeviceLost("x"), silent_reads=5)  # no frame for 5 reads of 1 s
    assert list(reader) == [2] and reader.disconnects == 1


def test_backoff_validation() -> None:
    with pytest.raises(ValueError, match="backoff"):
        Backoff(0.0)


# -- pure pieces of the driver --------------------------------------------------------------------------
def test_frame_pairer_matches_the_syncers_repeated_framesets() -> None:
    from drivers.realsense import FramePairer, Image

    def img(t: float) -> Image:
        return Image(t, 0, np.zeros((1, 1)))

    pairer = FramePairer(with_color=True)
    # the sequence librealsense's syncer produced on playback
    sets = [(0, 0), (33, 33), (67, 33), (67, 67), (100, 67), (100, 100), (133, 100)]
    pairs = [p for d, c in sets for p in pairer.push(img(d), img(c))] + pairer.flush()
    assert [(p.depth.stamp_ms, p.color.stamp_ms) for p in pairs] == [
        (0, 0),
        (33, 33),
        (67, 67),
        (100, 100),
        (133, 100),
    ]
    assert pairer.stale_color == 1  # the last depth frame's colour never came
    depth_only = FramePairer(with_color=False)
    assert [p.depth.stamp_ms for d in (0, 0, 33) for p in depth_only.push(img(d), None)] == [0, 33]


def test_drop_counter_and_usb2_profile() -> None:
    from drivers.realsense import DropCounter, choose_profile

    drops = DropCounter(30.0)
    for t in (0.0, 33.3, 66.7, 166.7, 200.0):  # 100 and 133 ms are missing
        drops.see(t)
    assert drops.dropped == 2
    assert choose_profile((640, 480, 30), "3.2", (640, 480, 15)) == ((640, 480, 30), None)
    profile, warning = choose_profile((640, 480, 30), "2.1", (640, 480, 15))
    assert profile == (640, 480, 15) and "USB 2.1 link, too slow for 640x480@30" in warning
    assert choose_profile((424, 240, 15), "2.1", (640, 480, 15)) == ((424, 240, 15), None)
    assert choose_profile((640, 480, 30), "2.1", None)[0] == (640, 480, 30)


def test_transform_between_reads_librealsense_extrinsics() -> None:
    from types import SimpleNamespace

    from drivers.realsense import transform_between

    rz90 = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    ext = SimpleNamespace(rotation=list(rz90.T.flatten()), translation=[0.1, 0.2, 0.3])  # column-major

    class Profile:
        def get_extrinsics_to(self, other):
            if other == "missing":
                raise RuntimeError("Requested extrinsics are not available!")
            return ext

    t = transform_between(Profile(), "color")
    np.testing.assert_array_equal(t[:3, :3], rz90)
    np.testing.assert_array_equal(t[:3, 3], [0.1, 0.2, 0.3])
    assert transform_between(Profile(), "missing") is None


def test_imu_samples_model() -> None:
    imu = ImuSamples([0.1, 0.2], [[0, 0, 9.8], [0, 0, 9.7]], [], np.zeros((0, 3)))
    assert len(imu) == 2 and imu.accel.dtype == np.float64 and imu.gyro.shape == (0, 3)
    assert not imu.shared_clock
    with pytest.raises(FrameError, match="their own times"):
        _ = imu.t
    with pytest.raises(FrameError, match="accel has 1 samples but 2 times"):
        ImuSamples([0.1, 0.2], [[0, 0, 9.8]], [], [])
    with pytest.raises(FrameError, match=r"gyro must be N×3, got shape \(3, 4\)"):
        ImuSamples([], [], [0.1, 0.2, 0.3], np.zeros((3, 4)))


# -- devices, without a camera --------------------------------------------------------------------------
class FakeRsDevice:
    def __init__(self, serial: str, usb: str, imu: bool) -> None:
        self.info = {
            "serial_number": serial,
            "name": "Intel RealSense D435I",
            "firmware_version": "5.16",
            "usb_type_descriptor": usb,
        }
        self.imu = imu

    def supports(self, key) -> bool:
        return str(key).rsplit(".", 1)[-1] in self.info

    def get_info(self, key) -> str:
        return self.info[str(key).rsplit(".", 1)[-1]]

    def query_sensors(self) -> list:
        class S:
            def __init__(self, motion: bool) -> None:
                self.motion = motion

            def is_motion_sensor(self) -> bool:
                return self.motion

        return [S(False), S(self.imu)]


class FakeContext:
    def __init__(self, devices: list) -> None:
        self.devices = devices

    def query_devices(self) -> list:
        return self.devices


def test_device_lookup_by_serial() -> None:
    pytest.importorskip("pyrealsense2", reason="pyrealsense2 wheels exist for x86_64 / aarch64 only")
    from drivers.realsense import find_device, list_devices

    ctx = FakeContext([FakeRsDevice("111", "3.2", True), FakeRsDevice("222", "2.1", False)])
    found = list_devices(ctx)
    assert [(d.serial, d.usb, d.has_imu, d.usb2) for d in found] == [
        ("111", "3.2", True, False),
        ("222", "2.1", False, True),
    ]
    assert find_device("222", ctx).serial == "222" and find_device(None, ctx).serial == "111"
    with pytest.raises(
        DeviceUnavailable, match=r"no RealSense device with serial 333 \(connected: 111, 222\)"
    ):
        find_device("333", ctx)
    with pytest.raises(DeviceUnavailable, match="no RealSense device found"):
        find_device(None, FakeContext([]))


def test_no_camera_gives_a_clear_error() -> None:
    pytest.importorskip("pyrealsense2", reason="pyrealsense2 wheels exist for x86_64 / aarch64 only")
    from drivers.base import SourceError, open_source

    with pytest.raises(SourceError, match="no RealSense device found"):
        open_source("realsense", context=FakeContext([]))
    runner = CliRunner()
    result = runner.invoke(app, ["launch", str(LAUNCH / "realsense_live.yaml"), "--check"])
    assert result.exit_code == 0 and "live mode" in result.output
    cfg, _ = load_launch(LAUNCH / "realsense_live.yaml")
    assert cfg.source.kind == "realsense" and check_source(cfg)[1] == "live"
    record = runner.invoke(app, ["record", "x.bag", "--seconds", "1"])
    assert record.exit_code == 2 and ".db3" in " ".join(record.output.split())


def test_a_recording_is_not_live() -> None:
    assert "realsense" in available_sources()
    cls = source_class("realsense")
    assert cls.is_live(None, {}) and not cls.is_live(Path("x.db3"), {})
    cfg = load_config(None, {"source": {"kind": "realsense", "path": "x.db3"}})
    assert check_source(cfg)[1] == "fast"
    cfg = load_config(
        None, {"source": {"kind": "realsense", "path": "x.db3"}, "service": {"mode": "realtime"}}
    )
    assert check_source(cfg)[1] == "realtime"


# -- real-time playback drops what a slow consumer cannot take --------------------------------------------
def test_realtime_playback_counts_dropped_frames(tmp_path: Path) -> None:
    pytest.importorskip("pyrealsense2", reason="pyrealsense2 wheels exist for x86_64 / aarch64 only")
    from realsense_recording import plane_recording, write_recording

    import drivers.realsense as rsd
    from drivers.realsense import RealSenseSource

    n = 24
    path = write_recording(tmp_path / "plane.db3", plane_recording(n))  # pushed at 30 Hz

    def consume(realtime: bool) -> tuple[int, int]:
        with RealSenseSource(path, realtime=realtime, align_to_color=False) as source:
            count = 0
            for _ in source:
                count += 1
                time.sleep(0.1)  # a consumer at 10 Hz
        return count, source.frames_dropped

    assert rsd.recorded_depth_frames(path) == n
    slow = consume(realtime=False)
    assert slow == (n, 0), slow  # non-real-time: playback waits for the consumer
    count, dropped = consume(realtime=True)
    assert count < n and dropped > 0, (count, dropped)
    # missing frames are counted from the gaps in the timestamps, and those after the last one delivered
    # from the file's depth message count
    assert count + dropped == n, (count, dropped)


# -- the live source end to end, a recording standing in for the camera ------------------------------------
class UnpluggedAtEnd:
    """A playback standing in for a camera that is unplugged when the file ends."""

    def __init__(self, path: Path) -> None:
        import drivers.realsense as rsd

        self.open = lambda: rsd.open_playback(path, False, ["depth", "color"])
        self.stream = self.open()
        self.profile, self.delivered, self.restarts = self.stream.profile, 0, 0

    def read(self, timeout_s: float):
        try:
            item = self.stream.read(timeout_s)
        except StreamEnded:
            if self.delivered == 0 and self.restarts < 3:  # the playback race the driver also handles
                self.restarts += 1
                self.stream.close()
                self.stream = self.open()
                return None
            raise DeviceLost("USB device disconnected") from None
        self.delivered += item is not None
        return item

    def close(self) -> None:
        self.stream.close()


def test_live_source_reports_an_unplug_and_reconnects(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("pyrealsense2", reason="pyrealsense2 wheels exist for x86_64 / aarch64 only")
    from realsense_recording import plane_recording, write_recording

    import drivers.realsense as rsd
    from drivers.base import SourceError

    first = write_recording(tmp_path / "a.db3", plane_recording(3), pace=False)
    second = plane_recording(2)
    second.stamps_ms = [10.0, 43.0]  # the camera's clock restarted after the reconnection
    second_path = write_recording(tmp_path / "b.db3", second, pace=False)
    script = [first, DeviceUnavailable("not found"), second_path]
    requests = []

    def fake_open_live(request, imu, context=None):
        requests.append(request)
        step = script.pop(0) if script else DeviceUnavailable("not found")
        if isinstance(step, BaseException):
            raise step
        return UnpluggedAtEnd(step)

    # patched where the source looks it up (drivers.realsense re-exports it from .streams)
    monkeypatch.setattr(rsd.source, "open_live", fake_open_live)
    source = rsd.RealSenseSource(
        context=FakeContext([FakeRsDevice("111", "2.1", False)]),
        reconnect_initial_s=0.01,
        reconnect_attempts=3,
        align_to_color=False,
    )
    assert source.live and source.health()["state"] == "starting"
    # a USB 2 link: the smaller mode is asked for and said
    assert (requests[0].width, requests[0].height, requests[0].fps) == (640, 480, 15)
    assert "USB 2.1 link" in source.health()["usb_warning"]
    frames, seen = [], []
    with pytest.raises(SourceError, match="gave up after 3 reconnection attempts"):
        for frame in source:
            frames.append(frame)
            seen.append(source.health()["state"])
    # every frame of both "sessions", the second one's clock restarted
    assert [f.timestamp for f in frames] == [1.0, 1.033333333, 1.066666667, 0.01, 0.043]
    assert seen == ["streaming"] * 5
    states = list(source.transitions)
    kinds = [s for s, _ in states]
    assert kinds[:2] == ["streaming", "disconnected"] and "reconnecting" in kinds and kinds[-1] == "failed"
    assert any("disconnected (USB device disconnected)" in m for _, m in states)
    health = source.health()
    assert health["reconnects"] == 1 and health["state"] == "failed" and health["frames_dropped"] == 0
    source.close()


def test_without_pyrealsense2_the_error_says_how_to_install(monkeypatch) -> None:
    import sys

    from drivers.base import SourceError, open_source

    monkeypatch.setitem(sys.modules, "pyrealsense2", None)  # as if it were not installed
    with pytest.raises(
        SourceError, match=r"pyrealsense2 is not installed .*pip install 'neural-slam\[realsense\]'"
    ):
        open_source("realsense")
    result = CliRunner().invoke(app, ["devices"])
    assert result.exit_code == 2 and "neural-slam[realsense]" in " ".join(result.output.split())
