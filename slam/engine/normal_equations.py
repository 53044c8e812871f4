"""The Gauss-Newton normal equations of points against the SDF, by a fused loop or by torch ops.

For each point in fitted space whose residual r = SDF(x) is within the cut-off, the Jacobian row about the
sensor position c is J = [∇SDF(x), (x − c) × ∇SDF(x)] (with a sweep: [J, u·J], u the point's firing
fraction), its weight the Geman-McClure weight of r times the point's own; H = Σ w JᵀJ and b = Σ w r Jᵀ,
in float64. ``normal_equations`` is one compiled pass over the points (numba, no GIL); ``normal_equations_torch``
the same arithmetic as batched torch ops, the reference (and the path when numba is missing).
"""

from __future__ import annotations

import numpy as np
import torch

from slam.core.robust import geman_mcclure_weight
from slam.map import kernels


def _accumulate(
    x, sdf, grad, valid, center, scale, cutoff, weights, sweep_u, h, b
):  # pragma: no cover - compiled
    n_out = h.shape[0]
    s2 = scale * scale
    jac = np.empty(n_out, dtype=np.float64)
    kept = 0
    for i in range(x.shape[0]):
        if not valid[i] or not abs(sdf[i]) < cutoff:
            continue
        kept += 1
        r = np.float64(sdf[i])
        gx, gy, gz = np.float64(grad[i, 0]), np.float64(grad[i, 1]), np.float64(grad[i, 2])
        cx = np.float64(x[i, 0]) - center[0]
        cy = np.float64(x[i, 1]) - center[1]
        cz = np.float64(x[i, 2]) - center[2]
        jac[0], jac[1], jac[2] = gx, gy, gz
        jac[3] = cy * gz - cz * gy
        jac[4] = cz * gx - cx * gz
        jac[5] = cx * gy - cy * gx
        q = s2 / (s2 + r * r)
        w = q * q
        if weights.shape[0] > 0:
            w *= weights[i]
        if n_out == 12:
            u = sweep_u[i]
            for a in range(6):
                jac[6 + a] = jac[a] * u
        for a in range(n_out):
            wa = w * jac[a]
            b[a] += wa * r
            for c in range(a, n_out):
                h[a, c] += wa * jac[c]
    for a in range(n_out):
        for c in range(a):
            h[a, c] = h[c, a]
    return kept


_accumulate_compiled = kernels.jit(_accumulate) if kernels.AVAILABLE else None

_EMPTY = np.empty(0, dtype=np.float64)


def normal_equations(
    x: torch.Tensor,
    sdf: torch.Tensor,
    grad: torch.Tensor,
    valid: torch.Tensor,
    center: np.ndarray,
    scale: float,
    cutoff: float,
    weights: torch.Tensor | None = None,
    sweep_u: torch.Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """(H, b, points used): 6×6 / 6, or 12×12 / 12 with ``sweep_u``. Compiled when numba is present."""
    if _accumulate_compiled is None or x.device.type != "cpu":
        return normal_equations_torch(x, sdf, grad, valid, center, scale, cutoff, weights, sweep_u)
    n_out = 12 if sweep_u is not None else 6
    h = np.zeros((n_out, n_out))
    b = np.zeros(n_out)
    kept = _accumulate_compiled(
        x.detach().numpy(), sdf.numpy(), grad.numpy(), valid.numpy(), np.asarray(center, dtype=np.float64),
        float(scale), float(cutoff),
        _EMPTY if weights is None else np.ascontiguousarray(weights.numpy(), dtype=np.float64),
        _EMPTY if sweep_u is None else np.ascontiguousarray(sweep_u.numpy(), dtype=np.float64),
        h, b,
    )  # fmt: skip
    return h, b, int(kept)


def normal_equations_torch(
    x: torch.Tensor,
    sdf: torch.Tensor,
    grad: torch.Tensor,
    valid: torch.Tensor,
    center: np.ndarray,
    scale: float,
    cutoff: float,
    weights: torch.Tensor | None = None,
    sweep_u: torch.Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """``normal_equations`` by batched torch ops (the reference)."""
    keep = valid & (sdf.abs() < cutoff)
    r = sdf[keep].double()
    g = grad[keep].double()
    xc = x[keep].double() - torch.from_numpy(np.asarray(center, dtype=np.float64))  # about the sensor
    jac = torch.cat([g, torch.cross(xc, g, dim=1)], dim=1)  # N×6
    w = geman_mcclure_weight(r, scale)
    if weights is not None:
        w = w * weights[keep].to(w.dtype)
    if sweep_u is not None:
        jac = torch.cat([jac, jac * sweep_u[keep].to(jac.dtype)[:, None]], dim=1)  # N×12
    h = (jac * w[:, None]).T @ jac
    b = (jac * (w * r)[:, None]).sum(dim=0)
    return h.numpy(), b.numpy(), int(keep.sum())
