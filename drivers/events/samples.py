"""What event cameras record besides events: intensity (APS) frames; their IMU samples are
``slam.core.frames.ImuSamples`` (``ImuSamples.same_clock``), as every camera's.

Units are SI whatever the file stores (readers convert): seconds, m/s², rad/s; AEDAT 4 stores g and
degrees per second.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STANDARD_GRAVITY = 9.80665  # m/s² per g


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
