"""slam.engine.normal_equations: the compiled pass gives the torch reference's H and b (1e-9 relative,
both in float64), with and without point weights and the sweep's 12 unknowns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from slam.engine.normal_equations import _accumulate_compiled, normal_equations, normal_equations_torch

pytestmark = pytest.mark.skipif(_accumulate_compiled is None, reason="numba is not installed")


@pytest.mark.parametrize("with_weights", [False, True])
@pytest.mark.parametrize("with_sweep", [False, True])
def test_compiled_normal_equations_match_reference(with_weights: bool, with_sweep: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    n = 3000
    x = torch.randn(n, 3, generator=gen) * 3 + 10.0  # far from the origin: the lever arm matters
    sdf = torch.randn(n, generator=gen) * 0.05
    grad = torch.randn(n, 3, generator=gen)
    valid = torch.rand(n, generator=gen) > 0.2
    center = np.array([9.5, 10.2, 10.1])
    weights = torch.rand(n, generator=gen, dtype=torch.float64) if with_weights else None
    sweep = torch.rand(n, generator=gen, dtype=torch.float64) - 1 if with_sweep else None
    h, b, kept = normal_equations(x, sdf, grad, valid, center, 0.02, 0.1, weights, sweep)
    h_ref, b_ref, kept_ref = normal_equations_torch(x, sdf, grad, valid, center, 0.02, 0.1, weights, sweep)
    assert kept == kept_ref and 0 < kept < n
    assert h.shape == h_ref.shape == ((12, 12) if with_sweep else (6, 6))
    np.testing.assert_allclose(h, h_ref, rtol=1e-9, atol=1e-9 * np.abs(h_ref).max())
    np.testing.assert_allclose(b, b_ref, rtol=1e-9, atol=1e-9 * np.abs(b_ref).max())
