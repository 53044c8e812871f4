"""The generated LiDAR sequence (drivers.sim.outdoor, drivers.sim.lidar, drivers.sim.lidar_dataset): the sensor
model against analytic ranges, the motion distortion and its removal, the drive, and the KITTI layout
read back by the kitti driver with its ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import open3d as o3d
import pytest

from drivers.base import open_source
from drivers.kitti import KittiSource
from drivers.lidar_demo import LidarDemoSource
from drivers.sim import lidar_dataset
from drivers.sim.lidar import PRESETS, SpinningLidar, simulate_sweep
from drivers.sim.lidar_dataset import LidarSequenceConfig, SequenceWorld, ensure_sequence, sequence_folder
from drivers.sim.outdoor import LABELS, build_outdoor_scene
from slam.core.geometry import invert_pose, rotation_angle, transform_points
from slam.frontends.lidar_preprocess import deskew, segment_ground

TINY = LidarSequenceConfig(seed=0, scans=4, lidar=SpinningLidar.preset(16, columns=256))


@pytest.fixture(scope="module")
def world() -> SequenceWorld:
    """The default sequence's scene, path and a 32-beam sensor, without writing anything."""
    return SequenceWorld(LidarSequenceConfig(lidar=SpinningLidar.preset(32, columns=512), noise=False))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return ensure_sequence(TINY, tmp_path_factory.mktemp("lidar_cache"), progress=False)


def _plane_scene() -> o3d.t.geometry.RaycastingScene:
    """The plane z = 0, 400 m across."""
    scene = o3d.t.geometry.RaycastingScene()
    verts = np.array([[-200, -200, 0], [200, -200, 0], [200, 200, 0], [-200, 200, 0]], dtype=np.float32)
    scene.add_triangles(
        o3d.core.Tensor(verts), o3d.core.Tensor(np.array([[0, 1, 2], [0, 2, 3]], dtype=np.uint32))
    )
    return scene


def _static(pose: np.ndarray):
    return lambda times: np.broadcast_to(pose, (*np.shape(times), 4, 4)).copy()


# ---------------------------------------------------------------------------------------- sensor model


def test_ranges_to_a_known_plane_match_the_analytic_distance() -> None:
    height = 1.73
    lidar = SpinningLidar.preset(64, columns=512, range_noise_m=0.02, dropout=0.0, max_range=120.0)
    pose = np.eye(4)
    pose[2, 3] = height
    sweep = simulate_sweep(
        lidar, _plane_scene(), np.zeros(2, np.uint8), _static(pose), 0.0, np.random.default_rng(0)
    )

    elevation = lidar.elevations()[sweep.ring]
    assert np.all(elevation < 0)  # only downward beams reach the plane
    expected = height / np.sin(-elevation)
    assert np.abs(sweep.true_range - expected).max() < 1e-3 * expected.max()
    measured = np.linalg.norm(sweep.points.astype(np.float64), axis=1)
    residual = measured - expected
    assert abs(residual.mean()) < 0.002 and residual.std() == pytest.approx(0.02, rel=0.1)
    # every downward beam within range returns, in every column
    downward = (lidar.elevations() < 0) & (height / np.sin(-np.minimum(lidar.elevations(), -1e-9)) <= 120.0)
    assert len(sweep.points) == downward.sum() * lidar.columns


def test_noise_free_points_lie_on_the_plane_and_dropout_removes_its_share() -> None:
    lidar = SpinningLidar.preset(16, columns=1024)
    pose = np.eye(4)
    pose[2, 3] = 2.0
    clean = simulate_sweep(lidar.without_noise(), _plane_scene(), np.zeros(2, np.uint8), _static(pose), 0.0)
    assert np.abs(clean.points[:, 2] + 2.0).max() < 1e-4
    lossy = SpinningLidar.preset(16, columns=1024, dropout=0.2, range_noise_m=0.0)
    dropped = simulate_sweep(
        lossy, _plane_scene(), np.zeros(2, np.uint8), _static(pose), 0.0, np.random.default_rng(1)
    )
    assert len(dropped.points) / len(clean.points) == pytest.approx(0.8, abs=0.02)


def test_presets_and_timing() -> None:
    for beams, (up, down) in PRESETS.items():
        lidar = SpinningLidar.preset(beams)
        el = np.rad2deg(lidar.elevations())
        assert len(el) == beams and el[0] == pytest.approx(up) and el[-1] == pytest.approx(down)
    lidar = SpinningLidar(columns=1024, rate_hz=10.0)
    t = lidar.column_times()
    assert t[-1] == 0.0 and t[0] == pytest.approx(-0.1 + 0.1 / 1024) and np.all(np.diff(t) > 0)
    az = lidar.azimuths()
    assert az[0] == pytest.approx(np.pi - np.pi / 1024) and np.all(np.diff(az) < 0)  # clockwise from behind
    with pytest.raises(ValueError, match="preset"):
        SpinningLidar.preset(8)


# ------------------------------------------------------------------------------- scene and drive


def test_scene_is_deterministic_and_labelled() -> None:
    a, b, c = build_outdoor_scene(0), build_outdoor_scene(0), build_outdoor_scene(1)
    assert np.array_equal(a.vertices, b.vertices) and np.array_equal(a.triangles, b.triangles)
    assert a.vertices.shape != c.vertices.shape or not np.array_equal(a.vertices, c.vertices)
    counts = np.bincount(a.triangle_label, minlength=len(LABELS))
    assert np.all(counts > 0)  # ground, buildings, walls, poles, trunks, crowns, cars
    # the ground is sloped: its height varies by metres over the scene
    ground_z = a.vertices[a.triangles[a.triangle_label == LABELS["ground"]].ravel(), 2]
    assert np.ptp(ground_z) > 5.0


def test_the_drive_is_a_smooth_closed_loop_at_urban_speed(world: SequenceWorld) -> None:
    path = world.path
    assert 300.0 < path.length < 500.0
    t = np.arange(0.0, path.duration, 0.01)
    poses = path.poses(t)
    assert np.allclose(
        path.poses(np.array([0.0, path.duration])), path.poses(np.array([0.0, 0.0])), atol=1e-6
    )
    speed = np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=1) / 0.01
    # stands for `dwell` seconds at both ends, accelerates and brakes smoothly, cruises in between
    standing = (t[1:] < path.dwell - 0.01) | (t[:-1] > path.duration - path.dwell + 0.01)
    assert np.all(speed[standing] < 1e-6)
    half_second = np.convolve(speed, np.ones(50) / 50, mode="valid")  # the path is piecewise linear in time
    assert np.abs(half_second[50:] - half_second[:-50]).max() / 0.5 < 3.0  # m/s²: no jump in speed
    cruising = (t[1:] > path.dwell + 10.0) & (t[:-1] < path.duration - path.dwell - 10.0)
    assert 4.0 < speed[cruising].min() and speed.max() < 8.5 and 5.5 < speed[cruising].mean()
    yaw = np.unwrap(np.arctan2(poses[:, 1, 0], poses[:, 0, 0]))
    assert abs(abs(yaw[-1] - yaw[0]) - 2 * np.pi) < 0.05  # one loop
    yaw_rate = np.diff(yaw) / 0.01
    assert np.abs(yaw_rate).max() < 1.0  # rad/s: no kink in the path
    assert np.abs(np.diff(yaw_rate)).max() < 0.01  # continuous curvature
    turning = np.abs(yaw_rate) > 0.2
    assert np.count_nonzero(np.diff(turning.astype(int)) == 1) == 6  # six turns
    # the LiDAR rides 1.73 m above the ground along the ground normal, its z axis that normal up to the
    # body's sway on its suspension (a few tenths of a degree while moving, none at rest)
    up = poses[:, :3, 2]
    foot = poses[:, :3, 3] - 1.73 * up
    assert np.allclose(foot[:, 2], world.scene.terrain.height(foot[:, 0], foot[:, 1]), atol=0.01)
    normal = world.scene.terrain.normal(foot[:, 0], foot[:, 1])
    tilt = np.degrees(np.arccos(np.clip(np.sum(up * normal, axis=1), -1.0, 1.0)))[1:]  # aligned with `speed`
    assert tilt.max() < 1.0 and np.median(tilt[cruising]) > 0.05
    assert tilt[standing].max() < 1e-4  # at rest the body does not sway (degrees; arccos rounding)
    # the whole default sequence ends back at the start
    gt = world.lidar_poses()
    assert np.allclose(gt[0], np.eye(4), atol=1e-12)
    assert np.linalg.norm(gt[-1, :3, 3]) < 1.0 and len(gt) == int(path.duration / 0.1) + 1


def _distance_to_scene(world: SequenceWorld, points_world: np.ndarray) -> np.ndarray:
    scene = world.raycaster
    return scene.compute_distance(o3d.core.Tensor(points_world.astype(np.float32))).numpy()


def _sweep_in_turn(world: SequenceWorld) -> int:
    """Index of a scan taken in the sharpest turn."""
    s_turn = world.path.s[np.argmax(np.abs(world.path.curvature))]
    t_turn = np.interp(s_turn, world.path.s, world.path.t)
    return int(round(t_turn / world.config.lidar.period))


def _sweep_on_a_straight(world: SequenceWorld) -> int:
    """Index of a scan taken at cruise speed on the straightest stretch."""
    path = world.path
    fast = path.speed > 0.9 * path.speed.max()
    s_straight = path.s[fast][np.argmin(np.abs(path.curvature[fast]))]
    t_straight = np.interp(s_straight, path.s, path.t)
    return int(round(t_straight / world.config.lidar.period))


@pytest.mark.parametrize("where", ["straight", "turn"])
def test_deskew_with_the_true_motion_undoes_the_distortion(world: SequenceWorld, where: str) -> None:
    index = _sweep_on_a_straight(world) if where == "straight" else _sweep_in_turn(world)
    sweep = world.sweep(index)
    t_end = world.times[index]
    pose_end, pose_prev = world.path.poses(np.array([t_end, t_end - 0.1]))
    # where each point really is: measured from the pose of its own column's time
    column_poses = world.path.poses(t_end + world.config.lidar.column_times())[sweep.column]
    truth = np.einsum("nij,nj->ni", column_poses[:, :3, :3], sweep.points) + column_poses[:, :3, 3]
    raw = transform_points(pose_end, sweep.points.astype(np.float64))

    relative = invert_pose(pose_prev) @ pose_end  # the last sweep's motion, continued
    fixed, ref = deskew(sweep.points, sweep.times, relative, world.config.lidar.period)
    deskewed = transform_points(pose_end, fixed.astype(np.float64))

    assert ref == 0.0  # the last column fires at the end of the sweep, the pose's instant
    raw_error = np.linalg.norm(raw - truth, axis=1)
    error = np.linalg.norm(deskewed - truth, axis=1)
    assert np.percentile(raw_error, 90) > 0.5  # 0.5-0.8 m of motion within the sweep
    assert np.percentile(error, 99) < 0.02 and np.median(error) < 0.005
    # and on the scene's surfaces (noise-free ranges)
    distance = _distance_to_scene(world, deskewed)
    assert np.median(distance) < 0.005 and np.percentile(distance, 99) < 0.03


def test_ground_labels_of_a_simulated_scan_are_found(world: SequenceWorld) -> None:
    index = _sweep_in_turn(world)
    sweep = world.sweep(index)
    pose_end, pose_prev = world.path.poses(np.array([world.times[index], world.times[index] - 0.1]))
    points, _ = deskew(sweep.points, sweep.times, invert_pose(pose_prev) @ pose_end, 0.1)
    is_ground = sweep.label == LABELS["ground"]
    found = segment_ground(points)
    world_pts = transform_points(pose_end, points.astype(np.float64))
    above = world_pts[:, 2] - world.scene.terrain.height(world_pts[:, 0], world_pts[:, 1])
    assert found[is_ground].mean() > 0.97
    assert is_ground[found].mean() > 0.95  # the rest: objects' feet within the 0.2 m band
    # the false ground: mostly the feet of buildings 35-50 m away, where a patch's plane fit is coarse
    assert found[~is_ground & (above > 0.3)].mean() < 0.03
    assert found[~is_ground & (above > 1.0)].mean() < 0.005  # roofs, car tops, crowns are not ground


# --------------------------------------------------------------------------------- the KITTI layout


def test_layout_and_metadata(tiny: Path) -> None:
    for sub in ("velodyne", "velodyne_times", "labels"):
        assert sorted(p.name for p in (tiny / sub).iterdir())[0].startswith("000000")
        assert len(list((tiny / sub).iterdir())) == TINY.scans
    meta = json.loads((tiny / "sequence.json").read_text())
    assert meta["complete"] and meta["scans"] == TINY.scans and meta["sweep_instant"] == "end"
    assert meta["lidar"]["beams"] == 16 and meta["lidar"]["columns"] == 256
    assert np.loadtxt(tiny / "times.txt").tolist() == pytest.approx([0.0, 0.1, 0.2, 0.3])
    calib = (tiny / "calib.txt").read_text()
    assert [line.split(":")[0] for line in calib.splitlines()] == ["P0", "P1", "P2", "P3", "Tr"]


def test_kitti_round_trip_gives_the_simulated_scans_and_poses(tiny: Path) -> None:
    world = SequenceWorld(TINY)
    truth = world.lidar_poses()
    scans = list(KittiSource(tiny))
    assert len(scans) == TINY.scans
    for i, scan in enumerate(scans):
        sweep = world.sweep(i)
        assert scan.index == i and scan.timestamp == pytest.approx(0.1 * i)
        assert np.array_equal(scan.points, sweep.points)
        assert np.array_equal(scan.intensity, sweep.intensity)
        assert np.array_equal(scan.point_times, sweep.times)
        assert np.allclose(scan.gt_pose, truth[i], atol=1e-9)
    assert np.allclose(scans[0].gt_pose, np.eye(4), atol=1e-12)
    # the drive starts from rest (the path's dwell covers these first scans), facing +x
    step = scans[-1].gt_pose[:3, 3] - scans[0].gt_pose[:3, 3]
    assert world.path.dwell >= 0.1 * (TINY.scans - 1)
    assert np.linalg.norm(step) < 1e-9
    start, later = world.path.poses(np.array([0.0, world.path.dwell + 2.0]))
    ahead = (invert_pose(start) @ later)[:3, 3]  # 2 s at 1.5 m/s²: 3 m
    assert 2.5 < ahead[0] < 3.5 and abs(ahead[1]) < 0.1
    labels = np.fromfile(tiny / "labels" / "000000.label", dtype="<u4")
    assert len(labels) == len(scans[0].points) and set(np.unique(labels)) <= set(LABELS.values())


def test_ground_truth_mesh_matches_deskewed_scans_in_the_world_frame(tmp_path: Path) -> None:
    config = LidarSequenceConfig(seed=0, scans=3, lidar=SpinningLidar.preset(16, columns=256), noise=False)
    folder = ensure_sequence(config, tmp_path, progress=False)
    mesh = o3d.io.read_triangle_mesh(str(folder / "gt_mesh.ply"))
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(mesh))
    scans = list(open_source("kitti", folder))
    for prev, scan in zip(scans[:-1], scans[1:]):
        relative = invert_pose(prev.gt_pose) @ scan.gt_pose
        fixed, _ = deskew(scan.points, scan.point_times, relative, 0.1)
        world_pts = transform_points(scan.gt_pose, fixed.astype(np.float64)).astype(np.float32)
        distance = scene.compute_distance(o3d.core.Tensor(world_pts)).numpy()
        assert np.median(distance) < 0.005 and np.percentile(distance, 99) < 0.03


def test_same_seed_same_files_other_seed_other_scans(tiny: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    again.mkdir()
    lidar_dataset.generate_sequence(TINY, again, progress=False, workers=2)
    for sub in ("velodyne", "velodyne_times", "labels"):
        for path in (tiny / sub).iterdir():
            assert path.read_bytes() == (again / sub / path.name).read_bytes()
    for name in ("poses.txt", "times.txt", "calib.txt"):
        assert (tiny / name).read_bytes() == (again / name).read_bytes()
    other = LidarSequenceConfig(seed=1, scans=4, lidar=TINY.lidar)
    assert other.digest != TINY.digest
    assert not np.array_equal(SequenceWorld(other).sweep(0).points, SequenceWorld(TINY).sweep(0).points)


def test_cache_is_reused(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mtimes = {p: p.stat().st_mtime_ns for p in tiny.rglob("*")}

    def fail(*args, **kwargs):
        raise AssertionError("the cached sequence was generated again")

    monkeypatch.setattr(lidar_dataset, "generate_sequence", fail)
    cache_root = tiny.parent.parent
    assert sequence_folder(TINY, cache_root) == tiny
    source = LidarDemoSource(cache_root, scans=4, beams=16, columns=256, progress=False)
    assert source.folder == tiny and len(source) == 4
    assert {p: p.stat().st_mtime_ns for p in tiny.rglob("*")} == mtimes


def test_lidar_demo_source_by_name(tiny: Path) -> None:
    source = open_source(
        "lidar_demo", tiny.parent.parent, scans=4, beams=16, columns=256, progress=False, stride=2
    )
    assert source.sensor == "lidar" and source.gt_mesh_path.is_file()
    scans = list(source)
    assert [s.index for s in scans] == [0, 2]
    assert all(s.point_times is not None and s.point_times.max() == 0.0 for s in scans)
    assert rotation_angle(scans[1].gt_pose[:3, :3]) < 0.05


def test_bad_demo_options_are_source_errors(tmp_path: Path) -> None:
    from drivers.base import SourceError

    with pytest.raises(SourceError, match="preset"):
        LidarDemoSource(tmp_path, beams=8, progress=False)
    with pytest.raises(SourceError, match="scans"):
        LidarDemoSource(tmp_path, scans=0, progress=False)
