"""librealsense streams: started pipelines on a camera or a recording, what a recording holds, and the
calibration read from stream profiles."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from drivers.base import SourceError
from drivers.realsense.common import import_pyrealsense2
from drivers.realsense.devices import list_devices
from drivers.realsense.imu import ImuBuffer
from drivers.reconnect import DeviceLost, DeviceUnavailable, StreamEnded
from slam.core.frames import CameraIntrinsics

log = logging.getLogger(__package__)  # one logger for the driver, named as before it was a package


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


def output_camera(profiles: dict[str, Any], aligned: bool) -> Any | None:
    """The profile of the camera the frames are expressed in (colour when aligned, else depth)."""
    return profiles.get("color") if aligned else profiles.get("depth")


def stream_intrinsics(profile: Any) -> CameraIntrinsics:
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
