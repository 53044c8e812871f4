"""RowAdam makes SparseAdam's updates (per-row moments, only touched rows move)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from slam.map.optim import RowAdam


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


def test_row_adam_sort_path_equals_mask_path(monkeypatch: pytest.MonkeyPatch):
    """Large tables find the touched rows by sorting the gradient's indices: the same update bit for bit."""
    import slam.map.optim as optim

    monkeypatch.setattr(optim, "_MASK_ROWS_PER_ENTRY", 10**9)
    masked, _ = _run(RowAdam, 10)
    monkeypatch.setattr(optim, "_MASK_ROWS_PER_ENTRY", 0)
    sorted_, _ = _run(RowAdam, 10)
    assert torch.equal(masked, sorted_)


def test_row_adam_follows_a_grown_parameter():
    """``follow`` hands a parameter's moments to its grown replacement: the same steps as without growth."""
    from slam.map.voxel_grid import grow_rows

    gen = torch.Generator().manual_seed(1)
    plain = torch.nn.Parameter(torch.randn(40, 4, generator=gen))
    grown = torch.nn.Parameter(plain.detach()[:30].clone())
    opt_plain, opt_grown = RowAdam([plain], lr=1e-2), RowAdam([grown], lr=1e-2)
    for step in range(6):
        if step == 3:  # grow the second table to the first one's rows, moments padded with zeros
            data = grow_rows(grown.detach(), 40)
            data[30:] = plain.detach()[30:]
            new = torch.nn.Parameter(data)
            st = opt_grown.state[grown]
            opt_grown.follow(
                grown,
                new,
                {
                    "step": st["step"],
                    "exp_avg": grow_rows(st["exp_avg"], 40),
                    "exp_avg_sq": grow_rows(st["exp_avg_sq"], 40),
                },
            )
            grown = new
        idx = torch.randint(0, 30, (50,), generator=gen)
        for p, opt in ((plain, opt_plain), (grown, opt_grown)):
            opt.zero_grad(set_to_none=True)
            F.embedding(idx, p, sparse=True).pow(2).sum().backward()
            opt.step()
    assert torch.equal(plain.detach(), grown.detach())


def test_prepare_leaves_the_parameters_and_apply_writes_the_step():
    """The mapper computes a step with ``prepare`` outside the map's lock and writes it with ``apply`` inside:
    between the two the parameters are untouched, and the two together equal ``step``."""
    gen = torch.Generator().manual_seed(1)
    tables = [torch.nn.Parameter(torch.randn(50, 4, generator=gen)) for _ in range(2)]
    idx = torch.randint(0, 30, (40,), generator=gen)
    results = []
    for split in (False, True):
        params = [torch.nn.Parameter(t.detach().clone()) for t in tables]
        opt = RowAdam(params, lr=0.1)
        (
            F.embedding(idx, params[0], sparse=True).sum()
            + F.embedding(idx, params[1], sparse=True).pow(2).sum()
        ).backward()
        before = [p.detach().clone() for p in params]
        if split:
            pending = opt.prepare()
            assert all(torch.equal(p, b) for p, b in zip(params, before))
            RowAdam.apply(pending)
        else:
            opt.step()
        results.append([p.detach().clone() for p in params])
        assert not torch.equal(results[-1][0], before[0])
    assert all(torch.equal(a, b) for a, b in zip(*results))
