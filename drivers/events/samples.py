"""What event cameras record besides events: intensity (APS) frames and IMU samples.

Units are SI whatever the file stores (readers convert): seconds, m/s², rad/s; AEDAT 4 stores g and
degrees per second.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STANDARD_GRAVITY = 9.80665  # m/s² per g


@dataclass
class ImuSamples:
    """N IMU samples: time (s), linear acceleration (N×3, m/s²), angular velocity (N×3, rad/s)."""

    t: np.ndarray
    accel: np.ndarray
    gyro: np.ndarray
    temperature: np.ndarray | None = None  # °C, when the sensor reports it
    magnetometer: np.ndarray | None = None  # N×3, µT, when the sensor reports it

    def __post_init__(self) -> None:
        self.t = np.asarray(self.t, dtype=np.float64)
        n = self.t.shape[0]
        self.accel = np.asarray(self.accel, dtype=np.float64).reshape(n, 3)
        self.gyro = np.asarray(self.gyro, dtype=np.float64).reshape(n, 3)

    def __len__(self) -> int:
        return int(self.t.shape[0])


@dataclass
class ApsFrame:
    """One intensity frame of a DAVIS-type sensor: H×W (grey) or H×W×C pixels as recorded."""

    timestamp: float  # s; the container's frame time
    image: np.ndarray  # uint8 or uint16
    exposure_begin: float | None = None  # s
    exposure_end: float | None = None  # s
    offset_x: int = 0  # position of the image's top-left pixel on the sensor (region of interest)
    offset_y: int = 0
    index: int = 0
