"""Ray-cast RGB-D rendering of an ``IndoorScene`` with Open3D's CPU ``RaycastingScene``.

One ray per pixel through the pixel centre; the ray direction is ``R @ ((u - cx) / fx, (v - cy) / fy, 1)``,
so the hit parameter ``t_hit`` *is* the z-depth. Colour is the hit part's base colour times its
procedural texture (``drivers.sim.textures``) at the hit point, lit by Lambert shading from two lights plus
ambient (view-independent, so the same surface point has the same colour in every frame). Everything is
vectorised over the pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import open3d as o3d

from drivers.sim import textures
from drivers.sim.indoor import IndoorScene
from slam.core.frames import CameraIntrinsics

AMBIENT = 0.42
# (position, strength): a lamp under the ceiling over the table, and one near the window
LIGHTS = ((np.array([0.0, 0.0, 2.5]), 0.5), (np.array([-2.2, -0.2, 1.8]), 0.25))


@dataclass
class RenderOutput:
    depth: np.ndarray  # H×W float32 z-depth in metres, 0 where no surface
    color: np.ndarray  # H×W×3 uint8 RGB
    cos_incidence: np.ndarray  # H×W float32 |cos| of the angle between ray and surface normal (0 = none)
    part: np.ndarray  # H×W int32 index of the scene part hit, -1 where none


class Renderer:
    def __init__(self, scene: IndoorScene, intrinsics: CameraIntrinsics) -> None:
        self.scene = scene
        self.intrinsics = intrinsics
        self._raycaster = scene.raycasting_scene()
        vs, us = np.mgrid[0 : intrinsics.height, 0 : intrinsics.width]
        dirs = np.stack(
            [(us - intrinsics.cx) / intrinsics.fx, (vs - intrinsics.cy) / intrinsics.fy, np.ones(us.shape)]
        ).reshape(3, -1)
        self._dirs_cam = dirs.astype(np.float32)  # 3×N: arrays are kept one row per axis (fast in numpy)
        self._inv_norm = (1.0 / np.linalg.norm(dirs, axis=0)).astype(np.float32)  # rotation keeps it
        self._salt = (np.arange(len(scene.parts)) * 101 + scene.seed * 7).astype(np.int32)
        self._part_colors = scene.part_colors.astype(np.float32)
        self._emissive = np.isin(np.arange(len(textures.MATERIALS)), list(textures.EMISSIVE))
        self._lights = [(pos.astype(np.float32)[:, None], np.float32(k)) for pos, k in LIGHTS]
        self._o3d_k = self._o3d_pinhole_matrix()

    def _o3d_pinhole_matrix(self) -> np.ndarray | None:
        """K for ``RaycastingScene.create_rays_pinhole`` giving exactly our rays, or None to build them here.

        Open3D's generator is several times faster than numpy but its pixel-centre convention is an
        implementation detail (0.20 needs cx + 0.5): find the offset that reproduces our directions.
        """
        intr = self.intrinsics
        pose = np.eye(4)
        pose[:3, :3] = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # a non-trivial rotation
        expected = (pose[:3, :3] @ self._dirs_cam.astype(np.float64)).T
        for offset in (0.5, 0.0, -0.5):
            k = intr.matrix
            k[0, 2] += offset
            k[1, 2] += offset
            try:
                rays = self._o3d_rays(k, pose).reshape(-1, 6)
            except (RuntimeError, TypeError, ValueError):
                return None
            if rays.shape == (expected.shape[0], 6) and np.allclose(rays[:, 3:], expected, atol=1e-5):
                return k
        return None

    def _o3d_rays(self, k: np.ndarray, pose: np.ndarray) -> np.ndarray:
        extrinsic = np.linalg.inv(pose)
        rays = o3d.t.geometry.RaycastingScene.create_rays_pinhole(
            o3d.core.Tensor(k), o3d.core.Tensor(extrinsic), self.intrinsics.width, self.intrinsics.height
        )
        return rays.numpy()

    def render(self, pose: np.ndarray) -> RenderOutput:
        """Render the view of the camera-to-world ``pose`` (OpenCV axes)."""
        intr = self.intrinsics
        h, w = intr.height, intr.width
        origin = pose[:3, 3].astype(np.float32)
        if self._o3d_k is not None:
            rays = self._o3d_rays(self._o3d_k, pose).reshape(-1, 6)
            dirs = rays[:, 3:].T
        else:
            dirs = pose[:3, :3].astype(np.float32) @ self._dirs_cam
            rays = np.empty((dirs.shape[1], 6), dtype=np.float32)
            rays[:, :3] = origin
            rays[:, 3:] = dirs.T
        hits = self._raycaster.cast_rays(o3d.core.Tensor(rays))
        t_hit = hits["t_hit"].numpy()
        hit = np.isfinite(t_hit)
        idx = slice(None) if hit.all() else np.flatnonzero(hit)

        depth = np.where(hit, t_hit, np.float32(0.0)).astype(np.float32)
        cos_inc = np.zeros(h * w, dtype=np.float32)
        part = np.full(h * w, -1, dtype=np.int32)
        color = np.zeros((h * w, 3), dtype=np.uint8)
        if hit.any():
            d = dirs[:, idx]
            points = origin[:, None] + t_hit[idx] * d
            normals = np.ascontiguousarray(hits["primitive_normals"].numpy()[idx].T)
            facing = (normals[0] * d[0] + normals[1] * d[1] + normals[2] * d[2]) * self._inv_norm[idx]
            normals *= np.where(facing > 0, np.float32(-1.0), np.float32(1.0))  # towards the camera
            cos_inc[idx] = np.abs(facing)
            part_idx = self.scene.triangle_part[hits["primitive_ids"].numpy()[idx]]
            part[idx] = part_idx
            material = self.scene.part_materials[part_idx]
            albedo = textures.albedo(
                points, normals, material, self._part_colors[part_idx], self._salt[part_idx]
            )
            light = np.full(points.shape[1], AMBIENT, dtype=np.float32)
            for position, strength in self._lights:
                to_light = position - points
                dist2 = to_light[0] ** 2 + to_light[1] ** 2 + to_light[2] ** 2
                dot = normals[0] * to_light[0] + normals[1] * to_light[1] + normals[2] * to_light[2]
                light += (strength * np.maximum(dot, 0.0)) / (np.sqrt(dist2) * (1.0 + 0.04 * dist2))
            light = np.where(self._emissive[material], np.float32(1.0), light)
            albedo *= light[:, None] * 255.0
            albedo += 0.5
            color[idx] = np.clip(albedo, 0, 255).astype(np.uint8)
        return RenderOutput(
            depth=depth.reshape(h, w),
            color=color.reshape(h, w, 3),
            cos_incidence=cos_inc.reshape(h, w),
            part=part.reshape(h, w),
        )
