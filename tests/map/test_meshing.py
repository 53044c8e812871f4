"""slam.map.meshing: marching cubes over allocated blocks, incrementally: accuracy on a fitted sphere, pieces
that meet across blocks, re-meshing only dirty blocks, vertex colours, and no surface outside allocated
space."""

from __future__ import annotations

import functools

import numpy as np
import torch

# the fitted sphere is shared with test_neural_map (fitted once per session when both run)
from test_neural_map import VOXEL, band_samples, fit_shape, fitted

from slam.map.meshing import BlockMesher, extract_mesh
from slam.map.neural_map import NeuralMapConfig, NeuralSDFMap
from slam.map.voxel_grid import pack_keys


def block_side(m: NeuralSDFMap) -> float:
    return m.grids[0].block * m.grids[0].voxel_size


def outside_allocated_blocks(m: NeuralSDFMap, vertices: np.ndarray, tol: float = 1e-5) -> np.ndarray:
    """Mask of the vertices that lie in no allocated finest-level block's extent (grown by ``tol``)."""
    side = block_side(m)
    allocated = set(m.grids[0].block_keys.tolist())
    inside = np.zeros(len(vertices), dtype=bool)
    # a vertex on a block face belongs to either block: try both sides of each coordinate
    for sx in (-tol, tol):
        for sy in (-tol, tol):
            for sz in (-tol, tol):
                blocks = np.floor((vertices + np.array([sx, sy, sz])) / side).astype(np.int64)
                keys = pack_keys(torch.from_numpy(blocks)).tolist()
                inside |= np.array([k in allocated for k in keys], dtype=bool)
    return ~inside


# -- accuracy --------------------------------------------------------------------------------------
def test_mesh_of_a_fitted_sphere() -> None:
    m = fitted("sphere")
    mesh = extract_mesh(m)
    v = np.asarray(mesh.vertices)
    assert len(v) > 1000 and len(mesh.triangles) > 2000
    r = np.linalg.norm(v, axis=1)
    assert abs(float(np.median(r)) - 0.5) < 3e-3, float(np.median(r))
    assert float(np.quantile(np.abs(r - 0.5), 0.95)) < 1e-2
    # the whole sphere is there (every octant), and the blocks' pieces meet into one closed surface
    octants = {tuple(s) for s in (np.sign(v) > 0).astype(int).tolist()}
    assert len(octants) == 8
    assert mesh.is_watertight()
    assert len(v) - 3 * len(mesh.triangles) // 2 + len(mesh.triangles) == 2  # Euler characteristic
    assert not mesh.has_vertex_colors()  # no colour head
    # every vertex lies in allocated (valid) space
    assert bool(m.query(torch.from_numpy(v.astype(np.float32))).valid.all())
    assert not outside_allocated_blocks(m, v).any()


# -- incremental updates ---------------------------------------------------------------------------
def test_update_re_meshes_only_dirty_blocks() -> None:
    m = fitted("sphere")
    mesher = BlockMesher(m)
    all_keys = sorted(m.grids[0].block_keys.tolist())
    assert sorted(mesher.update()) == all_keys  # first call: every allocated block
    assert len(mesher.pieces) > 0
    pieces = dict(mesher.pieces)
    verts, faces, _ = mesher.mesh_arrays()

    # nothing changed: nothing re-meshed, the mesh is the same
    assert mesher.update() == []
    assert all(mesher.pieces[k] is p for k, p in pieces.items())

    # a few points: exactly their blocks are re-meshed, the others keep their pieces
    pts = torch.tensor([[0.5, 0.0, 0.0], [0.0, -0.5, 0.0], [0.02, 0.01, 0.5]])
    side = block_side(m)
    expected = set(pack_keys(torch.floor(pts / side).to(torch.int64)).tolist())
    assert expected <= set(all_keys)
    mesher.mark_dirty(pts)
    redone = mesher.update()
    assert set(redone) == expected and len(redone) == len(expected)
    for k, p in pieces.items():
        if k not in expected:
            assert mesher.pieces[k] is p
    # nothing changed in the map, so the re-meshed pieces are identical
    for k in expected & set(pieces):
        np.testing.assert_array_equal(mesher.pieces[k].vertices, pieces[k].vertices)
    verts2, faces2, _ = mesher.mesh_arrays()
    assert verts2.shape == verts.shape and faces2.shape == faces.shape
    assert mesher.update() == []

    # points in space that is not allocated mark nothing that needs meshing
    mesher.mark_dirty(torch.tensor([[5.0, 5.0, 5.0]]))
    assert mesher.update() == []


def test_update_meshes_newly_allocated_blocks_only() -> None:
    torch.manual_seed(0)
    m = NeuralSDFMap(NeuralMapConfig(voxel_size=VOXEL, device="cpu", color=False))
    m.allocate(torch.rand(200, 3) * 0.3)
    mesher = BlockMesher(m)
    first = mesher.update()
    assert sorted(first) == sorted(m.grids[0].block_keys.tolist())
    before = set(m.grids[0].block_keys.tolist())
    m.allocate(torch.rand(200, 3) * 0.3 + torch.tensor([2.0, 0.0, 0.0]))
    new = set(m.grids[0].block_keys.tolist()) - before
    assert new and set(mesher.update()) == new


def test_mesh_changes_where_the_map_changed() -> None:
    # an edit of the map in one block shows up in that block's piece after mark_dirty + update
    m = NeuralSDFMap(fitted("sphere").cfg)
    m.load_state(fitted("sphere").state())  # a copy: the shared map is not edited
    mesher = BlockMesher(m)
    mesher.update()
    p = torch.tensor([[0.5, 0.05, 0.05]])
    key = int(pack_keys(torch.floor(p / block_side(m)).to(torch.int64))[0])
    old = mesher.pieces[key].vertices.copy()
    with torch.no_grad(), m.writing():
        m.sdf_head[-1].bias.add_(0.01)  # the whole field shifts by 1 cm: the sphere shrinks
    mesher.mark_dirty(p)
    assert mesher.update() == [key]
    new = mesher.pieces[key].vertices
    assert np.median(np.linalg.norm(new, axis=1)) < np.median(np.linalg.norm(old, axis=1)) - 5e-3


# -- colour ----------------------------------------------------------------------------------------
def test_vertex_colours_with_a_colour_head() -> None:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    m = NeuralSDFMap(NeuralMapConfig(voxel_size=VOXEL, device="cpu", color=True))
    m.allocate(band_samples("sphere", 20000, gen, width=0.02), dilate=2)
    emb_opt = torch.optim.SparseAdam(list(m.embeddings), lr=1e-2)
    dec_opt = torch.optim.Adam(list(m.sdf_head.parameters()) + list(m.color_head.parameters()), lr=1e-3)
    for _ in range(25):
        x = band_samples("sphere", 2048, gen)
        feats, valid = m.features(x, sparse_grad=True, record_hits=True)
        rgb_target = (x > 0).float()  # colour by octant
        loss = (m.decode_sdf(feats) - (x.norm(dim=1) - 0.5)).abs()[valid].mean()
        loss = loss + (m.decode_color(feats) - rgb_target).abs().mean(dim=1)[valid].mean()
        emb_opt.zero_grad()
        dec_opt.zero_grad()
        loss.backward()
        with m.writing():
            emb_opt.step()
            dec_opt.step()
    mesher = BlockMesher(m)
    mesher.update()
    verts, faces, colors = mesher.mesh_arrays()
    assert len(verts) > 500 and colors is not None and colors.shape == verts.shape
    mesh = mesher.to_open3d()
    assert mesh.has_vertex_colors()
    c = np.asarray(mesh.vertex_colors)
    assert c.shape == np.asarray(mesh.vertices).shape
    assert float(c.min()) >= 0.0 and float(c.max()) <= 1.0
    # the colours are the map's colours at the vertices
    v = np.asarray(mesh.vertices)
    q = m.query(torch.from_numpy(v.astype(np.float32)), color=True)
    np.testing.assert_allclose(c, q.color.numpy(), atol=1e-4)


def test_empty_map_gives_an_empty_mesh() -> None:
    m = NeuralSDFMap(NeuralMapConfig(voxel_size=VOXEL, device="cpu", color=True))
    mesher = BlockMesher(m)
    assert mesher.update() == []
    verts, faces, colors = mesher.mesh_arrays()
    assert verts.shape == (0, 3) and faces.shape == (0, 3) and colors is None
    assert len(mesher.to_open3d().vertices) == 0


# -- no surface outside allocated space ------------------------------------------------------------
@functools.cache
def half_sphere_map(seed: int) -> NeuralSDFMap:
    """Half a sphere (z > 0.1) allocated and fitted, plus a few isolated voxels with random embeddings.

    Unallocated space decodes to arbitrary values (its features are zero, or partial on the rim of the
    allocation), so marching cubes that used those samples would put surface there."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    m = NeuralSDFMap(NeuralMapConfig(voxel_size=VOXEL, device="cpu", color=False, init_std=0.05))
    surface = band_samples("sphere", 20000, gen, width=0.02)
    m.allocate(surface[surface[:, 2] > 0.1], dilate=1)
    m.allocate(torch.rand(30, 3, generator=gen) * 2.0 - 1.0, dilate=0)
    emb_opt = torch.optim.SparseAdam(list(m.embeddings), lr=1e-2)
    dec_opt = torch.optim.Adam(m.sdf_head.parameters(), lr=1e-3)
    for _ in range(30):
        x = band_samples("sphere", 2048, gen)
        feats, valid = m.features(x, sparse_grad=True, record_hits=True)
        loss = (m.decode_sdf(feats) - (x.norm(dim=1) - 0.5)).abs()[valid].mean()
        emb_opt.zero_grad()
        dec_opt.zero_grad()
        loss.backward()
        with m.writing():
            emb_opt.step()
            dec_opt.step()
    return m


def test_no_vertices_outside_allocated_blocks() -> None:
    m = half_sphere_map(0)
    v = np.asarray(extract_mesh(m).vertices)
    assert len(v) > 200
    assert not outside_allocated_blocks(m, v).any()


def test_no_vertices_outside_allocated_voxels() -> None:
    m = half_sphere_map(0)
    v = np.asarray(extract_mesh(m).vertices)
    assert len(v) > 200
    q = m.query(torch.from_numpy(v.astype(np.float32)))
    assert int((~q.valid).sum()) == 0, f"{int((~q.valid).sum())} of {len(v)} vertices in unallocated voxels"


# -- sampling only near the surface ----------------------------------------------------------------
def test_fine_samples_only_near_the_surface_give_the_same_mesh(monkeypatch) -> None:
    """The coarse pass (SDF at voxel corners) skips unfitted voxels and voxels far from the surface: the
    mesh must be the one that sampling every block's whole fine grid gives, from far fewer queries."""
    import slam.map.meshing as meshing

    m = fit_shape("sphere")  # a map of its own: this test allocates more space in it
    # and a shell of allocated but never fitted space about it (as behind surfaces and in free space)
    shell = torch.nn.functional.normalize(
        torch.randn(20000, 3, generator=torch.Generator().manual_seed(5)), dim=1
    )
    m.allocate(0.9 * shell, dilate=2)
    # the map is fitted only ±2.4 voxels about the sphere: a band of 1 voxel (enough for a slope-1
    # field: a fine sample lies within 0.87 voxel of a corner of its voxel) leaves fitted voxels to skip
    monkeypatch.setattr(meshing, "SURFACE_BAND", 1.0)
    counted: list[int] = []
    query = m.query

    def counting_query(points, *args, **kwargs):
        counted.append(points.shape[0])
        return query(points, *args, **kwargs)

    monkeypatch.setattr(m, "query", counting_query)
    mesher = BlockMesher(m)
    mesher.update()
    vertices, faces, _ = mesher.mesh_arrays()
    # reference: every block's whole (2·8 + 1)³ grid sampled and marched
    grid = m.grids[0]
    n = grid.block * mesher.samples_per_voxel + 1
    spacing = grid.voxel_size / mesher.samples_per_voxel
    origins = grid.block_origins()
    blocks = torch.arange(grid.num_blocks)
    q = query(meshing._grid_points(origins, blocks, n, spacing).reshape(-1, 3), min_hits=mesher.min_hits)
    sdf, valid = q.sdf.reshape(-1, n, n, n).numpy(), q.valid.reshape(-1, n, n, n).numpy()
    pieces = [meshing._march(sdf[b], valid[b], origins[b].numpy(), spacing) for b in range(grid.num_blocks)]
    ref_vertices = np.concatenate([p.vertices for p in pieces if p is not None])
    ref_faces = sum(len(p.faces) for p in pieces if p is not None)
    assert len(faces) > 2000 and len(faces) == ref_faces
    np.testing.assert_allclose(np.sort(vertices, axis=0), np.sort(ref_vertices, axis=0), atol=1e-6)
    assert sum(counted) < 0.3 * grid.num_blocks * n**3, (sum(counted), grid.num_blocks * n**3)


def test_a_budgeted_update_leaves_the_rest_for_the_next_and_ends_with_the_same_mesh() -> None:
    """The live service re-meshes for a bounded time per update (a LiDAR scan dirties blocks all around):
    a zero budget re-meshes one batch of blocks per call, the longest waiting first, and the calls together
    give the mesh of one unbounded update."""
    m = fitted("sphere")
    whole = BlockMesher(m)
    whole.update()
    step = BlockMesher(m, batch_points=2 * 9**3)  # two blocks (9³ corners each at block 8) a batch
    n_blocks = len(m.grids[0].block_keys)
    assert n_blocks > 4
    seen: list[int] = []
    calls = 0
    while True:
        done = step.update(budget_s=0.0)
        if not done:
            break
        calls += 1
        assert len(done) == 2 or len(seen) + len(done) == n_blocks
        assert not set(done) & set(seen)
        seen += done
        assert len(step.dirty) == n_blocks - len(seen)
    assert calls == (n_blocks + 1) // 2 and sorted(seen) == sorted(m.grids[0].block_keys.tolist())
    assert step.pieces.keys() == whole.pieces.keys()
    for k, p in whole.pieces.items():
        np.testing.assert_array_equal(step.pieces[k].vertices, p.vertices)


def test_no_query_exceeds_batch_points_and_the_mesh_is_unchanged(monkeypatch) -> None:
    """A chunk's fine samples are queried in parts of at most ``batch_points`` (one query of a whole chunk's
    fine grid raised a LiDAR run's peak memory by half a gigabyte); the mesh is the one unsplit queries give,
    to the last bit of float32 (the decoder's matmuls round differently with the batch's size)."""
    m = fitted("sphere")
    whole = BlockMesher(m, batch_points=10**9)
    whole.update()
    sizes: list[int] = []
    query = m.query

    def counting_query(points, *args, **kwargs):
        sizes.append(points.shape[0])
        return query(points, *args, **kwargs)

    monkeypatch.setattr(m, "query", counting_query)
    limit = 3 * 9**3  # three blocks of coarse corners: a chunk of three blocks has ~7x more fine samples
    split = BlockMesher(m, batch_points=limit)
    split.update()
    assert max(sizes) <= limit and sizes.count(limit) > 1  # the fine grids were split, in full parts
    assert split.pieces.keys() == whole.pieces.keys()
    for k, p in whole.pieces.items():
        np.testing.assert_allclose(split.pieces[k].vertices, p.vertices, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(split.pieces[k].faces, p.faces)


def test_pause_runs_before_each_batch_of_blocks() -> None:
    """The service's mesh updates yield to tracking between batches (``pause``, as the mapper's
    ``before_step``): called once before each batch, and the mesh is the same as without it."""
    m = fitted("sphere")
    whole = BlockMesher(m)
    whole.update()
    calls: list[int] = []
    step = BlockMesher(m, batch_points=2 * 9**3)  # two blocks a batch
    step.pause = lambda: calls.append(len(step.pieces))
    step.update()
    n_blocks = len(m.grids[0].block_keys)
    assert len(calls) == (n_blocks + 1) // 2 > 2
    assert calls == sorted(calls) and calls[0] == 0  # before the first batch, then between batches
    assert step.pieces.keys() == whole.pieces.keys()
