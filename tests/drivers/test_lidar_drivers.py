"""LiDAR drivers (kitti, pointcloud_folder, rosbag) on fixtures written in each exact format with known
points, times and poses; bad input (truncated files, NaN points, empty scans, missing topics) skipped and
counted or rejected with the file named. The last test reads the real scan pair of the shared data."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import open3d as o3d
import pytest
from realdata import require
from scipy.spatial.transform import Rotation

from drivers.base import SequenceSource, SourceError, available_sources, open_source, source_class
from drivers.kitti import KittiSource
from drivers.lidar_io import point_times_seconds
from drivers.pointcloud_folder import PointCloudFolderSource, load_registration_pair
from drivers.rosbag import RosbagSource
from slam.app.config import ConfigError, load_config
from slam.core.geometry import invert_pose, pose_to_tum

N_SCANS = 5


def make_pose(i: int) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3] = Rotation.from_rotvec([0.02 * i, -0.01 * i, 0.3 * i]).as_matrix()
    pose[:3, 3] = [1.5 * i, 0.2 * i, -0.05 * i]
    return pose


def make_points(i: int, n: int = 200) -> np.ndarray:
    """N×4 float32 x y z intensity that differ per scan."""
    rng = np.random.default_rng(i)
    return np.column_stack([rng.uniform(-50, 50, (n + i, 3)), rng.uniform(0, 1, n + i)]).astype(np.float32)


# ------------------------------------------------------------------------------------------------- KITTI

# a non-trivial LiDAR-to-camera transform: KITTI's axis swap and an offset
TR = np.array([[0.0, -1.0, 0.0, 0.05], [0.0, 0.0, -1.0, -0.08], [1.0, 0.0, 0.0, -0.27], [0.0, 0.0, 0.0, 1.0]])
TR[:3, :3] = TR[:3, :3] @ Rotation.from_rotvec([0.01, -0.02, 0.03]).as_matrix()


def write_kitti(root: Path, with_times: bool = True, sidecar: bool = False) -> dict[str, Any]:
    """A KITTI sequence folder with known scans; camera poses are T_cam = Tr · T_lidar · Tr⁻¹."""
    (root / "velodyne").mkdir(parents=True)
    scans = [make_points(i) for i in range(N_SCANS)]
    for i, scan in enumerate(scans):
        scan.astype("<f4").tofile(root / "velodyne" / f"{i:06d}.bin")
    lidar = np.stack([make_pose(i) for i in range(N_SCANS)])
    cam = TR @ lidar @ invert_pose(TR)
    np.savetxt(root / "poses.txt", cam[:, :3, :4].reshape(-1, 12), fmt="%.15e")
    (root / "calib.txt").write_text(
        "P0: " + " ".join(["1"] * 12) + "\nTr: " + " ".join(f"{v:.15e}" for v in TR[:3].ravel()) + "\n"
    )
    stamps = 1000.0 + 0.1037 * np.arange(N_SCANS)
    if with_times:
        np.savetxt(root / "times.txt", stamps, fmt="%.6f")
    times = []
    if sidecar:
        (root / "velodyne_times").mkdir()
        for i, scan in enumerate(scans):
            t = -0.1 + (np.arange(len(scan)) + 1) * 0.1 / len(scan)
            t.astype("<f4").tofile(root / "velodyne_times" / f"{i:06d}.bin")
            times.append(t.astype(np.float32))
    return {"scans": scans, "lidar": lidar, "stamps": stamps, "times": times}


@pytest.fixture
def kitti(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    root = tmp_path / "sequences" / "07"
    return root, write_kitti(root, sidecar=True)


def test_registry_and_config_know_the_lidar_drivers() -> None:
    assert {"kitti", "pointcloud_folder", "rosbag", "lidar_demo"} <= set(available_sources())
    assert source_class("kitti") is KittiSource
    assert source_class("pointcloud_folder") is PointCloudFolderSource
    assert source_class("rosbag") is RosbagSource
    for kind in ("kitti", "pointcloud_folder", "rosbag", "lidar_demo"):
        assert load_config(overrides={"source": {"kind": kind}}).source.kind == kind
    with pytest.raises(ConfigError, match="source.kind"):
        load_config(overrides={"source": {"kind": "velodyne"}})


def test_kitti_reads_points_times_and_lidar_frame_poses(kitti) -> None:
    root, truth = kitti
    source = open_source("kitti", root)
    assert source.sensor == "lidar" and len(source) == N_SCANS
    scans = list(source)
    assert source.frames_skipped == 0 and source.points_dropped == 0
    for i, scan in enumerate(scans):
        assert scan.index == i and scan.timestamp == pytest.approx(truth["stamps"][i], abs=1e-6)
        assert np.array_equal(scan.points, truth["scans"][i][:, :3])
        assert np.array_equal(scan.intensity, truth["scans"][i][:, 3])
        assert np.array_equal(scan.point_times, truth["times"][i])
        assert np.allclose(scan.gt_pose, truth["lidar"][i], atol=1e-9)
        assert scan.source_name.endswith(f"velodyne/{i:06d}.bin")
    # the same world point through both chains: camera pose after Tr, or Tr after the LiDAR pose
    cam = np.loadtxt(root / "poses.txt").reshape(-1, 3, 4)[2]
    p = np.array([3.0, -1.0, 2.0, 1.0])
    assert np.allclose(cam @ (TR @ p), (TR @ scans[2].gt_pose @ p)[:3], atol=1e-9)


def test_kitti_selection_and_point_times_switch(kitti) -> None:
    root, truth = kitti
    scans = list(KittiSource(root, first=1, last=4, stride=2, point_times=False))
    assert [s.index for s in scans] == [1, 3]
    assert all(s.point_times is None for s in scans)
    assert np.allclose(scans[1].gt_pose, truth["lidar"][3], atol=1e-9)


def test_kitti_official_layout_with_poses_folder_and_no_ground_truth(tmp_path: Path) -> None:
    root = tmp_path / "dataset" / "sequences" / "03"
    truth = write_kitti(root)
    (tmp_path / "dataset" / "poses").mkdir()
    (root / "poses.txt").rename(tmp_path / "dataset" / "poses" / "03.txt")
    scans = list(KittiSource(root))
    assert np.allclose(scans[4].gt_pose, truth["lidar"][4], atol=1e-9)
    (tmp_path / "dataset" / "poses" / "03.txt").unlink()
    (root / "calib.txt").unlink()  # without ground truth the calibration is not needed
    assert all(s.gt_pose is None for s in KittiSource(root))


def test_kitti_without_times_uses_ten_hertz(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "00"
    write_kitti(root, with_times=False)
    with caplog.at_level(logging.WARNING):
        scans = list(KittiSource(root))
    assert [s.timestamp for s in scans] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    assert "times.txt" in caplog.text


def test_kitti_truncated_empty_and_nan_scans(kitti, caplog: pytest.LogCaptureFixture) -> None:
    root, truth = kitti
    velodyne = root / "velodyne"
    raw = (velodyne / "000001.bin").read_bytes()
    (velodyne / "000001.bin").write_bytes(raw[:-6])  # truncated mid-point
    (velodyne / "000002.bin").write_bytes(b"")  # empty
    with_nan = truth["scans"][3].copy()
    with_nan[[0, 5, 7], 1] = np.nan
    with_nan[9, 3] = np.inf
    with_nan.astype("<f4").tofile(velodyne / "000003.bin")
    all_nan = np.full((10, 4), np.nan, dtype="<f4")
    all_nan.tofile(velodyne / "000004.bin")
    all_nan[:, :1].tofile(root / "velodyne_times" / "000004.bin")  # matching sidecar: 10 floats

    source = KittiSource(root)
    with caplog.at_level(logging.WARNING):
        scans = list(source)

    assert [s.index for s in scans] == [0, 3]
    assert source.frames_skipped == 3
    reasons = dict(source.skipped)
    assert "not a multiple of 16" in reasons[str(velodyne / "000001.bin")]
    assert "empty" in reasons[str(velodyne / "000002.bin")]
    assert "no finite point" in reasons[str(velodyne / "000004.bin")]
    keep = np.ones(len(with_nan), bool)
    keep[[0, 5, 7, 9]] = False
    assert np.array_equal(scans[1].points, truth["scans"][3][keep, :3])
    assert np.array_equal(scans[1].point_times, truth["times"][3][keep])
    assert source.points_dropped == 4 and scans[1].extra["points_dropped"] == 4
    assert "000003.bin: dropped 4 points" in caplog.text


def test_kitti_sidecar_of_the_wrong_size_skips_the_scan(kitti) -> None:
    root, _ = kitti
    np.zeros(3, dtype="<f4").tofile(root / "velodyne_times" / "000002.bin")
    source = KittiSource(root)
    assert [s.index for s in source] == [0, 1, 3, 4]
    assert "000002.bin" in source.skipped[0][1] and "expected" in source.skipped[0][1]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda r: (r / "calib.txt").unlink(), "calib.txt not found"),
        (lambda r: (r / "calib.txt").write_text("P0: 1 2 3\n"), "no Tr line"),
        (lambda r: (r / "calib.txt").write_text("Tr: 1 2 3\n"), "12 numbers"),
        (lambda r: (r / "calib.txt").write_text("Tr: 1 2 x 4 5 6 7 8 9 10 11 12\n"), "calib.txt:1"),
        (lambda r: (r / "times.txt").write_text("0\n0.1\n0.2\n"), "3 timestamps for 5 scans"),
        (lambda r: (r / "times.txt").write_text("0\n0.1\nnan\n0.3\n0.4\n"), "times.txt:3"),
        (lambda r: (r / "times.txt").write_text("0\n0.2\n0.1\n0.3\n0.4\n"), "must increase"),
        (lambda r: (r / "poses.txt").write_text("1 0 0 0 0 1 0 0 0 0 1 0\n"), "1 poses for 5 scans"),
        (lambda r: (r / "poses.txt").write_text("1 0 0\n"), "poses.txt:1"),
    ],
)
def test_kitti_bad_index_files_fail_at_construction(kitti, damage, message: str) -> None:
    root, _ = kitti
    damage(root)
    with pytest.raises(SourceError, match=message):
        KittiSource(root)


def test_kitti_missing_folders(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        KittiSource(tmp_path / "nope")
    with pytest.raises(SourceError, match="velodyne not found"):
        KittiSource(tmp_path)
    (tmp_path / "velodyne").mkdir()
    with pytest.raises(SourceError, match="no NNNNNN.bin"):
        KittiSource(tmp_path)


# ------------------------------------------------------------------------------------- point-cloud folder


def write_cloud(path: Path, points: np.ndarray, **attributes: np.ndarray) -> None:
    cloud = o3d.t.geometry.PointCloud()
    cloud.point.positions = o3d.core.Tensor(np.ascontiguousarray(points, dtype=np.float32))
    for name, values in attributes.items():
        cloud.point[name] = o3d.core.Tensor(np.ascontiguousarray(values)[:, None])
    assert o3d.t.io.write_point_cloud(str(path), cloud)


@pytest.fixture
def cloud_folder(tmp_path: Path) -> tuple[Path, list[dict[str, np.ndarray]]]:
    """Scans named 1, 2, ..., 10 (natural order differs from text order) in .ply and .pcd."""
    folder = tmp_path / "clouds"
    folder.mkdir()
    truth = []
    for k, number in enumerate([1, 2, 3, 10, 11]):
        data = make_points(k)
        times = np.linspace(0.0, 0.1, len(data), dtype=np.float32)
        ring = (np.arange(len(data)) % 32).astype(np.uint16)
        suffix = ".pcd" if k % 2 else ".ply"
        write_cloud(
            folder / f"scan{number}{suffix}", data[:, :3], intensity=data[:, 3], time=times, ring=ring
        )
        truth.append({"points": data[:, :3], "intensity": data[:, 3], "times": times, "ring": ring})
    (folder / "notes.txt").write_text("not a cloud")
    return folder, truth


def test_pointcloud_folder_reads_scans_in_natural_order(cloud_folder) -> None:
    folder, truth = cloud_folder
    source = open_source("pointcloud_folder", folder, fps=20.0)
    scans = list(source)
    assert [Path(s.source_name).name for s in scans] == [
        "scan1.ply",
        "scan2.pcd",
        "scan3.ply",
        "scan10.pcd",
        "scan11.ply",
    ]
    for k, scan in enumerate(scans):
        assert np.array_equal(scan.points, truth[k]["points"])
        assert np.array_equal(scan.intensity, truth[k]["intensity"])
        assert np.allclose(scan.point_times, truth[k]["times"])
        assert np.array_equal(scan.ring, truth[k]["ring"])
        assert scan.timestamp == pytest.approx(k / 20.0) and scan.gt_pose is None


def test_pointcloud_folder_kitti_poses_and_times_file(cloud_folder, tmp_path: Path) -> None:
    folder, _ = cloud_folder
    poses = np.stack([make_pose(i) for i in range(N_SCANS)])
    np.savetxt(tmp_path / "poses.kitti", poses[:, :3, :4].reshape(-1, 12), fmt="%.15e")
    np.savetxt(tmp_path / "times.txt", 50.0 + 0.1 * np.arange(N_SCANS))
    scans = list(PointCloudFolderSource(folder, poses=tmp_path / "poses.kitti", times=tmp_path / "times.txt"))
    assert [s.timestamp for s in scans] == pytest.approx(50.0 + 0.1 * np.arange(N_SCANS))
    assert all(np.allclose(s.gt_pose, poses[i], atol=1e-12) for i, s in enumerate(scans))


def test_pointcloud_folder_tum_poses_by_timestamp(cloud_folder, tmp_path: Path) -> None:
    folder, _ = cloud_folder
    poses = np.stack([make_pose(i) for i in range(N_SCANS)])
    stamps = 50.0 + 0.1 * np.arange(N_SCANS)
    # ground truth at 100 Hz around the scans, scan 3 missing from it
    rows = []
    for t, pose in zip(stamps, poses):
        if t != stamps[3]:
            rows.append([t + 0.004, *pose_to_tum(pose)[0]])
    np.savetxt(tmp_path / "gt.tum", np.array(rows), fmt="%.9f")
    np.savetxt(tmp_path / "times.txt", stamps)
    scans = list(PointCloudFolderSource(folder, poses=tmp_path / "gt.tum", times=tmp_path / "times.txt"))
    for i, scan in enumerate(scans):
        if i == 3:
            assert scan.gt_pose is None
        else:
            assert np.allclose(scan.gt_pose, poses[i], atol=1e-8)
    # without a times file the TUM file must have one pose per scan and gives the timestamps
    with pytest.raises(SourceError, match="4 poses for 5 scans"):
        PointCloudFolderSource(folder, poses=tmp_path / "gt.tum")


def test_pointcloud_folder_bad_files_are_skipped(cloud_folder) -> None:
    folder, truth = cloud_folder
    # Open3D alone reads this header-only PCD as a cloud of garbage (billions of points) and a truncated
    # binary PLY as zero-filled points: the driver checks headers and sizes first
    (folder / "scan2.pcd").write_bytes(b"# .PCD v0.7\nVERSION 0.7\nFIELDS x y z\n")
    raw = (folder / "scan11.ply").read_bytes()
    (folder / "scan11.ply").write_bytes(raw[: len(raw) - 100])
    raw = (folder / "scan10.pcd").read_bytes()
    (folder / "scan10.pcd").write_bytes(raw[: len(raw) - 7])
    nan = truth[2]["points"].copy()
    nan[:4, 0] = np.nan
    write_cloud(folder / "scan3.ply", nan, intensity=truth[2]["intensity"])
    source = PointCloudFolderSource(folder)
    scans = list(source)
    assert [Path(s.source_name).name for s in scans] == ["scan1.ply", "scan3.ply"]
    assert source.frames_skipped == 3
    reasons = {Path(which).name: why for which, why in source.skipped}
    assert "no DATA line" in reasons["scan2.pcd"]
    assert "truncated" in reasons["scan10.pcd"] and "truncated" in reasons["scan11.ply"]
    assert source.points_dropped == 4 and np.array_equal(scans[1].points, truth[2]["points"][4:])


def test_pointcloud_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no .ply or .pcd"):
        PointCloudFolderSource(tmp_path)
    write_cloud(tmp_path / "a.ply", np.zeros((3, 3)))
    with pytest.raises(SourceError, match="not found"):
        PointCloudFolderSource(tmp_path, poses=tmp_path / "missing.txt")


# --------------------------------------------------------------------------------------------- rosbags


def _typestore(ros1: bool):
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS1_NOETIC if ros1 else Stores.ROS2_HUMBLE)


def pointcloud2(
    ts, stamp: float, layout: np.dtype, rows: np.ndarray, height: int = 1, row_pad: int = 0, big: bool = False
):
    """A PointCloud2 message of the structured array ``rows`` (layout's fields at its offsets)."""
    types = ts.types
    header_cls, time_cls = types["std_msgs/msg/Header"], types["builtin_interfaces/msg/Time"]
    sec = int(stamp)
    time = time_cls(sec=sec, nanosec=int(round((stamp - sec) * 1e9)))
    header = (
        header_cls(seq=0, stamp=time, frame_id="os_lidar")
        if "seq" in header_cls.__dataclass_fields__
        else header_cls(stamp=time, frame_id="os_lidar")
    )
    codes = {"i1": 1, "u1": 2, "i2": 3, "u2": 4, "i4": 5, "u4": 6, "f4": 7, "f8": 8}
    fields = [
        types["sensor_msgs/msg/PointField"](
            name=name, offset=layout.fields[name][1], datatype=codes[layout.fields[name][0].str[1:]], count=1
        )
        for name in layout.names
    ]
    width = len(rows) // height
    data = np.ascontiguousarray(rows.astype(layout.newbyteorder(">") if big else layout)).view(np.uint8)
    data = data.reshape(height, width * layout.itemsize)
    data = np.concatenate([data, np.full((height, row_pad), 0xAB, np.uint8)], axis=1).ravel()
    return types["sensor_msgs/msg/PointCloud2"](
        header=header,
        height=height,
        width=width,
        fields=fields,
        is_bigendian=big,
        point_step=layout.itemsize,
        row_step=width * layout.itemsize + row_pad,
        data=data,
        is_dense=False,
    )


def write_bag(path: Path, kind: str, messages: dict[str, list[tuple[float, Any]]]) -> Path:
    """``kind``: ros1, sqlite3 or mcap; ``messages``: topic -> [(bag time, message)]."""
    ros1 = kind == "ros1"
    ts = _typestore(ros1)
    if ros1:
        from rosbags.rosbag1 import Writer

        writer, serialize = Writer(path), ts.serialize_ros1
    else:
        from rosbags.rosbag2 import StoragePlugin, Writer

        plugin = StoragePlugin.MCAP if kind == "mcap" else StoragePlugin.SQLITE3
        writer, serialize = Writer(path, version=9, storage_plugin=plugin), ts.serialize_cdr
    with writer:
        for topic, items in messages.items():
            msgtype = type(items[0][1]).__msgtype__ if items else "sensor_msgs/msg/PointCloud2"
            conn = writer.add_connection(topic, msgtype, typestore=ts)
            for t, msg in items:
                writer.write(conn, int(t * 1e9), serialize(msg, msgtype))
    return path


VELODYNE = np.dtype(
    {
        "names": ["x", "y", "z", "intensity", "ring", "time"],
        "formats": ["<f4", "<f4", "<f4", "<f4", "<u2", "<f4"],
        "offsets": [0, 4, 8, 16, 20, 24],
        "itemsize": 32,
    }
)
OUSTER = np.dtype(
    {
        "names": ["x", "y", "z", "intensity", "t", "reflectivity", "ring"],
        "formats": ["<f4", "<f4", "<f4", "<f4", "<u4", "<u2", "<u1"],
        "offsets": [0, 4, 8, 16, 20, 24, 26],
        "itemsize": 48,
    }
)
HESAI = np.dtype(
    {
        "names": ["x", "y", "z", "intensity", "timestamp", "ring"],
        "formats": ["<f4", "<f4", "<f4", "<f4", "<f8", "<u2"],
        "offsets": [0, 4, 8, 12, 16, 24],
        "itemsize": 32,
    }
)


def make_rows(layout: np.dtype, i: int, n: int, stamp: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Structured rows in ``layout`` and the values the driver must return (times relative to ``stamp``)."""
    rng = np.random.default_rng(100 + i)
    xyz = rng.uniform(-40, 40, (n, 3)).astype(np.float32)
    rel = np.sort(rng.uniform(0, 0.1, n))
    rows = np.zeros(n, dtype=layout)
    rows["x"], rows["y"], rows["z"] = xyz.T
    rows["intensity"] = rng.uniform(0, 255, n)
    rows["ring"] = np.arange(n) % 16
    if "time" in layout.names:  # Velodyne: float seconds relative to the stamp (here the last packet)
        rows["time"] = rel - 0.1
        times = rows["time"].astype(np.float64)
    elif "t" in layout.names:  # Ouster: uint32 nanoseconds since the stamp (the start of the scan)
        rows["t"] = np.round(rel * 1e9).astype(np.uint32)
        times = rows["t"] * 1e-9
    else:  # Hesai: float64 absolute seconds
        rows["timestamp"] = stamp + rel
        times = rows["timestamp"] - stamp
    return rows, {
        "points": xyz,
        "intensity": rows["intensity"].astype(np.float32),
        "times": times,
        "ring": rows["ring"],
    }


@pytest.mark.parametrize("kind", ["ros1", "sqlite3", "mcap"])
@pytest.mark.parametrize("layout", [VELODYNE, OUSTER, HESAI], ids=["velodyne", "ouster", "hesai"])
def test_rosbag_decodes_pointcloud2_fields(tmp_path: Path, kind: str, layout: np.dtype) -> None:
    ts = _typestore(kind == "ros1")
    stamps = 1_700_000_000.25 + 0.1 * np.arange(3)
    truth, cloud_msgs = [], []
    for i, stamp in enumerate(stamps):
        rows, expected = make_rows(layout, i, 64 + i, stamp)
        truth.append(expected)
        cloud_msgs.append((stamp + 0.01, pointcloud2(ts, stamp, layout, rows)))
    other = pointcloud2(ts, stamps[0], VELODYNE, make_rows(VELODYNE, 9, 10, stamps[0])[0])
    bag = write_bag(
        tmp_path / ("scans.bag" if kind == "ros1" else "scans"),
        kind,
        {"/points": cloud_msgs, "/other": [(stamps[0], other)]},
    )

    source = open_source("rosbag", bag, topic="/points")
    assert source.sensor == "lidar" and len(source) == 3
    scans = list(source)
    assert source.frames_skipped == 0
    for i, scan in enumerate(scans):
        assert scan.index == i and scan.timestamp == pytest.approx(stamps[i], abs=1e-6)
        assert np.array_equal(scan.points, truth[i]["points"])
        assert np.array_equal(scan.intensity, truth[i]["intensity"])
        assert np.allclose(scan.point_times, truth[i]["times"], atol=1e-6)
        assert np.array_equal(scan.ring, truth[i]["ring"])
        assert scan.frame_id == "os_lidar"


def test_rosbag_organised_big_endian_cloud_with_row_padding_and_nans(tmp_path: Path) -> None:
    ts = _typestore(False)
    rows, expected = make_rows(OUSTER, 0, 4 * 16, 10.0)
    rows["x"][[3, 17, 40]] = np.nan  # no return
    msg = pointcloud2(ts, 10.0, OUSTER, rows, height=4, row_pad=12, big=True)
    bag = write_bag(tmp_path / "organised", "sqlite3", {"/os/points": [(10.0, msg)]})
    source = RosbagSource(bag)  # the only PointCloud2 topic is chosen
    scan = next(iter(source))
    keep = np.ones(len(rows), bool)
    keep[[3, 17, 40]] = False
    assert np.array_equal(scan.points, expected["points"][keep])
    assert np.allclose(scan.point_times, expected["times"][keep], atol=1e-6)
    assert source.points_dropped == 3 and scan.extra["points_dropped"] == 3


def test_rosbag_time_unit_and_field_options(tmp_path: Path) -> None:
    ts = _typestore(False)
    layout = np.dtype(
        {
            "names": ["x", "y", "z", "offset_us"],
            "formats": ["<f4"] * 3 + ["<u4"],
            "offsets": [0, 4, 8, 12],
            "itemsize": 16,
        }
    )
    rows = np.zeros(5, layout)
    rows["x"] = np.arange(5)
    rows["offset_us"] = [0, 25_000, 50_000, 75_000, 99_000]
    bag = write_bag(tmp_path / "b", "mcap", {"/p": [(1.0, pointcloud2(ts, 1.0, layout, rows))]})
    scan = next(iter(RosbagSource(bag, time_field="offset_us", time_unit="us")))
    assert scan.point_times.tolist() == pytest.approx([0.0, 0.025, 0.05, 0.075, 0.099])
    assert next(iter(RosbagSource(bag))).point_times is None  # no field with a known time name
    missing = RosbagSource(bag, time_field="nope")
    assert list(missing) == [] and "no time field 'nope'" in missing.skipped[0][1]


def test_rosbag_selection_streams_only_what_is_selected(tmp_path: Path) -> None:
    ts = _typestore(True)
    msgs = [
        (float(i), pointcloud2(ts, float(i), VELODYNE, make_rows(VELODYNE, i, 8, float(i))[0]))
        for i in range(1, 8)
    ]
    bag = write_bag(tmp_path / "s.bag", "ros1", {"/velodyne_points": msgs})
    scans = list(RosbagSource(bag, first=1, last=5, stride=2))
    assert [s.index for s in scans] == [1, 3, 5] and [s.timestamp for s in scans] == pytest.approx(
        [2.0, 4.0, 6.0]
    )


def test_rosbag_missing_topic_lists_the_topics(tmp_path: Path) -> None:
    ts = _typestore(False)
    msg = pointcloud2(ts, 1.0, VELODYNE, make_rows(VELODYNE, 0, 4, 1.0)[0])
    string = ts.types["std_msgs/msg/String"](data="hello")
    bag = write_bag(
        tmp_path / "t",
        "sqlite3",
        {"/a/points": [(1.0, msg)], "/b/points": [(1.0, msg)], "/chatter": [(1.0, string)]},
    )
    with pytest.raises(
        SourceError, match=r"has no topic '/lidar'.*/a/points \(sensor_msgs/msg/PointCloud2\).*/chatter"
    ):
        RosbagSource(bag, topic="/lidar")
    with pytest.raises(SourceError, match="2 PointCloud2 topics; choose one"):
        RosbagSource(bag)
    with pytest.raises(SourceError, match="is std_msgs/msg/String, not sensor_msgs/msg/PointCloud2"):
        RosbagSource(bag, topic="/chatter")


def test_rosbag_corrupt_messages_are_skipped(tmp_path: Path) -> None:
    ts = _typestore(False)
    good = [pointcloud2(ts, float(i), VELODYNE, make_rows(VELODYNE, i, 6, float(i))[0]) for i in range(4)]
    good[1].row_step = 10  # shorter than a row of points
    good[2].data = good[2].data[:-40]  # data shorter than the rows
    bag = write_bag(tmp_path / "c", "mcap", {"/p": [(float(i), m) for i, m in enumerate(good)]})
    source = RosbagSource(bag)
    assert [s.index for s in source] == [0, 3]
    assert source.frames_skipped == 2
    assert "row_step" in source.skipped[0][1] and "message 1" in source.skipped[0][0]
    assert "bytes" in source.skipped[1][1]


def test_rosbag_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        RosbagSource(tmp_path / "x.bag")
    with pytest.raises(SourceError, match="without metadata.yaml"):
        RosbagSource(tmp_path)
    (tmp_path / "junk.bag").write_bytes(b"#ROSBAG V2.0\ngarbage")
    with pytest.raises(SourceError, match="cannot open"):
        RosbagSource(tmp_path / "junk.bag")


@pytest.mark.parametrize(
    ("values", "unit", "stamp", "expected"),
    [
        (np.array([-0.1, 0.0], np.float32), "auto", None, [-0.1, 0.0]),  # float seconds
        (np.array([0, 50_000_000], np.uint32), "auto", None, [0.0, 0.05]),  # integer nanoseconds
        (np.array([1_700_000_000_050_000_000], np.uint64), "auto", 1_700_000_000.0, [0.05]),  # absolute ns
        (np.array([1_700_000_000.02]), "auto", 1_700_000_000.0, [0.02]),  # absolute seconds
        (np.array([10, 20], np.int32), "ms", None, [0.01, 0.02]),
    ],
)
def test_point_time_units(values, unit, stamp, expected) -> None:
    assert point_times_seconds(values, unit, stamp) == pytest.approx(expected, abs=1e-7)


# ------------------------------------------------------------------------------------- the real scan pair


@pytest.mark.shared_data
def test_real_lidar_pair_loads(shared_data: Path) -> None:
    folder = shared_data / "lidar-pair"
    require(folder)
    source, target, transform = load_registration_pair(folder)
    for scan in (source, target):
        assert scan.points.shape[1] == 3 and 50_000 < len(scan.points) < 100_000
        assert np.all(np.isfinite(scan.points)) and scan.intensity is not None
        assert np.linalg.norm(scan.points, axis=1).max() < 200.0
    assert transform.shape == (4, 4) and np.allclose(transform[3], [0, 0, 0, 1])
    assert np.allclose(transform[:3, :3] @ transform[:3, :3].T, np.eye(3), atol=1e-5)
    # the folder also reads as a two-scan sequence
    assert len(PointCloudFolderSource(folder)) == 2
    assert isinstance(PointCloudFolderSource(folder), SequenceSource)
