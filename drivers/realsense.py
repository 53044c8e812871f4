"""Intel RealSense D4xx: a live camera, or a recording of one played back through librealsense.

``RealSenseSource(path=None)`` streams a plugged-in camera (``live``); ``RealSenseSource(path=FILE)``
plays back a ``.db3`` (what librealsense >= 2.56 records) or a legacy ``.bag`` file (``live`` False).
Both yield the same ``RGBDFrame``s:

- depth in metres (the device's depth scale), aligned to the colour camera by default
  (``align_to_color``), with the intrinsics of the camera it is expressed in, read from the device
  or the file;
- timestamps in seconds from the frames' own timestamps (the device's hardware clock, or the host-
  synchronised "global time" when the device reports that domain), so a recording replays with the
  times it was made with;
- IMU samples (D435i, D455) since the previous frame in ``frame.imu``.

librealsense 2.59 facts this driver is built on (measured):

- playback must be switched to non-real-time before the pipeline starts, or the first frames are
  lost; even so the pipeline sometimes loses the rest of a file (1 start in 20 delivers nothing), so
  a playback that ends short of the file's depth frame count (read from the .db3) is played again,
  frames already delivered skipped; in real-time mode those frames are counted as dropped;
- the end of a file shows only as a timeout of ``wait_for_frames``;
- playback does not convert formats: each stream is requested in whatever format it was recorded;
- the pipeline's syncer repeats a stream's previous frame in a frameset when the other stream's frame
  is newer, so framesets are paired here by timestamp (``FramePairer``);
- through the pipeline a frameset carries only the newest IMU sample, and with IMU streams in it the
  syncer loses a recording's first frames at random; so IMU samples are read from the motion sensor
  itself, by a callback: on the live camera, and on a second playback of a recording;
- the recorder stamps messages with the wall-clock push time and stores the video streams'
  extrinsics only (a recording has no IMU-to-camera transform; a live camera does).

pyrealsense2 is imported only when a RealSense source is opened (pip install 'neural-slam[realsense]').
"""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from drivers.base import FrameDecodeError, Source, SourceError
from drivers.reconnect import Backoff, DeviceLost, DeviceUnavailable, ReconnectingReader, StreamEnded
from slam.core.frames import CameraIntrinsics, FrameError, ImuSamples, RGBDFrame

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'neural-slam[realsense]'"
RECORDING_SUFFIXES = (".db3", ".bag")
#: what a D4xx streams on a USB 2 link with depth and colour together (USB 3 modes need ~3x the bandwidth)
USB2_PROFILE = (640, 480, 15)
#: times a playback that ended before its first frame is started again (see ``open_playback``)
PLAYBACK_RESTARTS = 3


def import_pyrealsense2() -> Any:
    """The pyrealsense2 module, or a SourceError saying how to install it."""
    try:
        import pyrealsense2 as rs
    except ImportError as exc:
        raise SourceError(f"realsense: pyrealsense2 is not installed ({exc}); {INSTALL_HINT}") from None
    return rs


# -- devices ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeviceInfo:
    serial: str
    name: str
    firmware: str
    usb: str  # USB type descriptor, e.g. "3.2" or "2.1"; "" when the device does not say
    has_imu: bool

    @property
    def usb2(self) -> bool:
        return self.usb.startswith("2")


def _info(dev: Any, field: str) -> str:
    rs = import_pyrealsense2()
    key = getattr(rs.camera_info, field)
    return str(dev.get_info(key)) if dev.supports(key) else ""


def _has_imu(dev: Any) -> bool:
    return any(s.is_motion_sensor() for s in dev.query_sensors())


def describe_device(dev: Any) -> DeviceInfo:
    return DeviceInfo(
        serial=_info(dev, "serial_number"),
        name=_info(dev, "name"),
        firmware=_info(dev, "firmware_version"),
        usb=_info(dev, "usb_type_descriptor"),
        has_imu=_has_imu(dev),
    )


def list_devices(context: Any | None = None) -> list[DeviceInfo]:
    """The connected RealSense devices (``slam devices``)."""
    rs = import_pyrealsense2()
    ctx = context if context is not None else rs.context()
    return [describe_device(dev) for dev in ctx.query_devices()]


def find_device(serial: str | None, context: Any | None = None) -> DeviceInfo:
    """The device with ``serial`` (the first one when None); DeviceUnavailable naming what is there."""
    devices = list_devices(context)
    if not devices:
        raise DeviceUnavailable("no RealSense device found (is it plugged in? `slam devices` lists them)")
    if serial is None:
        if len(devices) > 1:
            log.warning(
                "realsense: %d devices found (%s); using %s (set source.options.serial to choose)",
                len(devices),
                ", ".join(d.serial for d in devices),
                devices[0].serial,
            )
        return devices[0]
    for dev in devices:
        if dev.serial == serial:
            return dev
    raise DeviceUnavailable(
        f"no RealSense device with serial {serial} (connected: {', '.join(d.serial for d in devices)})"
    )


def choose_profile(
    requested: tuple[int, int, int], usb: str, usb2_profile: tuple[int, int, int] | None
) -> tuple[tuple[int, int, int], str | None]:
    """The (width, height, fps) to stream and a warning when a USB 2 link forces a smaller mode.

    A D4xx on USB 2 cannot carry depth and colour at 640x480@30 (its USB 3 modes fail to start or drop
    most frames); ``usb2_profile`` is what to use instead (None: keep the request and let it fail).
    """
    if not usb.startswith("2") or usb2_profile is None:
        return requested, None
    w, h, fps = requested
    uw, uh, ufps = usb2_profile
    if w * h * fps <= uw * uh * ufps:
        return requested, None
    return usb2_profile, (
        f"the camera is on a USB {usb} link, too slow for {w}x{h}@{fps}: streaming {uw}x{uh}@{ufps} "
        "instead (plug it into a USB 3 port with a USB 3 cable for the full mode; source.options.usb2_profile "
        "sets the fallback)"
    )


# -- frame assembly (pure numpy) ------------------------------------------------------------------------
@dataclass
class Image:
    """One decoded image of one stream."""

    stamp_ms: float
    number: int
    data: np.ndarray
    intrinsics: CameraIntrinsics | None = None


@dataclass
class FramePair:
    depth: Image
    color: Image | None


class FramePairer:
    """Turns the syncer's framesets into one pair per depth frame.

    The syncer emits a frameset whenever any stream has a new frame, reusing the other stream's
    previous frame (measured sequence: (d0,c0) (d1,c1) (d2,c1) (d2,c2) (d3,c2) ...). A depth frame is
    emitted once, with the first colour frame not older than the one before it; a depth frame whose
    colour never comes is emitted with the newest colour seen when the next depth frame arrives.
    Identity is the timestamp: software-device and some recorded frames all have frame number 0.
    """

    def __init__(self, with_color: bool) -> None:
        self.with_color = with_color
        self._pending: Image | None = None
        self._pending_color: Image | None = None  # newest colour seen for the pending depth
        self._last_depth_ms = -math.inf
        self._last_color_ms = -math.inf  # newest colour already paired
        self.stale_color = 0  # depth frames paired with an older colour frame

    def push(self, depth: Image | None, color: Image | None) -> list[FramePair]:
        out: list[FramePair] = []
        if depth is not None and depth.stamp_ms > self._last_depth_ms:
            out.extend(self.flush())
            self._last_depth_ms = depth.stamp_ms
            self._pending = depth
        if self._pending is None:
            return out
        if not self.with_color:
            out.append(FramePair(self._pending, None))
            self._pending = None
            return out
        if color is not None:
            self._pending_color = color
            if color.stamp_ms > self._last_color_ms:
                out.append(self._emit(color))
        return out

    def flush(self) -> list[FramePair]:
        """The pending depth frame, with the newest colour seen (end of stream, or a newer depth)."""
        if self._pending is None:
            return []
        if self._pending_color is not None:
            self.stale_color += 1
        return [self._emit(self._pending_color)]

    def _emit(self, color: Image | None) -> FramePair:
        assert self._pending is not None
        pair = FramePair(self._pending, color)
        if color is not None:
            self._last_color_ms = max(self._last_color_ms, color.stamp_ms)
        self._pending = None
        return pair


class DropCounter:
    """Frames missing from a stream, from the gaps between successive timestamps at the stream's rate."""

    def __init__(self, fps: float) -> None:
        self.period_ms = 1000.0 / fps
        self.dropped = 0
        self._last_ms: float | None = None

    def see(self, stamp_ms: float) -> int:
        missing = 0
        if self._last_ms is not None:
            missing = max(0, round((stamp_ms - self._last_ms) / self.period_ms) - 1)
            self.dropped += missing
        self._last_ms = stamp_ms
        return missing


def depth_metres(raw: np.ndarray, scale: float) -> np.ndarray:
    """uint16 depth units to float32 metres; 0 stays 0 (invalid)."""
    return (raw.astype(np.float32) * np.float32(scale)).astype(np.float32)


def color_rgb(data: np.ndarray, fmt: str) -> np.ndarray:
    """An H×W×3 uint8 RGB image from a colour frame's data in librealsense format ``fmt``."""
    if fmt == "rgb8":
        return np.ascontiguousarray(data)
    if fmt == "bgr8":
        return np.ascontiguousarray(data[..., ::-1])
    if fmt == "rgba8":
        return np.ascontiguousarray(data[..., :3])
    if fmt == "bgra8":
        return np.ascontiguousarray(data[..., 2::-1])
    raise FrameDecodeError(f"colour format {fmt} is not supported (rgb8, bgr8, rgba8, bgra8 are)")


SUPPORTED_COLOR = ("rgb8", "bgr8", "rgba8", "bgra8")


class ImuBuffer:
    """IMU samples as they arrive (a librealsense callback thread appends, the reader takes)."""

    def __init__(self, keep: int | None = 20_000) -> None:
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._samples: dict[str, deque[tuple[float, float, float, float]]] = {
            "accel": deque(maxlen=keep),
            "gyro": deque(maxlen=keep),
        }
        self._last_ms = {"accel": -math.inf, "gyro": -math.inf}
        self.camera_from_imu: np.ndarray | None = None  # set by whoever opens the motion streams
        self.profile: Any | None = None  # a live camera's accel (or gyro) stream profile

    def add(self, kind: str, stamp_ms: float, xyz: tuple[float, float, float]) -> None:
        with self._lock:
            if stamp_ms <= self._last_ms[kind]:
                return  # a recording's framesets repeat the newest sample
            self._last_ms[kind] = stamp_ms
            self._samples[kind].append((stamp_ms, *xyz))
            self._arrived.notify_all()

    def wait_past(self, stamp_ms: float, finished: Any, timeout_s: float = 2.0) -> bool:
        """Wait until both streams have a sample after ``stamp_ms`` or ``finished()`` (a recording's IMU
        is read by another playback thread, which may lag the images); False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._arrived:
            while min(self._last_ms.values()) <= stamp_ms and not finished():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._arrived.wait(min(left, 0.05))  # polled: ``finished`` changes without a notify
        return True

    def on_frame(self, frame: Any) -> None:
        """librealsense frame callback (motion sensor): keep the sample."""
        try:
            kind = frame.profile.stream_type().name
            if kind not in self._samples:
                return
            v = frame.as_motion_frame().get_motion_data()
            self.add(kind, frame.get_timestamp(), (v.x, v.y, v.z))
        except Exception as exc:  # an exception must not escape into librealsense's thread
            log.warning("realsense: IMU sample skipped: %s", exc)

    def take_until(self, stamp_ms: float) -> ImuSamples:
        """The samples up to ``stamp_ms`` (inclusive), removed from the buffer; times in seconds."""
        taken: dict[str, np.ndarray] = {}
        with self._lock:
            for kind, samples in self._samples.items():
                rows = []
                while samples and samples[0][0] <= stamp_ms:
                    rows.append(samples.popleft())
                taken[kind] = np.array(rows, dtype=np.float64).reshape(-1, 4)
        return ImuSamples(
            accel_t=taken["accel"][:, 0] / 1000.0,
            accel=taken["accel"][:, 1:],
            gyro_t=taken["gyro"][:, 0] / 1000.0,
            gyro=taken["gyro"][:, 1:],
            camera_from_imu=self.camera_from_imu,
        )


# -- librealsense streams ---------------------------------------------------------------------------------
def transform_between(source: Any, target: Any) -> np.ndarray | None:
    """4×4 transform taking points from stream profile ``source``'s frame to ``target``'s, from the
    device calibration (librealsense stores the rotation column-major); None when it has none."""
    try:
        ext = source.get_extrinsics_to(target)
    except RuntimeError:
        return None
    out = np.eye(4)
    out[:3, :3] = np.asarray(ext.rotation, dtype=np.float64).reshape(3, 3).T
    out[:3, 3] = np.asarray(ext.translation, dtype=np.float64)
    return out


def _output_camera(profiles: dict[str, Any], aligned: bool) -> Any | None:
    """The profile of the camera the frames are expressed in (colour when aligned, else depth)."""
    return profiles.get("color") if aligned else profiles.get("depth")


def _intrinsics(profile: Any) -> CameraIntrinsics:
    i = profile.as_video_stream_profile().get_intrinsics()
    return CameraIntrinsics(float(i.fx), float(i.fy), float(i.ppx), float(i.ppy), int(i.width), int(i.height))


class PipelineStream:
    """A started ``rs.pipeline``: ``read`` returns a frameset or None, raises DeviceLost / StreamEnded."""

    def __init__(self, pipeline: Any, profile: Any, playback: Any | None, what: str) -> None:
        self.pipeline, self.profile, self.playback, self.what = pipeline, profile, playback, what
        self._open = True

    def read(self, timeout_s: float) -> Any | None:
        rs = import_pyrealsense2()
        try:
            ok, frames = self.pipeline.try_wait_for_frames(max(1, int(timeout_s * 1000)))
        except RuntimeError as exc:  # librealsense reports an unplugged device as a RuntimeError
            raise DeviceLost(str(exc)) from None
        if ok:
            return frames
        if self.playback is not None and self.playback.current_status() == rs.playback_status.stopped:
            raise StreamEnded  # the end of a file shows only as a timeout
        return None

    def close(self) -> None:
        if self._open:
            self._open = False
            try:
                self.pipeline.stop()
            except RuntimeError as exc:
                log.debug("%s: stop: %s", self.what, exc)


def recorded_streams(path: Path) -> tuple[Any, dict[str, Any]]:
    """The recording loaded as a device, and its streams by kind (``depth``, ``color``, ``accel``, ...).

    Keep the device while using the profiles: they point into it, and a profile whose device was
    freed crashes the process (a segmentation fault in ``get_extrinsics_to``, measured).
    """
    rs = import_pyrealsense2()
    try:
        dev = rs.context().load_device(str(path))
    except RuntimeError as exc:
        raise SourceError(f"realsense: cannot play {path}: {exc}") from None
    return dev, {p.stream_type().name: p for s in dev.query_sensors() for p in s.get_stream_profiles()}


def recorded_depth_frames(path: Path) -> int | None:
    """How many depth frames a ``.db3`` recording holds (its ROS 2 SQLite message count), so that frames
    the playback loses at the end are seen; None when the file does not say (.bag, another layout)."""
    if path.suffix != ".db3":
        return None
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            rows = db.execute(
                "SELECT COUNT(m.id) FROM messages m JOIN topics t ON m.topic_id = t.id "
                "WHERE t.name LIKE '/device_%/sensor_%/Depth_%/image/data%'"
            ).fetchone()
    except sqlite3.Error as exc:
        log.info("realsense: %s: cannot count its depth frames (%s)", path, exc)
        return None
    return int(rows[0]) if rows and rows[0] else None


def open_playback(path: Path, realtime: bool, kinds: list[str]) -> PipelineStream:
    """A pipeline playing the image streams ``kinds`` of ``path`` once; non-real-time unless ``realtime``.

    A non-real-time playback sometimes runs ahead of the pipeline, which then loses frames (measured:
    1 start in 20 delivered nothing, 1 in 6 with a slow consumer stopped after 11 of 60 frames); the
    caller compares with the file's depth frame count and plays the file again for the rest
    (``RealSenseSource``). Pausing the playback until the pipeline has started avoided the empty starts
    but made 1 start in 6 hang for 10 s in ``pipeline.start``.

    IMU streams stay out of the pipeline: with them its syncer loses the first framesets of a
    recording at random (measured: 0, 2 or 3 of 3 frames) and keeps only each stream's newest sample.
    """
    rs = import_pyrealsense2()
    pipeline = rs.pipeline()
    config = rs.config()
    try:
        config.enable_device_from_file(str(path), repeat_playback=False)  # the default loops forever
        for kind in kinds:  # any format: playback does not convert, so ask for what was recorded
            config.enable_stream(getattr(rs.stream, kind))
        # real-time off BEFORE start: switched afterwards, the first frames are already lost
        resolved = config.resolve(rs.pipeline_wrapper(pipeline))
        resolved.get_device().as_playback().set_real_time(realtime)
        profile = pipeline.start(config)
    except RuntimeError as exc:
        raise SourceError(f"realsense: cannot play {path}: {exc}") from None
    playback = profile.get_device().as_playback()
    return PipelineStream(pipeline, profile, playback, str(path))


class ImuPlayback:
    """Every IMU sample of a recording, read by a second playback of the file through its motion sensor
    (non-real-time: it runs ahead of the images; the buffer keeps everything until a frame takes it)."""

    def __init__(self, path: Path, buffer: ImuBuffer) -> None:
        rs = import_pyrealsense2()
        self.device = rs.context().load_device(str(path))
        playback = self.device.as_playback()
        playback.set_real_time(False)
        # the status reads "stopped" before the playback thread has started as well as after it has ended:
        # only a stop after "playing" means every sample was delivered
        self._played = False
        playback.set_status_changed_callback(self._on_status)
        sensors = [s for s in self.device.query_sensors() if s.is_motion_sensor()]
        self.sensor = sensors[0] if sensors else None
        if self.sensor is not None:
            profiles = [
                p for p in self.sensor.get_stream_profiles() if p.stream_type().name in ("accel", "gyro")
            ]
            self.sensor.open(profiles)
            self.sensor.start(buffer.on_frame)

    def _on_status(self, status: Any) -> None:
        rs = import_pyrealsense2()
        if status == rs.playback_status.playing:
            self._played = True

    def finished(self) -> bool:
        rs = import_pyrealsense2()
        if self.sensor is None:
            return True
        status = self.device.as_playback().current_status()
        if status == rs.playback_status.playing:
            self._played = True
        return self._played and status == rs.playback_status.stopped

    def close(self) -> None:
        if self.sensor is not None:
            for step in (self.sensor.stop, self.sensor.close):
                try:
                    step()
                except RuntimeError:
                    pass
            self.sensor = None


def playable_path(path: Path, workdir: Path) -> Path:
    """``path``, or a ``.db3`` converted from a legacy ROS 1 ``.bag`` that this librealsense cannot play."""
    rs = import_pyrealsense2()
    if path.suffix != ".bag":
        return path
    try:  # older librealsense plays .bag directly
        probe = rs.config()
        probe.enable_device_from_file(str(path), repeat_playback=False)
        probe.resolve(rs.pipeline_wrapper(rs.pipeline()))
        return path
    except RuntimeError as exc:
        log.info("realsense: %s does not play directly (%s); converting it to .db3", path, exc)
    converted = workdir / (path.stem + ".db3")
    try:
        rs.context().convert_bag_to_db3(str(path), str(converted))
    except (RuntimeError, AttributeError) as exc:
        raise SourceError(f"realsense: cannot read {path} as a RealSense .bag recording: {exc}") from None
    return converted


@dataclass(frozen=True)
class LiveRequest:
    serial: str
    width: int
    height: int
    fps: int
    color: bool
    imu: bool
    global_time: bool | None = None


def _set_global_time(device: Any, enabled: bool) -> None:
    rs = import_pyrealsense2()
    for sensor in device.query_sensors():
        if sensor.supports(rs.option.global_time_enabled):
            sensor.set_option(rs.option.global_time_enabled, 1.0 if enabled else 0.0)


def open_live(request: LiveRequest, imu: ImuBuffer | None, context: Any | None = None) -> PipelineStream:
    """Start depth (and colour) on the camera ``request.serial``; its motion sensor feeds ``imu``."""
    rs = import_pyrealsense2()
    ctx = context if context is not None else rs.context()
    pipeline = rs.pipeline(ctx)
    config = rs.config()
    config.enable_device(request.serial)
    config.enable_stream(rs.stream.depth, request.width, request.height, rs.format.z16, request.fps)
    if request.color:
        config.enable_stream(rs.stream.color, request.width, request.height, rs.format.rgb8, request.fps)
    try:
        profile = pipeline.start(config)
    except RuntimeError as exc:
        text = str(exc)
        if "No device connected" in text or "resolve" in text.lower():
            if not any(d.serial == request.serial for d in list_devices(ctx)):
                raise DeviceUnavailable(f"RealSense {request.serial} not found ({text})") from None
        raise SourceError(
            f"realsense {request.serial}: cannot stream depth{'+colour' if request.color else ''} "
            f"{request.width}x{request.height}@{request.fps} ({text}); see `slam devices` and "
            "source.options width / height / fps"
        ) from None
    stream = PipelineStream(pipeline, profile, None, f"RealSense {request.serial}")
    if request.global_time is not None:
        _set_global_time(profile.get_device(), request.global_time)
    if request.imu and imu is not None:
        _start_motion_sensor(profile.get_device(), request.serial, imu, stream)
    return stream


def _start_motion_sensor(device: Any, serial: str, imu: ImuBuffer, stream: PipelineStream) -> None:
    """Every IMU sample through the motion sensor's callback (the pipeline would keep only the newest)."""
    rs = import_pyrealsense2()
    sensors = [s for s in device.query_sensors() if s.is_motion_sensor()]
    if not sensors:
        return
    sensor = sensors[0]
    profiles = [
        p
        for p in sensor.get_stream_profiles()
        if p.stream_type() in (rs.stream.accel, rs.stream.gyro) and p.format() == rs.format.motion_xyz32f
    ]
    chosen = {}
    for p in profiles:  # the highest rate of each stream
        kind = p.stream_type()
        if kind not in chosen or p.fps() > chosen[kind].fps():
            chosen[kind] = p
    imu.profile = next(iter(chosen.values()), None)  # for the IMU-to-camera transform
    try:
        sensor.open(list(chosen.values()))
        sensor.start(imu.on_frame)
    except RuntimeError as exc:
        log.warning("realsense %s: IMU not started (%s); frames come without IMU samples", serial, exc)
        return
    close_images = stream.close

    def close() -> None:
        close_images()
        for step in (sensor.stop, sensor.close):
            try:
                step()
            except RuntimeError:
                pass

    stream.close = close  # type: ignore[method-assign]


# -- the source -------------------------------------------------------------------------------------------
class RealSenseSource(Source):
    """A RealSense camera (``path`` None) or a recording of one (``path``: .db3 / .bag)."""

    name = "realsense"
    sensor = "rgbd"
    live = True  # per instance: False when playing a file (see ``is_live``)

    def __init__(
        self,
        path: Path | None = None,
        first: int = 0,
        last: int | None = None,
        stride: int = 1,
        *,
        serial: str | int | None = None,
        width: int = 640,
        height: int = 480,
        fps: int = 30,
        color: bool = True,
        align_to_color: bool = True,
        imu: bool | None = None,
        realtime: bool = False,
        usb2_profile: tuple[int, int, int] | list[int] | None = USB2_PROFILE,
        reconnect_initial_s: float = 0.5,
        reconnect_max_s: float = 5.0,
        reconnect_attempts: int | None = None,
        lost_after_s: float = 3.0,
        global_time: bool | None = None,
        context: Any | None = None,
    ) -> None:
        """``global_time``: True stamps live frames with the device's hardware clock mapped to the host
        clock, False with the raw hardware clock, None leaves the device's setting (on by default on D4xx)."""
        super().__init__()
        if first < 0 or stride < 1 or (last is not None and last < first):
            raise SourceError(f"realsense: bad selection first={first} last={last} stride={stride}")
        self.first, self.last, self.stride = first, last, stride
        self.path = Path(path) if path is not None else None
        self.live = self.path is None
        self.color, self.align_to_color = color, align_to_color and color
        self.realtime = realtime
        self.frames_dropped = 0  # missing from the stream (gaps in the depth timestamps, a short playback)
        self.expected_frames: int | None = None  # depth frames in the recording, when it says
        self._state, self._message = "starting", ""
        self.transitions: deque[tuple[str, str]] = deque(maxlen=200)  # (state, message), oldest first
        self._stop = threading.Event()
        self._imu = ImuBuffer()
        self._imu_playback: ImuPlayback | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.device: DeviceInfo | None = None
        self.timestamp_domain: str | None = None  # of the first frame: hardware_clock, global_time, ...
        self.global_time = global_time
        rs = import_pyrealsense2()
        self._align = rs.align(rs.stream.color) if self.align_to_color else None
        try:
            if self.path is not None:
                self._stream = self._open_recording(self.path)
                self._reader: Any = self._playback_items(self._stream)
            else:
                self._reader = self._open_camera(
                    serial,
                    (width, height, fps),
                    imu,
                    usb2_profile,
                    context,
                    Backoff(reconnect_initial_s, 2.0, max(reconnect_max_s, reconnect_initial_s)),
                    reconnect_attempts,
                    lost_after_s,
                )
            self._fps = self._stream_fps()
        except BaseException:
            self.close()  # a half-opened pipeline or temporary folder must not outlive the error
            raise

    @classmethod
    def is_live(cls, path: Path | None, options: dict[str, Any]) -> bool:
        return path is None

    # -- opening ----------------------------------------------------------------------------------------
    def _open_recording(self, path: Path) -> PipelineStream:
        if not path.is_file():
            raise SourceError(f"realsense: recording {path} not found")
        if path.suffix not in RECORDING_SUFFIXES:
            raise SourceError(f"realsense: {path}: expected a .db3 or .bag recording")
        self._tmp = tempfile.TemporaryDirectory(prefix="realsense-")
        playable = playable_path(path, Path(self._tmp.name))
        self._recorded, streams = recorded_streams(playable)
        self._check_streams(streams, str(path))
        self._playable, self._kinds = playable, ["depth", "color"] if self.color else ["depth"]
        self.expected_frames = recorded_depth_frames(playable)
        stream = open_playback(playable, self.realtime, self._kinds)
        if "accel" in streams or "gyro" in streams:
            self._imu = ImuBuffer(keep=None)  # the IMU playback runs ahead of the images
            camera = _output_camera(streams, self.align_to_color)
            imu_profile = streams.get("accel") or streams.get("gyro")
            self._imu.camera_from_imu = transform_between(imu_profile, camera) if camera else None
            self._imu_playback = ImuPlayback(playable, self._imu)
        dev = stream.profile.get_device()
        self.device = describe_device(dev)
        self._depth_scale = float(dev.first_depth_sensor().get_depth_scale())
        self._set_state("playing", f"playing {path}{' in real time' if self.realtime else ''}")
        return stream

    def _check_streams(self, kinds: dict[str, Any], what: str) -> None:
        if "depth" not in kinds:
            raise SourceError(
                f"realsense: {what} has no depth stream (streams: {', '.join(kinds) or 'none'})"
            )
        if kinds["depth"].format().name != "z16":
            raise SourceError(f"realsense: {what}: depth format {kinds['depth'].format().name}, expected z16")
        if self.color and "color" not in kinds:
            log.warning("realsense: %s has no colour stream; frames come without colour", what)
            self.color = self.align_to_color = False
            self._align = None
        if self.color and kinds["color"].format().name not in SUPPORTED_COLOR:
            raise SourceError(
                f"realsense: {what}: colour format {kinds['color'].format().name} is not supported "
                f"({', '.join(SUPPORTED_COLOR)} are)"
            )

    def _open_camera(
        self,
        serial: str | int | None,
        requested: tuple[int, int, int],
        imu: bool | None,
        usb2_profile: Any,
        context: Any | None,
        backoff: Backoff,
        attempts: int | None,
        lost_after_s: float,
    ) -> ReconnectingReader:
        try:
            self.device = find_device(None if serial is None else str(serial), context)
        except DeviceUnavailable as exc:
            raise SourceError(f"realsense: {exc}") from None
        dev = self.device
        profile, warning = choose_profile(requested, dev.usb, tuple(usb2_profile) if usb2_profile else None)
        if warning:
            log.warning("realsense %s: %s", dev.serial, warning)
        self.usb_warning = warning
        request = LiveRequest(
            dev.serial,
            *profile,
            color=self.color,
            imu=dev.has_imu if imu is None else imu,
            global_time=self.global_time,
        )
        self._request = request
        try:
            self._stream = open_live(request, self._imu, context)
        except DeviceUnavailable as exc:
            raise SourceError(f"realsense: {exc}") from None
        self._depth_scale = float(self._stream.profile.get_device().first_depth_sensor().get_depth_scale())
        self._locate_imu(self._stream)
        what = f"RealSense {dev.serial}"
        log.info("%s (%s, USB %s): %dx%d@%d", what, dev.name, dev.usb or "?", *profile)

        def reopen() -> PipelineStream:
            find_device(dev.serial, context)  # DeviceUnavailable while it is still unplugged
            try:
                stream = open_live(request, self._imu, context)
            except (SourceError, RuntimeError) as exc:  # a camera still enumerating is busy: retry later
                raise DeviceUnavailable(str(exc)) from None
            self._stream = stream
            self._locate_imu(stream)
            return stream

        return ReconnectingReader(
            reopen,
            initial=self._stream,
            backoff=backoff,
            max_attempts=attempts,
            lost_after_s=lost_after_s,
            stop=self._stop,
            on_state=self._set_state,
            what=what,
        )

    def _locate_imu(self, stream: PipelineStream) -> None:
        """The IMU-to-camera transform of a live camera, from its calibration."""
        if self._imu.profile is None:
            return
        images = {p.stream_type().name: p for p in stream.profile.get_streams()}
        camera = _output_camera(images, self.align_to_color)
        self._imu.camera_from_imu = transform_between(self._imu.profile, camera) if camera else None

    def _stream_fps(self) -> float:
        for p in self._stream.profile.get_streams():
            if p.stream_type().name == "depth":
                return float(p.fps())
        return 30.0

    def _playback_items(self, stream: PipelineStream) -> Iterator[Any]:
        """The recording's framesets. A non-real-time playback that ends short of the file's depth
        frames (it raced past the pipeline: see ``open_playback``) is started again; the frames
        already delivered are skipped by their timestamps (``FramePairer``)."""
        seen, last_ms, restarts = 0, -math.inf, 0
        while not self._stop.is_set():
            try:
                item = stream.read(1.0)
            except StreamEnded:
                expected = self.expected_frames
                short = seen == 0 if expected is None else seen < expected
                if short and not self.realtime and restarts < PLAYBACK_RESTARTS:
                    restarts += 1
                    log.info(
                        "realsense: %s ended after %d of %s depth frames; playing it again for the rest",
                        self.path,
                        seen,
                        expected if expected is not None else "?",
                    )
                    stream.close()
                    stream = self._stream = open_playback(self._playable, self.realtime, self._kinds)
                    continue
                self._set_state("stopped", f"end of {self.path}")
                return
            except DeviceLost as exc:
                raise SourceError(f"realsense: {self.path}: playback failed: {exc}") from None
            if item is None:
                continue
            depth = item.as_frameset().get_depth_frame()
            if depth and depth.get_timestamp() > last_ms:
                last_ms = depth.get_timestamp()
                seen += 1
            yield item

    # -- status -----------------------------------------------------------------------------------------
    def _set_state(self, state: str, message: str) -> None:
        self._state, self._message = state, message
        self.transitions.append((state, message))

    @property
    def reconnects(self) -> int:
        reader = getattr(self, "_reader", None)
        return reader.reconnects if isinstance(reader, ReconnectingReader) else 0

    def health(self) -> dict[str, Any]:
        """What the status topic shows about the camera (``sensor`` key)."""
        dev = self.device
        return {
            "kind": "realsense",
            "state": self._state,
            "message": self._message,
            "serial": dev.serial if dev else None,
            "usb": dev.usb if dev else None,
            "usb_warning": getattr(self, "usb_warning", None),
            "reconnects": self.reconnects,
            "frames_dropped": self.frames_dropped,
            "frames_skipped": self.frames_skipped,
            "timestamp_domain": self.timestamp_domain,
        }

    # -- frames -----------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[RGBDFrame]:
        pairer = FramePairer(self.color)
        drops = DropCounter(self._fps)
        position, reconnects = 0, self.reconnects
        try:
            for frameset in self._reader:
                if self.reconnects != reconnects:
                    # a reconnected camera may restart its clock: pairing and gap counting start over
                    reconnects = self.reconnects
                    pairer, drops = FramePairer(self.color), DropCounter(self._fps)
                try:
                    depth, color = self._decode(frameset)
                except (FrameDecodeError, FrameError, RuntimeError, ValueError) as exc:
                    self._skip(f"{self._where()} frameset", str(exc))
                    continue
                for pair in pairer.push(depth, color):
                    frame = self._frame(pair, position, drops)
                    position += 1
                    if frame is not None:
                        yield frame
                    if self.last is not None and position > self.last:
                        return
        except DeviceUnavailable as exc:  # reconnection gave up (reconnect_attempts)
            raise SourceError(f"realsense: {exc}") from None
        for pair in pairer.flush():  # the last depth frame, whose colour did not come
            frame = self._frame(pair, position, drops)
            position += 1
            if frame is not None:
                yield frame
        if self.expected_frames is not None and position < self.expected_frames:
            # frames lost after the last one delivered leave no gap in the timestamps: count them here
            missing = self.expected_frames - position
            if missing > self.frames_dropped:
                log.warning(
                    "realsense: %s: %d of %d depth frames not delivered",
                    self.path,
                    missing,
                    self.expected_frames,
                )
                self.frames_dropped = missing
        if position == 0 and self.path is not None:
            log.warning("realsense: %s delivered no frame", self.path)

    def _where(self) -> str:
        return (
            str(self.path)
            if self.path is not None
            else f"RealSense {self.device.serial if self.device else '?'}"
        )

    def _selected(self, position: int) -> bool:
        if position < self.first or (self.last is not None and position > self.last):
            return False
        return (position - self.first) % self.stride == 0

    def _frame(self, pair: FramePair, position: int, drops: DropCounter) -> RGBDFrame | None:
        missing = drops.see(pair.depth.stamp_ms)
        if missing:
            self.frames_dropped += missing
            log.info("realsense: %d frame(s) missing before t=%.3f ms", missing, pair.depth.stamp_ms)
        if self._imu_playback is not None and not self._imu.wait_past(
            pair.depth.stamp_ms, self._imu_playback.finished
        ):
            log.warning(
                "realsense: %s: IMU samples up to t=%.3f ms did not come", self._where(), pair.depth.stamp_ms
            )
        imu = self._imu.take_until(pair.depth.stamp_ms)
        if not self._selected(position):
            return None
        assert pair.depth.intrinsics is not None
        try:
            return RGBDFrame(
                index=position,
                timestamp=pair.depth.stamp_ms / 1000.0,
                depth=depth_metres(pair.depth.data, self._depth_scale),
                intrinsics=pair.depth.intrinsics,
                color=pair.color.data if pair.color is not None else None,
                frame_id="camera_color_optical_frame"
                if self.align_to_color
                else "camera_depth_optical_frame",
                source_name=f"{self._where()} depth frame {pair.depth.number} (t={pair.depth.stamp_ms} ms)",
                imu=imu if len(imu) else None,
            )
        except FrameError as exc:
            self._skip(f"{self._where()} frame {position}", str(exc))
            return None

    def _decode(self, frameset: Any) -> tuple[Image | None, Image | None]:
        """Copy the frameset's images out of librealsense (aligned depth, colour) and keep its IMU."""
        rs = import_pyrealsense2()
        for f in frameset:  # motion frames ride along in a recording's framesets
            if f.profile.stream_type() in (rs.stream.accel, rs.stream.gyro):
                self._imu.on_frame(f)
        fs = frameset.as_frameset()
        raw_depth = fs.get_depth_frame()
        raw_color = fs.get_color_frame() if self.color else None
        if self._align is not None and raw_depth and raw_color:
            fs = self._align.process(fs)
            raw_depth = fs.get_depth_frame()
        depth = None
        if raw_depth:
            if self.timestamp_domain is None:
                self.timestamp_domain = str(raw_depth.get_frame_timestamp_domain()).rsplit(".", 1)[-1]
                log.info("realsense: %s: frame timestamps from the %s", self._where(), self.timestamp_domain)
            data = np.asanyarray(raw_depth.get_data())
            if data.dtype != np.uint16 or data.ndim != 2:
                raise FrameDecodeError(f"depth frame is {data.dtype} {data.shape}, expected uint16 H×W")
            depth = Image(
                raw_depth.get_timestamp(),
                raw_depth.get_frame_number(),
                data.copy(),
                _intrinsics(raw_depth.profile),
            )
        color = None
        if raw_color:
            fmt = raw_color.profile.format().name
            rgb = color_rgb(np.asanyarray(raw_color.get_data()), fmt)
            color = Image(raw_color.get_timestamp(), raw_color.get_frame_number(), rgb.copy())
            if depth is not None and color.data.shape[:2] != depth.data.shape:
                if self.align_to_color:
                    raise FrameDecodeError(
                        f"aligned depth {depth.data.shape} and colour {color.data.shape[:2]} differ in size"
                    )
                color = None  # unaligned streams of different sizes: depth only
        return depth, color

    def close(self) -> None:
        self._stop.set()
        stream = getattr(self, "_stream", None)
        if stream is not None:
            stream.close()
        if self._imu_playback is not None:
            self._imu_playback.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        if self._state not in ("stopped", "failed"):
            self._set_state("stopped", "closed")


# -- recording ------------------------------------------------------------------------------------------
@dataclass
class RecordResult:
    path: Path
    frames: int
    dropped: int
    seconds: float


def record_camera(
    path: Path,
    *,
    serial: str | None = None,
    width: int = 640,
    height: int = 480,
    fps: int = 30,
    color: bool = True,
    seconds: float | None = None,
    frames: int | None = None,
    usb2_profile: tuple[int, int, int] | None = USB2_PROFILE,
    stop: threading.Event | None = None,
    context: Any | None = None,
) -> RecordResult:
    """Record a live camera (depth, colour and, when present, IMU) to ``path`` with librealsense's
    recorder, until ``seconds`` or ``frames`` or ``stop``; ``RealSenseSource(path)`` plays it back."""
    path = Path(path)
    if path.suffix != ".db3":
        raise SourceError(
            f"realsense: record to {path}: librealsense records ROS 2 .db3 files (it refuses other names); "
            "name the file .db3"
        )
    if seconds is None and frames is None and stop is None:
        raise SourceError("realsense: record: give seconds or frames (or a stop event)")
    if not path.parent.is_dir():
        raise SourceError(f"realsense: record: folder {path.parent} does not exist")
    rs = import_pyrealsense2()
    ctx = context if context is not None else rs.context()
    try:
        dev = find_device(serial, ctx)
    except DeviceUnavailable as exc:
        raise SourceError(f"realsense: {exc}") from None
    (w, h, rate), warning = choose_profile((width, height, fps), dev.usb, usb2_profile)
    if warning:
        log.warning("realsense %s: %s", dev.serial, warning)
    pipeline = rs.pipeline(ctx)
    config = rs.config()
    config.enable_device(dev.serial)
    config.enable_stream(rs.stream.depth, w, h, rs.format.z16, rate)
    if color:
        config.enable_stream(rs.stream.color, w, h, rs.format.rgb8, rate)
    if dev.has_imu:  # the recorder writes at the sensors, before the pipeline's syncer: every sample
        config.enable_stream(rs.stream.accel)
        config.enable_stream(rs.stream.gyro)
    config.enable_record_to_file(str(path))
    try:
        pipeline.start(config)
    except RuntimeError as exc:
        raise SourceError(f"realsense {dev.serial}: cannot record {w}x{h}@{rate}: {exc}") from None
    stop = stop or threading.Event()
    drops = DropCounter(rate)
    count, t0, last_ms = 0, time.monotonic(), -math.inf
    try:
        while not stop.is_set():
            if seconds is not None and time.monotonic() - t0 >= seconds:
                break
            if frames is not None and count >= frames:
                break
            ok, frameset = pipeline.try_wait_for_frames(1000)
            if not ok:
                log.warning("realsense %s: no frame for 1 s while recording", dev.serial)
                continue
            depth = frameset.get_depth_frame()
            if depth and depth.get_timestamp() > last_ms:
                last_ms = depth.get_timestamp()
                drops.see(last_ms)
                count += 1
    except KeyboardInterrupt:  # Ctrl-C is how a recording without a limit ends; the file is closed below
        log.warning("realsense %s: recording stopped by Ctrl-C", dev.serial)
    finally:
        pipeline.stop()  # closes the file
    return RecordResult(path, count, drops.dropped, time.monotonic() - t0)
