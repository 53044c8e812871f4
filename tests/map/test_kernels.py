"""slam.map.kernels: the compiled hot paths agree with the torch reference (1e-5 relative).

A map with random embeddings and hit counts over a few thousand random points (so points fall in
allocated space, unallocated space, and space fitted too rarely), queried by both paths; and one mapper
step of each path from the same state, compared row by row (embeddings, Adam moments, hit counts, decoder).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from synthetic import look_at, render_frame

from slam.engine.mapper import Mapper, MapperConfig
from slam.frontends.rgbd import frame_rays
from slam.map import kernels
from slam.map.neural_map import NeuralMapConfig, NeuralSDFMap, decode_with_input_gradient
from slam.map.optim import RowAdam

pytestmark = pytest.mark.skipif(not kernels.AVAILABLE, reason="numba is not installed")

RTOL = 1e-5


def close(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    """|a - b| <= 1e-5·|b| + an absolute floor of 1e-5 of b's scale (values near zero)."""
    scale = float(b.abs().max()) if b.numel() else 1.0
    err = (a - b).abs()
    bound = RTOL * b.abs() + RTOL * max(scale, 1e-12)
    assert bool((err <= bound).all()), f"{what}: max error {float(err.max()):.3g} (scale {scale:.3g})"


def random_map(kernels_choice: str, seed: int = 0) -> NeuralSDFMap:
    torch.manual_seed(seed)
    m = NeuralSDFMap(NeuralMapConfig(voxel_size=0.05, device="cpu", kernels=kernels_choice))
    m.allocate(torch.rand(3000, 3) * 2.0)
    with torch.no_grad():
        for emb in m.embeddings:
            emb.normal_(0.0, 0.2)
        for p in m.decoder_parameters():
            p.normal_(0.0, 0.5)
    m.hits.random_(0, 40)
    return m


@pytest.mark.parametrize("threads", [1, 2])
def test_query_matches_torch_reference(threads: int) -> None:
    kernels.set_threads(threads)  # the serial and the parallel builds of the per-point loops
    ref = random_map("torch")
    fast = random_map("torch")
    fast.compiled = True
    points = torch.rand(4000, 3) * 2.4 - 0.2  # some outside the allocated space
    for min_hits in (0, 20):
        a = fast.query(points, gradient=True, color=True, min_hits=min_hits)
        b = ref.query(points, gradient=True, color=True, min_hits=min_hits)
        assert torch.equal(a.valid, b.valid)
        assert 0 < int(b.valid.sum()) < len(points)
        close(a.sdf, b.sdf, "sdf")
        close(a.grad, b.grad, "gradient")
        close(a.color, b.color, "colour")
        c = fast.query(points, min_hits=min_hits)
        close(c.sdf, b.sdf, "sdf without gradient")


def test_query_on_an_empty_map() -> None:
    m = NeuralSDFMap(NeuralMapConfig(kernels="numba"))
    q = m.query(torch.rand(10, 3), gradient=True, min_hits=5)
    assert not bool(q.valid.any())
    assert q.grad is not None and float(q.grad.abs().max()) == 0.0


def test_decoder_input_gradient_matches_autograd() -> None:
    m = random_map("torch")
    feats = torch.randn(500, 16, requires_grad=True)
    sdf = m.decode_sdf(feats)
    (expected,) = torch.autograd.grad(sdf.sum(), feats)
    value, grad = decode_with_input_gradient(m.sdf_head, feats.detach())
    close(value, sdf.detach(), "decoder value")
    close(grad, expected, "decoder input gradient")


def wall_rays(pose: np.ndarray):
    import open3d as o3d

    mesh = o3d.geometry.TriangleMesh.create_box(1.0, 4.0, 4.0)
    mesh.translate((1.0, -2.0, -2.0))
    mesh.compute_triangle_normals()
    frame = render_frame(mesh, pose, width=64, height=48, f=50.0, index=0)
    return frame_rays(frame, pose, np.random.default_rng(0), 1, 0.1, 4.0, limit=None)


def test_mapper_step_matches_torch_reference() -> None:
    """Three mapper steps from the same state by both paths: same embeddings, moments, hit counts and
    decoder (the fused step spreads the features' gradient over the corner rows and applies Adam in place)."""
    pose = look_at((0.0, 0.1, 0.0), (1.0, 0.3, 0.1))
    rays = wall_rays(pose)
    cfg = MapperConfig(rays=1024, first_frame_iterations=0, iterations=0)
    mappers = []
    for choice in ("torch", "numba"):
        torch.manual_seed(0)
        m = NeuralSDFMap(NeuralMapConfig(voxel_size=0.05, device="cpu", kernels=choice))
        mapper = Mapper(m, cfg, seed=0)
        mapper.integrate_rays(rays)  # allocates and keyframes, no step
        mappers.append(mapper)
    ref, fast = mappers
    assert not ref.map.compiled and fast.map.compiled
    fast.map.load_state(copy.deepcopy(ref.map.state()))
    fast._sync_embedding_optimizer()
    fast._dec_opt.load_state_dict(ref._dec_opt.state_dict())
    for _ in range(3):
        ref.step(rays)
        fast.step(rays)
    for level, (a, b) in enumerate(zip(fast.map.embeddings, ref.map.embeddings)):
        close(a.detach(), b.detach(), f"embeddings of level {level}")
        sa, sb = fast._emb_opt.state[a], ref._emb_opt.state[b]
        assert sa["step"] == sb["step"] == 3
        close(sa["exp_avg"], sb["exp_avg"], f"first moments of level {level}")
        close(sa["exp_avg_sq"], sb["exp_avg_sq"], f"second moments of level {level}")
    assert torch.equal(fast.map.hits, ref.map.hits)
    for a, b in zip(fast.map.decoder_parameters(), ref.map.decoder_parameters()):
        close(a.detach(), b.detach(), "decoder")
    assert fast.last_loss["total"] == pytest.approx(ref.last_loss["total"], rel=RTOL)


def test_row_adam_tape_of_another_optimizer_is_refused() -> None:
    m = random_map("numba")
    feats, _, tape = m.features_for_training(torch.rand(50, 3))
    opt = RowAdam([torch.nn.Parameter(torch.zeros(3, 8))])
    with pytest.raises(KeyError, match="not a parameter"):
        opt.step_tape(tape, torch.ones_like(feats))


def test_allocation_matches_torch_reference() -> None:
    """Allocating batch after batch (overlapping, as frames re-observe space) gives the same grids,
    corner rows and embeddings by both paths: the compiled path only skips voxels already complete."""
    maps = []
    for choice in ("torch", "numba"):
        torch.manual_seed(0)
        m = NeuralSDFMap(NeuralMapConfig(voxel_size=0.05, device="cpu", kernels=choice))
        gen = torch.Generator().manual_seed(1)
        added = [m.allocate(torch.rand(500, 3, generator=gen) * (1 + k), dilate=k % 3) for k in range(4)]
        maps.append((m, added))
    (ref, added_ref), (fast, added_fast) = maps
    assert fast.compiled and not ref.compiled
    assert added_fast == added_ref and added_ref[0] > 0 and added_ref[-1] > 0
    for a, b in zip(fast.grids, ref.grids):
        assert a.num_corners == b.num_corners
        for key, value in b.state_dict().items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(a.state_dict()[key], value), key
    for a, b in zip(fast.embeddings, ref.embeddings):
        assert torch.equal(a.detach(), b.detach())
