"""Shared fixtures. Real recordings are found through $SLAM_SHARED_DATA (``.ci/run`` and the Makefile
set it to ../shared/data); tests that need them skip with the reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# One torch thread: on a shared 2-core machine oversubscribed OpenMP threads spin and slow tests many-fold.
torch.set_num_threads(1)


def shared_data_dir() -> Path | None:
    value = os.environ.get("SLAM_SHARED_DATA")
    if not value:
        return None
    path = Path(value)
    return path if path.is_dir() else None


@pytest.fixture
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("real recordings not available: set SLAM_SHARED_DATA to the shared data folder")
    return path


@pytest.fixture
def redkitchen(shared_data: Path) -> Path:
    path = shared_data / "7scenes-redkitchen"
    if not path.is_dir():
        pytest.skip(f"{path} not found")
    return path
