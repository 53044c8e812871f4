"""Robust kernels shared by every registration (depth, LiDAR, events)."""

from __future__ import annotations


def geman_mcclure_weight(r, scale: float):
    """IRLS weight of residuals ``r`` (tensor or array) under a Geman-McClure kernel of ``scale``: about 1
    well below the scale, falling as (scale / r)⁴ above it, so large residuals keep a bounded influence."""
    s2 = scale * scale
    return (s2 / (s2 + r * r)) ** 2
