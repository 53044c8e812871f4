"""slam.map.voxel_grid: key packing, corner lookup, trilinear weights, unbounded allocation and the sharing of
corner rows between neighbouring blocks (which makes the interpolated field continuous across them)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from map_files import version_1_grid_state

from slam.map.neural_map import NeuralMapConfig, NeuralSDFMap
from slam.map.voxel_grid import CORNERS, SparseVoxelGrid, pack_keys, unpack_keys

LIMIT = 1 << 20  # 21 bits per axis: coordinates in [-2^20, 2^20 - 1]
coord = st.integers(min_value=-LIMIT, max_value=LIMIT - 1)
ijk_lists = st.lists(st.tuples(coord, coord, coord), min_size=1, max_size=50)


# -- keys ------------------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None, derandomize=True)
@given(ijk_lists)
def test_pack_unpack_round_trip(rows: list[tuple[int, int, int]]) -> None:
    ijk = torch.tensor(rows, dtype=torch.int64)
    keys = pack_keys(ijk)
    assert keys.dtype == torch.int64
    assert torch.equal(unpack_keys(keys), ijk)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(ijk_lists)
def test_keys_are_unique_and_lexicographically_ordered(rows: list[tuple[int, int, int]]) -> None:
    ijk = torch.tensor(rows, dtype=torch.int64)
    keys = pack_keys(ijk).tolist()
    assert len(set(keys)) == len(set(rows))
    # sorting by key sorts by (x, y, z): what searchsorted over sorted keys relies on
    assert [rows[i] for i in np.argsort(keys, kind="stable")] == sorted(rows, key=lambda r: r)


def test_round_trip_extremes_and_negatives() -> None:
    ijk = torch.tensor(
        [[-LIMIT, -LIMIT, -LIMIT], [LIMIT - 1, LIMIT - 1, LIMIT - 1], [-1, 0, 1], [0, -1, 0], [-7, 3, -LIMIT]]
    )
    assert torch.equal(unpack_keys(pack_keys(ijk)), ijk)


# -- locate ----------------------------------------------------------------------------------------
def _random_grid(seed: int = 0, voxel: float = 0.1, block: int = 4):
    """A grid with a random sparse set of allocated voxels around the origin (negative coordinates too)."""
    rng = np.random.default_rng(seed)
    grid = SparseVoxelGrid(voxel, block=block)
    voxels = torch.from_numpy(rng.integers(-10, 10, size=(300, 3)))
    grid.allocate_voxels(voxels)
    allocated = {tuple(v) for v in voxels.tolist()}
    return grid, allocated, rng


def test_locate_rows_are_the_corner_rows_of_the_point_voxel() -> None:
    grid, allocated, rng = _random_grid()
    # points in allocated voxels, and points anywhere in (and beyond) the allocated region
    inside = torch.tensor(sorted(allocated), dtype=torch.float64)
    pts_in = (inside + torch.from_numpy(rng.uniform(0.01, 0.99, size=inside.shape))) * grid.voxel_size
    pts_any = torch.from_numpy(rng.uniform(-1.5, 1.5, size=(4000, 3)))
    pts = torch.cat([pts_in, pts_any]).to(torch.float32)
    rows, weights, found = grid.locate(pts)
    assert (
        rows.shape == (pts.shape[0], 8)
        and weights.shape == (pts.shape[0], 8)
        and found.shape == (pts.shape[0],)
    )

    voxel = torch.floor(pts / grid.voxel_size).to(torch.int64)
    corners = (voxel[:, None, :] + CORNERS[None]).reshape(-1, 3)
    expected = grid.corner_row(corners).reshape(-1, 8)
    is_allocated = torch.tensor([tuple(v) in allocated for v in voxel.tolist()])
    assert bool(is_allocated[: len(pts_in)].all())
    assert bool(is_allocated[len(pts_in) :].any()) and not bool(is_allocated[len(pts_in) :].all())

    # every allocated voxel: all eight rows present and equal to the rows of its corners
    assert bool(found[is_allocated].all())
    assert torch.equal(rows[is_allocated], expected[is_allocated])
    assert bool((rows[is_allocated] >= 0).all())
    # a row that is present is always the right one (never another corner's)
    present = rows >= 0
    assert torch.equal(rows[present], expected[present])
    # a voxel with any corner missing is not found
    assert not bool(found[(expected < 0).any(dim=1)].any())
    # points whose block holds nothing: all -1, not found
    far = torch.tensor([[50.0, 50.0, 50.0], [-50.0, 3.0, 0.0], [0.0, 0.0, -99.0]])
    rows_far, _, found_far = grid.locate(far)
    assert bool((rows_far == -1).all()) and not bool(found_far.any())


def test_found_means_exactly_the_allocated_voxels_when_isolated() -> None:
    # voxels two apart share no corners, so "found" must be exactly membership
    grid = SparseVoxelGrid(0.05, block=8)
    rng = np.random.default_rng(1)
    voxels = torch.from_numpy(rng.integers(-20, 20, size=(200, 3)) * 2)
    grid.allocate_voxels(voxels)
    allocated = {tuple(v) for v in voxels.tolist()}
    pts = torch.from_numpy(rng.uniform(-2.1, 2.1, size=(20000, 3))).to(torch.float32)
    pts = torch.cat([pts, (voxels.to(torch.float32) + 0.5) * 0.05])
    _, _, found = grid.locate(pts)
    voxel = torch.floor(pts / 0.05).to(torch.int64)
    member = torch.tensor([tuple(v) in allocated for v in voxel.tolist()])
    assert int(member.sum()) >= 200
    assert torch.equal(found, member)


def test_empty_grid_locates_nothing() -> None:
    grid = SparseVoxelGrid(0.05)
    rows, weights, found = grid.locate(torch.zeros(5, 3))
    assert bool((rows == -1).all()) and not bool(found.any())
    assert torch.allclose(weights.sum(dim=1), torch.ones(5))
    assert bool((grid.corner_row(torch.zeros(2, 3, dtype=torch.int64)) == -1).all())


def test_weights_are_trilinear_and_sum_to_one() -> None:
    grid, _, rng = _random_grid(seed=2)
    pts = torch.from_numpy(rng.uniform(-3.0, 3.0, size=(5000, 3)))  # float64: exact reference
    _, weights, _ = grid.locate(pts)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(pts.shape[0], dtype=pts.dtype))
    assert bool((weights >= 0).all())
    voxel = torch.floor(pts / grid.voxel_size)
    frac = pts / grid.voxel_size - voxel
    for c in range(8):
        bits = CORNERS[c]
        w = torch.ones(pts.shape[0], dtype=pts.dtype)
        for axis in range(3):
            w = w * (frac[:, axis] if bits[axis] else 1 - frac[:, axis])
        torch.testing.assert_close(weights[:, c], w)
    # linear precision: the weights reproduce the point from its voxel's corner positions
    corner_pos = (voxel[:, None, :] + CORNERS[None].to(pts.dtype)) * grid.voxel_size
    torch.testing.assert_close((weights[..., None] * corner_pos).sum(dim=1), pts)


def test_weights_are_differentiable_in_the_points() -> None:
    grid, _, rng = _random_grid(seed=3)
    pts = torch.from_numpy(rng.uniform(-1.0, 1.0, size=(50, 3))).requires_grad_(True)
    _, weights, _ = grid.locate(pts)
    corner_pos = (torch.floor(pts.detach() / grid.voxel_size)[:, None, :] + CORNERS[None]) * grid.voxel_size
    interp = (weights[..., None] * corner_pos).sum(dim=1)  # == pts, so d/dpts is the identity
    (g,) = torch.autograd.grad(interp[:, 0].sum(), pts)
    torch.testing.assert_close(g, torch.tensor([1.0, 0.0, 0.0], dtype=pts.dtype).expand_as(g))


# -- allocation ------------------------------------------------------------------------------------
def test_allocation_is_idempotent_and_counts_new_corners() -> None:
    grid = SparseVoxelGrid(0.1, block=4)
    assert grid.allocate_voxels(torch.zeros(0, 3, dtype=torch.int64)) == 0
    assert grid.allocate_voxels(torch.tensor([[0, 0, 0]])) == 8
    assert grid.allocate_voxels(torch.tensor([[0, 0, 0], [0, 0, 0]])) == 0
    assert grid.allocate_voxels(torch.tensor([[1, 0, 0]])) == 4  # shares a face
    assert grid.allocate_voxels(torch.tensor([[1, 1, 1]])) == 8 - 2  # shares an edge with (1, 0, 0)
    assert grid.num_corners == 8 + 4 + 6
    assert grid.num_blocks == 1
    # rows are a permutation of 0..num_corners-1 (each corner's row read back from the tables)
    corners = torch.tensor([[x, y, z] for x in range(3) for y in range(3) for z in range(3)])
    rows = grid.corner_row(corners)
    assert sorted(rows[rows >= 0].tolist()) == list(range(grid.num_corners))


def test_far_allocation_needs_no_bound_and_keeps_earlier_rows() -> None:
    voxel = 0.05
    grid = SparseVoxelGrid(voxel, block=8)
    rng = np.random.default_rng(4)
    near_pts = torch.from_numpy(rng.uniform(-1.0, 1.0, size=(2000, 3))).to(torch.float32)
    grid.allocate_voxels(grid.voxels_of(near_pts))
    near_vox = grid.voxels_of(near_pts)
    near_corners = (near_vox[:, None, :] + CORNERS[None]).reshape(-1, 3)
    rows_before = grid.corner_row(near_corners)
    locate_before = grid.locate(near_pts)[0]
    n_before, blocks_before = grid.num_corners, grid.num_blocks
    assert bool((rows_before >= 0).all())

    centre = np.array([1000.0, -500.0, 20.0])
    far_pts = torch.from_numpy(centre + rng.uniform(-0.5, 0.5, size=(2000, 3))).to(torch.float32)
    added = grid.allocate_voxels(grid.voxels_of(far_pts))
    assert added > 0 and grid.num_corners == n_before + added
    assert grid.num_blocks > blocks_before
    # earlier corners keep their rows, new corners get new rows
    assert torch.equal(grid.corner_row(near_corners), rows_before)
    assert torch.equal(grid.locate(near_pts)[0], locate_before)
    far_vox = grid.voxels_of(far_pts)
    far_corners = (far_vox[:, None, :] + CORNERS[None]).reshape(-1, 3)
    far_rows = grid.corner_row(far_corners)
    assert bool((far_rows >= n_before).all())
    rows, weights, found = grid.locate(far_pts)
    assert bool(found.all())
    assert torch.equal(rows, far_rows.reshape(-1, 8))
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(far_pts.shape[0]))
    # the block origins are where the points are
    origins = grid.block_origins()
    assert float(origins[:, 0].max()) > 999.0 and float(origins[:, 1].min()) < -500.0


def test_far_allocation_in_the_neural_map() -> None:
    torch.manual_seed(0)
    m = NeuralSDFMap(NeuralMapConfig(voxel_size=0.05, device="cpu", color=False))
    near = torch.rand(500, 3)
    m.allocate(near)
    sdf_near = m.query(near).sdf
    far = torch.tensor([1000.0, -500.0, 20.0]) + torch.rand(500, 3)
    assert not bool(m.query(far).valid.any())
    assert m.allocate(far) > 0
    q_far = m.query(far)
    assert bool(q_far.valid.all()) and bool(torch.isfinite(q_far.sdf).all())
    assert m.embeddings[0].shape[0] == m.grids[0].num_corners
    torch.testing.assert_close(m.query(near).sdf, sdf_near)


# -- neighbouring blocks ---------------------------------------------------------------------------
@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("face", [0, 8, -16])  # block faces (block = 8), incl. negative blocks
def test_corners_on_a_block_face_share_rows(axis: int, face: int) -> None:
    grid = SparseVoxelGrid(0.05, block=8)
    lo = torch.tensor([[3, -2, 5]])
    lo[0, axis] = face - 1  # last voxel of the lower block
    hi = lo.clone()
    hi[0, axis] = face  # first voxel of the upper block
    grid.allocate_voxels(torch.cat([lo, hi]))
    assert grid.num_blocks == 2 and grid.num_corners == 12  # 4 corners shared
    eps = 1e-4
    centre = (lo.to(torch.float64) + 0.5) * grid.voxel_size
    a, b = centre.clone(), centre.clone()
    a[0, axis] = face * grid.voxel_size - eps
    b[0, axis] = face * grid.voxel_size + eps
    rows, _, found = grid.locate(torch.cat([a, b]))
    assert bool(found.all())
    up = CORNERS[:, axis] == 1
    # the upper face of the lower voxel is the lower face of the upper voxel: same four rows
    assert torch.equal(rows[0, up], rows[1, ~up])
    assert set(rows[0].tolist()) != set(rows[1].tolist())


def test_features_are_continuous_across_block_boundaries() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(5)
    # large random embeddings so that a discontinuity could not hide in the noise
    m = NeuralSDFMap(NeuralMapConfig(voxel_size=0.05, device="cpu", color=False, init_std=1.0))
    m.allocate(torch.from_numpy(rng.uniform(-1.0, 1.0, size=(6000, 3))).to(torch.float32), dilate=2)
    side = m.cfg.block * m.cfg.voxel_size  # 0.4 m
    eps = 1e-4
    checked = 0
    for axis in range(3):
        # faces at -0.8, -0.4, 0, 0.4, 0.8: 0 and ±0.8 are coarse-level block faces too (1.6 m blocks)
        for face in (-2, -1, 0, 1, 2):
            p = torch.from_numpy(rng.uniform(-0.9, 0.9, size=(400, 3))).to(torch.float64)
            a, b = p.clone(), p.clone()
            a[:, axis] = face * side - eps
            b[:, axis] = face * side + eps
            with torch.no_grad():
                fa, va = m.features(a.to(torch.float32))
                fb, vb = m.features(b.to(torch.float32))
            both = va & vb
            checked += int(both.sum())
            diff = (fa - fb)[both].abs().max()
            # across 2·eps = 0.2 mm the features move by ~0.01 (embeddings ~1); a wrong row would give O(1)
            assert float(diff) < 0.05, (axis, face, float(diff))
            # the decoded SDF is continuous too
            with torch.no_grad():
                sa, sb = m.decode_sdf(fa[both]), m.decode_sdf(fb[both])
            assert float((sa - sb).abs().max()) < 1e-2
    assert checked > 4000


def test_reallocating_mapped_voxels_is_a_no_op_and_new_ones_still_get_corners():
    grid = SparseVoxelGrid(0.1, block=4)
    first = torch.tensor([[0, 0, 0], [3, 0, 0], [4, 0, 0]])  # the last starts a second block
    added = grid.allocate_voxels(first)
    assert added == grid.num_corners == 8 + 8 + 4  # [3,0,0] and [4,0,0] share a face of 4 corners
    tables = grid.block_tables.clone()
    assert grid.allocate_voxels(first) == 0 and torch.equal(grid.block_tables, tables)
    assert grid._complete(first).all() and not grid._complete(torch.tensor([[1, 0, 0]])).any()
    assert grid.allocate_voxels(torch.tensor([[0, 0, 0], [1, 0, 0]])) == 4  # only the new voxel's far face
    rows, _, found = grid.locate(torch.tensor([[0.15, 0.05, 0.05]]))
    assert found.all() and (rows >= 0).all()


def test_grow_rows_keeps_rows_zeroes_new_ones_and_reuses_its_buffer() -> None:
    from slam.map.voxel_grid import grow_rows

    t = torch.arange(12, dtype=torch.float32).view(4, 3)
    a = grow_rows(t, 6)
    assert a.shape == (6, 3) and torch.equal(a[:4], t) and not a[4:].any()
    a[4:] = 7.0
    b = grow_rows(a, 7)  # room left in a's buffer: no copy
    assert b.data_ptr() == a.data_ptr() and torch.equal(b[:6], a) and not b[6:].any()
    assert grow_rows(b, 3) is b


def test_merge_sorted_equals_a_sort_of_the_concatenation() -> None:
    from slam.map.voxel_grid import merge_sorted

    gen = torch.Generator().manual_seed(0)
    keys = torch.randperm(1000, generator=gen)
    old, new = torch.sort(keys[:600]).values, torch.sort(keys[600:]).values
    merged, source = merge_sorted(old, new)
    assert torch.equal(merged, torch.sort(keys).values)
    assert torch.equal(torch.cat([old, new])[source], merged)
    merged, source = merge_sorted(torch.empty(0, dtype=torch.int64), new)
    assert torch.equal(merged, new) and torch.equal(source, torch.arange(new.numel()))


def test_block_tables_follow_the_sorted_block_keys_after_many_allocations() -> None:
    """Tables live in allocation order; ``block_tables`` (and lookups) follow the sorted keys."""
    grid = SparseVoxelGrid(1.0, block=4)
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        grid.allocate_voxels(torch.randint(-40, 40, (50, 3), generator=gen))
    tables = grid.block_tables
    assert tables.shape[0] == grid.num_blocks
    origins = unpack_keys(grid.block_keys) * grid.block
    for i in range(0, grid.num_blocks, 7):  # a table's allocated entries are its block's corners
        local = (tables[i] >= 0).nonzero()
        if local.numel():
            rows = grid.corner_row(origins[i][None] + local)
            assert torch.equal(rows, tables[i][tables[i] >= 0])


# -- memory ----------------------------------------------------------------------------------------
def test_index_bytes_of_one_voxel_are_int32_rows() -> None:
    """One voxel: one block table of (block + 1)³ int32 rows, its block key (int64) and slot (int64), and
    no per-corner index. Known answer: 729·4 + 8 + 8 bytes."""
    grid = SparseVoxelGrid(0.1, block=8)
    assert grid.allocate_voxels(torch.tensor([[3, -2, 5]])) == 8
    assert grid._tables.dtype == torch.int32
    assert grid.index_bytes() == 9**3 * 4 + 8 + 8
    # lookups still hand out int64 rows (the compiled kernels and F.embedding take them)
    assert grid.voxel_corner_rows(torch.tensor([[3, -2, 5]])).dtype == torch.int64
    assert grid.corner_row(torch.tensor([[3, -2, 5]])).dtype == torch.int64


def test_int64_rows_and_corner_index_of_older_map_files_load() -> None:
    grid = SparseVoxelGrid(0.1, block=4)
    grid.allocate_voxels(torch.tensor([[0, 0, 0], [5, 1, -3], [9, 9, 9]]))
    fresh = SparseVoxelGrid(1.0)
    fresh.load_state_dict(version_1_grid_state(grid))
    assert fresh._tables.dtype == torch.int32
    assert torch.equal(fresh.block_tables, grid.block_tables)
    voxels = torch.tensor([[0, 0, 0], [5, 1, -3], [9, 9, 9], [1, 2, 3]])
    assert torch.equal(fresh.voxel_corner_rows(voxels), grid.voxel_corner_rows(voxels))
    # allocation after loading finds the loaded corners: (1, 0, 0) shares a face of 4 with (0, 0, 0)
    assert fresh.allocate_voxels(torch.tensor([[1, 0, 0]])) == 4
    assert fresh.num_corners == grid.num_corners + 4


def test_corner_rows_are_shared_across_block_faces_edges_and_vertices() -> None:
    """A corner on a block vertex is in the tables of up to 8 blocks: a voxel allocated later in any of
    them finds the row given earlier from another block, so the field stays continuous."""
    grid = SparseVoxelGrid(1.0, block=4)
    assert grid.allocate_voxels(torch.tensor([[3, 3, 3]])) == 8  # its corner (4, 4, 4) is a block vertex
    row = int(grid.corner_row(torch.tensor([[4, 4, 4]]))[0])
    for voxel in [[4, 4, 4], [4, 3, 3], [3, 4, 3], [3, 3, 4], [4, 4, 3], [4, 3, 4], [3, 4, 4]]:
        grid.allocate_voxels(torch.tensor([voxel]))
        rows = grid.voxel_corner_rows(torch.tensor([voxel]))[0]
        # the corner (4, 4, 4) is the voxel's corner (4, 4, 4) - voxel, in x, y, z bit order
        d = torch.tensor([4, 4, 4]) - torch.tensor(voxel)
        assert int(rows[int(d[0]) * 4 + int(d[1]) * 2 + int(d[2])]) == row, voxel
    assert grid.num_blocks == 8
    # 8 voxels around (4, 4, 4): a 2×2×2 cube of voxels has 27 corners
    assert grid.num_corners == 27
