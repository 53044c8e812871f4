"""NeuralSDFMap: a signed distance field (and colour) from sparse multi-resolution voxel embeddings.

Each level is a ``SparseVoxelGrid`` whose corners carry learnable feature vectors; a point's feature is
the trilinear interpolation of its voxel's eight corners, levels are concatenated, and a small MLP
decodes the SDF (metres) and, through a separate head, colour. Space is allocated where observations
land, so no scene bound is needed.

Concurrency: tracking reads while mapping writes. Every write of parameters (an optimizer step, an
allocation, a load) happens inside ``map.writing()``, and every read that must be consistent inside
``map.reading()``; both take the same lock, held only for the step or the query, so a reader never sees a
half-applied step and a query never waits for more than one step.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from slam.core.config import StrictConfig
from slam.map import kernels
from slam.map.voxel_grid import SparseVoxelGrid, grow_rows, pack_keys, unpack_keys


class NeuralMapConfig(StrictConfig):
    backend: Literal["auto", "torch", "tcnn"] = Field(
        "auto",
        description="field backend: auto (tcnn when CUDA and tinycudann import, else torch), torch, tcnn",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="torch device: auto picks cuda when available"
    )
    voxel_size: float = Field(0.04, gt=0, description="finest voxel size (m)")
    levels: int = Field(2, ge=1, le=4, description="resolution levels, each 4x coarser than the previous")
    level_scale: float = Field(4.0, gt=1, description="voxel size ratio between consecutive levels")
    block: int = Field(8, ge=2, le=32, description="voxels per block edge (allocation and meshing unit)")
    feature_dim: int = Field(8, ge=1, le=64, description="embedding channels per level")
    hidden: int = Field(32, ge=4, le=256, description="decoder hidden width")
    hidden_layers: int = Field(2, ge=1, le=4, description="decoder hidden layers")
    color: bool = Field(True, description="learn a colour head")
    init_std: float = Field(1e-3, ge=0, description="std of freshly allocated embeddings")
    kernels: Literal["auto", "numba", "torch"] = Field(
        "auto",
        description="CPU hot paths (the tracker's SDF-and-gradient query, the mapper's feature lookup and "
        "row-Adam step): numba = fused compiled loops (slam.map.kernels), torch = the reference ops; auto = "
        "numba on the CPU when it imports",
    )


def build_map(config: NeuralMapConfig | None = None) -> NeuralSDFMap:
    """The map for this machine: tinycudann's hash grid when CUDA and tinycudann import (or when
    ``backend: tcnn``), the pure-torch sparse voxel embeddings otherwise."""
    cfg = config or NeuralMapConfig()
    use_tcnn = cfg.backend == "tcnn" or (cfg.backend == "auto" and cfg.device != "cpu" and tcnn_available())
    if use_tcnn:
        if not tcnn_available():
            raise RuntimeError("map.backend is 'tcnn' but CUDA or the tinycudann package is not available")
        from slam.map.tcnn_map import TcnnSDFMap

        return TcnnSDFMap(cfg)
    return NeuralSDFMap(cfg)


def set_compute_threads(n: int) -> None:
    """Cores this Python thread's map work may use: torch's intra-op threads and the compiled kernels'
    per-point loops (both settings are per calling thread)."""
    torch.set_num_threads(max(1, int(n)))
    kernels.set_threads(n)


def select_device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("map.device is 'cuda' but torch sees no CUDA device")
    return torch.device(choice)


def tcnn_available() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        import tinycudann  # noqa: F401
    except Exception:
        return False
    return True


@dataclass
class MapQuery:
    sdf: torch.Tensor  # (N,)
    valid: torch.Tensor  # (N,) bool: the point lies in allocated space
    grad: torch.Tensor | None = None  # (N, 3) spatial gradient of the SDF
    color: torch.Tensor | None = None  # (N, 3) in [0, 1]


@dataclass
class FeatureTape:
    """What a compiled feature lookup keeps for the backward step: per level, the embedding parameter,
    each point's 8 corner rows and its position inside its voxel (``slam.map.kernels``)."""

    levels: list[tuple[nn.Parameter, np.ndarray, np.ndarray]]


def decode_with_input_gradient(head: nn.Sequential, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A one-output decoder's value (N,) and its gradient with respect to the input features (N × F),
    by hand through the Linear / Softplus layers: a few batched matmuls, no autograd graph."""
    x = feats
    slopes: list[torch.Tensor] = []
    layers = list(head)
    for mod in layers:
        if isinstance(mod, nn.Linear):
            x = F.linear(x, mod.weight, mod.bias)
        elif isinstance(mod, nn.Softplus):
            slopes.append(torch.sigmoid(x * mod.beta))  # d softplus / dx (1 beyond the threshold too)
            x = F.softplus(x, mod.beta, mod.threshold)
        else:  # pragma: no cover - _mlp builds only these
            raise TypeError(f"decode_with_input_gradient: unsupported layer {type(mod).__name__}")
    linears = [m for m in layers if isinstance(m, nn.Linear)]
    grad = linears[-1].weight.expand(feats.shape[0], -1)  # N × hidden
    for lin, slope in zip(reversed(linears[:-1]), reversed(slopes)):
        grad = (grad * slope) @ lin.weight
    return x.squeeze(-1), grad


def _mlp(n_in: int, hidden: int, layers: int, n_out: int) -> nn.Sequential:
    mods: list[nn.Module] = []
    width = n_in
    for _ in range(layers):
        mods += [nn.Linear(width, hidden), nn.Softplus(beta=10.0)]
        width = hidden
    mods.append(nn.Linear(width, n_out))
    return nn.Sequential(*mods)


class NeuralSDFMap(nn.Module):
    """Sparse voxel embeddings + MLP decoder; the one piece of state tracking and mapping share."""

    backend_name = "torch-sparse-voxels"
    #: embeddings get sparse gradients (SparseAdam updates only the rows a step touched)
    sparse_embeddings = True
    #: autograd can differentiate the spatial gradient again (eikonal term by double backward)
    supports_double_backward = True

    def __init__(self, config: NeuralMapConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = config or NeuralMapConfig()
        self.device_ = select_device(cfg.device)
        self.grids = [
            SparseVoxelGrid(cfg.voxel_size * cfg.level_scale**level, cfg.block, self.device_)
            for level in range(cfg.levels)
        ]
        self.embeddings = nn.ParameterList(
            [nn.Parameter(torch.zeros(0, cfg.feature_dim, device=self.device_)) for _ in self.grids]
        )
        n_feat = cfg.feature_dim * cfg.levels
        self.sdf_head = _mlp(n_feat, cfg.hidden, cfg.hidden_layers, 1).to(self.device_)
        self.color_head = _mlp(n_feat, cfg.hidden, 1, 3).to(self.device_) if cfg.color else None
        # how often the mapper fitted samples around each finest-level corner: space allocated but
        # not yet fitted decodes to an arbitrary SDF, and the tracker must not register against it
        self.hits = torch.zeros(0, dtype=torch.int32, device=self.device_)
        #: the fused numba kernels run the CPU hot paths (``map.kernels``); the torch ops are the reference
        self.compiled = cfg.kernels == "numba" or (
            cfg.kernels == "auto" and self.device_.type == "cpu" and kernels.AVAILABLE
        )
        if self.compiled and (self.device_.type != "cpu" or not kernels.AVAILABLE):
            raise RuntimeError(
                "map.kernels is 'numba' but numba is not installed or the map is not on the CPU"
            )
        self._lock = threading.RLock()
        self.version = 0  # bumped by every write, so readers can tell the map changed

    # -- locking -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        with self._lock:
            yield

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        with self._lock:
            yield
            self.version += 1

    # -- allocation ----------------------------------------------------------------------------
    def allocate(self, points: torch.Tensor, dilate: int = 1) -> int:
        """Allocate the voxels around world points (N×3) on every level, ``dilate`` voxels each way
        on the finest level (one on coarser ones). Returns the number of new finest-level corners."""
        points = points.to(self.device_, torch.float32)
        added_finest = 0
        with self.writing():
            pts = np.ascontiguousarray(points.numpy()) if self.compiled else None
            for level, grid in enumerate(self.grids):
                r = dilate if level == 0 else 1
                if pts is not None:  # only the voxels still missing a corner, found by one lookup each
                    missing = kernels.missing_voxels(
                        pts, grid.voxel_size, r, grid.block, grid.block_keys.numpy(),
                        grid._block_slot.numpy(), grid._tables.view(-1).numpy(),
                    )  # fmt: skip
                    added = grid.allocate_voxels(torch.from_numpy(missing)) if len(missing) else 0
                    self._grow(level, grid.num_corners)
                    if level == 0:
                        added_finest = added
                    continue
                voxels = _unique_rows(grid.voxels_of(points))
                if r > 0:
                    g = torch.arange(-r, r + 1, device=self.device_)
                    offsets = torch.stack(torch.meshgrid(g, g, g, indexing="ij"), dim=-1).reshape(-1, 3)
                    voxels = (voxels[:, None, :] + offsets[None]).reshape(-1, 3)
                added = grid.allocate_voxels(voxels)
                self._grow(level, grid.num_corners)
                if level == 0:
                    added_finest = added
        return added_finest

    def _grow(self, level: int, rows: int) -> None:
        """Embedding rows (and hit counts) for ``rows`` corners. The embeddings grow geometrically
        (``grow_rows``): existing rows are not copied on every allocation. The new Parameter shares the
        old one's buffer while it has room, so an optimizer must follow the new Parameter
        (``Mapper._sync_embedding_optimizer``)."""
        if level == 0 and rows > self.hits.shape[0]:
            self.hits = grow_rows(self.hits, rows)
        emb = self.embeddings[level]
        old = emb.shape[0]
        extra = rows - old
        if extra <= 0:
            return
        fresh = torch.randn(extra, emb.shape[1], device=self.device_) * self.cfg.init_std
        data = grow_rows(emb.data, rows)
        data[old:] = fresh
        self.embeddings[level] = nn.Parameter(data)

    # -- queries -------------------------------------------------------------------------------
    def features(
        self,
        points: torch.Tensor,
        sparse_grad: bool = False,
        min_hits: int = 0,
        record_hits: bool | int = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Concatenated interpolated features (N × levels·F) and validity (N,).

        ``min_hits`` also requires the point's finest corners to have been fitted that often;
        ``record_hits`` counts these points as fitted (the mapper's near-surface samples): True for all
        of them, an int n for the first n only (one query can then carry other points too).
        """
        feats = []
        valid = torch.ones(points.shape[0], dtype=torch.bool, device=points.device)
        for level, (grid, emb) in enumerate(zip(self.grids, self.embeddings)):
            rows, weights, found = grid.locate(points)
            valid &= found
            if level == 0:
                valid &= self._fitted(rows, found, min_hits, record_hits)
            if emb.shape[0] == 0:  # nothing allocated yet: zero features, every point invalid
                feats.append(
                    torch.zeros(points.shape[0], emb.shape[1], device=points.device, dtype=points.dtype)
                )
                continue
            safe = rows.clamp_min(0)
            corner = F.embedding(safe, emb, sparse=sparse_grad)  # N×8×F
            w = weights * (rows >= 0).to(weights.dtype)
            feats.append((corner * w[..., None]).sum(dim=1))
        return torch.cat(feats, dim=1), valid

    def _fitted(
        self, rows: torch.Tensor, found: torch.Tensor, min_hits: int, record_hits: bool | int
    ) -> torch.Tensor:
        """Points (by their finest-level corner rows) fitted at least ``min_hits`` times; with
        ``record_hits`` these points (True: all, n: the first n) count as fitted once more."""
        ok = torch.ones_like(found)
        if min_hits <= 0 and not record_hits:
            return ok
        safe_rows = rows[found]
        if min_hits > 0:
            corner_hits = self.hits.index_select(0, safe_rows.reshape(-1)).view(safe_rows.shape)
            ok = torch.zeros_like(found).masked_scatter(found, (corner_hits >= min_hits).all(dim=1))
        if record_hits is not False and record_hits is not True:  # the first n points only
            counted = found.clone()
            counted[int(record_hits) :] = False
            safe_rows = rows[counted]
        if record_hits:
            flat = safe_rows.reshape(-1)
            self.hits.index_add_(0, flat, torch.ones_like(flat, dtype=torch.int32))
        return ok

    def decode_sdf(self, feats: torch.Tensor) -> torch.Tensor:
        return self.sdf_head(feats).squeeze(-1)

    def decode_color(self, feats: torch.Tensor) -> torch.Tensor:
        if self.color_head is None:
            raise RuntimeError("this map has no colour head (map.color is false)")
        return torch.sigmoid(self.color_head(feats))

    def query(
        self, points: torch.Tensor, gradient: bool = False, color: bool = False, min_hits: int = 0
    ) -> MapQuery:
        """SDF (and optionally its spatial gradient and colour) at N×3 world points, under the read lock.

        Results are detached: this is the tracker's and the mesher's entry point, not training's.
        """
        points = points.to(self.device_, torch.float32)
        if self.compiled:
            return self._query_compiled(points, gradient, color, min_hits)
        with self.reading():
            if gradient:
                with torch.enable_grad():
                    x = points.detach().requires_grad_(True)
                    feats, valid = self.features(x, min_hits=min_hits)
                    sdf = self.decode_sdf(feats)
                    # allow_unused: on an empty map the features do not depend on x at all
                    (grad,) = torch.autograd.grad(sdf.sum(), x, allow_unused=True)
                    if grad is None:
                        grad = torch.zeros_like(x)
                col = self.decode_color(feats.detach()) if color else None
                return MapQuery(sdf.detach(), valid, grad, None if col is None else col.detach())
            with torch.no_grad():
                feats, valid = self.features(points, min_hits=min_hits)
                sdf = self.decode_sdf(feats)
                col = self.decode_color(feats) if color else None
            return MapQuery(sdf, valid, None, col)

    # -- compiled paths (slam.map.kernels) -------------------------------------------------------
    def _locate_compiled(self, pts: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per level, each point's 8 corner rows (-1: unallocated) and its position inside its voxel."""
        located = []
        for grid in self.grids:
            rows = np.empty((pts.shape[0], 8), dtype=np.int64)
            frac = np.empty((pts.shape[0], 3), dtype=np.float32)
            kernels.locate_level(
                pts, grid.voxel_size, grid.block, grid.block_keys.numpy(), grid._block_slot.numpy(),
                grid._tables.view(-1).numpy(), rows, frac,
            )  # fmt: skip
            located.append((rows, frac))
        return located

    def _features_compiled(
        self, pts: np.ndarray, min_hits: int, record_hits: int, corners: list[np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
        """``features`` by the compiled kernels: (N × levels·F features, validity, per-level rows and
        positions). ``record_hits`` = n counts the first n points' finest corners as fitted; a ``corners``
        list receives each level's gathered corner rows (N×8×F, for the gradient pass)."""
        nf = self.cfg.feature_dim
        located = self._locate_compiled(pts)
        feats = np.empty((pts.shape[0], nf * len(self.grids)), dtype=np.float32)
        valid = np.ones(pts.shape[0], dtype=bool)
        for level, ((rows, frac), emb) in enumerate(zip(located, self.embeddings)):
            valid &= (rows >= 0).all(axis=1)
            keep = np.empty((pts.shape[0] if corners is not None else 0, 8, nf), dtype=np.float32)
            kernels.interpolate_level(rows, frac, emb.detach().numpy(), feats, level * nf, keep)
            if corners is not None:
                corners.append(keep)
        rows0 = located[0][0]
        if min_hits > 0:
            kernels.fitted(rows0, self.hits.numpy(), min_hits, valid)
        if record_hits > 0:
            kernels.record_hits(rows0, record_hits, self.hits.numpy())
        return feats, valid, located

    def _query_compiled(self, points: torch.Tensor, gradient: bool, color: bool, min_hits: int) -> MapQuery:
        pts = np.ascontiguousarray(points.detach().numpy())
        with self.reading(), torch.no_grad():
            corners: list[np.ndarray] | None = [] if gradient else None
            feats_np, valid, located = self._features_compiled(pts, min_hits, 0, corners)
            feats = torch.from_numpy(feats_np)
            grad = None
            if gradient:
                sdf, grad_feats = decode_with_input_gradient(self.sdf_head, feats)
                grad_np = np.zeros((pts.shape[0], 3), dtype=np.float32)
                g = np.ascontiguousarray(grad_feats.numpy())
                nf = self.cfg.feature_dim
                assert corners is not None
                for level, ((_, frac), grid, kept) in enumerate(zip(located, self.grids, corners)):
                    kernels.accumulate_point_gradient(kept, frac, grid.voxel_size, g, level * nf, grad_np)
                grad = torch.from_numpy(grad_np)
            else:
                sdf = self.decode_sdf(feats)
            col = self.decode_color(feats) if color else None
        return MapQuery(sdf, torch.from_numpy(valid), grad, col)

    def features_for_training(
        self, points: torch.Tensor, record_hits: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor, FeatureTape]:
        """The compiled ``features(points, sparse_grad=True, record_hits=n)``: features as a leaf tensor
        that requires grad (the decoders' graph starts there), validity, and the tape with which
        ``RowAdam.step_tape`` applies the features' gradient to the embedding rows."""
        pts = np.ascontiguousarray(points.detach().to(torch.float32).numpy())
        feats, valid, located = self._features_compiled(pts, 0, int(record_hits))
        tape = FeatureTape([(emb, rows, frac) for emb, (rows, frac) in zip(self.embeddings, located)])
        return torch.from_numpy(feats).requires_grad_(True), torch.from_numpy(valid), tape

    def embedding_parameters(self) -> list[nn.Parameter]:
        return list(self.embeddings)

    def decoder_parameters(self) -> list[nn.Parameter]:
        heads = [self.sdf_head] + ([self.color_head] if self.color_head is not None else [])
        return [p for head in heads for p in head.parameters()]

    # -- size and persistence ------------------------------------------------------------------
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def map_bytes(self) -> int:
        params = sum(p.numel() * p.element_size() for p in self.parameters())
        index = sum(g.index_bytes() for g in self.grids)
        return int(params + index)

    def allocated_blocks(self, level: int = 0) -> torch.Tensor:
        """World-space minimum corners of the allocated blocks of a level (num_blocks × 3)."""
        return self.grids[level].block_origins()

    def state(self) -> dict:
        with self.reading():
            return {
                "config": self.cfg.model_dump(),
                "backend": self.backend_name,
                "grids": [g.state_dict() for g in self.grids],
                "hits": self.hits.cpu().clone(),
                "params": {k: v.detach().cpu().clone() for k, v in self.state_dict().items()},
            }

    def load_state(self, state: dict) -> None:
        with self.writing():
            for grid, gstate in zip(self.grids, state["grids"]):
                grid.load_state_dict(gstate)
            self.hits = state["hits"].to(self.device_)
            for level, grid in enumerate(self.grids):
                self.embeddings[level] = nn.Parameter(
                    torch.zeros(grid.num_corners, self.cfg.feature_dim, device=self.device_)
                )
            self.load_state_dict({k: v.to(self.device_) for k, v in state["params"].items()})


def _unique_rows(voxels: torch.Tensor) -> torch.Tensor:
    return unpack_keys(torch.unique(pack_keys(voxels)))
