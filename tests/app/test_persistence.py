"""slam.app.persistence: a map file round-trips the SDF exactly, with keyframes and trajectory; writes are
atomic; corrupt, foreign, unsafe or wrong-version files are refused with the file named."""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from map_files import version_1_grid_state
from synthetic import box_room, look_at, map_frame, render_frame

from slam.app import persistence
from slam.app.persistence import MapFileError, capture, load_session, open_map, restore_mapper, save_session
from slam.engine.mapper import Mapper, MapperConfig
from slam.map.neural_map import NeuralMapConfig, NeuralSDFMap

TARGET = np.array([0.6, -0.4, -0.6])


def _pose(s: float) -> np.ndarray:
    return look_at(np.array([-1.3 + 0.3 * s, 0.9 - 0.2 * s, 0.4]), TARGET)


@pytest.fixture(scope="module")
def room():
    return box_room()


@pytest.fixture(scope="module")
def mapped(room):
    """A small map of two frames (with colour, so the colour head and keyframe colours are saved)."""
    torch.manual_seed(0)
    m = NeuralSDFMap(NeuralMapConfig(device="cpu"))
    mapper = Mapper(
        m, MapperConfig(first_frame_iterations=30, iterations=3, rays=512, keyframe_rays=500), seed=0
    )
    poses = []
    for i, s in enumerate((0.0, 1.0)):
        frame = render_frame(room, _pose(s), index=i)
        frame.color = np.full((*frame.depth.shape, 3), 40 * (i + 1), np.uint8)
        map_frame(mapper, frame, frame.gt_pose)
        poses.append(frame.gt_pose)
    assert len(mapper.keyframes) == 2
    return m, mapper, np.array([0.0, 1 / 30]), np.array(poses)


def _random_points(m: NeuralSDFMap, n: int = 4000) -> torch.Tensor:
    """Points around the allocated blocks (inside and just outside), where the map answers."""
    origins = m.allocated_blocks(0)
    gen = torch.Generator().manual_seed(1)
    pick = torch.randint(0, origins.shape[0], (n,), generator=gen)
    extent = m.grids[0].block * m.grids[0].voxel_size
    return origins[pick] + torch.rand(n, 3, generator=gen) * extent * 1.2 - 0.1 * extent


def test_save_load_gives_identical_sdf_keyframes_and_trajectory(mapped, tmp_path: Path) -> None:
    m, mapper, stamps, poses = mapped
    path = save_session(tmp_path / "map.pt", capture(m, mapper, stamps, poses))
    loaded, snap = open_map(path, device="cpu")
    assert loaded is not m and loaded.backend_name == m.backend_name
    pts = _random_points(m)
    a = m.query(pts, gradient=True, color=True, min_hits=5)
    b = loaded.query(pts, gradient=True, color=True, min_hits=5)
    assert a.valid.any() and (~a.valid).any()  # the sample covers fitted and unfitted space
    assert torch.equal(a.sdf, b.sdf) and torch.equal(a.valid, b.valid)
    assert torch.equal(a.grad, b.grad) and torch.equal(a.color, b.color)
    assert torch.equal(m.hits, loaded.hits)
    assert loaded.map_bytes() == m.map_bytes()
    np.testing.assert_array_equal(snap.timestamps, stamps)
    np.testing.assert_array_equal(snap.poses, poses)
    assert snap.frames_integrated == 2 and len(snap.keyframes) == 2
    for saved, orig in zip(snap.keyframes, mapper.keyframes):
        assert torch.equal(saved.dirs, orig.dirs) and torch.equal(saved.ray_depth, orig.ray_depth)
        assert torch.equal(saved.cos, orig.cos) and torch.equal(saved.color, orig.color)
        np.testing.assert_array_equal(saved.pose, orig.pose)


def test_a_restored_mapper_keeps_mapping(mapped, room, tmp_path: Path) -> None:
    m, mapper, stamps, poses = mapped
    loaded, snap = open_map(
        save_session(tmp_path / "map.pt", capture(m, mapper, stamps, poses)), device="cpu"
    )
    again = Mapper(loaded, mapper.cfg, seed=1)
    restore_mapper(again, snap)
    before = loaded.grids[0].num_corners
    frame = render_frame(room, _pose(0.5), index=5)
    map_frame(again, frame, frame.gt_pose)  # new space grows the embeddings; the optimizer follows
    assert again.frames_integrated == 3 and loaded.grids[0].num_corners >= before
    assert np.isfinite(again.last_loss["total"])
    mesh = again.extract_mesh()  # the fresh mesher meshes every loaded block
    assert mesh is not None and len(mesh.triangles) > 0


def test_map_without_keyframes_or_trajectory(tmp_path: Path) -> None:
    empty = NeuralSDFMap(NeuralMapConfig(device="cpu", color=False))
    path = save_session(tmp_path / "empty.pt", capture(empty, None, [], []))
    loaded, snap = open_map(path, device="cpu")
    assert snap.keyframes == [] and snap.timestamps.shape == (0,) and snap.poses.shape == (0, 4, 4)
    assert loaded.grids[0].num_corners == 0 and loaded.color_head is None


def test_failed_write_keeps_the_previous_file(mapped, tmp_path: Path, monkeypatch) -> None:
    m, mapper, stamps, poses = mapped
    path = save_session(tmp_path / "map.pt", capture(m, mapper, stamps, poses))
    good = path.read_bytes()

    def broken_save(obj, f):
        Path(f).write_bytes(good[:1000])  # half a file, then the disk fills up
        raise OSError("No space left on device")

    monkeypatch.setattr(persistence.torch, "save", broken_save)
    with pytest.raises(OSError, match="No space"):
        save_session(path, capture(m, mapper, stamps, poses))
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.pt"]  # no temporary left behind


def test_truncated_file_is_refused(mapped, tmp_path: Path) -> None:
    m, mapper, stamps, poses = mapped
    path = save_session(tmp_path / "map.pt", capture(m, mapper, stamps, poses))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(MapFileError, match=r"map\.pt: not a readable map file"):
        load_session(path)


def test_missing_and_foreign_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(MapFileError, match=r"nope\.pt: no such map file"):
        load_session(tmp_path / "nope.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "model.pt")
    with pytest.raises(MapFileError, match=r"model\.pt: not a neural-slam-map file"):
        load_session(tmp_path / "model.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(MapFileError, match=r"text\.pt: not a readable map file"):
        load_session(tmp_path / "text.pt")


class _Exploit:
    def __reduce__(self):
        return (Path("/tmp").joinpath, ("pwned",))


def test_pickled_objects_are_never_loaded(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"manifest": "{}", "tensors": {}, "payload": _Exploit()}, path)
    with zipfile.ZipFile(path) as zf:  # the object really is in the file's pickle
        assert any(b"joinpath" in zf.read(n) for n in zf.namelist() if n.endswith(".pkl"))
    with pytest.raises(MapFileError, match=r"evil\.pt: not a readable map file \(UnpicklingError"):
        load_session(path)
    assert pickle.loads(pickle.dumps(_Exploit())) == Path("/tmp/pwned")  # what it would have run


def _rewrite_manifest(path: Path, **changes) -> None:
    raw = torch.load(path, weights_only=True)
    head = json.loads(raw["manifest"])
    head.update(changes)
    raw["manifest"] = json.dumps(head)
    torch.save(raw, path)


def test_wrong_version_and_malformed_manifest(mapped, tmp_path: Path) -> None:
    m, mapper, stamps, poses = mapped
    path = save_session(tmp_path / "map.pt", capture(m, mapper, stamps, poses))
    _rewrite_manifest(path, version=99)
    with pytest.raises(
        MapFileError,
        match=r"map\.pt: map format version 99 is not supported \(this build reads versions 1, 2\)",
    ):
        load_session(path)
    _rewrite_manifest(path, version=1, keyframes="two")
    with pytest.raises(MapFileError, match=r"map\.pt: malformed manifest: keyframes: "):
        load_session(path)


def test_missing_tensor_is_named(mapped, tmp_path: Path) -> None:
    m, mapper, stamps, poses = mapped
    path = save_session(tmp_path / "map.pt", capture(m, mapper, stamps, poses))
    raw = torch.load(path, weights_only=True)
    del raw["tensors"]["map.grids.1.block_tables"]
    torch.save(raw, path)
    with pytest.raises(MapFileError, match=r"tensor 'map\.grids\.1\.block_tables' is missing"):
        load_session(path)


def test_version_1_files_with_a_corner_index_still_load(mapped, tmp_path: Path) -> None:
    """Files written before the corner index was dropped (format 1: int64 rows, corner_keys and
    corner_rows per grid) load to the same SDF, and allocate new space onto the same corner rows."""
    m, mapper, stamps, poses = mapped
    new_path = save_session(tmp_path / "new.pt", capture(m, mapper, stamps, poses))
    raw = torch.load(new_path, weights_only=True)
    for i, grid in enumerate(m.grids):
        old = version_1_grid_state(grid)
        for name in ("block_tables", "corner_keys", "corner_rows"):
            raw["tensors"][f"map.grids.{i}.{name}"] = old[name]
    raw["manifest"] = json.dumps(dict(json.loads(raw["manifest"]), version=1))
    torch.save(raw, tmp_path / "old.pt")
    old_map, _ = open_map(tmp_path / "old.pt", device="cpu")
    new_map, _ = open_map(new_path, device="cpu")
    pts = _random_points(m)
    a = m.query(pts, gradient=True, min_hits=5)
    b = old_map.query(pts, gradient=True, min_hits=5)
    assert a.valid.any() and torch.equal(a.sdf, b.sdf) and torch.equal(a.grad, b.grad)
    # space next to the mapped space, partly sharing its corners
    more = pts[:200] + torch.tensor([0.3, 0.0, 0.0])
    added = old_map.allocate(more)
    assert added > 0 and new_map.allocate(more) == added
    for old_grid, new_grid in zip(old_map.grids, new_map.grids):
        voxels = old_grid.voxels_of(torch.cat([pts, more]))
        assert torch.equal(old_grid.voxel_corner_rows(voxels), new_grid.voxel_corner_rows(voxels))


def test_inconsistent_tables_fail_to_load(mapped, tmp_path: Path) -> None:
    m, mapper, stamps, poses = mapped
    path = save_session(tmp_path / "map.pt", capture(m, mapper, stamps, poses))
    raw = torch.load(path, weights_only=True)
    raw["tensors"]["map.params.embeddings.0"] = raw["tensors"]["map.params.embeddings.0"][:10]
    torch.save(raw, path)
    with pytest.raises(MapFileError, match=r"map\.pt: the map does not load"):
        open_map(path, device="cpu")


def test_outputs_get_ordinary_file_permissions(tmp_path: Path) -> None:
    import os
    import stat

    from slam.app.persistence import write_text_atomic

    write_text_atomic(tmp_path / "stats.json", "{}\n")
    mask = os.umask(0)
    os.umask(mask)
    mode = stat.S_IMODE((tmp_path / "stats.json").stat().st_mode)
    assert mode == 0o666 & ~mask  # not mkstemp's private 0600
