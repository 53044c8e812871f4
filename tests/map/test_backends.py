"""Backend selection and the tinycudann backend (which runs only where CUDA and tinycudann exist)."""

from __future__ import annotations

import pytest
import torch

from slam.map.neural_map import NeuralMapConfig, NeuralSDFMap, build_map, tcnn_available


def test_auto_picks_torch_without_cuda_or_tcnn():
    m = build_map(NeuralMapConfig(device="cpu"))
    assert type(m) is NeuralSDFMap
    assert m.backend_name == "torch-sparse-voxels"


def test_asking_for_tcnn_where_it_is_missing_fails_clearly():
    if tcnn_available():
        pytest.skip("tinycudann is available here")
    with pytest.raises(RuntimeError, match="tinycudann"):
        build_map(NeuralMapConfig(backend="tcnn"))


@pytest.mark.skipif(not tcnn_available(), reason="needs CUDA and the tinycudann package")
def test_tcnn_backend_fits_a_sphere_through_the_same_interface():
    torch.manual_seed(0)
    m = build_map(NeuralMapConfig(backend="tcnn", device="cuda", voxel_size=0.05, color=False))
    d = torch.randn(20000, 3, device="cuda")
    surface = d / d.norm(dim=1, keepdim=True) * 0.5
    m.allocate(surface, dilate=2)
    opt = torch.optim.Adam(m.embedding_parameters() + m.decoder_parameters(), lr=1e-2)
    for _ in range(500):
        d = torch.randn(4096, 3, device="cuda")
        x = d / d.norm(dim=1, keepdim=True) * (0.5 + 0.08 * (torch.rand(4096, 1, device="cuda") * 2 - 1))
        feats, valid = m.features(x)
        loss = (m.decode_sdf(feats) - (x.norm(dim=1) - 0.5)).abs()[valid].mean()
        opt.zero_grad()
        loss.backward()
        with m.writing():
            opt.step()
    q = m.query(x, gradient=True)
    err = (q.sdf - (x.norm(dim=1) - 0.5)).abs()[q.valid]
    assert err.mean() < 3e-3
    cos = torch.nn.functional.cosine_similarity(q.grad, x / x.norm(dim=1, keepdim=True))[q.valid]
    assert cos.mean() > 0.98
