"""Classical baseline: Open3D frame-to-frame RGB-D odometry and Open3D TSDF fusion.

It is the reference the neural engine is measured against, and a working pipeline for every
RGB-D source. Frame-to-frame odometry drifts (no map in the loop); the run's ``stats.json`` names it.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from slam.core.config import StrictConfig
from slam.core.frames import RGBDFrame
from slam.core.observation import Observation
from slam.engine.engine import TrackingResult


class OdometryTrackerConfig(StrictConfig):
    method: Literal["hybrid", "point_to_plane", "intensity"] = Field(
        "hybrid", description="odometry residual: hybrid (depth + intensity), point_to_plane or intensity"
    )
    depth_max: float = Field(4.0, gt=0, description="ignore depth beyond this (m)")
    iterations: list[int] = Field(
        [10, 5, 3], min_length=1, description="Gauss-Newton iterations per pyramid level, fine to coarse"
    )
    depth_outlier_trunc: float = Field(0.07, gt=0, description="depth residuals above this (m) are outliers")
    constant_velocity: bool = Field(True, description="start each frame from a constant-velocity prediction")
    min_fitness: float = Field(
        0.05, ge=0, le=1, description="below this fraction of inliers the frame is lost"
    )


class TSDFMapperConfig(StrictConfig):
    voxel_size: float = Field(0.02, gt=0, description="TSDF voxel size (m)")
    sdf_trunc: float = Field(0.08, gt=0, description="truncation distance (m)")
    depth_max: float = Field(4.0, gt=0, description="ignore depth beyond this (m)")
    every: int = Field(1, ge=1, description="integrate every n-th tracked frame")


class BaselineConfig(StrictConfig):
    odometry: OdometryTrackerConfig = Field(
        default_factory=OdometryTrackerConfig, description="frame-to-frame RGB-D odometry"
    )
    tsdf: TSDFMapperConfig = Field(default_factory=TSDFMapperConfig, description="TSDF fusion")


class Open3DOdometryTracker:
    """Chained frame-to-frame RGB-D odometry (Open3D, tensor API, CPU)."""

    name = "open3d-rgbd-odometry (frame-to-frame baseline)"
    map = None  # frame to frame: no map to track against (the Tracker protocol's)

    def __init__(self, config: OdometryTrackerConfig | None = None) -> None:
        import open3d as o3d

        self.o3d = o3d
        self.cfg = config or OdometryTrackerConfig()
        odo = o3d.t.pipelines.odometry
        self._method = {
            "hybrid": odo.Method.Hybrid,
            "point_to_plane": odo.Method.PointToPlane,
            "intensity": odo.Method.Intensity,
        }[self.cfg.method]
        self._criteria = [odo.OdometryConvergenceCriteria(n) for n in self.cfg.iterations]
        self._params = odo.OdometryLossParams(depth_outlier_trunc=self.cfg.depth_outlier_trunc)
        self._device = o3d.core.Device("CPU:0")
        self._prev_image = None
        self._prev_pose: np.ndarray | None = None
        self._velocity = np.eye(4)  # last relative motion prev->cur, in the previous camera frame

    def _rgbd(self, frame: RGBDFrame):
        o3d = self.o3d
        depth = o3d.t.geometry.Image(o3d.core.Tensor(frame.depth, device=self._device))
        if frame.color is not None:
            color = o3d.t.geometry.Image(
                o3d.core.Tensor(frame.color.astype(np.float32) / 255.0, device=self._device)
            )
        else:  # depth-only: a flat image keeps the API happy; use point_to_plane for such data
            color = o3d.t.geometry.Image(
                o3d.core.Tensor(np.zeros((*frame.depth.shape, 3), np.float32), device=self._device)
            )
        return o3d.t.geometry.RGBDImage(color, depth)

    def track(self, obs: Observation) -> TrackingResult:
        frame = obs.frame  # RGB-D images: Open3D's odometry works on them, not on points
        image = self._rgbd(frame)
        if self._prev_pose is None:
            pose = frame.gt_pose.copy() if frame.gt_pose is not None else np.eye(4)
            self._prev_image, self._prev_pose = image, pose
            return TrackingResult(pose=pose, info={"first": True})
        init = self._velocity if self.cfg.constant_velocity else np.eye(4)
        # source = current frame, target = previous frame: the result maps current-camera points into
        # the previous camera, i.e. it is the pose of the current camera in the previous one.
        k = self.o3d.core.Tensor(frame.intrinsics.matrix, self.o3d.core.Dtype.Float64)
        try:
            res = self.o3d.t.pipelines.odometry.rgbd_odometry_multi_scale(
                image,
                self._prev_image,
                k,
                self.o3d.core.Tensor(init),
                1.0,
                self.cfg.depth_max,
                self._criteria,
                self._method,
                self._params,
            )
            rel = res.transformation.numpy()
            residual, fitness = float(res.inlier_rmse), float(res.fitness)
        except RuntimeError:  # too few correspondences (e.g. a blank depth image): a lost frame, not a crash
            rel, residual, fitness = init, float("nan"), 0.0
        lost = (not np.all(np.isfinite(rel))) or fitness < self.cfg.min_fitness
        if lost:
            rel = init  # keep moving as predicted; the next frame registers against this one
        pose = self._prev_pose @ rel
        self._velocity = rel
        self._prev_image, self._prev_pose = image, pose
        return TrackingResult(
            pose=pose,
            iterations=sum(self.cfg.iterations),
            residual=residual,
            inlier_ratio=fitness,
            lost=bool(lost),
        )


class TSDFMapper:
    """Open3D voxel-block TSDF (tensor API, CPU) integrated at the tracked poses."""

    name = "open3d-tsdf"
    mesher = None  # whole meshes only (extract_mesh); the service publishes them on request
    keyframes: tuple = ()  # integrates every frame; keeps none

    def __init__(self, config: TSDFMapperConfig | None = None) -> None:
        import open3d as o3d

        self.o3d = o3d
        self.cfg = config or TSDFMapperConfig()
        core = o3d.core
        self._device = core.Device("CPU:0")
        self._block_resolution = 16
        self.grid = o3d.t.geometry.VoxelBlockGrid(
            attr_names=("tsdf", "weight", "color"),
            attr_dtypes=(core.float32, core.float32, core.float32),
            attr_channels=((1), (1), (3)),
            voxel_size=self.cfg.voxel_size,
            block_resolution=self._block_resolution,
            block_count=20_000,  # initial capacity; the hash map grows as needed
            device=self._device,
        )
        self._count = 0
        self._integrated = 0

    def integrate(self, obs: Observation, pose: np.ndarray) -> None:
        frame = obs.frame  # TSDF fusion integrates the depth and colour images
        self._count += 1
        if (self._count - 1) % self.cfg.every:
            return
        o3d, core = self.o3d, self.o3d.core
        depth = o3d.t.geometry.Image(core.Tensor(frame.depth, device=self._device))
        color_np = frame.color if frame.color is not None else np.full((*frame.depth.shape, 3), 128, np.uint8)
        color = o3d.t.geometry.Image(core.Tensor(color_np.astype(np.float32) / 255.0, device=self._device))
        k = core.Tensor(frame.intrinsics.matrix, core.float64)
        extrinsic = core.Tensor(np.linalg.inv(pose), core.float64)
        trunc_multiplier = self.cfg.sdf_trunc / self.cfg.voxel_size
        blocks = self.grid.compute_unique_block_coordinates(
            depth, k, extrinsic, 1.0, self.cfg.depth_max, trunc_multiplier
        )
        self.grid.integrate(blocks, depth, color, k, extrinsic, 1.0, self.cfg.depth_max, trunc_multiplier)
        self._integrated += 1

    def extract_mesh(self):
        """Legacy ``open3d.geometry.TriangleMesh`` with vertex colours, or None before any frame."""
        if self._integrated == 0:
            return None
        return self.grid.extract_triangle_mesh().to_legacy()

    def map_bytes(self) -> int:
        voxels = self.grid.hashmap().size() * self._block_resolution**3
        return int(voxels) * 4 * 5  # tsdf + weight + rgb, float32 each
