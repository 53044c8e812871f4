"""A spinning multi-beam LiDAR ray-cast with Open3D, the sensor moving during the sweep.

The sensor has ``beams`` lasers at elevations spread evenly over [``fov_down_deg``, ``fov_up_deg``] and
fires all of them at once, ``columns`` times per revolution, ``rate_hz`` revolutions a second. It spins
clockwise seen from above (like a Velodyne), starting behind the vehicle: column ``c`` points at azimuth
``π − 2π (c + ½) / columns`` in the sensor frame (x forward, y left, z up).

**Timing.** A sweep of period ``T = 1 / rate_hz`` *ends* at its reference instant ``t_end``: column ``c``
fires at ``t_end − T + (c + 1) · T / columns``, so the last column fires at ``t_end`` itself and two
sweeps share no instant. Each column's rays leave from the pose the sensor has at that column's time, and
each point is expressed in the sensor frame *of that time*, so a moving sensor's scan is motion-distorted
exactly as a real one; per-point times are reported relative to ``t_end`` (in ``(−T, 0]``).

Returns are lost beyond ``max_range``, closer than ``min_range``, and at random with probability
``dropout``; ranges get Gaussian noise of ``range_noise_m``. Intensity is a per-class reflectivity
times a Lambertian factor of the incidence angle. All rays of a sweep are cast in one call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import open3d as o3d

#: reflectivity of each scene class (``drivers.sim.outdoor.LABELS`` order), for the intensity channel
REFLECTIVITY = np.array([0.25, 0.45, 0.35, 0.6, 0.3, 0.2, 0.8, 0.5], dtype=np.float64)

#: (fov_up_deg, fov_down_deg) of common sensors, by beam count: HDL-64E, HDL-32E, VLP-16
PRESETS = {64: (2.0, -24.8), 32: (10.67, -30.67), 16: (15.0, -15.0)}


@dataclass(frozen=True)
class SpinningLidar:
    beams: int = 64
    columns: int = 1024
    fov_up_deg: float = 2.0
    fov_down_deg: float = -24.8
    rate_hz: float = 10.0
    min_range: float = 1.0
    max_range: float = 100.0
    range_noise_m: float = 0.02
    dropout: float = 0.005

    def __post_init__(self) -> None:
        if self.beams < 1 or self.columns < 1:
            raise ValueError(f"beams and columns must be >= 1, got {self.beams}, {self.columns}")
        if not self.fov_up_deg > self.fov_down_deg:
            raise ValueError(f"fov_up_deg ({self.fov_up_deg}) must exceed fov_down_deg ({self.fov_down_deg})")
        if not (self.rate_hz > 0 and 0 <= self.min_range < self.max_range):
            raise ValueError("rate_hz must be positive and 0 <= min_range < max_range")
        if self.range_noise_m < 0 or not 0 <= self.dropout < 1:
            raise ValueError("range_noise_m must be >= 0 and dropout in [0, 1)")

    @classmethod
    def preset(cls, beams: int, **overrides) -> SpinningLidar:
        """A 64-, 32- or 16-beam sensor with that model's vertical field of view."""
        if beams not in PRESETS:
            raise ValueError(f"no preset for {beams} beams; presets: {sorted(PRESETS)}")
        up, down = PRESETS[beams]
        return cls(**{"beams": beams, "fov_up_deg": up, "fov_down_deg": down, **overrides})

    @property
    def period(self) -> float:
        return 1.0 / self.rate_hz

    def without_noise(self) -> SpinningLidar:
        return replace(self, range_noise_m=0.0, dropout=0.0)

    def elevations(self) -> np.ndarray:
        """Beam elevations (rad), from the highest beam (ring 0) down."""
        if self.beams == 1:
            return np.array([np.deg2rad((self.fov_up_deg + self.fov_down_deg) / 2)])
        return np.deg2rad(np.linspace(self.fov_up_deg, self.fov_down_deg, self.beams))

    def azimuths(self) -> np.ndarray:
        return np.pi - 2 * np.pi * (np.arange(self.columns) + 0.5) / self.columns

    def column_times(self) -> np.ndarray:
        """Firing time of each column relative to the end of the sweep, in (−period, 0]."""
        return -self.period + (np.arange(self.columns) + 1) * self.period / self.columns

    def directions(self) -> np.ndarray:
        """Unit ray directions in the sensor frame, (columns, beams, 3)."""
        el, az = self.elevations()[None, :], self.azimuths()[:, None]
        shape = (self.columns, self.beams)
        return np.stack(
            [np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.broadcast_to(np.sin(el), shape)], axis=-1
        )


@dataclass
class Sweep:
    """One simulated sweep; per-point arrays of equal length."""

    points: np.ndarray  # M×3 float32, each in the sensor frame at its own time
    times: np.ndarray  # M float32, seconds relative to the end of the sweep, in (−period, 0]
    intensity: np.ndarray  # M float32 in [0, 1]
    ring: np.ndarray  # M uint16, 0 = highest beam
    column: np.ndarray  # M int32
    label: np.ndarray  # M uint8 class of the surface hit (``drivers.sim.outdoor.LABELS``)
    true_range: np.ndarray  # M float32, the range before noise


def simulate_sweep(
    lidar: SpinningLidar,
    raycaster: o3d.t.geometry.RaycastingScene,
    triangle_label: np.ndarray,
    poses_at: Callable[[np.ndarray], np.ndarray],
    t_end: float,
    rng: np.random.Generator | None = None,
) -> Sweep:
    """Cast one sweep ending at ``t_end``; ``poses_at(times)`` gives the sensor-to-world poses (…×4×4).

    Without ``rng`` there is neither range noise nor dropout.
    """
    col_times = lidar.column_times()
    poses = poses_at(t_end + col_times)  # C×4×4
    local = lidar.directions()  # C×B×3
    world_dirs = np.einsum("cij,cbj->cbi", poses[:, :3, :3], local)
    origins = np.broadcast_to(poses[:, None, :3, 3], world_dirs.shape)
    rays = np.concatenate([origins, world_dirs], axis=-1).reshape(-1, 6).astype(np.float32)
    hit = raycaster.cast_rays(o3d.core.Tensor(rays))
    t_hit = hit["t_hit"].numpy().astype(np.float64)
    prim = hit["primitive_ids"].numpy()
    valid = np.isfinite(t_hit) & (t_hit >= lidar.min_range) & (t_hit <= lidar.max_range)
    if rng is not None and lidar.dropout > 0:
        valid &= rng.random(valid.shape) >= lidar.dropout
    idx = np.flatnonzero(valid)
    true_range = t_hit[idx]
    measured = true_range
    if rng is not None and lidar.range_noise_m > 0:
        measured = true_range + rng.normal(0.0, lidar.range_noise_m, idx.size)
    dirs_local = local.reshape(-1, 3)[idx]
    label = np.asarray(triangle_label)[prim[idx]]
    normals = hit["primitive_normals"].numpy()[idx].astype(np.float64)
    cos_incidence = np.abs(np.einsum("ij,ij->i", normals, world_dirs.reshape(-1, 3)[idx]))
    intensity = REFLECTIVITY[label] * (0.3 + 0.7 * cos_incidence)
    column, ring = np.divmod(idx, lidar.beams)
    return Sweep(
        points=(dirs_local * measured[:, None]).astype(np.float32),
        times=col_times[column].astype(np.float32),
        intensity=intensity.astype(np.float32),
        ring=ring.astype(np.uint16),
        column=column.astype(np.int32),
        label=label.astype(np.uint8),
        true_range=true_range.astype(np.float32),
    )
