"""RGB-D frontend: a depth image (with optional colour) to the tracker's points and the mapper's rays.

Tracking takes every ``tracking_stride``-th valid depth pixel in range, back-projected and subsampled to the
point budget, each weighted by the depth sensor's noise model: a structured-light camera's axial noise
grows with the square of the depth (``slam.core.depth_noise``), so far points count less. Mapping takes
rays through every ``mapping_stride``-th pixel whose neighbours give a surface normal (central differences
of the back-projected neighbours), for the point-to-plane SDF targets, with the pixel's colour.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch

from slam.core.depth_noise import axial_sigma
from slam.core.frames import Frame, RGBDFrame
from slam.core.geometry import backproject
from slam.core.observation import MotionHistory, Observation, RaySet


@dataclass(frozen=True)
class RgbdSampling:
    """How many points and rays an RGB-D frame gives, and from which pixels (built from the config's
    ``tracker`` and ``mapper`` sections by ``slam.app.build``)."""

    tracking_points: int = 2500
    tracking_stride: int = 4
    tracking_depth_min: float = 0.1
    tracking_depth_max: float = 4.0
    depth_weight_power: float = 1.0
    mapping_stride: int = 2
    mapping_depth_min: float = 0.1
    mapping_depth_max: float = 4.0
    mapping_rays: int = 4000  # rays kept of a mapped frame (a keyframe keeps them for later steps)


class RgbdFrontend:
    """RGB-D frames to observations: weighted depth points for tracking, rays with normals for mapping."""

    tracker_suffix = ""

    def __init__(self, sampling: RgbdSampling | None = None, seed: int = 0) -> None:
        self.sampling = sampling or RgbdSampling()
        self.rng = np.random.default_rng(seed)  # draws the tracking points

    def observe(self, frame: Frame, history: MotionHistory) -> Observation:
        if not isinstance(frame, RGBDFrame):
            raise TypeError(f"the RGB-D frontend takes RGB-D frames, not {type(frame).__name__}")
        rays = partial(self.rays, frame)
        if not history.poses:  # the first frame defines the map's origin: no points to register
            return Observation(frame, rays=rays)
        points = self.sample_points(frame)
        return Observation(frame, points, weights=self.depth_weights(points), rays=rays)

    def tracked(self, observation: Observation, pose: np.ndarray, lost: bool, info: dict[str, Any]) -> None:
        """Nothing to learn from the tracked pose."""

    def stats(self) -> dict[str, Any]:
        return {}

    def sample_points(self, frame: RGBDFrame) -> np.ndarray:
        """Camera-frame points from the valid depth in range, subsampled to the point budget."""
        s = self.sampling
        pts, _ = backproject(frame.depth, frame.intrinsics, s.tracking_stride)
        z = pts[:, 2]
        pts = pts[(z > s.tracking_depth_min) & (z < s.tracking_depth_max)]
        if pts.shape[0] > s.tracking_points:
            pts = pts[self.rng.choice(pts.shape[0], s.tracking_points, replace=False)]
        return pts

    def depth_weights(self, points: np.ndarray) -> np.ndarray | None:
        """Per-point weights (sigma(1 m) / sigma(z))^power from the depth noise model; None when the power
        is 0 (all points equal)."""
        power = self.sampling.depth_weight_power
        if power == 0:
            return None
        return (axial_sigma(1.0) / axial_sigma(points[:, 2])) ** power

    def rays(self, frame: RGBDFrame, pose: np.ndarray, rng: np.random.Generator) -> RaySet:
        s = self.sampling
        return frame_rays(
            frame, pose, rng, s.mapping_stride, s.mapping_depth_min, s.mapping_depth_max, s.mapping_rays
        )


def surface_pixels(depth: np.ndarray, depth_min: float, depth_max: float) -> np.ndarray:
    """Pixels (H×W bool) with depth in range whose four neighbours have depth and no depth jump: where
    central differences give a surface normal."""
    ok = (depth > depth_min) & (depth < depth_max)
    ok[0], ok[-1], ok[:, 0], ok[:, -1] = False, False, False, False
    left, right, up, down = depth[1:-1, :-2], depth[1:-1, 2:], depth[:-2, 1:-1], depth[2:, 1:-1]
    centre = np.maximum(depth[1:-1, 1:-1], 1e-3)
    # a large depth jump between neighbours is an edge, not a surface
    ok[1:-1, 1:-1] &= (left > 0) & (right > 0) & (up > 0) & (down > 0)
    ok[1:-1, 1:-1] &= (np.abs(right - left) <= 0.1 * centre) & (np.abs(down - up) <= 0.1 * centre)
    return ok


def normals_at(
    depth: np.ndarray, vs: np.ndarray, us: np.ndarray, fx: float, fy: float, cx: float, cy: float
) -> np.ndarray:
    """Unit camera-frame normals (K×3, zero where undefined) at interior pixels (vs, us), from central
    differences of the back-projected neighbours: computed only where rays are drawn."""

    def point(v: np.ndarray, u: np.ndarray) -> np.ndarray:
        z = depth[v, u]
        return np.stack([(u - cx) / fx * z, (v - cy) / fy * z, z], axis=1)

    n = np.cross(point(vs, us + 1) - point(vs, us - 1), point(vs + 1, us) - point(vs - 1, us))
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    return np.where(norm > 1e-12, n / np.maximum(norm, 1e-12), 0.0).astype(np.float32)


def frame_rays(
    frame: RGBDFrame,
    pose: np.ndarray,
    rng: np.random.Generator,
    stride: int,
    depth_min: float,
    depth_max: float,
    limit: int | None,
) -> RaySet:
    """The frame's valid rays on every ``stride``-th pixel with depth in range (subsampled to ``limit``)."""
    intr = frame.intrinsics
    s = stride
    depth = frame.depth[::s, ::s]
    vs, us = np.nonzero(surface_pixels(depth, depth_min, depth_max))
    if limit is not None and vs.size > limit:
        pick = rng.choice(vs.size, limit, replace=False)
        vs, us = vs[pick], us[pick]
    n = normals_at(
        depth, vs, us, intr.fx / s, intr.fy / s, (intr.cx + 0.5) / s - 0.5, (intr.cy + 0.5) / s - 0.5
    )
    has_normal = np.abs(n).sum(axis=1) > 0  # degenerate neighbourhoods (rare) give no ray
    vs, us, n = vs[has_normal], us[has_normal], n[has_normal]
    z = depth[vs, us]
    u_full, v_full = us * s, vs * s
    d = np.stack([(u_full - intr.cx) / intr.fx, (v_full - intr.cy) / intr.fy, np.ones_like(z)], axis=1)
    norm = np.linalg.norm(d, axis=1)
    dirs = d / norm[:, None]
    cos = np.abs((n * dirs).sum(1))
    color = None
    if frame.color is not None:
        color = torch.from_numpy(frame.color[v_full, u_full].astype(np.float32) / 255.0)
    return RaySet(
        torch.from_numpy(dirs.astype(np.float32)),
        torch.from_numpy((z * norm).astype(np.float32)),
        torch.from_numpy(np.clip(cos, 0.2, 1.0).astype(np.float32)),
        color,
        pose.copy(),
    )
