"""bench/events_bounds.py: the oracle priors reach the tracker (a small generated room, no events)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.events_bounds import run_oracle
from drivers.demo import DemoSource

SCENE = {"frames": 24, "width": 160, "height": 120, "noise": False, "progress": False}


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> list:
    root: Path = tmp_path_factory.mktemp("demo_cache")
    return [f for f in DemoSource(root, **SCENE) if f.index % 2 == 0]


def test_a_perfect_relative_motion_prior_gives_the_ground_truth(frames) -> None:
    # here depth alone is about 3 mm off, and a noisy initial guess alone about 4.5 mm (depth corrects it)
    perfect = run_oracle(frames, "motion", 1e4, 0.0)
    noisy = run_oracle(frames, "motion", 1e4, 3.0)  # the prior itself 3 cm off per axis and frame
    assert perfect["ate_rmse_m"] < 1e-3
    assert noisy["ate_rmse_m"] > 0.02  # the prior holds the pose: its noise adds up
