"""Map state as older versions of the map file format held it (for tests that older files still load)."""

from __future__ import annotations

import torch

from slam.map.voxel_grid import SparseVoxelGrid, pack_keys, unpack_keys


def version_1_grid_state(grid: SparseVoxelGrid) -> dict:
    """``grid``'s state as files of format version 1 held it: int64 rows, and a sorted corner index
    (corner_keys, corner_rows) besides the block tables, rebuilt from the tables."""
    state = grid.state_dict()
    tables = state["block_tables"]
    origins = unpack_keys(state["block_keys"]) * grid.block
    local = (tables >= 0).nonzero()
    keys, first = torch.unique(pack_keys(origins[local[:, 0]] + local[:, 1:]), return_inverse=True)
    rows = torch.empty(keys.numel(), dtype=torch.int64)
    rows[first] = tables[tables >= 0].long()
    return dict(state, block_tables=tables.long(), corner_keys=keys, corner_rows=rows)
