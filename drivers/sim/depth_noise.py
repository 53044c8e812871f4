"""A structured-light RGB-D sensor model (Kinect v1 / RealSense-like) applied to exact rendered depth.

In order, on a z-depth image (metres, 0 = no return):

1. axial Gaussian noise with the depth- and angle-dependent sigma of Nguyen, Izadi & Lovell (2012) for
   the Kinect: ``sigma(z, theta) = a + b (z - z0)^2 + c / sqrt(z) * theta^2 / (pi/2 - theta)^2``;
2. disparity quantisation: ``d = baseline * focal / z`` rounded to 1/8 pixel and back to depth, so the
   depth step grows as z^2 (about 3 mm at 1 m, 5 cm at 4 m with the defaults);
3. missing returns at grazing incidence: dropped with a probability that ramps from 0 at
   ``grazing_start_deg`` to 1 at ``grazing_full_deg``;
4. dropout at depth discontinuities: within ``edge_width_px`` of a jump, the far (shadowed) side is
   dropped with ``edge_drop_prob`` and the near side with ``edge_near_drop_prob``;
5. a sparse random dropout, and the working range ``[min_range_m, max_range_m]``.

Colour gets mild Gaussian noise (``color_sigma`` 8-bit levels). Everything draws from the generator it is
given, so a seeded generator gives the same noisy images every time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.ndimage import maximum_filter, minimum_filter

from slam.core.depth_noise import SIGMA_A, SIGMA_ANGLE, SIGMA_B, SIGMA_Z0, axial_sigma

REFERENCE_WIDTH = 640  # edge widths are given in pixels at this image width


@dataclass(frozen=True)
class DepthNoiseParams:
    # axial noise, Nguyen et al. 2012 (metres)
    sigma_a: float = SIGMA_A
    sigma_b: float = SIGMA_B
    sigma_z0: float = SIGMA_Z0
    sigma_angle: float = SIGMA_ANGLE
    # disparity quantisation (a property of the sensor, independent of the rendered resolution)
    baseline_m: float = 0.075
    focal_px: float = 580.0
    disparity_step_px: float = 0.125
    # missing returns
    grazing_start_deg: float = 70.0
    grazing_full_deg: float = 85.0
    edge_jump_m: float = 0.03  # a jump is |dz| > edge_jump_m + edge_jump_rel * z
    edge_jump_rel: float = 0.05
    edge_width_px: float = 2.0  # at 640 px wide, scaled with the image width
    edge_drop_prob: float = 0.85
    edge_near_drop_prob: float = 0.25
    random_drop_prob: float = 0.003
    min_range_m: float = 0.3
    max_range_m: float = 4.5
    # colour
    color_sigma: float = 2.0

    def to_dict(self) -> dict:
        return asdict(self)

    def axial_sigma(self, z: np.ndarray, theta: np.ndarray | float = 0.0) -> np.ndarray:
        """Standard deviation (m) of the Gaussian part at depth ``z`` and incidence ``theta`` (rad)."""
        return axial_sigma(z, theta, self.sigma_a, self.sigma_b, self.sigma_z0, self.sigma_angle)

    def quantisation_step(self, z: np.ndarray | float) -> np.ndarray:
        """Depth step (m) of the disparity quantisation at depth ``z``."""
        z = np.asarray(z, dtype=np.float64)
        return z**2 * self.disparity_step_px / (self.baseline_m * self.focal_px)


def apply_depth_noise(
    depth: np.ndarray,
    cos_incidence: np.ndarray,
    rng: np.random.Generator,
    params: DepthNoiseParams | None = None,
) -> np.ndarray:
    """Noisy copy (float32) of the exact z-depth ``depth`` (H×W, metres, 0 = none).

    ``cos_incidence`` is |cos| of the angle between each pixel's viewing ray and the surface normal.
    """
    p = params or DepthNoiseParams()
    z = depth.astype(np.float64)
    valid = z > 0
    h, w = z.shape
    theta = np.arccos(np.clip(cos_incidence, 0.0, 1.0))

    noisy = z + p.axial_sigma(z, theta) * rng.standard_normal(z.shape)
    bf = p.baseline_m * p.focal_px
    disparity = bf / np.maximum(noisy, 1e-3)
    disparity = np.round(disparity / p.disparity_step_px) * p.disparity_step_px
    noisy = np.where(disparity > 0, bf / np.maximum(disparity, 1e-9), 0.0)

    keep = valid.copy()
    # grazing incidence
    t0, t1 = np.deg2rad(p.grazing_start_deg), np.deg2rad(p.grazing_full_deg)
    p_graze = np.clip((theta - t0) / max(t1 - t0, 1e-9), 0.0, 1.0)
    keep &= rng.random(z.shape) >= p_graze
    # depth discontinuities: the nearest / farthest depth within the edge radius
    radius = max(1, round(p.edge_width_px * w / REFERENCE_WIDTH))
    size = 2 * radius + 1
    z_inf = np.where(valid, z, np.inf)
    nearest = minimum_filter(z_inf, size=size, mode="nearest")
    farthest = maximum_filter(np.where(valid, z, 0.0), size=size, mode="nearest")
    threshold = p.edge_jump_m + p.edge_jump_rel * z
    far_side = valid & (z - nearest > threshold)
    near_side = valid & ~far_side & (farthest - z > threshold)
    u = rng.random(z.shape)
    keep &= ~(far_side & (u < p.edge_drop_prob))
    keep &= ~(near_side & (u < p.edge_near_drop_prob))
    # sparse random dropout and the working range
    keep &= rng.random(z.shape) >= p.random_drop_prob
    keep &= (noisy >= p.min_range_m) & (noisy <= p.max_range_m)
    return np.where(keep, noisy, 0.0).astype(np.float32)


def apply_color_noise(
    color: np.ndarray, rng: np.random.Generator, params: DepthNoiseParams | None = None
) -> np.ndarray:
    """``color`` (H×W×3 uint8) with Gaussian noise of ``color_sigma`` levels, clipped to uint8."""
    p = params or DepthNoiseParams()
    if p.color_sigma <= 0:
        return color.copy()
    noisy = color.astype(np.float32) + p.color_sigma * rng.standard_normal(color.shape, dtype=np.float32)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)
