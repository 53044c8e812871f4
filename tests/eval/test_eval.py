"""slam.eval: trajectory I/O and association, ATE/RPE (with known answers and live parity against evo),
mesh metrics and the `slam eval` command line."""

from __future__ import annotations

import copy
import functools
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from realdata import require
from scipy.spatial.transform import Rotation
from typer.testing import CliRunner

from slam.eval import (
    Trajectory,
    TrajectoryError,
    align_trajectory,
    associate,
    associate_indices,
    ate,
    read_kitti,
    read_trajectory,
    read_tum,
    rpe,
    rpe_pairs,
    umeyama_alignment,
    write_kitti,
    write_tum,
)
from slam.eval.cli import app as eval_app

# ----------------------------------------------------------------------------------------------- helpers


def synthetic_trajectory(n: int = 300, seed: int = 0, rate: float = 30.0) -> Trajectory:
    """A smooth, non-planar camera path with rotating orientation, timestamps at ``rate`` Hz."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    pos = np.stack([np.sin(0.7 * t) * 2.0, np.cos(0.4 * t) * 1.5, 0.3 * t + 0.2 * np.sin(1.3 * t)], axis=1)
    rotvec = np.stack([0.3 * np.sin(0.5 * t), 0.2 * t, 0.1 * np.cos(0.9 * t)], axis=1)
    rotvec += rng.normal(scale=1e-3, size=rotvec.shape)
    poses = np.tile(np.eye(4), (n, 1, 1))
    poses[:, :3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    poses[:, :3, 3] = pos
    return Trajectory(t + 1000.0, poses, "synthetic")


def transformed(traj: Trajectory, rot: np.ndarray, trans: np.ndarray, scale: float = 1.0) -> Trajectory:
    """World-frame similarity applied to every pose (positions scaled, orientations rotated)."""
    poses = traj.poses.copy()
    poses[:, :3, :3] = rot @ traj.poses[:, :3, :3]
    poses[:, :3, 3] = scale * traj.positions @ rot.T + trans
    return Trajectory(traj.timestamps.copy(), poses, "transformed")


KNOWN_ROT = Rotation.from_rotvec([0.3, -0.5, 0.9]).as_matrix()
KNOWN_T = np.array([1.5, -2.0, 0.7])


# ----------------------------------------------------------------------------------------------- alignment


def test_umeyama_recovers_known_similarity():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(500, 3))
    dst = 2.5 * src @ KNOWN_ROT.T + KNOWN_T
    rot, trans, scale = umeyama_alignment(src, dst, with_scale=True)
    np.testing.assert_allclose(rot, KNOWN_ROT, atol=1e-12)
    np.testing.assert_allclose(trans, KNOWN_T, atol=1e-12)
    assert scale == pytest.approx(2.5, abs=1e-12)
    rot, trans, scale = umeyama_alignment(src, src @ KNOWN_ROT.T + KNOWN_T, with_scale=False)
    np.testing.assert_allclose(rot, KNOWN_ROT, atol=1e-12)
    np.testing.assert_allclose(trans, KNOWN_T, atol=1e-12)
    assert scale == 1.0
    assert np.linalg.det(rot) == pytest.approx(1.0)


def test_umeyama_rejects_degenerate_and_mismatched():
    line = np.outer(np.arange(10.0), [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="degenerate"):
        umeyama_alignment(line, line + 1.0)
    with pytest.raises(ValueError, match="shape"):
        umeyama_alignment(np.zeros((4, 3)), np.zeros((5, 3)))


def test_ate_se3_transformed_estimate():
    ref = synthetic_trajectory()
    est = transformed(ref, KNOWN_ROT, KNOWN_T)
    raw = ate(ref, est, align="none")
    assert raw.rmse > 1.0 and raw.n == len(ref)
    aligned = ate(ref, est, align="se3")
    assert aligned.rmse < 1e-9 and aligned.max < 1e-9
    # The alignment maps the estimate back: it is the inverse of the known transform.
    np.testing.assert_allclose(aligned.alignment.rotation, KNOWN_ROT.T, atol=1e-10)
    np.testing.assert_allclose(aligned.alignment.translation, -KNOWN_ROT.T @ KNOWN_T, atol=1e-9)
    np.testing.assert_allclose(aligned.est_aligned.poses, ref.poses, atol=1e-9)
    assert ate(ref, est, align="sim3").scale == pytest.approx(1.0, abs=1e-10)


def test_ate_sim3_scaled_estimate():
    ref = synthetic_trajectory(seed=2)
    est = transformed(ref, KNOWN_ROT, KNOWN_T, scale=0.37)
    assert ate(ref, est, align="se3").rmse > 0.1  # scale cannot be explained by a rigid motion
    result = ate(ref, est, align="sim3")
    assert result.rmse < 1e-9
    assert result.scale == pytest.approx(1 / 0.37, rel=1e-10)
    np.testing.assert_allclose(result.alignment.matrix[:3, :3], KNOWN_ROT.T / 0.37, atol=1e-9)
    aligned, alignment = align_trajectory(est, ref, "sim3")
    np.testing.assert_allclose(aligned.poses, ref.poses, atol=1e-9)


def test_ate_statistics_known_answer():
    ref = synthetic_trajectory(n=4)
    offsets = np.array([[0.1, 0, 0], [0, 0.2, 0], [0, 0, 0.3], [0, 0, 0.4]])
    est = Trajectory(ref.timestamps, ref.poses.copy())
    est.poses[:, :3, 3] += offsets
    result = ate(ref, est)
    errs = np.array([0.1, 0.2, 0.3, 0.4])
    assert result.rmse == pytest.approx(np.sqrt(np.mean(errs**2)))
    assert result.mean == pytest.approx(0.25)
    assert result.median == pytest.approx(0.25)
    assert (result.min, result.max) == pytest.approx((0.1, 0.4))
    assert result.sse == pytest.approx(0.3)
    assert result.as_dict()["rmse_m"] == result.rmse


# ----------------------------------------------------------------------------------------------- RPE


def test_rpe_invariant_to_rigid_transform():
    ref = synthetic_trajectory()
    est = transformed(ref, KNOWN_ROT, KNOWN_T)
    for unit, delta in (("frames", 1), ("frames", 7), ("meters", 0.5), ("seconds", 1.0)):
        result = rpe(ref, est, delta=delta, unit=unit)
        assert result.trans.max < 1e-9 and result.rot.max < 1e-5, unit


def test_rpe_single_displaced_pose_known_answer():
    ref = synthetic_trajectory(n=101)
    est = Trajectory(ref.timestamps, ref.poses.copy())
    est.poses[40, :3, 3] += [0.0, 0.01, 0.0]  # 1 cm off: the two pairs touching pose 40 see 1 cm
    result = rpe(ref, est, delta=1, unit="frames")
    assert result.n == 100
    assert np.count_nonzero(result.trans_errors > 1e-12) == 2
    np.testing.assert_allclose(result.trans_errors[[39, 40]], 0.01, atol=1e-12)
    assert result.trans.rmse == pytest.approx(0.01 * np.sqrt(2 / 100), rel=1e-9)
    assert result.rot.max < 1e-5


def test_rpe_rotation_error_in_degrees():
    ref = synthetic_trajectory(n=50)
    est = Trajectory(ref.timestamps, ref.poses.copy())
    # a 2° world-frame jump between poses 24 and 25: only that pair sees it, as exactly 2°
    jump = np.eye(4)
    jump[:3, :3] = Rotation.from_euler("z", 2.0, degrees=True).as_matrix()
    est.poses[25:] = jump @ est.poses[25:]
    result = rpe(ref, est, delta=1, unit="frames")
    assert result.rot.max == pytest.approx(2.0, abs=1e-9)
    assert np.count_nonzero(result.rot_errors > 1e-6) == 1


def test_rpe_pair_selection():
    traj = synthetic_trajectory(n=100)
    np.testing.assert_array_equal(rpe_pairs(traj, 10, "frames")[:3], [[0, 10], [10, 20], [20, 30]])
    assert len(rpe_pairs(traj, 10, "frames")) == 9
    assert len(rpe_pairs(traj, 10, "frames", all_pairs=True)) == 90
    # seconds: 30 Hz, 1 s -> every 30 frames, despite 1/30 not being exact in binary
    sec = rpe_pairs(traj, 1.0, "seconds")
    np.testing.assert_array_equal(sec, [[0, 30], [30, 60], [60, 90]])
    sec_all = rpe_pairs(traj, 1.0, "seconds", all_pairs=True)
    assert len(sec_all) == 70 and np.all(sec_all[:, 1] - sec_all[:, 0] == 30)
    # uneven timestamps: j is the first pose at least delta later
    uneven = Trajectory(np.array([0.0, 0.4, 0.9, 1.2, 2.0, 2.1, 3.5]), np.tile(np.eye(4), (7, 1, 1)))
    np.testing.assert_array_equal(rpe_pairs(uneven, 1.0, "seconds"), [[0, 3], [3, 6]])
    # meters: a straight line with 0.1 m steps, 0.35 m -> every 4th pose
    line = Trajectory(np.arange(20.0), np.tile(np.eye(4), (20, 1, 1)))
    line.poses[:, 0, 3] = 0.1 * np.arange(20)
    np.testing.assert_array_equal(rpe_pairs(line, 0.35, "meters")[:2], [[0, 4], [4, 8]])
    with pytest.raises(ValueError, match="integer"):
        rpe_pairs(traj, 1.5, "frames")


def test_rpe_too_short_raises_value_error():
    ref = synthetic_trajectory(n=20)  # 0.63 s
    with pytest.raises(ValueError, match="no pose pairs"):
        rpe(ref, ref, delta=1.0, unit="seconds")


# ----------------------------------------------------------------------------------------------- association


def _evo_matching(stamps_1, stamps_2, max_diff, offset):
    from evo.core.sync import matching_time_indices

    logging.getLogger("evo").setLevel(logging.ERROR)
    return matching_time_indices(stamps_1, stamps_2, max_diff, offset)


@pytest.mark.parametrize("seed", range(4))
def test_associate_indices_matches_evo(seed):
    rng = np.random.default_rng(seed)
    ref_t = np.round(np.cumsum(rng.uniform(0.005, 0.015, 600)), 3)  # rounding creates exact ties
    est_t = np.round(np.sort(rng.uniform(ref_t[0] - 0.1, ref_t[-1] + 0.1, 200)), 3)
    for max_diff, offset in ((0.01, 0.0), (0.004, 0.0), (0.02, 0.013)):
        ours = associate_indices(est_t, ref_t, max_diff, offset)
        theirs = _evo_matching(est_t, ref_t, max_diff, offset)
        np.testing.assert_array_equal(ours[0], theirs[0])
        np.testing.assert_array_equal(ours[1], theirs[1])
    shuffled = rng.permutation(ref_t)  # unsorted: evo's brute-force branch
    ours = associate_indices(est_t, shuffled, 0.01)
    theirs = _evo_matching(est_t, shuffled, 0.01, 0.0)
    np.testing.assert_array_equal(ours[0], theirs[0])
    np.testing.assert_array_equal(ours[1], theirs[1])


def test_associate_trajectories():
    ref = synthetic_trajectory(n=300, rate=100.0)
    est = ref.subset(np.arange(0, 300, 3))
    est.timestamps = est.timestamps + 0.002
    ref_a, est_a = associate(ref, est, max_diff=0.01)
    assert len(ref_a) == len(est_a) == 100
    np.testing.assert_allclose(ref_a.timestamps, est_a.timestamps - 0.002)
    # the offset shifts the estimate's clock for matching only
    ref_b, est_b = associate(ref, est, max_diff=0.001, offset=-0.002)
    assert len(est_b) == 100 and np.allclose(est_b.timestamps, est.timestamps)
    with pytest.raises(TrajectoryError, match="no matching timestamps"):
        associate(ref, est, max_diff=0.001)
    # ATE associates by itself: est is a noiseless subset, so the error is zero
    assert ate(ref, est).rmse < 1e-12


# ----------------------------------------------------------------------------------------------- files


def test_tum_roundtrip(tmp_path):
    traj = synthetic_trajectory(n=50)
    path = tmp_path / "traj.txt"
    write_tum(path, traj, header="made by a test")
    assert path.read_text().startswith("# made by a test\n")
    back = read_trajectory(path)
    np.testing.assert_array_equal(back.timestamps, traj.timestamps)
    np.testing.assert_allclose(back.poses, traj.poses, atol=1e-12)
    assert back.has_timestamps and back.name == str(path)


def test_kitti_roundtrip_and_times(tmp_path):
    traj = synthetic_trajectory(n=20)
    path = tmp_path / "poses.txt"
    write_kitti(path, traj)
    back = read_trajectory(path)  # auto-detected: 12 columns
    np.testing.assert_array_equal(back.poses, traj.poses)
    assert not back.has_timestamps
    np.testing.assert_array_equal(back.timestamps, np.arange(20.0))
    times = tmp_path / "times.txt"
    times.write_text("".join(f"{t!r}\n" for t in traj.timestamps.tolist()))
    timed = read_kitti(path, times)
    assert timed.has_timestamps
    np.testing.assert_array_equal(timed.timestamps, traj.timestamps)
    times.write_text("0.0\n0.1\n")
    with pytest.raises(TrajectoryError, match="2 timestamps but .*poses.txt has 20 poses"):
        read_kitti(path, times)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


GOOD = "1.0 0 0 0 0 0 0 1\n"


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("# header\n" + GOOD + "0.5 0 0 0 0 0 0 1\n", r"bad\.txt:3: timestamps not sorted"),
        (GOOD + "1.0 1 0 0 0 0 0 1\n", r"bad\.txt:2: duplicate timestamp 1\.0 \(also on line 1\)"),
        (GOOD + "2.0 nan 0 0 0 0 0 1\n", r"bad\.txt:2: non-finite value"),
        (GOOD + "2.0 0 0 inf 0 0 0 1\n", r"bad\.txt:2: non-finite value"),
        (GOOD + "2.0 0 0 0 0 0 1\n", r"bad\.txt:2: expected 8 columns .*found 7"),
        (GOOD + "2.0 0 0 0 0 0 0 1 9\n", r"bad\.txt:2: expected 8 columns .*found 9"),
        (GOOD + "2.0 0 0 zero 0 0 0 1\n", r"bad\.txt:2: not a number: 'zero'"),
        (GOOD + "2.0 0 0 0 0 0 0 0\n", r"bad\.txt:2: zero quaternion"),
        ("# only a comment\n\n", r"bad\.txt: no poses"),
        ("1 2 3 4 5\n", r"bad\.txt: cannot tell the format from 5 columns"),
        ("1 0 0 0 0 0 0\n", r"bad\.txt:1: expected 8 columns"),
    ],
)
def test_bad_tum_files(tmp_path, text, pattern):
    path = _write(tmp_path, "bad.txt", text)
    with pytest.raises(TrajectoryError, match=pattern):
        read_trajectory(path)


def test_bad_kitti_and_missing_files(tmp_path):
    row = " ".join(["1", "0", "0", "0", "0", "1", "0", "0", "0", "0", "1", "0"])
    path = _write(tmp_path, "k.txt", f"{row}\n{row} 5\n")
    with pytest.raises(TrajectoryError, match=r"k\.txt:2: expected 12 columns"):
        read_trajectory(path, fmt="kitti")
    with pytest.raises(TrajectoryError, match=r"k\.txt:2: expected 12 columns"):
        read_trajectory(path)
    missing = tmp_path / "nope.txt"
    with pytest.raises(TrajectoryError, match=r"nope\.txt: file not found"):
        read_trajectory(missing)
    with pytest.raises(TrajectoryError, match=r"nope\.txt: file not found"):
        read_tum(missing)


def test_duplicate_policies(tmp_path):
    path = _write(tmp_path, "dup.txt", GOOD + "1.0 1 0 0 0 0 0 1\n2.0 2 0 0 0 0 0 1\n")
    assert len(read_tum(path, duplicates="keep")) == 3
    first = read_tum(path, duplicates="first")
    np.testing.assert_array_equal(first.positions[:, 0], [0.0, 2.0])


def test_index_paired_kitti_requires_equal_length():
    ref = synthetic_trajectory(n=30)
    est = Trajectory(np.arange(20.0), ref.poses[:20], "est.txt", has_timestamps=False)
    with pytest.raises(TrajectoryError, match="est.txt has no timestamps"):
        ate(ref, est)


# ----------------------------------------------------------------------------------------------- evo parity

PAIRS = {
    "fr1_xyz": ("freiburg1_xyz-groundtruth.txt", "freiburg1_xyz-rgbdslam.txt"),
    "fr2_desk": ("fr2_desk_groundtruth.txt", "fr2_desk_ORB.txt"),
    "kitti_00": ("KITTI_00_gt.txt", "KITTI_00_ORB.txt"),
}
TOL_M = 1e-4
TOL_DEG = 1e-6


@functools.cache
def _evo_pair(gt: str, est: str):
    from evo.core import sync
    from evo.tools import file_interface

    logging.getLogger("evo").setLevel(logging.ERROR)
    if Path(gt).name.startswith("KITTI"):
        return file_interface.read_kitti_poses_file(gt), file_interface.read_kitti_poses_file(est)
    ref = file_interface.read_tum_trajectory_file(gt)
    traj = file_interface.read_tum_trajectory_file(est)
    return sync.associate_trajectories(ref, traj, max_diff=0.01)


@functools.cache
def _our_pair(gt: str, est: str):
    # fr2/desk's ground truth repeats one timestamp (lines 10862-10863); evo keeps both poses.
    return read_trajectory(gt, duplicates="keep"), read_trajectory(est, duplicates="keep")


def _paths(shared_data: Path, name: str) -> tuple[str, str]:
    folder = shared_data / "trajectories"
    gt, est = (folder / f for f in PAIRS[name])
    require(gt, est)
    return str(gt), str(est)


def _assert_close(ours: float, theirs: float, tol: float, what: str) -> None:
    assert abs(ours - theirs) <= tol, f"{what}: ours {ours!r} vs evo {theirs!r}"


@pytest.mark.shared_data
@pytest.mark.parametrize("name", list(PAIRS))
@pytest.mark.parametrize("align", ["none", "se3", "sim3"])
def test_ate_matches_evo(shared_data, name, align):
    from evo.core import metrics

    gt, est = _paths(shared_data, name)
    evo_ref, evo_est = _evo_pair(gt, est)
    evo_est = copy.deepcopy(evo_est)
    if align != "none":
        evo_est.align(evo_ref, correct_scale=align == "sim3")
    ape = metrics.APE(metrics.PoseRelation.translation_part)
    ape.process_data((evo_ref, evo_est))
    theirs = ape.get_all_statistics()

    ref, traj = _our_pair(gt, est)
    ours = ate(ref, traj, align=align, max_diff=0.01)
    assert ours.n == evo_ref.num_poses
    if hasattr(evo_ref, "timestamps"):  # the association picked the very same pose pairs
        np.testing.assert_array_equal(ours.ref.timestamps, evo_ref.timestamps)
        np.testing.assert_array_equal(ours.est_aligned.timestamps, evo_est.timestamps)
    for key in ("rmse", "mean", "median", "std", "min", "max"):
        _assert_close(getattr(ours, key), theirs[key], TOL_M, f"{name} ATE {align} {key}")


@pytest.mark.shared_data
@pytest.mark.parametrize("name", list(PAIRS))
@pytest.mark.parametrize(
    ("delta", "unit", "all_pairs", "align"),
    [
        (1, "frames", False, "none"),
        (10, "frames", True, "none"),
        (1.0, "meters", False, "none"),
        (1.0, "meters", False, "sim3"),
        (0.5, "meters", True, "none"),
    ],
)
def test_rpe_matches_evo(shared_data, name, delta, unit, all_pairs, align):
    from evo.core import metrics

    gt, est = _paths(shared_data, name)
    evo_ref, evo_est = _evo_pair(gt, est)
    if align != "none":
        evo_est = copy.deepcopy(evo_est)
        evo_est.align(evo_ref, correct_scale=align == "sim3")
    evo_unit = metrics.Unit.frames if unit == "frames" else metrics.Unit.meters
    theirs = {}
    for relation in (metrics.PoseRelation.translation_part, metrics.PoseRelation.rotation_angle_deg):
        metric = metrics.RPE(relation, delta, evo_unit, all_pairs=all_pairs)
        metric.process_data((evo_ref, evo_est))
        theirs[relation] = (metric.get_all_statistics(), metric.delta_ids)

    ref, traj = _our_pair(gt, est)
    ours = rpe(ref, traj, delta=delta, unit=unit, all_pairs=all_pairs, align=align)
    trans, delta_ids = theirs[metrics.PoseRelation.translation_part]
    rot, _ = theirs[metrics.PoseRelation.rotation_angle_deg]
    np.testing.assert_array_equal(ours.pairs[:, 1], delta_ids)  # identical pair selection
    for key in ("rmse", "mean", "median", "max"):
        _assert_close(getattr(ours.trans, key), trans[key], TOL_M, f"{name} RPE {delta}{unit} trans {key}")
        _assert_close(getattr(ours.rot, key), rot[key], TOL_DEG, f"{name} RPE {delta}{unit} rot {key}")


@pytest.mark.shared_data
def test_fr2_ground_truth_duplicate_is_reported(shared_data):
    gt, _ = _paths(shared_data, "fr2_desk")
    with pytest.raises(TrajectoryError, match=r"fr2_desk_groundtruth\.txt:10863: duplicate timestamp"):
        read_tum(gt)


@pytest.mark.shared_data
def test_kitti_with_times_file(shared_data):
    gt, est = _paths(shared_data, "kitti_00")
    times = shared_data / "trajectories" / "KITTI_00_gt_times.txt"
    ref = read_kitti(gt, times)
    traj = read_kitti(est)  # no times: paired by index, takes the reference's timestamps
    assert ate(ref, traj, align="se3").rmse == pytest.approx(ate(read_kitti(gt), traj, align="se3").rmse)
    result = rpe(ref, traj, delta=1.0, unit="seconds")
    # KITTI runs at ~10 Hz: 1-second pairs are ~10 frames apart
    steps = np.diff(ref.timestamps[result.pairs], axis=1)[:, 0]
    assert np.all(steps >= 1.0 - 1e-9) and np.median(result.pairs[:, 1] - result.pairs[:, 0]) == 10


# ----------------------------------------------------------------------------------------------- meshes


@pytest.fixture(scope="module")
def spheres():
    import open3d as o3d

    unit = o3d.geometry.TriangleMesh.create_sphere(radius=1.0, resolution=60)
    bigger = o3d.geometry.TriangleMesh.create_sphere(radius=1.01, resolution=60)
    vertices, triangles = np.asarray(unit.vertices), np.asarray(unit.triangles)
    upper = (vertices[triangles][:, :, 2] >= -1e-9).all(axis=1)
    half = o3d.geometry.TriangleMesh(unit.vertices, o3d.utility.Vector3iVector(triangles[upper]))
    return unit, bigger, half


def test_mesh_metrics_offset_sphere(spheres):
    from slam.eval import mesh_metrics

    unit, bigger, _ = spheres
    result = mesh_metrics(unit, bigger)  # default 200k points
    # 1 cm radial offset plus the sampling density (~0.1 cm at 200k points on 12.6 m²)
    assert result.accuracy_cm == pytest.approx(1.0, abs=0.15)
    assert result.completion_cm == pytest.approx(1.0, abs=0.15)
    assert result.completion_ratio == 1.0
    assert mesh_metrics(unit, bigger) == result  # seeded: repeatable


def test_surface_distance_has_no_sampling_floor(spheres):
    from slam.eval import mesh_metrics

    unit, bigger, _ = spheres
    itself = mesh_metrics(unit, unit, n_points=20_000)
    assert itself.accuracy_cm < 1e-3 and itself.completion_cm < 1e-3  # exact distances: 0 up to float32
    sampled = mesh_metrics(unit, unit, n_points=20_000, distance="samples")
    assert sampled.accuracy_cm > 0.5  # ~2.5 cm spacing of 20k samples on 12.6 m²
    # the 1 cm offset, exactly (the 60-segment tessellation is inside the sphere by at most 0.14 cm)
    offset = mesh_metrics(unit, bigger, n_points=20_000)
    assert offset.accuracy_cm == pytest.approx(1.0, abs=0.05) and offset.distance == "surface"
    with pytest.raises(ValueError, match="distance must be"):
        mesh_metrics(unit, bigger, distance="nearest")


def test_mesh_metrics_half_sphere_is_incomplete(spheres):
    from slam.eval import mesh_metrics

    unit, _, half = spheres
    full = mesh_metrics(unit, unit, n_points=50_000)
    partial = mesh_metrics(unit, half, n_points=50_000)
    assert partial.accuracy_cm < 1.0  # what is there is accurate
    assert partial.completion_cm > 10 * full.completion_cm
    assert 0.4 < partial.completion_ratio < 0.65 and full.completion_ratio == 1.0
    tight = mesh_metrics(unit, half, n_points=50_000, threshold=0.2)
    assert tight.completion_ratio > partial.completion_ratio
    assert partial.as_dict()["metric"] == "mesh"


def test_mesh_errors(tmp_path, spheres):
    import open3d as o3d

    from slam.eval import MeshError, mesh_metrics

    unit = spheres[0]
    with pytest.raises(MeshError, match=r"missing\.ply: file not found"):
        mesh_metrics(unit, tmp_path / "missing.ply")
    with pytest.raises(MeshError, match="no triangles"):
        mesh_metrics(o3d.geometry.TriangleMesh(), unit)
    cloud = tmp_path / "cloud.ply"
    o3d.io.write_point_cloud(str(cloud), o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.eye(3))))
    with pytest.raises(MeshError, match=r"cloud\.ply: no triangles"):
        mesh_metrics(cloud, unit)


# ----------------------------------------------------------------------------------------------- CLI

runner = CliRunner()


def _last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


@pytest.fixture
def tum_pair(tmp_path):
    ref = synthetic_trajectory(n=120)
    rng = np.random.default_rng(5)
    est = transformed(ref, KNOWN_ROT, KNOWN_T, scale=1.1)
    est.poses[:, :3, 3] += rng.normal(scale=0.01, size=(len(est), 3))
    gt_path, est_path = tmp_path / "gt.txt", tmp_path / "est.txt"
    write_tum(gt_path, ref)
    write_tum(est_path, est)
    return gt_path, est_path


@pytest.mark.parametrize("align", ["none", "se3", "sim3"])
def test_cli_ate_json(tum_pair, align):
    gt_path, est_path = tum_pair
    res = runner.invoke(eval_app, ["ate", str(gt_path), str(est_path), "--align", align])
    assert res.exit_code == 0, res.output
    payload = _last_json(res.stdout)
    expected = ate(read_tum(gt_path), read_tum(est_path), align=align)
    assert payload["metric"] == "ate" and payload["align"] == align
    assert payload["n"] == expected.n == 120
    assert payload["rmse_m"] == pytest.approx(expected.rmse, rel=1e-12)
    assert payload["mean_m"] == pytest.approx(expected.mean, rel=1e-12)
    assert "rmse" in res.stdout.splitlines()[0] or "ATE" in res.stdout  # a table precedes the JSON


def test_cli_rpe_json(tum_pair):
    gt_path, est_path = tum_pair
    res = runner.invoke(eval_app, ["rpe", str(gt_path), str(est_path), "--delta", "1", "--unit", "seconds"])
    assert res.exit_code == 0, res.output
    payload = _last_json(res.stdout)
    expected = rpe(read_tum(gt_path), read_tum(est_path), delta=1.0, unit="seconds")
    assert payload["trans_rmse_m"] == pytest.approx(expected.trans.rmse, rel=1e-12)
    assert payload["rot_rmse_deg"] == pytest.approx(expected.rot.rmse, rel=1e-12)
    assert payload["n"] == expected.n == 3
    res = runner.invoke(eval_app, ["rpe", str(gt_path), str(est_path), "-d", "5", "--all-pairs"])
    assert _last_json(res.stdout)["n"] == 115


def test_cli_mesh_json(tmp_path, spheres):
    import open3d as o3d

    from slam.eval import mesh_metrics

    unit, bigger, _ = spheres
    ref_path, est_path = tmp_path / "ref.ply", tmp_path / "est.ply"
    o3d.io.write_triangle_mesh(str(ref_path), unit)
    o3d.io.write_triangle_mesh(str(est_path), bigger)
    res = runner.invoke(eval_app, ["mesh", str(ref_path), str(est_path), "--points", "20000"])
    assert res.exit_code == 0, res.output
    payload = _last_json(res.stdout)
    expected = mesh_metrics(ref_path, est_path, n_points=20_000)
    assert payload["accuracy_cm"] == pytest.approx(expected.accuracy_cm, rel=1e-12)
    assert payload["completion_ratio"] == expected.completion_ratio


def test_cli_errors_exit_2_naming_the_file(tmp_path, tum_pair):
    gt_path, _ = tum_pair
    bad = _write(tmp_path, "broken.txt", GOOD + "0.5 0 0 0 0 0 0 1\n")
    res = runner.invoke(eval_app, ["ate", str(gt_path), str(bad)])
    assert res.exit_code == 2
    assert "broken.txt:2: timestamps not sorted" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    res = runner.invoke(eval_app, ["mesh", str(tmp_path / "a.ply"), str(tmp_path / "b.ply")])
    assert res.exit_code == 2 and "a.ply: file not found" in res.stderr


def test_cli_mounted_under_slam_eval(tum_pair):
    from slam.cli import app

    gt_path, est_path = tum_pair
    res = runner.invoke(app, ["eval", "ate", str(gt_path), str(est_path), "--align", "se3"])
    assert res.exit_code == 0, res.output
    assert _last_json(res.stdout)["align"] == "se3"
    help_text = runner.invoke(app, ["eval", "rpe", "--help"]).stdout
    assert "--unit" in help_text and "seconds" in help_text


def _sphere_depth_from_above(height: float, intr) -> np.ndarray:
    """Depth image (z-depth) of the unit sphere seen by a camera at (0, 0, height) looking down -z."""
    u, v = np.meshgrid(np.arange(intr.width), np.arange(intr.height))
    rays = np.stack([(u - intr.cx) / intr.fx, (v - intr.cy) / intr.fy, np.ones(u.shape)], axis=-1)
    # camera (x, y, z) = world (x, -y, -z) shifted: ray origin o = (0, 0, h), direction d(world)
    d = rays * np.array([1.0, -1.0, -1.0])
    b = 2 * d[..., 2] * height
    a = np.sum(d * d, axis=-1)
    disc = b * b - 4 * a * (height * height - 1.0)
    t = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2 * a)  # z-depth, as the ray's camera z component is 1
    return np.where(disc > 0, t, 0.0).astype(np.float32)


def test_completion_over_observed_reference_only(spheres):
    from slam.core.frames import CameraIntrinsics
    from slam.eval import mesh_metrics
    from slam.eval.mesh import observed_mask

    unit, _, half = spheres
    intr = CameraIntrinsics(fx=200.0, fy=200.0, cx=80.0, cy=60.0, width=160, height=120)
    pose = np.diag([1.0, -1.0, -1.0, 1.0])
    pose[2, 3] = 3.0
    depth = _sphere_depth_from_above(3.0, intr)
    points = np.random.default_rng(3).normal(size=(20_000, 3))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    seen = observed_mask(points, [(pose, depth, intr)], tolerance=0.02)
    # visible from (0, 0, 3): the cap whose normal faces the camera, z > 1/3 (tangent rays), inside the image
    cam = (points - pose[:3, 3]) @ pose[:3, :3]
    u = cam[:, 0] / cam[:, 2] * intr.fx + intr.cx
    v = cam[:, 1] / cam[:, 2] * intr.fy + intr.cy
    in_image = (u > 1) & (u < intr.width - 2) & (v > 1) & (v < intr.height - 2)
    facing = points[:, 2] > 0.6  # nearer the limb a pixel spans more depth than the tolerance
    assert seen[facing & in_image].mean() > 0.99
    assert not seen[points[:, 2] < 0].any()  # the far side is occluded by the near side
    outside = (u < -1) | (u > intr.width + 1) | (v < -1) | (v > intr.height + 1)
    assert outside[points[:, 2] > 0.5].sum() > 100 and not seen[outside].any()
    # the upper half-sphere is complete where the camera looked, though it misses half the sphere
    everywhere = mesh_metrics(unit, half, n_points=50_000)
    observed = mesh_metrics(
        unit,
        half,
        n_points=50_000,
        ref_mask=lambda p: observed_mask(p, [(pose, depth, intr)], tolerance=0.02),
    )
    assert everywhere.completion_ratio < 0.65 and observed.completion_ratio > 0.99
    assert observed.accuracy_cm == everywhere.accuracy_cm  # accuracy still against the whole reference
