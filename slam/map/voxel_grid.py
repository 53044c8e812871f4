"""Sparse voxel grid of corner embeddings with no scene bound, vectorised lookups in torch.

Voxels are grouped in blocks of ``block`` ³ voxels. A sorted tensor of block keys is searched once per
query point (``torch.searchsorted``); each block owns a dense table of its (block + 1)³ corner indices
into one shared embedding matrix, so all eight corners of the voxel a point falls in are read from one
table. Corners on block faces are shared with the neighbour block through the same embedding row, so
the interpolated field is continuous across blocks.

Allocation (new blocks and corners) is the slow path: it runs when the mapper sees new space, not per
query. Its cost must not grow with the map faster than a copy of the sorted key arrays: block tables are
stored in allocation order in a buffer that grows geometrically (the sorted block keys carry each block's
slot in it), and new keys are merged into the sorted arrays by their ``searchsorted`` positions rather than
by sorting everything again. Coordinates are packed into int64 keys: 21 bits per axis, about ±10⁶ voxels.

There is no separate index of corners: a corner's row is found in the table of a block holding a voxel
that has the corner (``corner_row``), since every allocated voxel's eight corners are in its block's table
and a corner shared by several tables has the same row in each. A sorted int64 key and int32 row per
corner cost 12 bytes a corner per level, over a third as much as its 8-channel float32 embedding.

Rows are stored as int32 (block tables, corner rows): a level never holds 2³¹ corners (that would be 64 GiB
of 8-channel float32 embeddings), and the tables, (block + 1)³ entries a block for about (block + 1)³ / 4
corners on a LiDAR drive, were the largest part of the map in int64. Lookups return int64 rows as before.
"""

from __future__ import annotations

import math

import torch

_BITS = 21
_OFFSET = 1 << (_BITS - 1)
_MASK = (1 << _BITS) - 1


def grow_rows(t: torch.Tensor, n: int, growth: float = 1.5) -> torch.Tensor:
    """``t`` with ``n`` ≥ len(t) rows: its rows first, then zeros. Amortised O(new rows): the result is a
    view into a buffer with spare rows; while ``t`` is such a view with room left, its buffer is reused
    (no copy of the existing rows), otherwise the rows move once into a buffer ``growth`` times larger.
    The rows past ``n`` of a reused buffer are not part of the result and may be overwritten later."""
    old = t.shape[0]
    if n <= old:
        return t
    t = t.detach()
    row = math.prod(t.shape[1:])
    capacity = t.untyped_storage().nbytes() // max(row * t.element_size(), 1)
    if t.is_contiguous() and t.storage_offset() == 0 and capacity >= n and row > 0:
        out = t.new_empty(0).set_(t.untyped_storage(), 0, (n, *t.shape[1:]))
    else:
        buffer = t.new_empty((max(n, int(old * growth) + 64), *t.shape[1:]))
        buffer[:old] = t
        out = buffer[:n]
    out[old:].zero_()
    return out


def merge_sorted(keys: torch.Tensor, new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge sorted unique keys ``new`` (none of them in ``keys``) into sorted ``keys``: the merged keys
    and, for each merged entry, where it came from (< len(keys): that old index; else len(keys) + index
    into ``new``). O(len(keys) + len(new)·log): the same result as an argsort of the concatenation."""
    n_old, n_new = keys.numel(), new.numel()
    at_new = torch.searchsorted(keys, new) + torch.arange(n_new, device=keys.device)
    is_new = torch.zeros(n_old + n_new, dtype=torch.bool, device=keys.device)
    is_new[at_new] = True
    source = torch.empty(n_old + n_new, dtype=torch.int64, device=keys.device)
    source[at_new] = torch.arange(n_old, n_old + n_new, device=keys.device)
    source[~is_new] = torch.arange(n_old, device=keys.device)
    return torch.cat([keys, new]).index_select(0, source), source


def pack_keys(ijk: torch.Tensor) -> torch.Tensor:
    """N×3 int64 integer coordinates to N int64 keys (order-preserving in x, then y, then z)."""
    v = ijk.to(torch.int64) + _OFFSET
    return (v[:, 0] << (2 * _BITS)) | (v[:, 1] << _BITS) | v[:, 2]


def unpack_keys(keys: torch.Tensor) -> torch.Tensor:
    x = (keys >> (2 * _BITS)) & _MASK
    y = (keys >> _BITS) & _MASK
    z = keys & _MASK
    return torch.stack([x, y, z], dim=1) - _OFFSET


# the 8 corners of a unit cube, in the bit order (x, y, z) used for trilinear weights
CORNERS = torch.tensor([[i >> 2 & 1, i >> 1 & 1, i & 1] for i in range(8)], dtype=torch.int64)

#: dtype of stored rows (block tables, corner rows); see the module docstring
ROW_DTYPE = torch.int32


class SparseVoxelGrid:
    """One resolution level: voxel size, blocks of corner indices, and the corner-embedding count."""

    def __init__(self, voxel_size: float, block: int = 8, device: torch.device | str = "cpu") -> None:
        self.voxel_size = float(voxel_size)
        self.block = int(block)
        self.device = torch.device(device)
        self.block_keys = torch.empty(0, dtype=torch.int64, device=self.device)  # sorted
        # the table of block_keys[i] is _tables[_block_slot[i]]; _tables is in allocation order (append only)
        self._block_slot = torch.empty(0, dtype=torch.int64, device=self.device)
        self._tables = torch.empty(0, *(self.block + 1,) * 3, dtype=ROW_DTYPE, device=self.device)
        self.num_corners = 0

    # -- queries -------------------------------------------------------------------------------
    def locate(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For N×3 world points: the 8 corner rows (N×8, -1 where unallocated), trilinear weights (N×8)
        and whether the point's voxel is allocated (N, bool). Differentiable in ``points`` (weights)."""
        scaled = points / self.voxel_size
        voxel = torch.floor(scaled.detach()).to(torch.int64)
        frac = scaled - voxel.to(scaled.dtype)  # gradients flow through frac
        n_pts = points.shape[0]
        rows = self.voxel_corner_rows(voxel)
        found = (rows >= 0).all(dim=1)
        one = 1.0 - frac
        wx = torch.stack([one[:, 0], frac[:, 0]], dim=1)
        wy = torch.stack([one[:, 1], frac[:, 1]], dim=1)
        wz = torch.stack([one[:, 2], frac[:, 2]], dim=1)
        weights = (wx[:, :, None, None] * wy[:, None, :, None] * wz[:, None, None, :]).reshape(n_pts, 8)
        return rows, weights, found

    def voxel_corner_rows(self, voxels: torch.Tensor) -> torch.Tensor:
        """The 8 corner rows (M×8, -1 where unallocated) of the M×3 integer voxels, from their blocks' tables."""
        rows = torch.full((voxels.shape[0], 8), -1, dtype=torch.int64, device=voxels.device)
        if self.block_keys.numel() == 0:
            return rows
        block = torch.div(voxels, self.block, rounding_mode="floor")
        local = voxels - block * self.block
        keys = pack_keys(block)
        pos = torch.searchsorted(self.block_keys, keys).clamp_max(self.block_keys.numel() - 1)
        hit = self.block_keys.index_select(0, pos) == keys
        slot = self._block_slot.index_select(0, pos)
        n = self.block + 1
        # one flat gather: table entry of corner c = base + (cx·n² + cy·n + cz); index_select is several
        # times faster than advanced indexing on CPU
        base = slot * n**3 + (local * torch.tensor([n * n, n, 1], device=voxels.device)).sum(dim=1)
        idx = base[:, None] + self._corner_offsets(n, voxels.device)[None, :]
        table = self._tables.view(-1).index_select(0, idx.reshape(-1)).view(-1, 8).to(torch.int64)
        return torch.where(hit[:, None], table, rows)

    _offsets_cache: dict = {}

    @classmethod
    def _corner_offsets(cls, n: int, device: torch.device) -> torch.Tensor:
        key = (n, str(device))
        if key not in cls._offsets_cache:
            c = CORNERS.to(device)
            cls._offsets_cache[key] = c[:, 0] * n * n + c[:, 1] * n + c[:, 2]
        return cls._offsets_cache[key]

    # -- allocation ----------------------------------------------------------------------------
    def voxels_of(self, points: torch.Tensor) -> torch.Tensor:
        return torch.floor(points / self.voxel_size).to(torch.int64)

    def allocate_voxels(self, voxels: torch.Tensor) -> int:
        """Make sure every voxel in the M×3 integer tensor has its 8 corners; returns corners added.

        Only the block containing a voxel needs that voxel's corner entries (``locate`` reads all 8
        corners from the table of the point's own block); a corner shared with a voxel of another
        block gets the same row there when that voxel is allocated.
        """
        if voxels.numel() == 0:
            return 0
        # unique over packed int64 keys: much faster than torch.unique(dim=0) on rows
        voxels = unpack_keys(torch.unique(pack_keys(voxels.to(self.device))))
        # a frame mostly re-observes mapped space: skip voxels that already have all 8 corners
        voxels = voxels[~self._complete(voxels)]
        if voxels.numel() == 0:
            return 0
        corners = (voxels[:, None, :] + CORNERS.to(self.device)[None]).reshape(-1, 3)
        # each distinct corner once, in key order: new corners get consecutive rows in that order
        unique_keys, inverse = torch.unique(pack_keys(corners), return_inverse=True)
        rows = self.corner_row(unpack_keys(unique_keys))
        new = rows < 0
        added = int(new.sum())
        if self.num_corners + added > torch.iinfo(ROW_DTYPE).max:
            raise RuntimeError(f"voxel grid: more than {torch.iinfo(ROW_DTYPE).max} corners on one level")
        rows[new] = torch.arange(self.num_corners, self.num_corners + added, device=self.device)
        self.num_corners += added
        blocks = torch.div(voxels, self.block, rounding_mode="floor")
        self._add_blocks(torch.unique(pack_keys(blocks)))
        pos = torch.searchsorted(self.block_keys, pack_keys(blocks))
        slot = self._block_slot.index_select(0, pos).repeat_interleave(8)
        local = corners - blocks.repeat_interleave(8, dim=0) * self.block
        self._tables[slot, local[:, 0], local[:, 1], local[:, 2]] = rows.index_select(0, inverse).to(
            ROW_DTYPE
        )
        return added

    def _complete(self, voxels: torch.Tensor) -> torch.Tensor:
        """Which of the M×3 integer voxels already have all 8 corner rows in their block's table."""
        return (self.voxel_corner_rows(voxels) >= 0).all(dim=1)

    def corner_row(self, corners: torch.Tensor) -> torch.Tensor:
        """Rows of the M×3 corners (-1 where not allocated), from the block tables: a corner is allocated
        when one of the eight voxels that have it is, and then that voxel's block table holds its row, so
        the tables of the blocks of those eight voxels (one to eight distinct blocks) are searched."""
        corners = corners.to(self.device, torch.int64)
        rows = torch.full((corners.shape[0],), -1, dtype=torch.int64, device=self.device)
        if self.block_keys.numel() == 0 or corners.numel() == 0:
            return rows
        n = self.block + 1
        stride = torch.tensor([n * n, n, 1], device=self.device)
        flat = self._tables.view(-1)
        for offset in CORNERS.to(self.device):
            block = torch.div(corners - offset, self.block, rounding_mode="floor")
            keys = pack_keys(block)
            pos = torch.searchsorted(self.block_keys, keys).clamp_max(self.block_keys.numel() - 1)
            hit = self.block_keys.index_select(0, pos) == keys
            local = corners - block * self.block  # in 0..block: the corner is on this block's table
            entry = self._block_slot.index_select(0, pos) * n**3 + (local * stride).sum(dim=1)
            found = flat.index_select(0, entry).to(torch.int64)
            # every table holding an allocated corner holds the same row; -1 where none does
            rows = torch.where(hit, torch.maximum(rows, found), rows)
        return rows

    def _add_blocks(self, keys: torch.Tensor) -> None:
        if self.block_keys.numel():
            pos = torch.searchsorted(self.block_keys, keys).clamp_max(self.block_keys.numel() - 1)
            keys = keys[self.block_keys.index_select(0, pos) != keys]
        if keys.numel() == 0:
            return
        keys = torch.unique(keys)
        first = self.block_keys.numel()
        self._tables = grow_rows(self._tables, first + keys.numel())
        self._tables[first:].fill_(-1)
        slots = torch.arange(first, first + keys.numel(), device=self.device)
        self.block_keys, source = merge_sorted(self.block_keys, keys)
        self._block_slot = torch.cat([self._block_slot, slots]).index_select(0, source)

    @property
    def block_tables(self) -> torch.Tensor:
        """Each block's (block + 1)³ corner rows, in the order of ``block_keys`` (a copy)."""
        return self._tables.index_select(0, self._block_slot)

    def index_bytes(self) -> int:
        """Bytes of the index (block keys, slots and tables) as stored."""
        tensors = (self.block_keys, self._block_slot, self._tables)
        return int(sum(t.numel() * t.element_size() for t in tensors))

    @property
    def num_blocks(self) -> int:
        return int(self.block_keys.numel())

    def block_origins(self) -> torch.Tensor:
        """World coordinates of each block's minimum corner (num_blocks × 3)."""
        return unpack_keys(self.block_keys).to(torch.float32) * (self.block * self.voxel_size)

    def state_dict(self) -> dict[str, torch.Tensor | float | int]:
        return {
            "voxel_size": self.voxel_size,
            "block": self.block,
            "block_keys": self.block_keys,
            "block_tables": self.block_tables,
            "num_corners": self.num_corners,
        }

    def load_state_dict(self, state: dict) -> None:
        self.voxel_size = float(state["voxel_size"])
        self.block = int(state["block"])
        # files written before rows were int32 hold int64 rows: same values, stored narrower; files written
        # before the corner index was dropped also hold corner_keys / corner_rows, which the tables repeat
        self.block_keys = state["block_keys"].to(self.device, torch.int64)
        self._tables = state["block_tables"].to(self.device, ROW_DTYPE)
        self._block_slot = torch.arange(self.block_keys.numel(), dtype=torch.int64, device=self.device)
        self.num_corners = int(state["num_corners"])
