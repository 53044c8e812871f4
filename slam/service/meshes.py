"""Mesh updates for the publisher: the mapper's ``BlockMesher`` pieces as wire ``MeshBlock``s.

Block ids are the mesher's packed block keys, stable for the life of a map, so a viewer can replace a
block by id; a block whose surface disappeared goes out with no vertices (the wire's "removed").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from slam.map.meshing import BlockMesher, BlockPiece
from slam.transport.wire import MeshBlock

#: SDF samples per mesher query while the service runs: every query holds the map's lock, which the
#: tracker needs for each of its own queries, so big batches (the mesher's default 200k points, most of
#: a second on one core) would stall tracking; a few blocks per query keep each wait to milliseconds
LIVE_QUERY_POINTS = 10_000


def to_mesh_block(key: int, piece: BlockPiece | None) -> MeshBlock:
    if piece is None:
        return MeshBlock(int(key), np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint32), None)
    colors = None
    if piece.colors is not None:
        colors = np.clip(np.rint(piece.colors * 255.0), 0, 255).astype(np.uint8)
    return MeshBlock(int(key), piece.vertices, piece.faces.astype(np.uint32), colors)


def changed_blocks(
    mesher: BlockMesher, budget_s: float | None = None, pause: Callable[[], object] | None = None
) -> list[MeshBlock]:
    """Re-mesh what changed since the last call (for about ``budget_s``, the rest next time; ``pause``
    before each batch of blocks); the re-meshed blocks (removed ones empty)."""
    mesher.batch_points = min(mesher.batch_points, LIVE_QUERY_POINTS)
    mesher.pause = pause
    try:
        keys = mesher.update(budget_s)
    finally:
        mesher.pause = None
    return [to_mesh_block(key, mesher.pieces.get(key)) for key in keys]


def all_blocks(mesher: BlockMesher) -> list[MeshBlock]:
    """Bring the mesh up to date and return every block of it."""
    mesher.batch_points = min(mesher.batch_points, LIVE_QUERY_POINTS)
    mesher.update()
    return [to_mesh_block(key, piece) for key, piece in mesher.pieces.items()]


def whole_mesh_block(mapper: Any) -> list[MeshBlock]:
    """For mappers without a block mesher (the TSDF baseline): the whole mesh as block 0."""
    mesh = mapper.extract_mesh()
    if mesh is None or len(mesh.triangles) == 0:
        return []
    colors = np.asarray(mesh.vertex_colors) if mesh.has_vertex_colors() else None
    return [
        MeshBlock(
            0,
            np.asarray(mesh.vertices, dtype=np.float32),
            np.asarray(mesh.triangles, dtype=np.uint32),
            None if colors is None else np.clip(np.rint(colors * 255.0), 0, 255).astype(np.uint8),
        )
    ]
