"""RowAdam makes SparseAdam's updates (per-row moments, only touched rows move)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from slam.optim import RowAdam


def _run(optimizer_cls, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    table = torch.nn.Parameter(torch.randn(500, 8, generator=gen) * 0.1)
    start = table.detach().clone()
    opt = optimizer_cls([table], lr=1e-2)
    for _ in range(steps):
        idx = torch.randint(0, 300, (200, 8), generator=gen)  # rows 300-499 are never touched
        w = torch.rand(200, 8, generator=gen)
        target = torch.randn(200, generator=gen)
        feats = (F.embedding(idx, table, sparse=True) * w[..., None]).sum(dim=1)
        loss = ((feats.sum(dim=1) - target) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return table.detach(), start


def test_row_adam_matches_sparse_adam():
    ours, start = _run(RowAdam, 20)
    reference, _ = _run(torch.optim.SparseAdam, 20)
    assert torch.allclose(ours, reference, atol=1e-6)
    assert not torch.equal(ours[:300], start[:300])
    assert torch.equal(ours[300:], start[300:])  # untouched rows never move


def test_row_adam_rejects_dense_gradients():
    table = torch.nn.Parameter(torch.zeros(4, 2))
    opt = RowAdam([table])
    table.sum().backward()
    with pytest.raises(ValueError, match="sparse gradients"):
        opt.step()
