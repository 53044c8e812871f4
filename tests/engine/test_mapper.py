"""slam.engine.mapper: the mapper's fitting terms and schedules, each with a known answer on a tiny synthetic
scene (a flat wall a metre from the camera, rendered exactly): the fitted SDF against the point-to-plane
distance, free space, the eikonal term, the decoder freeze, keyframe selection and ``every``.

The frames are 40×30 pixels and the fits a few dozen steps: each test takes a second or two."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from synthetic import look_at, map_frame, render_frame

from slam.core.geometry import se3_exp
from slam.core.observation import RaySet
from slam.engine.mapper import Mapper, MapperConfig
from slam.frontends.rgbd import frame_rays
from slam.map.neural_map import NeuralMapConfig, NeuralSDFMap

#: the camera sits at the world origin; the wall is the plane x = WALL_X (solid beyond it)
WALL_X = 1.0
#: looking at the wall along its normal, and 39° off it (the point-to-plane factor |n·d| then ranges
#: over ~0.45 to 0.95 across the image, so a missing factor shows)
FACING = look_at((0.0, 0.0, 0.0), (1.0, 0.0, 0.0))
OBLIQUE = look_at((0.0, 0.0, 0.0), (1.0, 0.8, 0.1))


def wall(x0: float = WALL_X):
    """A 1 m thick, 10 m wide slab whose face x = x0 looks at the camera."""
    import open3d as o3d

    mesh = o3d.geometry.TriangleMesh.create_box(1.0, 10.0, 10.0)
    mesh.translate((x0, -5.0, -5.0))
    mesh.compute_triangle_normals()
    return mesh


def small_frame(pose: np.ndarray, x0: float = WALL_X, index: int = 0):
    return render_frame(wall(x0), pose, width=40, height=30, f=32.0, index=index)


def new_mapper(**overrides) -> tuple[NeuralSDFMap, Mapper]:
    torch.manual_seed(0)
    m = NeuralSDFMap(NeuralMapConfig(voxel_size=0.04, device="cpu", color=False))
    settings = dict(first_frame_iterations=60, iterations=2, rays=512, pixel_stride=1)
    return m, Mapper(m, MapperConfig(**{**settings, **overrides}), seed=0)


def rays_of(mapper: Mapper, pose: np.ndarray, x0: float = WALL_X) -> RaySet:
    c = mapper.cfg
    frame = small_frame(pose, x0)
    return frame_rays(
        frame, pose, np.random.default_rng(0), c.pixel_stride, c.depth_min, c.depth_max, limit=None
    )


def ray_points(rays: RaySet, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """World unit directions of ``count`` random rays of ``rays`` (camera at the origin) and their surface
    points."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(rays), count)
    dirs = rays.dirs[idx].numpy().astype(np.float64) @ rays.pose[:3, :3].T
    return dirs, dirs * rays.ray_depth[idx].numpy()[:, None]


def query(m: NeuralSDFMap, points: np.ndarray, gradient: bool = False):
    q = m.query(torch.from_numpy(points.astype(np.float32)), gradient=gradient)
    assert bool(q.valid.all()), "the probe points must lie in allocated space"
    return q


def snapshot(params) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in params])


# -- what the fit converges to ---------------------------------------------------------------------
def test_fitted_wall_sdf_is_the_point_to_plane_distance() -> None:
    """Seen 39° off its normal, the wall's fitted SDF is the perpendicular distance to it (x0 - x), not the
    distance along the ray, which is up to twice as large here."""
    m, mapper = new_mapper()
    rays = rays_of(mapper, OBLIQUE)
    mapper.integrate_rays(rays)
    _, surface = ray_points(rays, 400, seed=1)
    rng = np.random.default_rng(2)
    # points up to 3 cm either side of the wall along its normal (inside the truncation band)
    offset = rng.uniform(-0.03, 0.03, size=400)
    points = surface - offset[:, None] * np.array([1.0, 0.0, 0.0])
    sdf = query(m, points).sdf.numpy()
    truth = WALL_X - points[:, 0]
    error = np.abs(sdf - truth)
    # the SDF's scale against the true distance (least squares through 0): the along-ray distance would
    # give 1 / |n·d|, 1.3 on average here
    scale = float((sdf * truth).sum() / (truth * truth).sum())
    # measured: mean error 4.6 mm, scale 0.95; with the along-ray target (no |n·d|): 7.2 mm, 1.30
    assert error.mean() < 0.006 and 0.85 < scale < 1.1, (error.mean(), scale)


def test_free_space_clears_a_surface_that_is_no_longer_there() -> None:
    """The wall at 1 m is fitted, then the camera sees through it to a wall at 1.4 m (the near one was
    moved). The rays' free-space samples cross the old wall and push its SDF positive; without them
    nothing contradicts the old fit, which stays negative behind the old surface."""
    behind_old_wall = {}
    for free_samples in (1, 0):
        # current_fraction 1: steps draw only the current frame, not the keyframe of the old wall
        m, mapper = new_mapper(iterations=60, free_samples=free_samples, current_fraction=1.0)
        first = rays_of(mapper, FACING, x0=WALL_X)
        mapper.integrate_rays(first)
        dirs, _ = ray_points(first, 300, seed=3)
        # 3 and 5 cm behind the old surface, along the rays
        probe = np.concatenate([dirs * ((WALL_X + d) / dirs[:, :1]) for d in (0.03, 0.05)])
        before = np.median(query(m, probe).sdf.numpy())
        assert before < -0.02, before  # the old wall was fitted: solid behind it
        mapper.integrate_rays(rays_of(mapper, FACING, x0=WALL_X + 0.4))
        behind_old_wall[free_samples] = np.median(query(m, probe).sdf.numpy())
    # measured: +0.034 with free space, -0.025 without
    assert behind_old_wall[1] > 0.01, behind_old_wall
    assert behind_old_wall[0] < 0.0, behind_old_wall


def test_eikonal_term_pulls_the_gradient_norm_to_one() -> None:
    """Rays that claim |n·d| = 0.5 on a wall seen head-on ask for an SDF of slope 0.5; the eikonal term
    asks for slope 1. Without it the fit follows the data; with it the slope goes to 1."""
    slopes = {}
    for weight in (0.0, 1.0):
        m, mapper = new_mapper(eikonal_weight=weight)
        rays = rays_of(mapper, FACING)
        rays.cos[:] = 0.5
        mapper.integrate_rays(rays)
        assert ("eikonal" in mapper.last_loss) == (weight > 0), mapper.last_loss
        dirs, surface = ray_points(rays, 500, seed=4)
        offset = np.random.default_rng(5).uniform(-0.04, 0.04, size=(500, 1))
        grad = query(m, surface + dirs * offset, gradient=True).grad
        slopes[weight] = float(grad.norm(dim=1).median())
    # measured: 0.57 without, 1.00 with weight 1
    assert slopes[0.0] < 0.7, slopes
    assert abs(slopes[1.0] - 1.0) < 0.1, slopes
    assert mapper.last_loss["eikonal"] < 0.1  # mean (|grad| - 1)² at the samples


# -- schedules -------------------------------------------------------------------------------------
@pytest.mark.parametrize("freeze_after", [2, 0])
def test_decoder_stops_learning_after_freeze_decoder_after_frames(freeze_after: int) -> None:
    m, mapper = new_mapper(first_frame_iterations=2, iterations=2, freeze_decoder_after=freeze_after)
    rays = rays_of(mapper, FACING)
    decoder_changed, embeddings_changed = [], []
    for _ in range(5):
        decoder, embeddings = snapshot(m.decoder_parameters()), snapshot(m.embedding_parameters())
        mapper.integrate_rays(rays)
        decoder_changed.append(not torch.equal(decoder, snapshot(m.decoder_parameters())))
        after = snapshot(m.embedding_parameters())
        embeddings_changed.append(embeddings.shape != after.shape or not torch.equal(embeddings, after))
    if freeze_after:
        assert decoder_changed == [True, True, False, False, False]
    else:  # 0: never frozen
        assert decoder_changed == [True] * 5
    assert embeddings_changed == [True] * 5  # the map itself goes on learning


def test_keyframes_are_taken_by_motion_since_the_last_keyframe() -> None:
    # no optimiser steps: only allocation and keyframe selection run
    m, mapper = new_mapper(
        first_frame_iterations=0,
        iterations=0,
        keyframe_translation=0.10,
        keyframe_rotation_deg=10.0,
        keyframe_rays=500,
    )
    rays = rays_of(mapper, FACING)
    assert len(rays) > 500

    def moved(translation: float = 0.0, rotation_deg: float = 0.0) -> RaySet:
        motion = np.eye(4)  # back along the optical axis, then a turn about the camera's y axis
        motion[:3, :3] = Rotation.from_rotvec([0.0, np.radians(rotation_deg), 0.0]).as_matrix()
        motion[2, 3] = -translation
        return RaySet(rays.dirs, rays.ray_depth, rays.cos, rays.color, FACING @ motion)

    # each entry: the frame's motion from the first frame, and whether it is a keyframe
    sequence = [
        (moved(), True),  # the first frame always is
        (moved(0.06), False),
        (moved(0.12), True),  # 12 cm from the last keyframe (6 cm from the last frame)
        (moved(0.17), False),  # 5 cm from the keyframe at 12 cm
        (moved(0.12, 6.0), False),
        (moved(0.12, 12.0), True),  # 12°
        (moved(0.12, 12.0), False),  # the same pose again
    ]
    for i, (frame_rays_, keyframe) in enumerate(sequence):
        before = len(mapper.keyframes)
        mapper.integrate_rays(frame_rays_)
        assert len(mapper.keyframes) == before + keyframe, i
        if keyframe:
            assert np.array_equal(mapper.keyframes[-1].pose, frame_rays_.pose)
            assert len(mapper.keyframes[-1]) == 500  # subsampled to keyframe_rays
    assert mapper.frames_integrated == len(sequence)


def test_every_maps_only_every_nth_offered_frame() -> None:
    m, mapper = new_mapper(first_frame_iterations=2, iterations=2, every=3, keyframe_translation=0.01)
    poses = [FACING @ se3_exp(np.array([0.0, 0.0, -0.02 * i, 0.0, 0.0, 0.0])) for i in range(7)]
    mapped = []
    for i, pose in enumerate(poses):
        before = snapshot(m.decoder_parameters()), snapshot(m.embedding_parameters()), len(mapper.keyframes)
        map_frame(mapper, small_frame(pose, index=i), pose)
        after = snapshot(m.decoder_parameters()), snapshot(m.embedding_parameters()), len(mapper.keyframes)
        unchanged = (
            torch.equal(before[0], after[0]) and torch.equal(before[1], after[1]) and before[2] == after[2]
        )
        mapped.append(not unchanged)
    assert mapped == [True, False, False, True, False, False, True]
    assert mapper.frames_offered == 7 and mapper.frames_integrated == 3
    assert all(np.array_equal(k.pose, p) for k, p in zip(mapper.keyframes, poses[::3], strict=True))


def test_keyframe_coordinates_measure_motion_in_keyframe_units() -> None:
    from slam.engine.mapper import keyframe_coordinates

    a = np.eye(4)
    b = np.eye(4)
    b[:3, 3] = (0.3, 0.0, 0.0)  # 3 units of 0.1 m
    c = np.eye(4)
    c[:3, :3] = Rotation.from_rotvec([0.0, 0.0, np.radians(20.0)]).as_matrix()  # 2 units of 10°
    coords = keyframe_coordinates(np.stack([a, b, c]), 0.1, np.radians(10.0))
    assert np.linalg.norm(coords[1] - coords[0]) == pytest.approx(3.0)
    # the chordal distance 2√2·sin(θ/2) over √2·(10°): 2·sin(10°) / 0.1745 rad
    assert np.linalg.norm(coords[2] - coords[0]) == pytest.approx(
        2 * np.sin(np.radians(10.0)) / np.radians(10.0)
    )


def test_keyframe_cap_drops_the_older_of_the_closest_pair_never_the_newest() -> None:
    m, mapper = new_mapper(
        first_frame_iterations=0, iterations=0, keyframe_translation=0.10, keyframe_rays=200, keyframe_max=3
    )
    rays = rays_of(mapper, FACING)

    def at(back: float) -> RaySet:
        motion = np.eye(4)
        motion[2, 3] = -back  # back along the optical axis
        return RaySet(rays.dirs, rays.ray_depth, rays.cos, rays.color, FACING @ motion)

    def kept() -> list[float]:
        return [round(float(-(np.linalg.inv(FACING) @ k.pose)[2, 3]), 3) for k in mapper.keyframes]

    for back in (0.0, 0.5, 1.0, 1.12):  # all keyframes (> 0.1 m apart); the 4th exceeds the cap
        mapper.integrate_rays(at(back))
    assert kept() == [0.0, 0.5, 1.12]  # 1.0 and 1.12 were the closest pair: the older went
    mapper.integrate_rays(at(2.0))
    assert kept() == [0.5, 1.12, 2.0]  # now 0.0 and 0.5 are the closest
    # 0 keeps every keyframe
    _, uncapped = new_mapper(
        first_frame_iterations=0, iterations=0, keyframe_translation=0.10, keyframe_max=0
    )
    for back in (0.0, 0.5, 1.0, 1.12, 2.0):
        uncapped.integrate_rays(at(back))
    assert len(uncapped.keyframes) == 5


# -- the service's hook and spare-time refinement ------------------------------------------------------
def test_before_step_is_called_before_allocation_and_each_step_and_changes_nothing() -> None:
    poses = [FACING, FACING @ se3_exp(np.array([0.0, 0.0, -0.05, 0.0, 0.0, 0.0]))]
    maps = []
    for hooked in (False, True):
        m, mapper = new_mapper(first_frame_iterations=5, iterations=3)
        calls: list[int] = []
        if hooked:  # the service's hook waits; here it records how many steps were done when called
            mapper.before_step = lambda mapper=mapper, calls=calls: calls.append(mapper.steps_done)
        for i, pose in enumerate(poses):
            map_frame(mapper, small_frame(pose, index=i), pose)
        maps.append((snapshot(m.decoder_parameters()), snapshot(m.embedding_parameters())))
    # frame 0: allocation, then 5 steps; frame 1: allocation, then 3 steps
    assert calls == [0, 0, 1, 2, 3, 4, 5, 5, 6, 7] and mapper.steps_done == 8
    # the hook is only a pause: the same map, bit for bit, as without it (replay has none)
    assert torch.equal(maps[0][0], maps[1][0]) and torch.equal(maps[0][1], maps[1][1])


def test_refine_steps_on_keyframes_only() -> None:
    m, mapper = new_mapper(first_frame_iterations=0, iterations=0)
    assert mapper.refine(3) == 0 and mapper.steps_done == 0  # no keyframe yet: nothing to refine
    map_frame(mapper, small_frame(FACING), FACING)  # a keyframe, allocated, not fitted (0 steps)
    calls: list[int] = []
    mapper.before_step = lambda: calls.append(mapper.steps_done)
    before = snapshot(m.embedding_parameters())
    # the first keyframe's rays give the wall's SDF; fitting only those must pull the surface onto x = 1 m
    dirs, surface = ray_points(mapper.keyframes[0], 64, seed=1)
    err0 = np.abs(query(m, surface).sdf.numpy()).mean()
    assert mapper.refine(40) == 40 and calls == list(range(40)) and mapper.steps_done == 40
    assert not torch.equal(before, snapshot(m.embedding_parameters()))
    err = np.abs(query(m, surface).sdf.numpy()).mean()
    assert err < 0.1 * err0  # 18 cm off before (an unfitted map), about 1 cm after
    assert mapper.frames_integrated == 1  # refinement is not a frame (the decoder freeze counts frames)
