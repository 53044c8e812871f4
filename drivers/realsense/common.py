"""The pyrealsense2 import, done only when a RealSense source is opened."""

from __future__ import annotations

from typing import Any

from drivers.base import SourceError

INSTALL_HINT = "pip install 'neural-slam[realsense]'"


def import_pyrealsense2() -> Any:
    """The pyrealsense2 module, or a SourceError saying how to install it."""
    try:
        import pyrealsense2 as rs
    except ImportError as exc:
        raise SourceError(f"realsense: pyrealsense2 is not installed ({exc}); {INSTALL_HINT}") from None
    return rs
