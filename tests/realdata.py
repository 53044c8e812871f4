"""Where the tests find the real recordings ($SLAM_SHARED_DATA), and what happens when they are missing:
a local run skips those tests with the reason; a CI run (CI=true, set by ``.ci/run`` and by CI services)
fails them, so a CI that lost its data cannot go green on the synthetic tests alone."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest


def shared_data_dir() -> Path | None:
    value = os.environ.get("SLAM_SHARED_DATA")
    if not value:
        return None
    path = Path(value)
    return path if path.is_dir() else None


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def missing(reason: str) -> NoReturn:
    """Skip the current test for ``reason`` (a missing recording), or fail it under CI."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: the tests on real recordings must run, not skip)", pytrace=False)
    pytest.skip(reason)


def shared_root() -> Path:
    """$SLAM_SHARED_DATA, or skip / fail (``missing``) naming what is wrong with it."""
    value = os.environ.get("SLAM_SHARED_DATA")
    if not value:
        missing("real recordings not available: set SLAM_SHARED_DATA to the shared data folder")
    path = shared_data_dir()
    if path is None:
        missing(f"real recordings not available: SLAM_SHARED_DATA={value} is not a folder")
    return path


def require(*paths: Path) -> None:
    """Skip / fail (``missing``) unless every one of ``paths`` exists."""
    absent = [str(p) for p in paths if not p.exists()]
    if absent:
        missing(f"{' and '.join(absent)} not found")
