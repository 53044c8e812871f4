"""Sensor data model: the timestamped frames every driver yields and the engine consumes.

Conventions (shared by every driver, the engine and the evaluation):
- Poses are 4×4 float64 camera-to-world (or sensor-to-world) matrices; cameras use the OpenCV axes
  (x right, y down, z forward).
- Timestamps are seconds (float64) on the recording's clock.
- Depth is metres as float32; 0 marks an invalid pixel (drivers map NaN/inf/sentinels to 0).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class FrameError(ValueError):
    """A frame's contents break the data model (wrong shape, dtype or non-finite pose)."""


def _check_pose(pose: np.ndarray | None, what: str) -> np.ndarray | None:
    if pose is None:
        return None
    pose = np.asarray(pose, dtype=np.float64)
    if pose.shape != (4, 4):
        raise FrameError(f"{what}: pose must be 4x4, got shape {pose.shape}")
    if not np.all(np.isfinite(pose)):
        raise FrameError(f"{what}: pose contains NaN or inf")
    return pose


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics of an image of ``width`` × ``height`` pixels."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        if not (self.fx > 0 and self.fy > 0):
            raise FrameError(f"focal lengths must be positive, got fx={self.fx}, fy={self.fy}")
        if self.width <= 0 or self.height <= 0:
            raise FrameError(f"image size must be positive, got {self.width}x{self.height}")

    @property
    def matrix(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @classmethod
    def from_matrix(cls, k: np.ndarray, width: int, height: int) -> CameraIntrinsics:
        k = np.asarray(k, dtype=np.float64)
        if k.shape != (3, 3):
            raise FrameError(f"intrinsic matrix must be 3x3, got shape {k.shape}")
        return cls(float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2]), int(width), int(height))

    def scaled(self, factor: float) -> CameraIntrinsics:
        """Intrinsics of the image resized by ``factor`` (pixel-centre convention)."""
        return CameraIntrinsics(
            self.fx * factor,
            self.fy * factor,
            (self.cx + 0.5) * factor - 0.5,
            (self.cy + 0.5) * factor - 0.5,
            round(self.width * factor),
            round(self.height * factor),
        )


@dataclass
class EventPacket:
    """Events of one sensor over an interval: time (s), pixel x, y and polarity (+1 / -1)."""

    t: np.ndarray
    x: np.ndarray
    y: np.ndarray
    p: np.ndarray
    width: int
    height: int
    timestamp: float = 0.0  # the packet's reference time, e.g. the end of its interval
    index: int = 0
    frame_id: str = "event_camera"
    intrinsics: CameraIntrinsics | None = None  # the event sensor's pinhole model, when calibrated
    # 4×4 transform taking points from the event sensor's frame into the RGB-D camera's frame, when known
    camera_from_sensor: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.camera_from_sensor = _check_pose(self.camera_from_sensor, f"{self.frame_id} packet {self.index}")
        self.t = np.asarray(self.t, dtype=np.float64)
        self.x = np.asarray(self.x, dtype=np.uint16)
        self.y = np.asarray(self.y, dtype=np.uint16)
        self.p = np.where(np.asarray(self.p) > 0, 1, -1).astype(np.int8)
        n = self.t.shape[0]
        if self.t.ndim != 1 or any(a.shape != (n,) for a in (self.x, self.y, self.p)):
            raise FrameError(
                f"event arrays must be 1-D and equally long, got t{self.t.shape} x{self.x.shape} "
                f"y{self.y.shape} p{self.p.shape}"
            )

    def __len__(self) -> int:
        return int(self.t.shape[0])


EVENT_ARRAYS = ("t", "x", "y", "p")


def concat_event_arrays(parts: Sequence[Any]) -> dict[str, np.ndarray]:
    """The ``t``, ``x``, ``y`` and ``p`` arrays of ``parts`` (``EventPacket``s, or the simulator's
    ``Events``), each joined in order: ``EventPacket(**concat_event_arrays(packets), width=..., ...)`` or
    ``dataclasses.replace(packet, **concat_event_arrays([earlier, packet]))``. ``parts`` must not be empty."""
    return {k: np.concatenate([getattr(part, k) for part in parts]) for k in EVENT_ARRAYS}


def carry_over(dropped: Any, successor: Any) -> None:
    """What a frame dropped before tracking hands to the next one: its streams that cover the time since
    the previous frame. Its events join the successor's (in time order; the successor keeps its packet's
    metadata), so the successor's events again cover the time since the last frame tracked, as in replay."""
    ev, nxt = getattr(dropped, "events", None), getattr(successor, "events", None)
    if ev is None or len(ev) == 0 or nxt is None:
        return
    successor.events = dataclasses.replace(nxt, **concat_event_arrays([ev, nxt]))


@dataclass
class ImuSamples:
    """Inertial samples of a camera's IMU: accelerometer and gyroscope readings with their times.

    Times are seconds on the frames' clock. An accelerometer and a gyroscope running at their own rates
    (RealSense D435i / D455) each have their own times; an IMU that samples both at once (event cameras:
    AEDAT 4, the Event Camera Dataset's imu.txt) shares one array of times (``same_clock``, ``t``).
    Values are SI whatever the device or file stores (readers convert), float64, in the IMU's axes:
    ``accel`` m/s² (N×3), ``gyro`` rad/s (M×3); ``temperature`` (°C, N) and ``magnetometer`` (µT, N×3)
    when the sensor reports them. ``camera_from_imu`` is the 4×4 transform from the IMU frame to the
    camera frame when the device calibration gives it.
    """

    accel_t: np.ndarray
    accel: np.ndarray
    gyro_t: np.ndarray
    gyro: np.ndarray
    frame_id: str = "imu"
    camera_from_imu: np.ndarray | None = None
    temperature: np.ndarray | None = None
    magnetometer: np.ndarray | None = None

    def __post_init__(self) -> None:
        shared = self.gyro_t is self.accel_t
        for name in ("accel", "gyro"):
            t = np.asarray(getattr(self, f"{name}_t"), dtype=np.float64).reshape(-1)
            values = np.asarray(getattr(self, name), dtype=np.float64)
            if values.size == 0:
                values = values.reshape(0, 3)
            if values.ndim != 2 or values.shape[1] != 3:
                raise FrameError(f"{self.frame_id}: {name} must be N×3, got shape {values.shape}")
            if values.shape[0] != t.shape[0]:
                raise FrameError(
                    f"{self.frame_id}: {name} has {values.shape[0]} samples but {t.shape[0]} times"
                )
            setattr(self, f"{name}_t", t)
            setattr(self, name, values)
        if shared:  # one clock: one array, which ``t`` and ``len`` recognise
            self.gyro_t = self.accel_t
        self.camera_from_imu = _check_pose(self.camera_from_imu, self.frame_id)

    @classmethod
    def same_clock(
        cls,
        t: np.ndarray,
        accel: np.ndarray,
        gyro: np.ndarray,
        temperature: np.ndarray | None = None,
        magnetometer: np.ndarray | None = None,
        frame_id: str = "imu",
    ) -> ImuSamples:
        """N samples each holding an accelerometer and a gyroscope reading taken at the same time."""
        t = np.asarray(t, dtype=np.float64).reshape(-1)
        return cls(t, accel, t, gyro, frame_id, temperature=temperature, magnetometer=magnetometer)

    @property
    def shared_clock(self) -> bool:
        return self.gyro_t is self.accel_t

    @property
    def t(self) -> np.ndarray:
        """The sample times of an IMU on one clock (``same_clock``)."""
        if not self.shared_clock:
            raise FrameError(
                f"{self.frame_id}: accelerometer and gyroscope have their own times (accel_t, gyro_t)"
            )
        return self.accel_t

    def __len__(self) -> int:
        """The number of samples: a reading pair on one clock counts once."""
        n = int(self.accel_t.shape[0])
        return n if self.shared_clock else n + int(self.gyro_t.shape[0])


@dataclass
class RGBDFrame:
    """One depth image (metres, float32, 0 = invalid) with optional registered colour."""

    index: int
    timestamp: float
    depth: np.ndarray
    intrinsics: CameraIntrinsics
    color: np.ndarray | None = None  # H×W×3 uint8, RGB order
    gt_pose: np.ndarray | None = None  # 4×4 camera-to-world ground truth
    frame_id: str = "camera"
    events: EventPacket | None = None  # events observed since the previous frame, when present
    source_name: str = ""  # where it came from, for error messages (e.g. the depth file)
    imu: ImuSamples | None = None  # IMU samples since the previous frame, when the camera has an IMU

    def __post_init__(self) -> None:
        what = self.source_name or f"frame {self.index}"
        depth = np.asarray(self.depth)
        if depth.ndim != 2:
            raise FrameError(f"{what}: depth must be H×W, got shape {depth.shape}")
        if depth.shape != (self.intrinsics.height, self.intrinsics.width):
            raise FrameError(
                f"{what}: depth is {depth.shape[1]}x{depth.shape[0]} but the intrinsics say "
                f"{self.intrinsics.width}x{self.intrinsics.height}"
            )
        depth = depth.astype(np.float32, copy=False)
        if not np.all(np.isfinite(depth)):
            depth = np.where(np.isfinite(depth), depth, 0.0).astype(np.float32)
        self.depth = depth
        if self.color is not None:
            color = np.asarray(self.color)
            if color.shape != (*depth.shape, 3) or color.dtype != np.uint8:
                raise FrameError(
                    f"{what}: colour must be {depth.shape[0]}x{depth.shape[1]}x3 uint8 to match the "
                    f"depth, got shape {color.shape} dtype {color.dtype}"
                )
            self.color = color
        self.gt_pose = _check_pose(self.gt_pose, what)


@dataclass
class LidarScan:
    """One LiDAR sweep in the sensor frame.

    ``point_times`` are seconds relative to ``timestamp`` (which instant of the sweep the timestamp
    denotes is a property of the driver and is stated by it; ``gt_pose`` is the pose at ``timestamp``).
    Each point is in the sensor frame *at its own time* (not motion-compensated) unless the driver says
    otherwise. ``ring`` is the laser (beam) index of each point when the sensor reports it.
    """

    index: int
    timestamp: float
    points: np.ndarray  # N×3 float32
    intensity: np.ndarray | None = None
    point_times: np.ndarray | None = None
    gt_pose: np.ndarray | None = None  # 4×4 sensor-to-world ground truth
    frame_id: str = "lidar"
    source_name: str = ""
    extra: dict = field(default_factory=dict)
    ring: np.ndarray | None = None  # N uint16 beam index, when known

    def __post_init__(self) -> None:
        what = self.source_name or f"scan {self.index}"
        pts = np.asarray(self.points, dtype=np.float32)
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise FrameError(f"{what}: points must be N×3, got shape {pts.shape}")
        n = pts.shape[0]
        for name, dtype in (("intensity", np.float32), ("point_times", np.float32), ("ring", np.uint16)):
            arr = getattr(self, name)
            if arr is not None:
                arr = np.asarray(arr, dtype=dtype)
                if arr.shape != (n,):
                    raise FrameError(f"{what}: {name} must have shape ({n},), got {arr.shape}")
                setattr(self, name, arr)
        self.points = pts
        self.gt_pose = _check_pose(self.gt_pose, what)


Frame = RGBDFrame | LidarScan | EventPacket
