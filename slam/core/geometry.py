"""Rigid-body helpers in numpy (float64): SE(3) exp/log, quaternions, depth back-projection.

Quaternions are (x, y, z, w), the order TUM trajectory files use.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from slam.core.frames import CameraIntrinsics


def make_pose(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3] = rotation
    pose[:3, 3] = translation
    return pose


def invert_pose(pose: np.ndarray) -> np.ndarray:
    """Inverse of one 4×4 rigid transform or a stack of them (…×4×4)."""
    rot = pose[..., :3, :3]
    rot_t = np.swapaxes(rot, -1, -2)
    out = np.zeros_like(pose)
    out[..., :3, :3] = rot_t
    out[..., :3, 3] = -np.einsum("...ij,...j->...i", rot_t, pose[..., :3, 3])
    out[..., 3, 3] = 1.0
    return out


def pose_from_tum(tq: np.ndarray) -> np.ndarray:
    """N×7 rows of (tx, ty, tz, qx, qy, qz, qw) to N×4×4 poses."""
    tq = np.atleast_2d(np.asarray(tq, dtype=np.float64))
    poses = np.tile(np.eye(4), (tq.shape[0], 1, 1))
    poses[:, :3, :3] = Rotation.from_quat(tq[:, 3:7]).as_matrix()
    poses[:, :3, 3] = tq[:, :3]
    return poses


def pose_to_tum(poses: np.ndarray) -> np.ndarray:
    """N×4×4 poses to N×7 rows of (tx, ty, tz, qx, qy, qz, qw)."""
    poses = np.asarray(poses, dtype=np.float64).reshape(-1, 4, 4)
    quat = Rotation.from_matrix(poses[:, :3, :3]).as_quat()
    return np.concatenate([poses[:, :3, 3], quat], axis=1)


def skew(v: np.ndarray) -> np.ndarray:
    x, y, z = v
    return np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])


def se3_exp(xi: np.ndarray) -> np.ndarray:
    """Twist (vx, vy, vz, wx, wy, wz) to a 4×4 transform."""
    xi = np.asarray(xi, dtype=np.float64)
    v, w = xi[:3], xi[3:]
    theta = np.linalg.norm(w)
    wx = skew(w)
    if theta < 1e-10:
        rot = np.eye(3) + wx
        jac = np.eye(3) + 0.5 * wx
    else:
        a = np.sin(theta) / theta
        b = (1 - np.cos(theta)) / theta**2
        c = (theta - np.sin(theta)) / theta**3
        rot = np.eye(3) + a * wx + b * wx @ wx
        jac = np.eye(3) + b * wx + c * wx @ wx
    return make_pose(rot, jac @ v)


def se3_log(pose: np.ndarray) -> np.ndarray:
    """4×4 rigid transform to the twist (vx, vy, vz, wx, wy, wz) with ``se3_exp(se3_log(T)) == T``."""
    pose = np.asarray(pose, dtype=np.float64)
    w = Rotation.from_matrix(pose[:3, :3]).as_rotvec()
    theta = np.linalg.norm(w)
    wx = skew(w)
    if theta < 1e-10:
        jac_inv = np.eye(3) - 0.5 * wx
    else:
        coef = 1.0 / theta**2 - (1.0 + np.cos(theta)) / (2.0 * theta * np.sin(theta))
        jac_inv = np.eye(3) - 0.5 * wx + coef * wx @ wx
    return np.concatenate([jac_inv @ pose[:3, 3], w])


def rotation_angle(rot: np.ndarray) -> np.ndarray:
    """Rotation angle (rad) of one 3×3 matrix or a stack of them, robust near 0 and π."""
    cos = (np.trace(rot, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.arccos(np.clip(cos, -1.0, 1.0))


def backproject(depth: np.ndarray, intr: CameraIntrinsics, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Valid depth pixels (every ``stride``-th row/column) to camera-frame points (N×3 float32).

    Also returns the flat pixel indices of those points into the full-resolution image.
    """
    h, w = depth.shape
    vs, us = np.mgrid[0:h:stride, 0:w:stride]
    d = depth[vs, us]
    valid = d > 0
    us, vs, d = us[valid], vs[valid], d[valid]
    x = (us - intr.cx) / intr.fx * d
    y = (vs - intr.cy) / intr.fy * d
    pts = np.stack([x, y, d], axis=1).astype(np.float32)
    return pts, (vs * w + us).astype(np.int64)


def transform_points(pose: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ pose[:3, :3].T + pose[:3, 3]


def apply_scaled_twist(points: np.ndarray, scale: np.ndarray, twist: np.ndarray) -> np.ndarray:
    """``exp(scale_i · twist) · p_i`` for every point, without building one 4×4 matrix per point.

    All points share the rotation axis, so Rodrigues' formula and the SE(3) left Jacobian reduce to
    per-point scalars times the cross products ``k × p`` and ``k × (k × p)``.
    """
    p = np.asarray(points, dtype=np.float64)
    s = np.asarray(scale, dtype=np.float64)[:, None]
    v, w = twist[:3], twist[3:]
    theta = float(np.linalg.norm(w))
    if theta < 1e-12:
        return p + s * v
    k = w / theta
    a = s * theta  # signed rotation angle per point
    small = np.abs(a) < 1e-6
    safe = np.where(small, 1.0, a)
    sin_a, cos_a = np.sin(a), np.cos(a)
    c1 = np.where(small, a / 2.0, (1.0 - cos_a) / safe)  # (1 - cos a) / a
    c2 = np.where(small, a * a / 6.0, (a - sin_a) / safe)  # (a - sin a) / a
    # k × p as a matrix product (one 3×3 for all points: several times faster than np.cross); the
    # translation s·v is a per-point scalar times one vector, so its cross products are constants
    k_cross = skew(k)
    kp = p @ k_cross.T
    kkp = kp @ k_cross.T
    kv = np.cross(k, v)
    kkv = np.cross(k, kv)
    rotated = p + sin_a * kp + (1.0 - cos_a) * kkp
    return rotated + s * v + (c1 * s) * kv + (c2 * s) * kkv
