"""What the engine consumes: one typed observation per frame, made by the sensor's frontend.

Every sensor reduces to the same two things (``slam.frontends`` turns a frame into them):
- for tracking, sensor-frame points with optional weights, each point's firing time within a sweep (when
  the motion within the sweep is estimated too), and optionally another sensor's estimate of the pose
  (:class:`PosePrior`, e.g. from event windows);
- for mapping, rays from an origin to an observed surface point (:class:`RaySet`: directions, distances,
  the point-to-plane factor |n·d|, optional colours and per-ray origins), built at the tracked pose.

The tracker, mapper, engine and service see only these; what a frame was (RGB-D image, LiDAR sweep,
events) is the frontend's business.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from slam.core.frames import Frame

#: an extra residual on the pose: pose -> (6×6 H, 6 b) added to each Gauss-Newton step's normal equations,
#: with ξ = (v, ω) about the world origin
PoseTerm = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class RaySet:
    """Observed rays of one frame in its sensor frame: unit directions, distance from the origin to the
    surface along the ray, |n·d| at the surface, colour, and the rays' origins (None: all at the sensor
    frame's origin, as for a camera; a deskewed LiDAR scan's rays leave from where the sensor was)."""

    dirs: torch.Tensor  # N×3, unit
    ray_depth: torch.Tensor  # N, distance along the ray to the surface (m)
    cos: torch.Tensor  # N, |n·d| at the surface (point-to-plane factor)
    color: torch.Tensor | None  # N×3 in [0, 1]
    pose: np.ndarray  # 4×4 sensor-to-world
    origins: torch.Tensor | None = None  # N×3 in the sensor frame; None = the origin

    def __len__(self) -> int:
        return int(self.dirs.shape[0])


@dataclass
class PosePrior:
    """Another sensor's estimate of a frame's pose: the tracker registers from ``pose`` (and re-localises
    from it while lost), adds ``term`` to the depth term's normal equations when given, and with
    ``compare_velocity`` also registers from its own constant-velocity prediction (without the term) and
    keeps the registration with more inliers, so a prior can only help."""

    pose: np.ndarray
    term: PoseTerm | None = None
    compare_velocity: bool = True


#: builds a frame's mapping rays at the tracked pose, drawing subsets with the mapper's generator
RayBuilder = Callable[[np.ndarray, np.random.Generator], RaySet]


@dataclass
class Observation:
    """One frame as the engine consumes it.

    ``points`` is None only for a frame that needs none (the first frame defines the map's origin).
    ``points`` are shuffled: the tracker's coarse stage takes a prefix. ``sweep_fractions`` (-1 … 0, each
    point's firing time as a fraction of the sweep before the frame's instant) ask the tracker to estimate
    the motion within the sweep too, held to the frontend's deskew by ``sweep_prior``. ``search`` allows the
    tracker's heading and travel searches (when configured) for this frame. ``state`` is the frontend's own
    per-frame data (e.g. the preprocessed scan) that its feedback and ray building share.
    """

    frame: Frame
    points: np.ndarray | None = None
    weights: np.ndarray | None = None
    sweep_fractions: np.ndarray | None = None
    sweep_prior: float = 0.0
    search: bool = True
    prior: PosePrior | None = None
    rays: RayBuilder | None = None
    state: Any = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def timestamp(self) -> float:
        return float(self.frame.timestamp)

    @property
    def gt_pose(self) -> np.ndarray | None:
        return getattr(self.frame, "gt_pose", None)

    def mapping_rays(self, pose: np.ndarray, rng: np.random.Generator) -> RaySet | None:
        """The rays to fit at ``pose``; None when the frontend gives none (tracking-only observations)."""
        return None if self.rays is None else self.rays(pose, rng)


class MotionHistory(Protocol):
    """What a frontend may read of the tracker's past: the tracked poses and their timestamps."""

    poses: Sequence[np.ndarray]
    timestamps: Sequence[float]

    def last_motion(self, window_s: float = 0.0) -> tuple[np.ndarray | None, float | None]: ...


class Frontend(Protocol):
    """Turns a sensor's frames into observations (``observe``) and learns from the tracked result
    (``tracked``: e.g. a corrected deskew, the next event keyframe)."""

    def observe(self, frame: Frame, history: MotionHistory) -> Observation: ...

    def tracked(
        self, observation: Observation, pose: np.ndarray, lost: bool, info: dict[str, Any]
    ) -> None: ...

    def stats(self) -> dict[str, Any]:
        """What the frontend adds to a run's stats (e.g. an ``events`` block); {} when nothing."""
        ...

    @property
    def tracker_suffix(self) -> str:
        """Appended to the tracker's name in a run's stats when the frontend changed how it tracked."""
        ...
