"""slam.map.neural_map: fitting analytic SDFs directly (no mapper), the analytic spatial gradient, growth of the
allocation, persistence through state()/load_state(), and the read/write lock."""

from __future__ import annotations

import functools
import io
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
import torch

from slam.map.neural_map import NeuralMapConfig, NeuralSDFMap

VOXEL = 0.05
BAND = 0.08  # fitting band half-width (m)
BOX_CENTRE = torch.tensor([0.1, -0.05, 0.0])
BOX_HALF = torch.tensor([0.4, 0.3, 0.25])


def sphere_sdf(x: torch.Tensor) -> torch.Tensor:
    return x.norm(dim=1) - 0.5


def box_sdf(x: torch.Tensor) -> torch.Tensor:
    q = (x - BOX_CENTRE).abs() - BOX_HALF
    return q.clamp_min(0).norm(dim=1) + q.max(dim=1).values.clamp_max(0)


SHAPES: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor, torch.Tensor]] = {
    "sphere": (sphere_sdf, torch.full((3,), -0.6), torch.full((3,), 0.6)),
    "box": (box_sdf, BOX_CENTRE - BOX_HALF - 0.1, BOX_CENTRE + BOX_HALF + 0.1),
}


def band_samples(shape: str, n: int, gen: torch.Generator, width: float = BAND) -> torch.Tensor:
    """n points uniformly distributed in {|sdf| < width} (rejection sampling in the bounding box)."""
    fn, lo, hi = SHAPES[shape]
    out, have = [], 0
    while have < n:
        x = lo + (hi - lo) * torch.rand(4 * n, 3, generator=gen)
        x = x[fn(x).abs() < width]
        out.append(x)
        have += x.shape[0]
    return torch.cat(out)[:n]


def fit_shape(shape: str, steps: int = 120, points: int = 4096, seed: int = 0) -> NeuralSDFMap:
    """Fit the map's SDF to an analytic one, directly (SparseAdam on the embeddings, Adam on the decoder).
    The samples count as fitted (``record_hits``), as the mapper's do: the mesher meshes only such space."""
    fn = SHAPES[shape][0]
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    m = NeuralSDFMap(NeuralMapConfig(voxel_size=VOXEL, device="cpu", color=False))
    m.allocate(band_samples(shape, 30000, gen, width=0.02), dilate=2)
    emb_opt = torch.optim.SparseAdam(list(m.embeddings), lr=1e-2)
    dec_opt = torch.optim.Adam(m.sdf_head.parameters(), lr=1e-3)
    for _ in range(steps):
        x = band_samples(shape, points, gen)
        feats, valid = m.features(x, sparse_grad=True, record_hits=True)
        loss = (m.decode_sdf(feats) - fn(x)).abs()[valid].mean()
        emb_opt.zero_grad()
        dec_opt.zero_grad()
        loss.backward()
        with m.writing():
            emb_opt.step()
            dec_opt.step()
    return m


@functools.cache
def fitted(shape: str) -> NeuralSDFMap:
    return fit_shape(shape)


def away_from_voxel_faces(x: torch.Tensor, margin: float = 0.05) -> torch.Tensor:
    """Points whose finest-voxel fraction is in [margin, 1 - margin] on every axis (coarser levels' faces
    are finest-level faces too): there the trilinear field is smooth, across faces only continuous."""
    frac = x / VOXEL - torch.floor(x / VOXEL)
    return ((frac > margin) & (frac < 1 - margin)).all(dim=1)


def finite_difference_gradient(m: NeuralSDFMap, x: torch.Tensor, h: float = 1e-3) -> torch.Tensor:
    cols = [(m.query(x + h * e).sdf - m.query(x - h * e).sdf) / (2 * h) for e in torch.eye(3)]
    return torch.stack(cols, dim=1)


# -- fitting ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", ["sphere", "box"])
def test_fitting_an_analytic_sdf_converges(shape: str) -> None:
    m = fitted(shape)
    x = band_samples(shape, 20000, torch.Generator().manual_seed(123))
    q = m.query(x)
    assert float(q.valid.float().mean()) > 0.99  # the band lies in allocated space
    err = (q.sdf - SHAPES[shape][0](x)).abs()[q.valid]
    assert float(err.mean()) < 3e-3, f"mean |error| {float(err.mean()) * 1e3:.2f} mm"
    assert float(err.quantile(0.95)) < 1e-2, f"95th percentile {float(err.quantile(0.95)) * 1e3:.2f} mm"
    # the zero crossing is where the surface is: the sign is right wherever |sdf| > 1 cm
    far = SHAPES[shape][0](x).abs() > 0.01
    assert bool((torch.sign(q.sdf[far & q.valid]) == torch.sign(SHAPES[shape][0](x)[far & q.valid])).all())


def test_fitting_is_deterministic() -> None:
    a = fit_shape("sphere", steps=3)
    b = fit_shape("sphere", steps=3)
    x = band_samples("sphere", 500, torch.Generator().manual_seed(7))
    assert torch.equal(a.query(x).sdf, b.query(x).sdf)


# -- gradients -------------------------------------------------------------------------------------
def _check_gradient(m: NeuralSDFMap, x: torch.Tensor) -> None:
    x = x[away_from_voxel_faces(x)]
    q = m.query(x, gradient=True)
    assert q.grad is not None and q.grad.shape == x.shape
    assert not q.grad.requires_grad and not q.sdf.requires_grad
    torch.testing.assert_close(q.sdf, m.query(x).sdf)  # same values with and without the gradient
    keep = q.valid
    assert int(keep.sum()) > 200
    fd = finite_difference_gradient(m, x[keep])
    grad = q.grad[keep]
    cos = torch.nn.functional.cosine_similarity(fd, grad, dim=1)
    rel = (fd - grad).norm(dim=1) / grad.norm(dim=1)
    assert float(cos.min()) > 0.99, float(cos.min())
    assert float(rel.max()) < 0.05, float(rel.max())


def test_gradient_matches_finite_differences_on_the_fitted_sphere() -> None:
    _check_gradient(fitted("sphere"), band_samples("sphere", 3000, torch.Generator().manual_seed(11)))


def test_gradient_matches_finite_differences_on_a_random_map() -> None:
    # an unfitted map with large random embeddings: the gradient is exact for any field, not only SDFs
    torch.manual_seed(3)
    m = NeuralSDFMap(NeuralMapConfig(voxel_size=VOXEL, device="cpu", color=True, init_std=0.3))
    x = torch.rand(3000, 3) * 0.8 - 0.4
    m.allocate(x, dilate=1)
    _check_gradient(m, x)
    q = m.query(x, gradient=True, color=True)
    assert q.color is not None and q.color.shape == (3000, 3)
    assert float(q.color.min()) >= 0.0 and float(q.color.max()) <= 1.0


def test_gradient_of_the_fitted_sphere_is_radial_and_unit() -> None:
    m = fitted("sphere")
    x = band_samples("sphere", 5000, torch.Generator().manual_seed(12), width=0.05)
    q = m.query(x, gradient=True)
    assert bool(q.valid.all())
    radial = x / x.norm(dim=1, keepdim=True)
    cos = torch.nn.functional.cosine_similarity(q.grad, radial, dim=1)
    assert float(cos.mean()) > 0.99 and float(cos.min()) > 0.95, (float(cos.mean()), float(cos.min()))
    norm = q.grad.norm(dim=1)
    assert abs(float(norm.median()) - 1.0) < 0.05
    assert float(norm.min()) > 0.7 and float(norm.max()) < 1.3


# -- allocation ------------------------------------------------------------------------------------
def test_allocation_grows_with_new_observations() -> None:
    torch.manual_seed(0)
    m = NeuralSDFMap(NeuralMapConfig(voxel_size=VOXEL, device="cpu", color=True))
    empty_bytes = m.map_bytes()
    assert m.grids[0].num_corners == 0

    a = torch.rand(2000, 3) * 0.5  # a patch
    added_a = m.allocate(a)
    assert added_a == m.grids[0].num_corners > 0
    bytes_a = m.map_bytes()
    assert bytes_a > empty_bytes
    for level, grid in enumerate(m.grids):
        assert m.embeddings[level].shape == (grid.num_corners, m.cfg.feature_dim)
    assert m.hits.shape[0] == m.grids[0].num_corners
    assert bool(m.query(a).valid.all())

    b = torch.rand(2000, 3) * 0.5 + torch.tensor([3.0, -2.0, 1.0])  # a new place
    q_b = m.query(b)
    assert not bool(q_b.valid.any())
    assert bool(torch.isfinite(q_b.sdf).all())
    version = m.version
    added_b = m.allocate(b)
    assert added_b > 0 and m.grids[0].num_corners == added_a + added_b
    assert m.version > version
    assert m.map_bytes() > bytes_a
    assert bool(m.query(b).valid.all())
    # observing the same place again allocates nothing
    n, size = m.grids[0].num_corners, m.map_bytes()
    assert m.allocate(a) == 0 and m.allocate(b[:100]) == 0
    assert m.grids[0].num_corners == n and m.map_bytes() == size
    # still nothing valid in between the patches or far away
    between = torch.tensor([[1.5, -1.0, 0.5], [-5.0, 0.0, 0.0], [0.0, 0.0, 40.0]])
    assert not bool(m.query(between).valid.any())


def test_query_on_an_empty_map_is_invalid() -> None:
    m = NeuralSDFMap(NeuralMapConfig(voxel_size=VOXEL, device="cpu", color=True))
    q = m.query(torch.rand(10, 3), gradient=True, color=True)
    assert not bool(q.valid.any())


def test_dilation_allocates_around_the_points() -> None:
    m0 = NeuralSDFMap(NeuralMapConfig(voxel_size=VOXEL, device="cpu", color=False))
    m2 = NeuralSDFMap(NeuralMapConfig(voxel_size=VOXEL, device="cpu", color=False))
    p = torch.tensor([[0.012, 0.013, 0.014]])
    assert m0.allocate(p, dilate=0) == 8
    assert m2.allocate(p, dilate=2) == 6**3  # 5×5×5 voxels
    off = torch.tensor([[2.5 * VOXEL, 0.0, 0.0]])  # two voxels over: inside the dilation only
    assert not bool(m0.query(p + off).valid.any())
    assert bool(m2.query(p + off).valid.all())
    assert not bool(m2.query(p + 2 * off).valid.any())


# -- persistence -----------------------------------------------------------------------------------
def test_state_round_trip_gives_identical_queries() -> None:
    torch.manual_seed(1)
    cfg = NeuralMapConfig(voxel_size=VOXEL, device="cpu", color=True, init_std=0.1)
    m = NeuralSDFMap(cfg)
    m.allocate(torch.rand(3000, 3))
    m.allocate(torch.rand(500, 3) - torch.tensor([2.0, 0.0, 0.0]))  # a second patch, with negative keys
    with torch.no_grad():
        m.features(torch.rand(200, 3), record_hits=True)
    state = m.state()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded_state = torch.load(buffer, weights_only=False)

    fresh = NeuralSDFMap(NeuralMapConfig(**loaded_state["config"]))
    fresh.load_state(loaded_state)
    x = torch.rand(4000, 3) * 3.0 - torch.tensor([2.2, 0.5, 0.5])
    a, b = m.query(x, gradient=True, color=True), fresh.query(x, gradient=True, color=True)
    assert bool(a.valid.any()) and not bool(a.valid.all())
    assert torch.equal(a.valid, b.valid)
    assert torch.equal(a.sdf, b.sdf)
    assert torch.equal(a.grad, b.grad)
    assert torch.equal(a.color, b.color)
    assert torch.equal(m.hits, fresh.hits)
    assert fresh.map_bytes() == m.map_bytes()
    assert torch.equal(m.query(x, min_hits=1).valid, fresh.query(x, min_hits=1).valid)

    # the state is a snapshot: later changes of the original do not leak into it
    with torch.no_grad(), m.writing():
        m.embeddings[0].add_(1.0)
    fresh2 = NeuralSDFMap(cfg)
    fresh2.load_state(state)
    assert torch.equal(fresh2.query(x).sdf, b.sdf)
    # and a loaded map keeps growing consistently
    fresh.allocate(torch.rand(100, 3) + 5.0)
    assert fresh.embeddings[0].shape[0] == fresh.grids[0].num_corners


# -- locking ---------------------------------------------------------------------------------------
def _blocked_call(m: NeuralSDFMap, hold: Callable, call: Callable) -> None:
    """While a thread holds ``hold()``, ``call()`` from another thread must wait for the release."""
    held, release, started, done = (threading.Event() for _ in range(4))
    times: dict[str, float] = {}
    errors: list[BaseException] = []

    def holder() -> None:
        try:
            with hold():
                held.set()
                release.wait(30)
                times["released"] = time.monotonic()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def caller() -> None:
        try:
            started.set()
            call()
            times["returned"] = time.monotonic()
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)
        finally:
            done.set()

    t_hold = threading.Thread(target=holder, daemon=True)
    t_hold.start()
    assert held.wait(10)
    t_call = threading.Thread(target=caller, daemon=True)
    t_call.start()
    assert started.wait(10)
    # the call cannot complete while the lock is held, however long we wait
    assert not done.wait(0.5)
    release.set()
    assert done.wait(30)
    t_hold.join(10)
    t_call.join(10)
    assert not errors, errors
    assert times["returned"] >= times["released"]


def test_query_waits_for_a_writer() -> None:
    torch.manual_seed(0)
    m = NeuralSDFMap(NeuralMapConfig(voxel_size=VOXEL, device="cpu", color=False))
    pts = torch.rand(100, 3)
    m.allocate(pts)
    before = m.version
    _blocked_call(m, m.writing, lambda: m.query(pts, gradient=True))
    assert m.version == before + 1  # the writer's block counts as one write


def test_writer_waits_for_a_reader() -> None:
    m = NeuralSDFMap(NeuralMapConfig(voxel_size=VOXEL, device="cpu", color=False))
    pts = torch.rand(100, 3)
    _blocked_call(m, m.reading, lambda: m.allocate(pts))
    assert bool(m.query(pts).valid.all())


def test_unblocked_query_does_not_wait() -> None:
    m = NeuralSDFMap(NeuralMapConfig(voxel_size=VOXEL, device="cpu", color=False))
    pts = np.random.default_rng(0).uniform(0, 0.3, size=(50, 3)).astype(np.float32)
    m.allocate(torch.from_numpy(pts))
    out: list = []
    t = threading.Thread(target=lambda: out.append(m.query(torch.from_numpy(pts))), daemon=True)
    t.start()
    t.join(30)
    assert out and bool(out[0].valid.all())


def test_record_hits_counts_only_the_first_n_points() -> None:
    # the mapper looks up colour points in the same query as its SDF samples; only the latter count as fitted
    m = NeuralSDFMap(NeuralMapConfig(voxel_size=VOXEL, device="cpu"))
    fitted_pts = torch.rand(50, 3) * 0.1
    other_pts = torch.rand(50, 3) * 0.1 + 1.0
    m.allocate(torch.cat([fitted_pts, other_pts]), dilate=0)
    m.features(torch.cat([fitted_pts, other_pts]), record_hits=50)
    assert bool(m.query(fitted_pts, min_hits=1).valid.all())
    assert not bool(m.query(other_pts, min_hits=1).valid.any())
