"""RealSense recordings of known content, made without a camera: a ``pyrealsense2.software_device``
(depth, colour and optionally IMU sensors with known intrinsics) recorded by librealsense's own
recorder, so playback goes through exactly the code a real recording does."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Intr:
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float


@dataclass
class Recording:
    depth: list[np.ndarray]  # uint16 H×W, depth units
    color: list[np.ndarray] | None  # uint8 H×W×3 RGB (colour camera's size)
    depth_intr: Intr
    color_intr: Intr
    stamps_ms: list[float]
    depth_units: float = 0.001
    fps: int = 30
    depth_to_color_m: tuple[float, float, float] = (0.0, 0.0, 0.0)  # translation of the extrinsics
    depth_to_imu_m: tuple[float, float, float] = (0.0, 0.0, 0.0)
    # per frame: (accel samples [(t_ms, x, y, z)], gyro samples [(t_ms, x, y, z)]) pushed before it
    imu: list[tuple[list[tuple[float, ...]], list[tuple[float, ...]]]] | None = None
    serial: str = "000123456789"
    skip_color: set[int] = field(default_factory=set)  # frames whose colour is not pushed


def _rs_intr(rs, i: Intr):
    out = rs.intrinsics()
    out.width, out.height, out.fx, out.fy, out.ppx, out.ppy = i.width, i.height, i.fx, i.fy, i.cx, i.cy
    out.model = rs.distortion.none
    out.coeffs = [0.0] * 5
    return out


def _video_stream(rs, kind, uid: int, i: Intr, fps: int, fmt, bpp: int):
    vs = rs.video_stream()
    vs.type, vs.index, vs.uid = kind, 0, uid
    vs.width, vs.height, vs.fps, vs.bpp, vs.fmt = i.width, i.height, fps, bpp, fmt
    vs.intrinsics = _rs_intr(rs, i)
    return vs


def _motion_stream(rs, kind, uid: int):
    ms = rs.motion_stream()
    ms.type, ms.index, ms.uid, ms.fps, ms.fmt = kind, 0, uid, 200, rs.format.motion_xyz32f
    return ms


def _video_frame(rs, profile, pixels: np.ndarray, bpp: int, stamp_ms: float, number: int, units=None):
    f = rs.software_video_frame()
    f.pixels = pixels
    f.stride, f.bpp = pixels.shape[1] * bpp, bpp
    f.timestamp, f.domain, f.frame_number = stamp_ms, rs.timestamp_domain.hardware_clock, number
    f.profile = profile.as_video_stream_profile()
    if units is not None:
        f.depth_units = units
    return f


def _motion_frame(rs, profile, sample: tuple[float, ...], number: int):
    m = rs.software_motion_frame()
    v = rs.vector()
    v.x, v.y, v.z = (float(c) for c in sample[1:4])
    m.data = v  # assigned whole: the attribute returns a copy, so setting its fields is lost
    m.timestamp, m.domain, m.frame_number = sample[0], rs.timestamp_domain.hardware_clock, number
    m.profile = profile.as_motion_stream_profile()
    return m


class SoftwareCamera:
    """A software_device with the sensors of a D435i, optionally added to a context (so that
    ``rs.context.query_devices`` and ``rs.pipeline(context)`` find it)."""

    def __init__(self, rec: Recording, with_imu: bool = False) -> None:
        import pyrealsense2 as rs

        self.rs, self.rec = rs, rec
        self.dev = rs.software_device()
        self.depth_sensor = self.dev.add_sensor("Stereo Module")
        self.color_sensor = self.dev.add_sensor("RGB Camera")
        self.depth_profile = self.depth_sensor.add_video_stream(
            _video_stream(rs, rs.stream.depth, 0, rec.depth_intr, rec.fps, rs.format.z16, 2), True
        )
        self.color_profile = self.color_sensor.add_video_stream(
            _video_stream(rs, rs.stream.color, 1, rec.color_intr, rec.fps, rs.format.rgb8, 3), True
        )
        self.depth_sensor.add_read_only_option(rs.option.depth_units, rec.depth_units)
        ext = rs.extrinsics()
        ext.rotation = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        ext.translation = list(rec.depth_to_color_m)
        self.depth_profile.register_extrinsics_to(self.color_profile, ext)
        self.motion_sensor = None
        if with_imu:
            self.motion_sensor = self.dev.add_sensor("Motion Module")
            self.accel_profile = self.motion_sensor.add_motion_stream(
                _motion_stream(rs, rs.stream.accel, 2), True
            )
            self.gyro_profile = self.motion_sensor.add_motion_stream(
                _motion_stream(rs, rs.stream.gyro, 3), True
            )
            ident = rs.extrinsics()
            ident.rotation = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
            ident.translation = list(rec.depth_to_imu_m)
            self.depth_profile.register_extrinsics_to(self.accel_profile, ident)
            self.depth_profile.register_extrinsics_to(self.gyro_profile, ident)
        self.dev.register_info(rs.camera_info.serial_number, rec.serial)
        self.dev.register_info(rs.camera_info.name, "Intel RealSense D435I (software)")
        self.dev.register_info(rs.camera_info.usb_type_descriptor, "3.2")


def write_recording(path: Path, rec: Recording, pace: bool = True) -> Path:
    """Record ``rec`` to ``path`` (.db3) through librealsense's recorder; ``pace`` pushes frames at the
    stream's rate (the recorder stamps messages with the wall-clock push time, which real-time playback
    follows)."""
    cam = SoftwareCamera(rec, with_imu=rec.imu is not None)
    rs = cam.rs
    recorder = rs.recorder(str(path), cam.dev)
    sensors = [(cam.depth_sensor, cam.depth_profile), (cam.color_sensor, cam.color_profile)]
    syncer = rs.syncer()
    for sensor, profile in sensors:
        sensor.open(profile)
    if cam.motion_sensor is not None:
        cam.motion_sensor.open([cam.accel_profile, cam.gyro_profile])
    for sensor, _ in sensors:
        sensor.start(syncer)
    if cam.motion_sensor is not None:
        cam.motion_sensor.start(syncer)
    keep = []  # the frames' pixel buffers must outlive the push
    n_imu = 0
    for i, stamp in enumerate(rec.stamps_ms):
        if rec.imu is not None:
            accel, gyro = rec.imu[i]
            for sample in accel:
                cam.motion_sensor.on_motion_frame(_motion_frame(rs, cam.accel_profile, sample, n_imu))
                n_imu += 1
            for sample in gyro:
                cam.motion_sensor.on_motion_frame(_motion_frame(rs, cam.gyro_profile, sample, n_imu))
                n_imu += 1
        depth = np.ascontiguousarray(rec.depth[i], dtype=np.uint16)
        keep.append(depth)
        cam.depth_sensor.on_video_frame(
            _video_frame(rs, cam.depth_profile, depth, 2, stamp, i + 1, rec.depth_units)
        )
        if rec.color is not None and i not in rec.skip_color:
            color = np.ascontiguousarray(rec.color[i], dtype=np.uint8)
            keep.append(color)
            cam.color_sensor.on_video_frame(_video_frame(rs, cam.color_profile, color, 3, stamp, i + 1))
        if pace:
            time.sleep(1.0 / rec.fps)
    for sensor, _ in sensors:
        sensor.stop()
        sensor.close()
    if cam.motion_sensor is not None:
        cam.motion_sensor.stop()
        cam.motion_sensor.close()
    del recorder  # the file is complete when the recorder is destroyed
    return path


def plane_recording(n: int = 5, width: int = 64, height: int = 48, **kw) -> Recording:
    """A fronto-parallel plane: depth 1000 + i units in frame i, colour red = 10 i, green = column."""
    di = Intr(width, height, 50.0, 51.0, 31.5, 23.5)
    depth = [np.full((height, width), 1000 + i, np.uint16) for i in range(n)]
    color = []
    for i in range(n):
        c = np.zeros((height, width, 3), np.uint8)
        c[..., 0] = (10 * i) % 256
        c[..., 1] = np.arange(width, dtype=np.uint8)[None, :]
        color.append(c)
    stamps = [1000.0 + i * 1000.0 / 30.0 for i in range(n)]
    return Recording(depth, color, di, di, stamps, **kw)
