"""Shared fixtures. Real recordings are found through $SLAM_SHARED_DATA (``.ci/run`` and the Makefile
set it to ../shared/data); tests that need them skip with the reason when it is absent, and fail under
CI=true (tests/realdata.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from realdata import require, shared_root

# One torch thread: on a shared 2-core machine oversubscribed OpenMP threads spin and slow tests many-fold.
torch.set_num_threads(1)


@pytest.fixture
def shared_data() -> Path:
    return shared_root()


@pytest.fixture
def redkitchen(shared_data: Path) -> Path:
    path = shared_data / "7scenes-redkitchen"
    require(path)
    return path
