"""Small synthetic scenes with exact geometry for engine tests (rendered with Open3D raycasting)."""

from __future__ import annotations

import numpy as np

from slam.core.frames import CameraIntrinsics, RGBDFrame


def box_room():
    """A 4 × 3 × 2.5 m room seen from inside, with a table-like box and a sphere: enough structure to
    constrain all six degrees of freedom."""
    import open3d as o3d

    parts = []
    room = o3d.geometry.TriangleMesh.create_box(4.0, 3.0, 2.5)
    room.translate((-2.0, -1.5, -1.25))
    room.triangles = o3d.utility.Vector3iVector(np.asarray(room.triangles)[:, ::-1])  # face inwards
    parts.append(room)
    table = o3d.geometry.TriangleMesh.create_box(1.0, 0.6, 0.8)
    table.translate((0.2, 0.3, -1.25))
    parts.append(table)
    sphere = o3d.geometry.TriangleMesh.create_sphere(0.3, resolution=30)
    sphere.translate((-0.8, -0.5, 0.0))
    parts.append(sphere)
    block = o3d.geometry.TriangleMesh.create_box(0.4, 0.4, 1.2)
    block.translate((1.2, -1.2, -1.25))
    parts.append(block)
    mesh = parts[0]
    for p in parts[1:]:
        mesh += p
    mesh.compute_triangle_normals()
    return mesh


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Camera-to-world pose (OpenCV axes: x right, y down, z forward) looking from eye at target."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([x, y, z], axis=1)
    pose[:3, 3] = eye
    return pose


def render_frame(
    mesh, pose: np.ndarray, width: int = 160, height: int = 120, f: float = 130.0, index: int = 0
) -> RGBDFrame:
    """Exact z-depth of ``mesh`` seen from ``pose`` (camera-to-world)."""
    import open3d as o3d

    intr = CameraIntrinsics(f, f, (width - 1) / 2, (height - 1) / 2, width, height)
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(mesh))
    # Open3D casts pixel u through (u + 0.5 - cx) / fx; our convention is (u - cx) / fx
    k = intr.matrix.copy()
    k[0, 2] += 0.5
    k[1, 2] += 0.5
    rays = o3d.t.geometry.RaycastingScene.create_rays_pinhole(
        o3d.core.Tensor(k), o3d.core.Tensor(np.linalg.inv(pose)), width, height
    )
    t_hit = scene.cast_rays(rays)["t_hit"].numpy()
    dirs = rays.numpy()[..., 3:]
    cam_dirs = dirs @ pose[:3, :3]  # world ray directions into the camera frame
    depth = np.where(np.isfinite(t_hit), t_hit * cam_dirs[..., 2], 0.0).astype(np.float32)
    return RGBDFrame(index=index, timestamp=index / 30.0, depth=depth, intrinsics=intr, gt_pose=pose)


# -- the engine's view of these frames ---------------------------------------------------------------
class _NoHistory:
    """A tracker's past before its first frame (what a frontend reads to deskew or predict)."""

    poses: list = []
    timestamps: list = []

    def last_motion(self, window_s: float = 0.0):
        return None, None


def rgbd_frontend(tracker_cfg=None, mapper_cfg=None, seed: int = 0):
    """The RGB-D frontend ``slam.app.build`` makes for these configs (defaults when None)."""
    from slam.app.build import rgbd_sampling
    from slam.engine.mapper import MapperConfig
    from slam.engine.tracker import TrackerConfig
    from slam.frontends.rgbd import RgbdFrontend

    return RgbdFrontend(
        rgbd_sampling(tracker_cfg or TrackerConfig(), mapper_cfg or MapperConfig()), seed=seed
    )


def map_frame(mapper, frame, pose) -> None:
    """Fit ``mapper`` to an RGB-D frame at ``pose`` as the engine does (its frontend's rays)."""
    mapper.integrate(rgbd_frontend(mapper_cfg=mapper.cfg).observe(frame, _NoHistory()), pose)


def rgbd_engine(neural_map, tracker_cfg=None, mapper=None, seed: int = 0):
    """Tracker (and optionally mapper) behind the RGB-D frontend: ``engine.track(frame)`` per frame."""
    from slam.engine.engine import Engine
    from slam.engine.tracker import Tracker

    tracker = Tracker(neural_map, tracker_cfg)
    return Engine(
        tracker, mapper, rgbd_frontend(tracker.cfg, mapper.cfg if mapper is not None else None, seed)
    )
