"""Mesh reconstruction metrics as in the NICE-SLAM / Co-SLAM evaluation.

Both meshes are sampled uniformly by area (``n_points`` points each, open3d
``sample_points_uniformly`` with a fixed seed, so results are repeatable), then

* accuracy: mean distance from each estimated-mesh sample to the reference,
* completion: mean distance from each reference sample to the estimate,
* completion ratio: fraction of reference samples closer to the estimate than ``threshold`` (5 cm by
  default).

"To the other mesh" is, by default, the exact distance to its surface (``distance="surface"``, open3d's
``RaycastingScene.compute_distance``). NICE-SLAM's evaluation measures to the nearest *sample* of the
other mesh instead (``distance="samples"``), which adds the sampling spacing to every figure: on a
370 m² room, 100k samples put a perfect mesh at 2.7 cm "accuracy" against itself, 1M samples at 0.9 cm.

Distances are computed in metres and reported in centimetres. Meshes must already be in the same
frame (no alignment is done here).

A ground-truth mesh of a whole scene also holds surfaces no camera saw (behind furniture, under
tables). ``observed_mask`` keeps the reference samples that some view observed (inside its image, in
front of the camera, and within a tolerance of that view's measured depth), and ``mesh_metrics`` with
``ref_mask`` computes completion over those only; accuracy always uses the whole reference.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union

import numpy as np
from scipy.spatial import cKDTree

from slam.core.frames import CameraIntrinsics

if TYPE_CHECKING:  # open3d is slow to import: only load it when a mesh is actually processed
    import open3d as o3d

__all__ = ["MeshError", "MeshMetrics", "load_mesh", "mesh_metrics", "observed_mask", "sample_surface"]

MeshLike = Union[str, Path, "o3d.geometry.TriangleMesh"]


class MeshError(ValueError):
    """A mesh that cannot be evaluated (missing file, no triangles, zero area); the message names it."""


@dataclass(frozen=True)
class MeshMetrics:
    accuracy_cm: float
    completion_cm: float
    completion_ratio: float
    threshold_m: float
    n_points: int
    distance: str = "surface"  # to the other mesh's surface, or to its samples (NICE-SLAM's way)

    def as_dict(self) -> dict[str, Any]:
        return {"metric": "mesh", **asdict(self)}


def load_mesh(mesh: MeshLike, what: str = "mesh") -> o3d.geometry.TriangleMesh:
    """A triangle mesh from a file path or an open3d mesh; raises :class:`MeshError` if unusable."""
    import open3d as o3d

    if isinstance(mesh, o3d.geometry.TriangleMesh):
        label = f"{what} (in-memory mesh)"
        out = mesh
    else:
        path = Path(mesh)
        label = str(path)
        if not path.exists():
            raise MeshError(f"{path}: file not found")
        if not path.is_file():
            raise MeshError(f"{path}: not a regular file")
        out = o3d.io.read_triangle_mesh(str(path))
    if len(out.triangles) == 0:
        raise MeshError(f"{label}: no triangles (empty mesh, unreadable file or a point cloud)")
    vertices = np.asarray(out.vertices)
    if not np.isfinite(vertices).all():
        raise MeshError(f"{label}: vertices contain NaN or inf")
    if not out.get_surface_area() > 0.0:
        raise MeshError(f"{label}: surface area is zero (degenerate triangles)")
    return out


def sample_surface(mesh: o3d.geometry.TriangleMesh, n_points: int, seed: int) -> np.ndarray:
    """``n_points`` points uniformly distributed over the surface (float64, N×3), repeatable by ``seed``."""
    import open3d as o3d

    o3d.utility.random.seed(int(seed))
    return np.asarray(mesh.sample_points_uniformly(number_of_points=int(n_points)).points, dtype=np.float64)


def observed_mask(
    points: np.ndarray,
    views: Iterable[tuple[np.ndarray, np.ndarray, CameraIntrinsics]],
    tolerance: float = 0.05,
) -> np.ndarray:
    """Which of the N×3 world points some view observed: for each (camera-to-world pose, depth image,
    intrinsics), the point projects inside the image, in front of the camera, onto a valid depth pixel
    whose depth is within ``tolerance`` (m) of the point's (so occluded points do not count)."""
    seen = np.zeros(points.shape[0], dtype=bool)
    for pose, depth, intr in views:
        rot, trans = pose[:3, :3], pose[:3, 3]
        cam = (points - trans) @ rot  # world → camera: Rᵀ (x − t)
        z = cam[:, 2]
        front = z > 1e-6
        u = np.round(cam[:, 0] / np.where(front, z, 1.0) * intr.fx + intr.cx).astype(np.int64)
        v = np.round(cam[:, 1] / np.where(front, z, 1.0) * intr.fy + intr.cy).astype(np.int64)
        h, w = depth.shape
        inside = front & (u >= 0) & (u < w) & (v >= 0) & (v < h)
        measured = np.zeros_like(z)
        measured[inside] = depth[v[inside], u[inside]]
        seen |= inside & (measured > 0) & (np.abs(measured - z) < tolerance)
    return seen


def surface_distance(mesh: o3d.geometry.TriangleMesh, points: np.ndarray) -> np.ndarray:
    """Unsigned distance (m) from each of the N×3 points to the closest point of ``mesh``'s triangles."""
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene(device=o3d.core.Device("CPU:0"))
    scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(mesh))
    query = o3d.core.Tensor(np.asarray(points, dtype=np.float32))
    return scene.compute_distance(query).numpy().astype(np.float64)


def mesh_metrics(
    ref: MeshLike,
    est: MeshLike,
    n_points: int = 200_000,
    threshold: float = 0.05,
    seed: int = 0,
    ref_mask: Callable[[np.ndarray], np.ndarray] | None = None,
    distance: Literal["surface", "samples"] = "surface",
) -> MeshMetrics:
    """Accuracy / completion (cm) and completion ratio of ``est`` against ``ref`` (paths or open3d meshes).

    The reference is sampled with ``seed`` and the estimate with ``seed + 1``; with ``distance="samples"``
    (independent samples) a mesh compared with itself scores the sampling density, not 0. ``ref_mask`` maps the
    reference samples (N×3) to the boolean mask of those that count for completion (for example
    ``observed_mask`` over the run's views).
    """
    if n_points < 1:
        raise ValueError(f"n_points must be positive, got {n_points}")
    if threshold <= 0:
        raise ValueError(f"threshold must be positive, got {threshold}")
    if distance not in ("surface", "samples"):
        raise ValueError(f"distance must be 'surface' or 'samples', got {distance!r}")
    ref_mesh = load_mesh(ref, "reference mesh")
    est_mesh = load_mesh(est, "estimated mesh")
    ref_pts = sample_surface(ref_mesh, n_points, seed)
    est_pts = sample_surface(est_mesh, n_points, seed + 1)
    comp_pts = ref_pts  # the reference samples that count for completion
    if ref_mask is not None:
        keep = np.asarray(ref_mask(ref_pts), dtype=bool)
        if not keep.any():
            raise MeshError("no reference sample passes ref_mask (did the views see the reference at all?)")
        comp_pts = ref_pts[keep]
    if distance == "surface":
        acc_dist = surface_distance(ref_mesh, est_pts)
        comp_dist = surface_distance(est_mesh, comp_pts)
    else:
        acc_dist, _ = cKDTree(ref_pts).query(est_pts, k=1, workers=-1)
        comp_dist, _ = cKDTree(est_pts).query(comp_pts, k=1, workers=-1)
    return MeshMetrics(
        accuracy_cm=float(np.mean(acc_dist)) * 100.0,
        completion_cm=float(np.mean(comp_dist)) * 100.0,
        completion_ratio=float(np.mean(comp_dist < threshold)),
        threshold_m=float(threshold),
        n_points=int(n_points),
        distance=distance,
    )


def crop_mesh_near(mesh_path: Path, seen: np.ndarray, radius: float):
    """The open3d mesh at ``mesh_path`` without the triangles whose centroid is farther than ``radius`` (m)
    from every point of ``seen``."""
    import open3d as o3d

    mesh = o3d.io.read_triangle_mesh(str(mesh_path))
    tri = np.asarray(mesh.triangles)
    if len(tri) == 0:
        return mesh
    # a wall of a generated building is two triangles tens of metres long: split such triangles first, so
    # that a wall seen only in part is kept in part, not dropped whole because its centroid is far away
    verts, tri = split_long_triangles(np.asarray(mesh.vertices), tri, max_edge=radius)
    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(verts), o3d.utility.Vector3iVector(tri))
    centroids = verts[tri].mean(axis=1)
    mesh.remove_triangles_by_mask(~near_points_mask(centroids, seen, radius))
    mesh.remove_unreferenced_vertices()
    return mesh


def split_long_triangles(
    verts: np.ndarray, tris: np.ndarray, max_edge: float
) -> tuple[np.ndarray, np.ndarray]:
    """(vertices, triangles) with every triangle whose longest edge exceeds ``max_edge`` split into four at
    its edge midpoints, repeatedly; the split ones are returned as separate triangles (a triangle soup
    appended to the vertices), which is all sampling and distance queries need."""
    tris = np.asarray(tris, dtype=np.int64)
    verts = np.asarray(verts, dtype=np.float64)

    def longest(soup: np.ndarray) -> np.ndarray:
        return np.linalg.norm(soup - np.roll(soup, 1, axis=1), axis=2).max(axis=1)

    long = longest(verts[tris]) > max_edge
    soup, done = verts[tris[long]], []
    while len(soup):
        split = longest(soup) > max_edge
        done.append(soup[~split])
        a, b, c = (soup[split][:, i] for i in range(3))
        ab, bc, ca = (a + b) / 2, (b + c) / 2, (c + a) / 2
        soup = np.concatenate(
            [np.stack(t, axis=1) for t in ((a, ab, ca), (ab, b, bc), (ca, bc, c), (ab, bc, ca))]
        )
    if not done:
        return verts, tris
    extra = np.concatenate(done).reshape(-1, 3)
    new_tris = len(verts) + np.arange(len(extra)).reshape(-1, 3)
    return np.concatenate([verts, extra]), np.concatenate([tris[~long], new_tris])


def near_points_mask(points: np.ndarray, seen: np.ndarray, tolerance: float) -> np.ndarray:
    """Which of the N×3 points lie within ``tolerance`` (m) of an observed point."""
    if len(seen) == 0:
        return np.zeros(len(points), dtype=bool)
    from scipy.spatial import cKDTree

    dist, _ = cKDTree(seen).query(points, distance_upper_bound=tolerance)
    return np.isfinite(dist)
