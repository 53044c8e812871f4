"""The axial depth noise of a structured-light camera (Kinect-like), Nguyen, Izadi & Lovell (2012):
``sigma(z, theta) = a + b (z - z0)^2 + c / sqrt(z) * theta^2 / (pi/2 - theta)^2`` metres at depth ``z`` (m)
and incidence ``theta`` (rad). One model for the simulator that adds the noise (``drivers.sim.depth_noise``)
and the RGB-D frontend that weights depth points by it."""

from __future__ import annotations

import numpy as np

SIGMA_A = 0.0012
SIGMA_B = 0.0019
SIGMA_Z0 = 0.4
SIGMA_ANGLE = 0.0001


def axial_sigma(
    z: np.ndarray | float,
    theta: np.ndarray | float = 0.0,
    a: float = SIGMA_A,
    b: float = SIGMA_B,
    z0: float = SIGMA_Z0,
    angle: float = SIGMA_ANGLE,
) -> np.ndarray:
    """Standard deviation (m) of the axial noise at depth ``z`` and incidence ``theta`` (0: facing the
    surface; clipped at 89 degrees)."""
    z = np.asarray(z, dtype=np.float64)
    theta = np.minimum(np.asarray(theta, dtype=np.float64), np.deg2rad(89.0))
    angle_term = angle / np.sqrt(np.maximum(z, 1e-3)) * theta**2 / (np.pi / 2 - theta) ** 2
    return a + b * (z - z0) ** 2 + angle_term
