"""Meshing: marching cubes over the map's allocated blocks only, incrementally.

Each finest-level block is meshed on its own grid of ``(block·k + 1)³`` SDF samples (``k`` samples per
voxel edge); samples outside allocated space are masked out, so no surface is invented where nothing
was observed. Neighbouring blocks share their boundary samples, so their pieces meet. ``BlockMesher``
keeps each block's piece and re-meshes only the blocks marked dirty since the last extraction (the
mapper marks the blocks its frames touched).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from slam.neural_map import NeuralSDFMap
from slam.voxel_grid import pack_keys


@dataclass
class BlockPiece:
    vertices: np.ndarray  # V×3 float32, world
    faces: np.ndarray  # F×3 int32, local to the piece
    colors: np.ndarray | None  # V×3 float32 in [0, 1]


@dataclass
class BlockMesher:
    neural_map: NeuralSDFMap
    samples_per_voxel: int = 2
    #: mesh only where the mapper fitted samples this often: allocated but unfitted space (the band
    #: behind surfaces, dilation) decodes to an arbitrary SDF whose zero crossings are not surfaces
    min_hits: int = 1
    batch_points: int = 200_000
    pieces: dict[int, BlockPiece] = field(default_factory=dict)
    dirty: set[int] = field(default_factory=set)
    _known: set[int] = field(default_factory=set)

    def mark_dirty(self, world_points: torch.Tensor) -> None:
        """Blocks containing these points changed (the mapper calls this with the surface it fitted)."""
        grid = self.neural_map.grids[0]
        blocks = torch.div(grid.voxels_of(world_points), grid.block, rounding_mode="floor")
        self.dirty.update(torch.unique(pack_keys(blocks)).tolist())

    def update(self) -> list[int]:
        """Re-mesh dirty and newly allocated blocks; returns the keys of the blocks re-meshed."""
        grid = self.neural_map.grids[0]
        keys = grid.block_keys.tolist()
        todo = sorted((set(keys) - self._known) | (self.dirty & set(keys)))
        self._known = set(keys)
        self.dirty.clear()
        if not todo:
            return []
        key_to_pos = {k: i for i, k in enumerate(keys)}
        origins = grid.block_origins()
        todo_pos = torch.tensor([key_to_pos[k] for k in todo], dtype=torch.int64)
        # process blocks in batches of queries
        n = grid.block * self.samples_per_voxel + 1
        per_block = n**3
        step = max(1, self.batch_points // per_block)
        lin = torch.linspace(0.0, grid.block * grid.voxel_size, n)
        local = torch.stack(torch.meshgrid(lin, lin, lin, indexing="ij"), dim=-1).reshape(-1, 3)
        for start in range(0, len(todo), step):
            chunk = todo_pos[start : start + step]
            pts = (origins[chunk][:, None, :] + local[None]).reshape(-1, 3)
            q = self.neural_map.query(pts, min_hits=self.min_hits)
            sdf = q.sdf.reshape(-1, n, n, n).cpu().numpy()
            valid = q.valid.reshape(-1, n, n, n).cpu().numpy()
            for j, pos in enumerate(chunk.tolist()):
                key = keys[pos]
                piece = _march(sdf[j], valid[j], origins[pos].numpy(), grid.voxel_size / self.samples_per_voxel)
                if piece is None:
                    self.pieces.pop(key, None)
                else:
                    self.pieces[key] = piece
        if self.neural_map.color_head is not None:
            self._color([self.pieces[k] for k in todo if k in self.pieces])
        return todo

    def _color(self, pieces: list[BlockPiece]) -> None:
        if not pieces:
            return
        verts = torch.from_numpy(np.concatenate([p.vertices for p in pieces]))
        cols = self.neural_map.query(verts, color=True).color.cpu().numpy()
        at = 0
        for p in pieces:
            p.colors = cols[at : at + len(p.vertices)]
            at += len(p.vertices)

    def mesh_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The whole mesh as (vertices, faces, colours or None), blocks concatenated."""
        pieces = list(self.pieces.values())
        if not pieces:
            return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32), None
        offsets = np.cumsum([0] + [len(p.vertices) for p in pieces[:-1]])
        verts = np.concatenate([p.vertices for p in pieces])
        faces = np.concatenate([p.faces + o for p, o in zip(pieces, offsets)]).astype(np.int32)
        colors = None
        if all(p.colors is not None for p in pieces):
            colors = np.concatenate([p.colors for p in pieces])
        return verts, faces, colors

    def to_open3d(self):
        import open3d as o3d

        verts, faces, colors = self.mesh_arrays()
        mesh = o3d.geometry.TriangleMesh(
            o3d.utility.Vector3dVector(verts.astype(np.float64)), o3d.utility.Vector3iVector(faces)
        )
        if colors is not None:
            mesh.vertex_colors = o3d.utility.Vector3dVector(colors.astype(np.float64))
        mesh.merge_close_vertices(1e-6)  # join the pieces' shared boundary vertices
        return mesh


def _march(sdf: np.ndarray, valid: np.ndarray, origin: np.ndarray, spacing: float) -> BlockPiece | None:
    from skimage.measure import marching_cubes

    if not valid.any() or sdf[valid].min() > 0 or sdf[valid].max() < 0:
        return None
    # skimage tests the mask at one corner of each cube only; require all eight corners valid
    all8 = np.ones(tuple(d - 1 for d in valid.shape), dtype=bool)
    for a in (0, 1):
        for b in (0, 1):
            for c in (0, 1):
                all8 &= valid[a : a + all8.shape[0], b : b + all8.shape[1], c : c + all8.shape[2]]
    mask = np.zeros_like(valid)
    mask[1:, 1:, 1:] = all8
    if not mask.any():
        return None
    try:
        verts, faces, _, _ = marching_cubes(sdf, level=0.0, spacing=(spacing,) * 3, mask=mask)
    except (ValueError, RuntimeError):
        return None
    if len(faces) == 0:
        return None
    return BlockPiece((verts + origin).astype(np.float32), faces.astype(np.int32), None)


def extract_mesh(neural_map: NeuralSDFMap, samples_per_voxel: int = 2, min_hits: int = 1):
    """One-shot full extraction as an ``open3d.geometry.TriangleMesh``."""
    mesher = BlockMesher(neural_map, samples_per_voxel, min_hits)
    mesher.update()
    return mesher.to_open3d()
