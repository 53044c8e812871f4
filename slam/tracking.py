"""Tracker: registers a frame's depth points directly to the neural SDF by Gauss-Newton on SE(3).

No rendering in the loop: each iteration is one batched SDF-and-gradient query. For a world point
x = T p the residual is SDF(x) (zero on the surface) and, for a left perturbation T ← exp(ξ) T with
ξ = (v, ω), its Jacobian is [∇SDF(x), x × ∇SDF(x)]. A Geman-McClure kernel down-weights residuals
beyond a few centimetres (moving objects, unmapped surfaces), points outside allocated space do not
vote, and iterations go coarse to fine: few points first, all of the budget last.

Prediction is constant velocity. When a frame fails (too few inliers or a large residual) the tracker
reports it lost, keeps the prediction, and on the next frames re-registers from the last good pose
with a wider robust kernel and more iterations until it converges again ("recovered").
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from slam.engine import TrackingResult
from slam.frames import RGBDFrame
from slam.geometry import backproject, se3_exp
from slam.neural_map import NeuralSDFMap


class TrackerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    points: int = Field(2500, ge=100, description="depth points used at the finest stage")
    coarse_points: int = Field(1000, ge=50, description="depth points used in the first (coarse) iterations")
    pixel_stride: int = Field(4, ge=1, description="take every n-th pixel before subsampling")
    depth_min: float = Field(0.1, ge=0, description="ignore depth below this (m)")
    depth_max: float = Field(4.0, gt=0, description="ignore depth beyond this (m)")
    iterations: int = Field(6, ge=1, description="maximum Gauss-Newton iterations per frame")
    coarse_iterations: int = Field(2, ge=0, description="of which run on the coarse point set")
    robust_scale: float = Field(0.02, gt=0, description="Geman-McClure scale (m); residuals well above count little")
    inlier_threshold: float = Field(0.03, gt=0, description="|SDF| below this (m) makes a point an inlier")
    damping: float = Field(1e-4, ge=0, description="Levenberg-Marquardt damping added to the normal equations")
    converged_delta: float = Field(3e-4, gt=0, description="stop when the update is smaller (m / rad)")
    min_inlier_ratio: float = Field(0.35, ge=0, le=1, description="below this the frame is reported lost")
    max_residual: float = Field(0.03, gt=0, description="above this RMS inlier residual (m) the frame is lost")
    min_hits: int = Field(
        20, ge=0, description="use only points whose voxel corners were fitted at least this often (fresh space is unreliable)"
    )
    recovery_scale: float = Field(4.0, ge=1, description="robust scale multiplier while re-localising")
    constant_velocity: bool = Field(True, description="predict each pose from the last motion")


class Tracker:
    """Frame-to-map tracker over a ``NeuralSDFMap``."""

    name = "neural-sdf-gauss-newton"

    def __init__(self, neural_map: NeuralSDFMap, config: TrackerConfig | None = None, seed: int = 0) -> None:
        self.map = neural_map
        self.cfg = config or TrackerConfig()
        self.rng = np.random.default_rng(seed)
        self.poses: list[np.ndarray] = []
        self.last_good: np.ndarray | None = None
        self.lost_streak = 0

    # -- preprocessing -------------------------------------------------------------------------
    def sample_points(self, frame: RGBDFrame) -> np.ndarray:
        """Camera-frame points from the valid depth in range, subsampled to the point budget."""
        pts, _ = backproject(frame.depth, frame.intrinsics, self.cfg.pixel_stride)
        z = pts[:, 2]
        pts = pts[(z > self.cfg.depth_min) & (z < self.cfg.depth_max)]
        if pts.shape[0] > self.cfg.points:
            pts = pts[self.rng.choice(pts.shape[0], self.cfg.points, replace=False)]
        return pts

    def predict(self) -> np.ndarray:
        if not self.poses:
            return np.eye(4)
        if len(self.poses) == 1 or not self.cfg.constant_velocity:
            return self.poses[-1].copy()
        prev, last = self.poses[-2], self.poses[-1]
        return last @ (np.linalg.inv(prev) @ last)

    # -- registration --------------------------------------------------------------------------
    def register(
        self, points: np.ndarray, init: np.ndarray, robust_scale: float | None = None, iterations: int | None = None
    ) -> tuple[np.ndarray, dict]:
        """Gauss-Newton alignment of camera points to the map from ``init``; returns (pose, report)."""
        cfg = self.cfg
        scale = robust_scale or cfg.robust_scale
        n_iter = iterations or cfg.iterations
        pose = init.copy()
        pts_all = torch.from_numpy(points.astype(np.float32))
        coarse = pts_all[: min(cfg.coarse_points, pts_all.shape[0])]  # points are already shuffled
        it_done = 0
        for it in range(n_iter):
            pts = coarse if it < cfg.coarse_iterations else pts_all
            xi, _ = self._step(pts, pose, scale)
            pose = se3_exp(xi) @ pose
            it_done = it + 1
            if np.linalg.norm(xi) < cfg.converged_delta and it >= cfg.coarse_iterations:
                break
        residual, inlier_ratio, n_valid = self._evaluate(pts_all, pose)
        return pose, {"iterations": it_done, "residual": residual, "inlier_ratio": inlier_ratio, "valid": n_valid}

    def _world(self, pts: torch.Tensor, pose: np.ndarray) -> torch.Tensor:
        rot = torch.from_numpy(pose[:3, :3].astype(np.float32))
        trans = torch.from_numpy(pose[:3, 3].astype(np.float32))
        return pts @ rot.T + trans

    def _step(self, pts: torch.Tensor, pose: np.ndarray, scale: float) -> tuple[np.ndarray, float]:
        x = self._world(pts, pose)
        q = self.map.query(x, gradient=True, min_hits=self.cfg.min_hits)
        keep = q.valid & (q.sdf.abs() < 4 * scale + self.cfg.inlier_threshold)
        if int(keep.sum()) < 12:
            return np.zeros(6), float("nan")
        r = q.sdf[keep].double()
        g = q.grad[keep].double()
        xw = x[keep].double()
        jac = torch.cat([g, torch.cross(xw, g, dim=1)], dim=1)  # N×6
        # Geman-McClure weights keep the influence of large residuals bounded
        s2 = scale * scale
        w = (s2 / (s2 + r * r)) ** 2

        h = (jac * w[:, None]).T @ jac
        b = (jac * (w * r)[:, None]).T @ torch.ones_like(r)[:, None]
        h = h.numpy() + self.cfg.damping * np.eye(6) * max(float(np.trace(h.numpy())) / 6, 1e-9)
        try:
            xi = -np.linalg.solve(h, b.numpy()[:, 0])
        except np.linalg.LinAlgError:
            return np.zeros(6), float("nan")
        return xi, float(torch.sqrt((w * r * r).sum() / w.sum()))

    def _evaluate(self, pts: torch.Tensor, pose: np.ndarray) -> tuple[float, float, int]:
        q = self.map.query(self._world(pts, pose), min_hits=self.cfg.min_hits)
        valid = q.valid
        n_valid = int(valid.sum())
        if n_valid == 0:
            return float("nan"), 0.0, 0
        r = q.sdf[valid].abs()
        inl = r < self.cfg.inlier_threshold
        residual = float(torch.sqrt((r[inl] ** 2).mean())) if bool(inl.any()) else float("nan")
        return residual, float(inl.sum()) / pts.shape[0], n_valid

    def resume(self, pose: np.ndarray) -> None:
        """Continue in an existing (loaded) map from a guess of the next frame's pose: that frame is then
        re-localised from ``pose`` with the wide recovery kernel instead of defining the map's origin."""
        self.poses = [np.asarray(pose, dtype=np.float64).copy()]
        self.last_good = self.poses[0]
        self.lost_streak = 1

    # -- per frame -----------------------------------------------------------------------------
    def track(self, frame: RGBDFrame) -> TrackingResult:
        if not self.poses:
            pose = frame.gt_pose.copy() if frame.gt_pose is not None else np.eye(4)
            self.poses.append(pose)
            self.last_good = pose
            return TrackingResult(pose=pose, info={"first": True})
        points = self.sample_points(frame)
        recovering = self.lost_streak > 0
        if recovering:
            init = self.last_good
            pose, rep = self.register(
                points, init, self.cfg.robust_scale * self.cfg.recovery_scale, 2 * self.cfg.iterations
            )
            pose, rep = self.register(points, pose)  # tighten with the normal kernel
        else:
            pose, rep = self.register(points, self.predict())
        lost = not (
            rep["inlier_ratio"] >= self.cfg.min_inlier_ratio
            and np.isfinite(rep["residual"])
            and rep["residual"] <= self.cfg.max_residual
        )
        if lost:
            self.lost_streak += 1
            pose = self.predict()
        else:
            self.last_good = pose
        recovered = recovering and not lost
        if recovered:
            self.lost_streak = 0
        self.poses.append(pose)
        return TrackingResult(
            pose=pose,
            iterations=rep["iterations"],
            residual=rep["residual"],
            inlier_ratio=rep["inlier_ratio"],
            lost=lost,
            recovered=recovered,
            info={"points": int(points.shape[0])},
        )
