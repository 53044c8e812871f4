"""NeuralSDFMap on tinycudann: a multiresolution hash-grid encoding and fully fused MLPs (CUDA only).

Same interface as the torch backend, so the tracker, mapper and mesher do not know which runs. The
sparse voxel grid is kept for what it is needed for besides features: which space was observed
(validity, the tracker's fitted-space test) and which blocks to mesh. The hash grid needs inputs in
[0, 1]³; world coordinates are wrapped with a period of ``HASH_EXTENT`` metres, which the hash
table's collisions absorb like any other, so no scene bound is needed here either.

Fused MLPs have no second derivative, so the mapper computes its eikonal term by finite differences
on this backend (``supports_double_backward = False``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from slam.map.neural_map import NeuralMapConfig, NeuralSDFMap

HASH_EXTENT = 256.0  # metres per wrap of the [0, 1]³ hash-grid domain


class TcnnSDFMap(NeuralSDFMap):
    backend_name = "tcnn-hashgrid"
    sparse_embeddings = False
    supports_double_backward = False

    def __init__(self, config: NeuralMapConfig | None = None) -> None:
        import tinycudann as tcnn

        cfg = config or NeuralMapConfig()
        if cfg.device == "cpu":
            raise RuntimeError("the tcnn backend runs on CUDA only; set map.device to auto or cuda")
        super().__init__(cfg.model_copy(update={"feature_dim": 1}))  # voxel rows only track occupancy
        self.cfg = cfg
        n_levels = 16
        finest = HASH_EXTENT / (cfg.voxel_size / 2)
        coarsest = HASH_EXTENT / (cfg.voxel_size * cfg.level_scale ** (cfg.levels - 1) * 4)
        self.encoding = tcnn.Encoding(
            3,
            {
                "otype": "HashGrid",
                "n_levels": n_levels,
                "n_features_per_level": 2,
                "log2_hashmap_size": 19,
                "base_resolution": int(coarsest),
                "per_level_scale": math.exp(math.log(finest / coarsest) / (n_levels - 1)),
            },
        )
        net = {
            "otype": "FullyFusedMLP",
            "activation": "ReLU",
            "output_activation": "None",
            "n_neurons": 64,
            "n_hidden_layers": cfg.hidden_layers,
        }
        n_feat = self.encoding.n_output_dims
        self.sdf_head = tcnn.Network(n_feat, 1, net)
        self.color_head = tcnn.Network(n_feat, 3, {**net, "n_hidden_layers": 1}) if cfg.color else None

    def _grow(self, level: int, rows: int) -> None:
        if level == 0 and rows > self.hits.shape[0]:
            extra = torch.zeros(rows - self.hits.shape[0], dtype=torch.int32, device=self.device_)
            self.hits = torch.cat([self.hits, extra])

    def features(self, points, sparse_grad=False, min_hits=0, record_hits=False):
        valid = torch.ones(points.shape[0], dtype=torch.bool, device=points.device)
        for level, grid in enumerate(self.grids):
            rows, _, found = grid.locate(points.detach())
            valid &= found
            if level == 0:
                valid &= self._fitted(rows, found, min_hits, record_hits)
        unit = torch.remainder(points / HASH_EXTENT, 1.0)
        return self.encoding(unit).float(), valid

    def decode_sdf(self, feats):
        return self.sdf_head(feats).float().squeeze(-1)

    def decode_color(self, feats):
        if self.color_head is None:
            raise RuntimeError("this map has no colour head (map.color is false)")
        return torch.sigmoid(self.color_head(feats).float())

    def embedding_parameters(self) -> list[nn.Parameter]:
        return list(self.encoding.parameters())
