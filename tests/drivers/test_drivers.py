"""Recorded-sequence drivers (7-Scenes, TUM RGB-D, Replica) on sequences generated in each exact format.

Each generator writes a small sequence (5 frames of 64×48) with known depth, colour, intrinsics,
timestamps and poses and returns what the driver must give back; the shared tests run on all three,
the format-specific ones below them. The last tests read the real 7-Scenes recording when
$SLAM_SHARED_DATA has it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from scipy.spatial.transform import Rotation

from drivers.base import SequenceSource, SourceError, available_sources, open_source, source_class
from drivers.replica import ReplicaSource
from drivers.sevenscenes import SevenScenesSource
from drivers.tum import ROS_DEFAULT_INTRINSICS, TUMSource
from slam.core.frames import RGBDFrame
from slam.core.geometry import pose_from_tum

W, H, N = 64, 48, 5
JPEG_TOL = 4  # JPEG at quality 100 without chroma subsampling is within ±3 on these images


# ----------------------------------------------------------------------------------------------------
# synthetic content
# ----------------------------------------------------------------------------------------------------


def true_depth(i: int, width: int = W, height: int = H) -> np.ndarray:
    """Metres: a ramp that differs per pixel and per frame, with a block of invalid (0) pixels."""
    y, x = np.mgrid[0:height, 0:width]
    depth = 0.5 + 0.01 * x + 0.02 * y + 0.1 * i
    depth[:2, :3] = 0.0
    return depth


def quantise(depth: np.ndarray, scale: float) -> np.ndarray:
    return np.round(depth * scale).astype(np.uint16)


def decoded(raw: np.ndarray, scale: float) -> np.ndarray:
    return (raw.astype(np.int64) / scale).astype(np.float32)


def true_color(i: int) -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W]
    return np.stack([(4 * x) % 256, (5 * y) % 256, np.full_like(x, 40 * i + 10)], axis=-1).astype(np.uint8)


def true_pose(i: int) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3] = Rotation.from_rotvec([0.1 * i, -0.05 * i, 0.02 + 0.01 * i]).as_matrix()
    pose[:3, 3] = [0.1 * i, 0.2 - 0.01 * i, -0.3 * i]
    return pose


def write_png16(path: Path, raw: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(raw).save(path)


def write_jpg(path: Path, color: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(color).save(path, quality=100, subsampling=0)


def write_png_rgb(path: Path, color: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(color).save(path)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# ----------------------------------------------------------------------------------------------------
# generated sequences
# ----------------------------------------------------------------------------------------------------


@dataclass
class Generated:
    """A generated sequence and what its driver must return for it."""

    name: str  # registry name
    root: Path
    options: dict[str, Any]  # constructor options that the format needs beyond the path
    scale: float  # depth units a metre
    raw_depth: list[np.ndarray]
    color: list[np.ndarray]
    color_tol: int
    intrinsics: tuple[float, float, float, float]
    timestamps: list[float]
    poses: list[np.ndarray | None]
    index: list[int]
    depth_files: list[Path]
    color_files: list[Path]
    # (file, 1-based line) of the pose of frame i in a single pose file; None when poses are per frame
    pose_lines: list[tuple[Path, int]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def open(self, **options: Any) -> SequenceSource:
        source = open_source(self.name, self.root, **{**self.options, **options})
        assert isinstance(source, SequenceSource)
        return source


def make_sevenscenes(root: Path) -> Generated:
    root.mkdir(parents=True)
    scale = 1000.0
    k = np.array([[50.0, 0.0, 31.5], [0.0, 51.0, 23.5], [0.0, 0.0, 1.0]])
    np.savetxt(root / "camera-intrinsics.txt", k, fmt="%.18e")
    raws, colors, poses, files, color_files = [], [], [], [], []
    for i in range(N):
        raw = quantise(true_depth(i), scale)
        raw[5, 5] = 65535  # 7-Scenes' second invalid marker
        write_png16(root / f"frame-{i:06d}.depth.png", raw)
        raw = raw.copy()
        raw[5, 5] = 0
        write_jpg(root / f"frame-{i:06d}.color.jpg", true_color(i))
        np.savetxt(root / f"frame-{i:06d}.pose.txt", true_pose(i), fmt="%.18e")
        raws.append(raw)
        colors.append(true_color(i))
        poses.append(true_pose(i))
        files.append(root / f"frame-{i:06d}.depth.png")
        color_files.append(root / f"frame-{i:06d}.color.jpg")
    return Generated(
        name="7scenes",
        root=root,
        options={},
        scale=scale,
        raw_depth=raws,
        color=colors,
        color_tol=JPEG_TOL,
        intrinsics=(50.0, 51.0, 31.5, 23.5),
        timestamps=[i / 30.0 for i in range(N)],
        poses=poses,
        index=list(range(N)),
        depth_files=files,
        color_files=color_files,
    )


TUM_T0 = 1305031102.175304
TUM_DT = 0.1  # 10 Hz, so that a frame with no colour image within 0.02 s fits between two others
TUM_HEADER = "# {what}\n# file: 'rgbd_dataset_freiburg1_xyz.bag'\n# timestamp {fields}\n"


def make_tum(root: Path) -> Generated:
    """Depth at T0 + i·DT, colour 4 ms later; one extra depth frame with no colour (dropped); ground
    truth 3 ms after each frame except the last, whose nearest ground truth is 50 ms away (None)."""
    root.mkdir(parents=True)
    scale = 5000.0
    depth_lines, rgb_lines, gt_lines = [], [], []
    raws, colors, poses, stamps, files, color_files, pose_lines = [], [], [], [], [], [], []
    for i in range(N):
        t = TUM_T0 + i * TUM_DT
        name = f"depth/{t:.6f}.png"
        raw = quantise(true_depth(i), scale)
        write_png16(root / name, raw)
        depth_lines.append(f"{t:.6f} {name}")
        rgb_name = f"rgb/{t + 0.004:.6f}.png"
        write_png_rgb(root / rgb_name, true_color(i))
        rgb_lines.append(f"{t + 0.004:.6f} {rgb_name}")
        if i == 2:  # a depth frame 50 ms after frame 2: no colour within 0.02 s
            extra = f"depth/{t + 0.05:.6f}.png"
            write_png16(root / extra, quantise(true_depth(9), scale))
            depth_lines.append(f"{t + 0.05:.6f} {extra}")
        pose = true_pose(i)
        tq = [*pose[:3, 3], *Rotation.from_matrix(pose[:3, :3]).as_quat()]
        t_gt = t + 0.003 if i < N - 1 else t + 0.05
        gt_lines.append(f"{t_gt:.6f} " + " ".join(repr(float(v)) for v in tq))
        pose_lines.append((root / "groundtruth.txt", 3 + len(gt_lines)))
        # a distractor pose half-way to the next frame, farther than 0.02 s from any frame
        gt_lines.append(f"{t + 0.06:.6f} 9 9 9 0 0 0 1")
        raws.append(raw)
        colors.append(true_color(i))
        poses.append(pose_from_tum(np.array(tq))[0] if i < N - 1 else None)
        stamps.append(float(f"{t:.6f}"))
        files.append(root / name)
        color_files.append(root / rgb_name)
    (root / "depth.txt").write_text(
        TUM_HEADER.format(what="depth maps", fields="filename") + "\n".join(depth_lines) + "\n"
    )
    (root / "rgb.txt").write_text(
        TUM_HEADER.format(what="color images", fields="filename") + "\n".join(rgb_lines) + "\n"
    )
    (root / "groundtruth.txt").write_text(
        TUM_HEADER.format(what="ground truth trajectory", fields="tx ty tz qx qy qz qw")
        + "\n".join(gt_lines)
        + "\n"
    )
    intr = (40.0, 41.0, 31.0, 24.0)
    return Generated(
        name="tum",
        root=root,
        options={"intrinsics": intr},
        scale=scale,
        raw_depth=raws,
        color=colors,
        color_tol=0,
        intrinsics=intr,
        timestamps=stamps,
        poses=poses,
        index=list(range(N)),
        depth_files=files,
        color_files=color_files,
        pose_lines=pose_lines,
        extra={"depth_lines": depth_lines, "rgb_lines": rgb_lines, "gt_lines": gt_lines},
    )


def make_replica(root: Path) -> Generated:
    results = root / "results"
    results.mkdir(parents=True)
    scale = 6553.5
    raws, colors, poses, files, color_files, lines = [], [], [], [], [], []
    for i in range(N):
        raw = quantise(true_depth(i), scale)
        write_png16(results / f"depth{i:06d}.png", raw)
        write_jpg(results / f"frame{i:06d}.jpg", true_color(i))
        lines.append(" ".join(repr(float(v)) for v in true_pose(i).ravel()))
        raws.append(raw)
        colors.append(true_color(i))
        poses.append(true_pose(i))
        files.append(results / f"depth{i:06d}.png")
        color_files.append(results / f"frame{i:06d}.jpg")
    (root / "traj.txt").write_text("\n".join(lines) + "\n")
    intr = (45.0, 45.0, 31.5, 23.5)
    return Generated(
        name="replica",
        root=root,
        options={"intrinsics": intr},
        scale=scale,
        raw_depth=raws,
        color=colors,
        color_tol=JPEG_TOL,
        intrinsics=intr,
        timestamps=[i / 30.0 for i in range(N)],
        poses=poses,
        index=list(range(N)),
        depth_files=files,
        color_files=color_files,
        pose_lines=[(root / "traj.txt", i + 1) for i in range(N)],
    )


MAKERS: dict[str, Callable[[Path], Generated]] = {
    "7scenes": make_sevenscenes,
    "tum": make_tum,
    "replica": make_replica,
}


@pytest.fixture
def sevenscenes_seq(tmp_path: Path) -> Generated:
    return make_sevenscenes(tmp_path / "7scenes-synthetic")


@pytest.fixture
def tum_seq(tmp_path: Path) -> Generated:
    return make_tum(tmp_path / "rgbd_dataset_synthetic")


@pytest.fixture
def replica_seq(tmp_path: Path) -> Generated:
    return make_replica(tmp_path / "room0")


@pytest.fixture(params=["7scenes", "tum", "replica"])
def seq(request: pytest.FixtureRequest) -> Generated:
    fixture = {"7scenes": "sevenscenes_seq", "tum": "tum_seq", "replica": "replica_seq"}[request.param]
    return request.getfixturevalue(fixture)


def check_frame(frame: RGBDFrame, gen: Generated, i: int) -> None:
    """Frame ``i`` of the generated sequence is returned exactly (up to the format's quantisation)."""
    assert isinstance(frame, RGBDFrame)
    assert frame.index == gen.index[i]
    assert frame.timestamp == pytest.approx(gen.timestamps[i], abs=1e-9)
    assert frame.depth.dtype == np.float32 and frame.depth.shape == (H, W)
    np.testing.assert_array_equal(frame.depth, decoded(gen.raw_depth[i], gen.scale))
    truth = true_depth(i)
    valid = gen.raw_depth[i] > 0
    assert np.all(frame.depth[~valid] == 0.0)
    assert np.max(np.abs(frame.depth[valid] - truth[valid])) <= 0.5 / gen.scale + 1e-6
    intr = frame.intrinsics
    assert (intr.fx, intr.fy, intr.cx, intr.cy) == gen.intrinsics
    assert (intr.width, intr.height) == (W, H)
    assert frame.color is not None and frame.color.dtype == np.uint8 and frame.color.shape == (H, W, 3)
    diff = np.abs(frame.color.astype(int) - gen.color[i].astype(int))
    assert diff.max() <= gen.color_tol
    if gen.poses[i] is None:
        assert frame.gt_pose is None
    else:
        assert frame.gt_pose is not None and frame.gt_pose.dtype == np.float64
        np.testing.assert_allclose(frame.gt_pose, gen.poses[i], rtol=0, atol=1e-12)
        np.testing.assert_allclose(frame.gt_pose, true_pose(i), rtol=0, atol=1e-9)
    assert frame.source_name == str(gen.depth_files[i])


# ----------------------------------------------------------------------------------------------------
# every driver
# ----------------------------------------------------------------------------------------------------


def test_registry_knows_the_sequence_drivers() -> None:
    assert {"7scenes", "tum", "replica"} <= set(available_sources())
    assert source_class("7scenes") is SevenScenesSource
    assert source_class("tum") is TUMSource
    assert source_class("replica") is ReplicaSource


def test_reads_every_frame_exactly(seq: Generated) -> None:
    with seq.open() as source:
        assert len(source) == N
        frames = list(source)
    assert source.frames_skipped == 0 and source.skipped == []
    assert len(frames) == N
    for i, frame in enumerate(frames):
        check_frame(frame, seq, i)


def test_iterating_twice_gives_the_same_frames(seq: Generated) -> None:
    source = seq.open()
    a, b = list(source), list(source)
    assert [f.index for f in a] == [f.index for f in b]
    for fa, fb in zip(a, b, strict=True):
        np.testing.assert_array_equal(fa.depth, fb.depth)


@pytest.mark.parametrize(
    ("first", "last", "stride", "expected"),
    [
        (0, None, 1, [0, 1, 2, 3, 4]),
        (1, 3, 2, [1, 3]),
        (2, None, 1, [2, 3, 4]),
        (0, 2, 1, [0, 1, 2]),
        (0, None, 3, [0, 3]),
        (3, 100, 1, [3, 4]),
        (7, None, 1, []),
    ],
)
def test_first_last_stride(
    seq: Generated, first: int, last: int | None, stride: int, expected: list[int]
) -> None:
    source = seq.open(first=first, last=last, stride=stride)
    assert len(source) == len(expected)
    frames = list(source)
    assert [f.index for f in frames] == [seq.index[i] for i in expected]
    for i, frame in zip(expected, frames, strict=True):
        check_frame(frame, seq, i)


def test_positional_selection_matches_keywords(seq: Generated) -> None:
    cls = source_class(seq.name)
    source = cls(seq.root, 1, 3, 2, **seq.options)
    assert [f.index for f in source] == [seq.index[1], seq.index[3]]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"first": -1}, "first"), ({"first": 3, "last": 2}, "last"), ({"stride": 0}, "stride")],
)
def test_bad_selection_is_a_source_error(seq: Generated, kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(SourceError, match=message):
        seq.open(**kwargs)


def test_open_source_by_name(seq: Generated) -> None:
    source = open_source(seq.name, seq.root, **seq.options)
    assert type(source) is source_class(seq.name)
    assert source.name == seq.name and source.sensor == "rgbd" and not source.live
    assert source.length() == N


def test_open_source_passes_path_as_str(seq: Generated) -> None:
    assert len(open_source(seq.name, str(seq.root), **seq.options)) == N


def test_unknown_option_is_a_source_error(seq: Generated) -> None:
    with pytest.raises(SourceError, match=seq.name):
        open_source(seq.name, seq.root, no_such_option=1)


def test_load_color_false(seq: Generated) -> None:
    frames = list(seq.open(load_color=False))
    assert len(frames) == N and all(f.color is None for f in frames)


@pytest.mark.parametrize("name", ["7scenes", "tum", "replica"])
def test_missing_folder_names_the_path(tmp_path: Path, name: str) -> None:
    missing = tmp_path / "no-such-sequence"
    with pytest.raises(SourceError, match=str(missing)):
        open_source(name, missing)


@pytest.mark.parametrize("name", ["7scenes", "tum", "replica"])
def test_path_that_is_a_file_is_a_source_error(tmp_path: Path, name: str) -> None:
    file = tmp_path / "a-file"
    file.write_text("x")
    with pytest.raises(SourceError, match="not a folder"):
        open_source(name, file)


@pytest.mark.parametrize("name", ["7scenes", "tum", "replica"])
def test_empty_folder_is_a_source_error(tmp_path: Path, name: str) -> None:
    with pytest.raises(SourceError):
        open_source(name, tmp_path)


def test_truncated_depth_png_is_skipped(seq: Generated) -> None:
    truncate(seq.depth_files[2])
    source = seq.open()
    frames = list(source)
    assert source.frames_skipped == 1
    assert source.skipped[0][0] == str(seq.depth_files[2])
    assert str(seq.depth_files[2]) in source.skipped[0][1]
    assert [f.index for f in frames] == [seq.index[i] for i in (0, 1, 3, 4)]
    for i, frame in zip((0, 1, 3, 4), frames, strict=True):
        check_frame(frame, seq, i)


def test_wrong_size_depth_is_skipped(seq: Generated) -> None:
    write_png16(seq.depth_files[2], quantise(true_depth(2, W // 2, H // 2), seq.scale))
    source = seq.open()
    frames = list(source)
    assert source.frames_skipped == 1
    which, why = source.skipped[0]
    assert which == str(seq.depth_files[2])
    assert str(seq.depth_files[2]) in why and "32x24" in why
    assert [f.index for f in frames] == [seq.index[i] for i in (0, 1, 3, 4)]


def test_not_a_png_is_skipped(seq: Generated) -> None:
    seq.depth_files[4].write_bytes(b"this is not an image")
    source = seq.open()
    assert len(list(source)) == N - 1 and source.frames_skipped == 1


def test_colour_depth_size_mismatch_is_skipped(seq: Generated) -> None:
    color_file = seq.color_files[1]
    small = np.zeros((H // 2, W // 2, 3), np.uint8)
    Image.fromarray(small).save(color_file, format="PNG" if color_file.suffix == ".png" else "JPEG")
    source = seq.open()
    frames = list(source)
    assert source.frames_skipped == 1 and len(frames) == N - 1
    assert source.skipped[0][0] == str(seq.depth_files[1]) and str(color_file) in source.skipped[0][1]


# ----------------------------------------------------------------------------------------------------
# poses with NaN
# ----------------------------------------------------------------------------------------------------


def test_sevenscenes_nan_pose_skips_that_frame(sevenscenes_seq: Generated) -> None:
    pose_file = sevenscenes_seq.root / "frame-000003.pose.txt"
    pose = true_pose(3)
    pose[1, 2] = np.nan
    np.savetxt(pose_file, pose)
    source = sevenscenes_seq.open()
    frames = list(source)
    assert source.frames_skipped == 1 and str(pose_file) in source.skipped[0][1]
    assert [f.index for f in frames] == [0, 1, 2, 4]


@pytest.mark.parametrize("name", ["tum", "replica"])
def test_nan_pose_is_a_source_error_naming_file_and_line(tmp_path: Path, name: str) -> None:
    gen = MAKERS[name](tmp_path / "seq")
    assert gen.pose_lines is not None
    path, line = gen.pose_lines[3]
    lines = path.read_text().splitlines()
    fields = lines[line - 1].split()
    fields[2] = "nan"
    lines[line - 1] = " ".join(fields)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SourceError, match=f"{path}:{line}"):
        gen.open()


# ----------------------------------------------------------------------------------------------------
# 7-Scenes
# ----------------------------------------------------------------------------------------------------


def test_sevenscenes_default_intrinsics_without_file(sevenscenes_seq: Generated) -> None:
    (sevenscenes_seq.root / "camera-intrinsics.txt").unlink()
    frame = next(iter(sevenscenes_seq.open()))
    intr = frame.intrinsics
    assert (intr.fx, intr.fy, intr.cx, intr.cy) == (585.0, 585.0, 320.0, 240.0)


def test_sevenscenes_bad_intrinsics_file(sevenscenes_seq: Generated) -> None:
    k_file = sevenscenes_seq.root / "camera-intrinsics.txt"
    k_file.write_text("1 2 3\n4 5 6\n")
    with pytest.raises(SourceError, match=str(k_file)):
        sevenscenes_seq.open()
    np.savetxt(k_file, np.diag([0.0, 0.0, 1.0]))
    with pytest.raises(SourceError, match="focal"):
        sevenscenes_seq.open()


def test_sevenscenes_missing_pose_gives_none(sevenscenes_seq: Generated) -> None:
    (sevenscenes_seq.root / "frame-000001.pose.txt").unlink()
    frames = list(sevenscenes_seq.open())
    assert len(frames) == N and frames[1].gt_pose is None and frames[2].gt_pose is not None


def test_sevenscenes_fps(sevenscenes_seq: Generated) -> None:
    frames = list(sevenscenes_seq.open(fps=10.0))
    assert [f.timestamp for f in frames] == pytest.approx([i / 10.0 for i in range(N)])


# ----------------------------------------------------------------------------------------------------
# TUM RGB-D
# ----------------------------------------------------------------------------------------------------


def test_tum_drops_and_counts_unassociated_depth(tum_seq: Generated) -> None:
    source = tum_seq.open()
    assert source.frames_unassociated == 1 and len(source.unassociated) == 1
    assert source.unassociated[0] == tum_seq.extra["depth_lines"][3].split()[1]
    assert len(source) == N
    assert source.frames_skipped == 0  # dropped at association, not skipped at decoding


def test_tum_max_difference_is_configurable(tum_seq: Generated) -> None:
    source = tum_seq.open(max_difference=0.06)
    assert source.frames_unassociated == 0 and len(source) == N + 1
    frames = list(source)
    extra = frames[3]
    assert extra.timestamp == pytest.approx(TUM_T0 + 2 * TUM_DT + 0.05, abs=1e-6)
    np.testing.assert_array_equal(extra.depth, decoded(quantise(true_depth(9), 5000.0), 5000.0))
    # its nearest colour image is frame 2's (46 ms before it; frame 3's is 54 ms after)
    np.testing.assert_array_equal(extra.color, true_color(2))
    assert [f.index for f in frames] == list(range(N + 1))


def test_tum_gt_max_difference_is_configurable(tum_seq: Generated) -> None:
    frames = list(tum_seq.open(gt_max_difference=0.001))
    assert all(f.gt_pose is None for f in frames)
    frames = list(tum_seq.open(gt_max_difference=0.051))
    assert frames[-1].gt_pose is not None  # the pose 50 ms after the last frame now counts


def test_tum_depth_scale_is_configurable(tum_seq: Generated) -> None:
    frame = next(iter(tum_seq.open(depth_scale=1000.0)))
    np.testing.assert_array_equal(frame.depth, decoded(tum_seq.raw_depth[0], 1000.0))


def test_tum_timestamps_are_depth_timestamps(tum_seq: Generated) -> None:
    stamps = [f.timestamp for f in tum_seq.open()]
    assert stamps == [float(line.split()[0]) for k, line in enumerate(tum_seq.extra["depth_lines"]) if k != 3]


@pytest.mark.parametrize(
    ("folder", "expected"),
    [
        ("rgbd_dataset_freiburg1_xyz", (517.3, 516.5, 318.6, 255.3)),
        ("rgbd_dataset_freiburg2_desk", (520.9, 521.0, 325.1, 249.7)),
        ("rgbd_dataset_freiburg3_long_office_household", (535.4, 539.2, 320.1, 247.6)),
    ],
)
def test_tum_intrinsics_from_folder_name(tmp_path: Path, folder: str, expected: tuple[float, ...]) -> None:
    make_tum(tmp_path / folder)
    frame = next(iter(TUMSource(tmp_path / folder)))
    intr = frame.intrinsics
    assert (intr.fx, intr.fy, intr.cx, intr.cy) == expected and (intr.width, intr.height) == (W, H)


def test_tum_intrinsics_fallback_warns(tum_seq: Generated, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="drivers.tum"):
        source = TUMSource(tum_seq.root)
    assert "ROS default" in caplog.text
    intr = next(iter(source)).intrinsics
    assert (intr.fx, intr.fy, intr.cx, intr.cy) == ROS_DEFAULT_INTRINSICS


def test_tum_bad_intrinsics_argument(tum_seq: Generated) -> None:
    with pytest.raises(SourceError, match="intrinsics"):
        tum_seq.open(intrinsics=(1.0, 2.0, 3.0))
    with pytest.raises(SourceError, match="focal"):
        tum_seq.open(intrinsics=(0.0, 2.0, 3.0, 4.0))


def test_tum_missing_depth_txt(tum_seq: Generated) -> None:
    (tum_seq.root / "depth.txt").unlink()
    with pytest.raises(SourceError, match=str(tum_seq.root / "depth.txt")):
        tum_seq.open()


def test_tum_without_rgb_txt_keeps_every_depth_frame(tum_seq: Generated) -> None:
    (tum_seq.root / "rgb.txt").unlink()
    source = tum_seq.open()
    frames = list(source)
    assert len(frames) == N + 1 and source.frames_unassociated == 0
    assert all(f.color is None for f in frames)


def test_tum_without_groundtruth(tum_seq: Generated) -> None:
    (tum_seq.root / "groundtruth.txt").unlink()
    frames = list(tum_seq.open())
    assert len(frames) == N and all(f.gt_pose is None for f in frames)


def test_tum_missing_colour_image_skips_the_frame(tum_seq: Generated) -> None:
    rgb = tum_seq.color_files[1]
    rgb.unlink()
    source = tum_seq.open()
    assert len(list(source)) == N - 1 and source.frames_skipped == 1 and str(rgb) in source.skipped[0][1]


@pytest.mark.parametrize("which", ["rgb.txt", "depth.txt", "groundtruth.txt"])
def test_tum_unsorted_timestamps(tum_seq: Generated, which: str) -> None:
    path = tum_seq.root / which
    lines = path.read_text().splitlines()
    lines[3 + 2], lines[3 + 3] = lines[3 + 3], lines[3 + 2]  # swap the 3rd and 4th entries
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SourceError, match=f"{path}: not sorted by time at line 7"):
        tum_seq.open()


@pytest.mark.parametrize(
    ("which", "bad_line"),
    [
        ("rgb.txt", "1305031102.3 rgb/a.png extra"),
        ("rgb.txt", "1305031102.3"),
        ("depth.txt", "abc depth/a.png"),
        ("depth.txt", "nan depth/a.png"),
        ("groundtruth.txt", "1305031102.3 1 2 3 0 0 0"),
        ("groundtruth.txt", "1305031102.3 1 2 x 0 0 0 1"),
        ("groundtruth.txt", "1305031102.3 1 2 3 0 0 0 0"),
    ],
)
def test_tum_malformed_line_names_file_and_line(tum_seq: Generated, which: str, bad_line: str) -> None:
    path = tum_seq.root / which
    lines = path.read_text().splitlines()
    lines[3 + 2] = bad_line
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SourceError, match=f"{path}:6"):
        tum_seq.open()


def test_tum_blank_lines_and_comments_are_ignored(tum_seq: Generated) -> None:
    path = tum_seq.root / "depth.txt"
    lines = path.read_text().splitlines()
    lines.insert(5, "")
    lines.insert(6, "  # a comment in the middle")
    path.write_text("\r\n".join(lines) + "\r\n")
    assert len(list(tum_seq.open())) == N


def test_tum_depth_txt_without_frames(tum_seq: Generated) -> None:
    (tum_seq.root / "depth.txt").write_text("# nothing here\n")
    with pytest.raises(SourceError, match="depth.txt"):
        tum_seq.open()


def test_tum_no_frame_associated(tum_seq: Generated) -> None:
    with pytest.raises(SourceError, match="colour image within"):
        tum_seq.open(max_difference=0.0)


# ----------------------------------------------------------------------------------------------------
# Replica
# ----------------------------------------------------------------------------------------------------


def test_replica_default_intrinsics(replica_seq: Generated, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="drivers.replica"):
        frame = next(iter(ReplicaSource(replica_seq.root)))
    intr = frame.intrinsics
    assert (intr.fx, intr.fy, intr.cx, intr.cy) == (600.0, 600.0, 599.5, 339.5)
    assert "1200x680" in caplog.text  # the generated images are 64x48, not Replica's size


def test_replica_timestamps_are_index_over_fps(replica_seq: Generated) -> None:
    frames = list(replica_seq.open(fps=10.0, first=1))
    assert [f.timestamp for f in frames] == pytest.approx([i / 10.0 for i in range(1, N)])


def test_replica_depth_scale_is_configurable(replica_seq: Generated) -> None:
    frame = next(iter(replica_seq.open(depth_scale=1000.0)))
    np.testing.assert_array_equal(frame.depth, decoded(replica_seq.raw_depth[0], 1000.0))


@pytest.mark.parametrize("n_lines", [N - 1, N + 1])
def test_replica_trajectory_length_mismatch(replica_seq: Generated, n_lines: int) -> None:
    path = replica_seq.root / "traj.txt"
    lines = path.read_text().splitlines()
    lines = lines[:n_lines] if n_lines < N else [*lines, lines[-1]]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SourceError, match=f"{path} has {n_lines} poses"):
        replica_seq.open()


def test_replica_missing_depth_image_is_a_trajectory_mismatch(replica_seq: Generated) -> None:
    replica_seq.depth_files[2].unlink()
    with pytest.raises(SourceError, match="4 depth images"):
        replica_seq.open()


@pytest.mark.parametrize(
    "bad", ["1 2 3", " ".join(["1"] * 17), " ".join(["1"] * 15 + ["x"]), " ".join(["inf"] * 16)]
)
def test_replica_bad_trajectory_line(replica_seq: Generated, bad: str) -> None:
    path = replica_seq.root / "traj.txt"
    lines = path.read_text().splitlines()
    lines[3] = bad
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SourceError, match=f"{path}:4"):
        replica_seq.open()


def test_replica_missing_trajectory(replica_seq: Generated) -> None:
    (replica_seq.root / "traj.txt").unlink()
    with pytest.raises(SourceError, match="traj.txt"):
        replica_seq.open()


def test_replica_missing_results_folder(tmp_path: Path) -> None:
    (tmp_path / "traj.txt").write_text("")
    with pytest.raises(SourceError, match=str(tmp_path / "results")):
        ReplicaSource(tmp_path)


def test_replica_missing_colour_skips_the_frame(replica_seq: Generated) -> None:
    color = replica_seq.color_files[2]
    color.unlink()
    source = replica_seq.open()
    assert len(list(source)) == N - 1 and source.frames_skipped == 1 and str(color) in source.skipped[0][1]


# ----------------------------------------------------------------------------------------------------
# the real 7-Scenes recording
# ----------------------------------------------------------------------------------------------------


@pytest.mark.shared_data
@pytest.mark.slow
def test_redkitchen_every_frame(redkitchen: Path) -> None:
    source = SevenScenesSource(redkitchen, load_color=False)
    assert len(source) == 600
    valid = total = 0
    medians = []
    count = 0
    for i, frame in enumerate(source):
        assert frame.index == i
        assert frame.timestamp == pytest.approx(i / 30.0)
        assert frame.depth.dtype == np.float32 and frame.depth.shape == (480, 640)
        assert frame.color is None and frame.gt_pose is not None
        if i % 20 == 0:
            d = frame.depth
            valid += int(np.count_nonzero(d > 0))
            total += d.size
            medians.append(d[d > 0])
            assert d.max() < 5.0  # metres, not millimetres; 65535 mapped to 0
        count += 1
    assert count == 600 and source.frames_skipped == 0
    assert valid / total == pytest.approx(0.89, abs=0.02)
    assert float(np.median(np.concatenate(medians))) == pytest.approx(1.9, abs=0.1)


@pytest.mark.shared_data
def test_redkitchen_first_frame(redkitchen: Path) -> None:
    source = open_source("7scenes", redkitchen)
    frame = next(iter(source))
    intr = frame.intrinsics
    assert (intr.fx, intr.fy, intr.cx, intr.cy, intr.width, intr.height) == (
        585.0,
        585.0,
        320.0,
        240.0,
        640,
        480,
    )
    np.testing.assert_array_equal(frame.gt_pose, np.loadtxt(redkitchen / "frame-000000.pose.txt"))
    assert frame.timestamp == 0.0
    assert frame.color is not None and frame.color.shape == (480, 640, 3) and frame.color.dtype == np.uint8
    assert 20 < frame.color.mean() < 235
    raw = np.array(Image.open(redkitchen / "frame-000000.depth.png")).astype(np.int64)
    expected = np.where((raw == 0) | (raw == 65535), 0.0, raw / 1000.0).astype(np.float32)
    np.testing.assert_array_equal(frame.depth, expected)


@pytest.mark.shared_data
def test_redkitchen_stride(redkitchen: Path) -> None:
    source = SevenScenesSource(redkitchen, first=100, last=400, stride=150, load_color=True)
    assert len(source) == 3
    frames = list(source)
    assert [f.index for f in frames] == [100, 250, 400]
    assert [f.timestamp for f in frames] == pytest.approx([100 / 30, 250 / 30, 400 / 30])
    for f in frames:
        np.testing.assert_array_equal(f.gt_pose, np.loadtxt(redkitchen / f"frame-{f.index:06d}.pose.txt"))
        assert f.color is not None and f.color.shape == (480, 640, 3)
    assert not math.isclose(float(np.abs(frames[0].gt_pose - frames[2].gt_pose).max()), 0.0)
