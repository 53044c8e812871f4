"""The built-in demo scene (drivers.sim) and its driver: determinism, caching, geometry, noise, trajectory."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import open3d as o3d
import pytest
from scipy.ndimage import maximum_filter, minimum_filter

from drivers.base import SourceError, open_source
from drivers.demo import DemoSource
from drivers.sim import (
    DemoSceneConfig,
    DepthNoiseParams,
    Renderer,
    apply_depth_noise,
    build_indoor_scene,
    camera_trajectory,
    ensure_scene,
    scene_folder,
)
from drivers.sim import dataset as sim_dataset
from drivers.sim.indoor import ROOM_MAX, ROOM_MIN
from slam.core.frames import RGBDFrame
from slam.core.geometry import backproject, invert_pose, rotation_angle, transform_points

SMALL = {"frames": 12, "width": 160, "height": 120}


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def noisy(tmp_path_factory) -> Path:
    return ensure_scene(DemoSceneConfig(seed=0, **SMALL), tmp_path_factory.mktemp("noisy"), progress=False)


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    config = DemoSceneConfig(seed=0, noise=False, **SMALL)
    return ensure_scene(config, tmp_path_factory.mktemp("clean"), progress=False)


# --- cache and files


def test_layout_and_metadata(noisy: Path) -> None:
    names = {p.name for p in noisy.iterdir()}
    for i in range(SMALL["frames"]):
        assert {f"frame-{i:06d}.color.jpg", f"frame-{i:06d}.depth.png", f"frame-{i:06d}.pose.txt"} <= names
    assert {"camera-intrinsics.txt", "gt_mesh.ply", "scene.json", "trajectory.txt"} <= names
    meta = json.loads((noisy / "scene.json").read_text())
    assert meta["complete"] and meta["seed"] == 0 and meta["frames"] == SMALL["frames"]
    assert meta["generator_version"] == sim_dataset.GENERATOR_VERSION
    assert meta["noise"] is True and meta["noise_params"]["max_range_m"] == 4.5
    assert noisy.parent.name == "demo" and noisy.name == DemoSceneConfig(seed=0, **SMALL).digest
    k = np.loadtxt(noisy / "camera-intrinsics.txt")
    np.testing.assert_allclose(k, [[131.25, 0, 79.5], [0, 131.25, 59.5], [0, 0, 1]])
    tum = np.loadtxt(noisy / "trajectory.txt")
    assert tum.shape == (SMALL["frames"], 8)
    np.testing.assert_allclose(tum[:, 0], np.arange(SMALL["frames"]) / 30.0)


def test_default_intrinsics() -> None:
    k = DemoSceneConfig().intrinsics
    assert (k.fx, k.fy, k.cx, k.cy, k.width, k.height) == (525.0, 525.0, 319.5, 239.5, 640, 480)


def test_same_seed_same_files_other_seed_other_scene(noisy: Path, tmp_path: Path) -> None:
    again = ensure_scene(DemoSceneConfig(seed=0, **SMALL), tmp_path / "a", progress=False)
    assert again != noisy
    assert _files(again) == _files(noisy)
    other = ensure_scene(DemoSceneConfig(seed=1, **SMALL), tmp_path / "b", progress=False)
    assert other.name != noisy.name
    a, b = _files(noisy), _files(other)
    assert a["gt_mesh.ply"] != b["gt_mesh.ply"]
    assert a["frame-000000.color.jpg"] != b["frame-000000.color.jpg"]
    assert a["frame-000000.pose.txt"] != b["frame-000000.pose.txt"]


def test_parallel_generation_writes_the_same_files(noisy: Path, tmp_path: Path) -> None:
    config = DemoSceneConfig(seed=0, **SMALL)
    sim_dataset.generate_scene(config, tmp_path, progress=False, workers=2)
    assert _files(tmp_path) == _files(noisy)


def test_cache_is_reused(noisy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mtimes = {p.name: p.stat().st_mtime_ns for p in noisy.iterdir()}

    def fail(*args, **kwargs):
        raise AssertionError("the cached scene was rendered again")

    monkeypatch.setattr(sim_dataset, "generate_scene", fail)
    assert ensure_scene(DemoSceneConfig(seed=0, **SMALL), noisy.parent.parent, progress=False) == noisy
    source = DemoSource(noisy.parent.parent, seed=0, progress=False, **SMALL)
    assert source.folder == noisy
    assert {p.name: p.stat().st_mtime_ns for p in noisy.iterdir()} == mtimes


def test_cache_root_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLAM_CACHE_DIR", str(tmp_path / "cache"))
    config = DemoSceneConfig(seed=3, frames=2, width=32, height=24)
    assert scene_folder(config) == tmp_path / "cache" / "demo" / config.digest
    folder = ensure_scene(config, progress=False)
    assert folder == scene_folder(config) and (folder / "scene.json").is_file()


def test_digest_covers_every_parameter() -> None:
    base = DemoSceneConfig()
    variants = [
        DemoSceneConfig(seed=1),
        DemoSceneConfig(frames=299),
        DemoSceneConfig(width=320, height=240),
        DemoSceneConfig(noise=False),
        DemoSceneConfig(noise_params=DepthNoiseParams(max_range_m=4.0)),
    ]
    assert len({base.digest, *(v.digest for v in variants)}) == 1 + len(variants)


def test_leftover_partial_folder_is_not_taken_as_complete(tmp_path: Path) -> None:
    config = DemoSceneConfig(seed=0, frames=3, width=32, height=24)
    final = scene_folder(config, tmp_path)
    final.parent.mkdir(parents=True)
    # a generation killed half-way (its process, pid 2**22 + 1, is gone): even a complete-looking scene.json
    partial = final.parent / f".partial-{config.digest}-{2**22 + 1}-deadbeef"
    partial.mkdir()
    (partial / "frame-000000.depth.png").write_bytes(b"truncated")
    (partial / "scene.json").write_text(json.dumps({"complete": True}))
    folder = ensure_scene(config, tmp_path, progress=False)
    assert folder == final
    assert sim_dataset.is_complete(folder, config)
    assert not partial.exists()  # stale leftovers of dead processes are cleaned up
    assert [p.name for p in final.parent.iterdir()] == [final.name]


def test_incomplete_final_folder_is_regenerated(tmp_path: Path) -> None:
    config = DemoSceneConfig(seed=0, frames=3, width=32, height=24)
    final = scene_folder(config, tmp_path)
    final.mkdir(parents=True)
    (final / "frame-000000.depth.png").write_bytes(b"junk")
    folder = ensure_scene(config, tmp_path, progress=False)
    assert sim_dataset.is_complete(folder, config)
    assert len(list(folder.glob("*.depth.png"))) == 3


def test_interrupted_generation_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = DemoSceneConfig(seed=0, frames=4, width=32, height=24)
    real_call = sim_dataset._FrameWriter.__call__

    def call(self, i):
        if i == 2:
            raise KeyboardInterrupt
        return real_call(self, i)

    monkeypatch.setattr(sim_dataset._FrameWriter, "__call__", call)
    with pytest.raises(KeyboardInterrupt):
        ensure_scene(config, tmp_path, progress=False)
    assert list((tmp_path / "demo").iterdir()) == []


# --- the driver


def test_demo_source_yields_frames_with_ground_truth(noisy: Path) -> None:
    root = noisy.parent.parent
    with DemoSource(root, seed=0, progress=False, **SMALL) as source:
        assert source.name == "demo" and source.sensor == "rgbd"
        assert len(source) == SMALL["frames"]
        assert source.gt_mesh_path == noisy / "gt_mesh.ply" and source.gt_mesh_path.is_file()
        frames = list(source)
        assert source.frames_skipped == 0
    assert len(frames) == SMALL["frames"]
    for i, frame in enumerate(frames):
        assert isinstance(frame, RGBDFrame)
        assert frame.index == i and frame.timestamp == pytest.approx(i / 30.0)
        assert frame.depth.shape == (120, 160) and frame.color.shape == (120, 160, 3)
        assert frame.gt_pose is not None
        k = frame.intrinsics
        assert (k.fx, k.fy, k.cx, k.cy, k.width, k.height) == (131.25, 131.25, 79.5, 59.5, 160, 120)
    expected = camera_trajectory(SMALL["frames"], 0, center=build_indoor_scene(0).center)
    np.testing.assert_allclose(np.stack([f.gt_pose for f in frames]), expected, atol=1e-8)


def test_demo_source_selection_and_registry(noisy: Path) -> None:
    root = noisy.parent.parent
    source = open_source("demo", root, seed=0, first=2, last=9, stride=3, progress=False, **SMALL)
    assert isinstance(source, DemoSource)
    assert [f.index for f in source] == [2, 5, 8]
    with pytest.raises(SourceError):
        DemoSource(root, stride=0, progress=False, **SMALL)
    with pytest.raises(SourceError):
        DemoSource(root, frames=0, progress=False)


# --- geometry and noise


def test_clean_depth_lies_on_the_ground_truth_mesh(clean: Path) -> None:
    mesh = o3d.t.geometry.TriangleMesh.from_legacy(o3d.io.read_triangle_mesh(str(clean / "gt_mesh.ply")))
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(mesh)
    frames = list(DemoSource(clean.parent.parent, seed=0, noise=False, progress=False, **SMALL))
    for frame in frames[::3]:
        assert np.count_nonzero(frame.depth) == frame.depth.size  # a closed room: every ray hits
        pts, _ = backproject(frame.depth, frame.intrinsics)
        world = transform_points(frame.gt_pose, pts.astype(np.float64)).astype(np.float32)
        dist = scene.compute_distance(o3d.core.Tensor(world)).numpy()
        assert np.quantile(dist, 0.99) < 0.002, np.quantile(dist, [0.5, 0.99, 1.0])
        assert np.median(dist) < 0.001


def test_noisy_depth_statistics(noisy: Path, clean: Path) -> None:
    params = DepthNoiseParams()
    noisy_frames = list(DemoSource(noisy.parent.parent, seed=0, progress=False, **SMALL))
    clean_frames = list(DemoSource(clean.parent.parent, seed=0, noise=False, progress=False, **SMALL))
    z_all, err_all = [], []
    for fn, fc in zip(noisy_frames, clean_frames, strict=True):
        np.testing.assert_array_equal(fn.gt_pose, fc.gt_pose)
        valid = fn.depth > 0
        assert 0.85 <= valid.mean() <= 0.98
        assert fn.depth[valid].min() >= params.min_range_m and fn.depth.max() <= params.max_range_m
        z_all.append(fc.depth[valid])
        err_all.append(fn.depth[valid] - fc.depth[valid])
        assert not np.array_equal(fn.color, fc.color)
        assert np.abs(fn.color.astype(int) - fc.color.astype(int)).mean() < 4.0  # mild colour noise
    z, err = np.concatenate(z_all), np.concatenate(err_all)
    assert abs(np.median(err)) < 0.002
    stds = []
    for lo, hi in ((0.6, 1.2), (1.5, 2.2), (2.8, 3.8)):
        sel = (z >= lo) & (z < hi)
        assert sel.sum() > 500
        zc = float(np.median(z[sel]))
        expected = np.sqrt(
            params.axial_sigma(zc) ** 2 + params.quantisation_step(zc) ** 2 / 12 + 0.001**2 / 6
        )
        std = float(np.std(err[sel]))
        assert 0.6 * expected < std < 1.8 * expected, (lo, hi, std, expected)
        stds.append(std)
    assert stds[0] < stds[1] < stds[2]


def test_dropout_at_grazing_angles_and_edges() -> None:
    scene = build_indoor_scene(0)
    config = DemoSceneConfig(width=160, height=120)
    renderer = Renderer(scene, config.intrinsics)
    poses = camera_trajectory(60, 0, center=scene.center)
    graze, flat, edge = [], [], []
    for i in range(0, 60, 12):
        out = renderer.render(poses[i])
        noisy = apply_depth_noise(out.depth, out.cos_incidence, np.random.default_rng(i))
        missing = noisy == 0
        theta = np.degrees(np.arccos(np.clip(out.cos_incidence, 0, 1)))
        z = out.depth
        # far side of a big jump (nearer surface next to it) / anywhere near a smaller one
        jump = z - minimum_filter(z, size=3) > 0.3
        near_edge = maximum_filter(z, size=5) - minimum_filter(z, size=5) > 0.02 + 0.04 * z
        in_range = (z > 0.4) & (z < 4.0)
        graze.append(missing[(theta > 86) & in_range])
        edge.append(missing[jump & in_range])
        flat.append(missing[(theta < 60) & ~near_edge & in_range])
    graze, flat, edge = np.concatenate(graze), np.concatenate(flat), np.concatenate(edge)
    assert graze.size > 50 and graze.mean() > 0.9
    assert edge.size > 50 and edge.mean() > 0.3
    assert flat.mean() < 0.01  # the sparse random dropout only


def test_noise_is_deterministic_per_generator() -> None:
    depth = np.full((40, 50), 2.0, dtype=np.float32)
    cos = np.ones_like(depth)
    a = apply_depth_noise(depth, cos, np.random.default_rng(5))
    b = apply_depth_noise(depth, cos, np.random.default_rng(5))
    c = apply_depth_noise(depth, cos, np.random.default_rng(6))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # disparity quantisation: only a few distinct depth levels around 2 m
    levels = np.unique(a[a > 0])
    assert len(levels) < 12
    assert np.min(np.diff(levels)) == pytest.approx(DepthNoiseParams().quantisation_step(2.0), rel=0.05)


# --- trajectory and views


def test_trajectory_is_smooth_closed_and_inside_the_room() -> None:
    poses = camera_trajectory(301, seed=0)
    steps = np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=1)
    assert steps.max() < 0.03 and 0.008 < steps.mean() < 0.02  # ~0.3-0.6 m/s at 30 Hz
    rel = np.einsum("nji,njk->nik", poses[:-1, :3, :3], poses[1:, :3, :3])
    assert np.degrees(rotation_angle(rel)).max() < 3.0
    np.testing.assert_allclose(poses[300], poses[0], atol=1e-9)  # 10 s make one loop
    # proper rotations, OpenCV axes, small roll (camera x axis nearly horizontal)
    rot = poses[:, :3, :3]
    np.testing.assert_allclose(
        np.einsum("nji,njk->nik", rot, rot), np.broadcast_to(np.eye(3), rot.shape), atol=1e-9
    )
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-9)
    assert np.abs(rot[:, 2, 0]).max() < 0.05
    assert np.all(rot[:, 2, 2] < 0)  # looking somewhat down
    np.testing.assert_allclose(invert_pose(poses) @ poses, np.broadcast_to(np.eye(4), poses.shape), atol=1e-9)
    for seed in (0, 1, 2):
        centre = build_indoor_scene(seed).center
        pos = camera_trajectory(300, seed, center=centre)[:, :3, 3]
        assert np.all(pos > ROOM_MIN + 0.5) and np.all(pos < ROOM_MAX - 0.5)
        assert pos[:, 2].min() > 1.2  # above every piece of furniture near the path


@pytest.mark.parametrize("seed", [0, 1])
def test_every_view_has_structure_and_texture(seed: int) -> None:
    scene = build_indoor_scene(seed)
    config = DemoSceneConfig(width=80, height=60)
    renderer = Renderer(scene, config.intrinsics)
    for pose in camera_trajectory(300, seed, center=scene.center)[::10]:
        out = renderer.render(pose)
        valid = out.depth > 0
        assert valid.all()
        assert out.depth.min() > 0.3 and out.depth.max() < 6.0
        assert np.ptp(np.quantile(out.depth, [0.05, 0.95])) > 0.8  # depth varies across the view
        assert len(np.unique(out.part)) >= 8  # many primitives in view
        gray = out.color.astype(np.float32).mean(axis=2)
        grad = np.abs(np.diff(gray, axis=1)).mean() + np.abs(np.diff(gray, axis=0)).mean()
        assert grad > 3.0  # textured, not flat colour


def test_scene_is_deterministic_and_varies_with_seed() -> None:
    a, b, c = build_indoor_scene(0), build_indoor_scene(0), build_indoor_scene(1)
    np.testing.assert_array_equal(a.vertices, b.vertices)
    np.testing.assert_array_equal(a.part_colors, b.part_colors)
    assert a.vertices.shape != c.vertices.shape or not np.array_equal(a.vertices, c.vertices)
    inside = (a.vertices >= ROOM_MIN - 0.21) & (a.vertices <= ROOM_MAX + 0.21)
    assert inside.all()


def test_process_pool_not_used_for_small_scenes() -> None:
    assert sim_dataset.default_workers(DemoSceneConfig(**SMALL)) == 1
    assert sim_dataset.default_workers(DemoSceneConfig()) == min(2, os.cpu_count() or 1)


def test_open3d_and_numpy_ray_generation_agree() -> None:
    scene = build_indoor_scene(0)
    fast = Renderer(scene, DemoSceneConfig(width=64, height=48).intrinsics)
    slow = Renderer(scene, DemoSceneConfig(width=64, height=48).intrinsics)
    slow._o3d_k = None  # the numpy fallback
    pose = camera_trajectory(1, 0, center=scene.center)[0]
    a, b = fast.render(pose), slow.render(pose)
    np.testing.assert_allclose(a.depth, b.depth, atol=1e-5)
    assert np.mean(a.part == b.part) > 0.99
