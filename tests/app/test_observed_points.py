"""slam.app.outputs.lidar_observed_points: the reference surface of LiDAR mesh metrics, one point per cell
seen from the nearest range, gathered in bounded batches with the same result as all scans at once."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from slam.app import outputs
from slam.app.outputs import lidar_observed_points


def _scans(n: int = 6, points: int = 3000) -> list[SimpleNamespace]:
    rng = np.random.default_rng(3)
    scans = []
    for i in range(n):
        pose = np.eye(4)
        pose[:3, 3] = [0.5 * i, 0.0, 0.0]  # the sensor moves: the same cells are seen from several ranges
        pts = rng.uniform(-4.0, 4.0, size=(points, 3)).astype(np.float32)
        pts[::50] = np.nan  # dropped returns
        scans.append(SimpleNamespace(points=pts, gt_pose=pose))
    return scans


def test_nearest_sighting_of_a_cell_is_kept() -> None:
    far = SimpleNamespace(points=np.array([[3.0, 0.0, 0.0]], np.float32), gt_pose=np.eye(4))
    near_pose = np.eye(4)
    near_pose[:3, 3] = [2.0, 0.0, 0.0]
    near = SimpleNamespace(points=np.array([[1.02, 0.0, 0.0]], np.float32), gt_pose=near_pose)
    seen = lidar_observed_points([far, near], max_range=10.0, voxel=0.1)
    assert seen.shape == (1, 4)
    np.testing.assert_allclose(seen[0], [3.02, 0.0, 0.0, 1.02], rtol=1e-6)


def test_batched_reduction_equals_one_reduction(monkeypatch) -> None:
    scans = _scans()
    monkeypatch.setattr(outputs, "_OBSERVED_BATCH_ROWS", 10**9)
    whole = lidar_observed_points(scans, max_range=5.0, voxel=0.2)
    monkeypatch.setattr(outputs, "_OBSERVED_BATCH_ROWS", 2000)  # a reduction after every scan
    batched = lidar_observed_points(scans, max_range=5.0, voxel=0.2)
    assert 0 < len(whole) < sum(len(s.points) for s in scans)
    np.testing.assert_array_equal(batched, whole)
