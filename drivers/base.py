"""The one source abstraction every driver implements, and the registry that finds drivers by name.

A ``Source`` iterates frames (``slam.core.frames`` types), may know its length, and is closed when done.
Recorded sequences subclass ``SequenceSource``: they list their frames up front (so a missing folder
or an unreadable index file fails at construction, naming the file), and decode one frame at a time;
a frame that fails to decode is skipped, counted in ``frames_skipped`` and logged, and the run goes on.
"""

from __future__ import annotations

import importlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from slam.core.frames import Frame, FrameError

log = logging.getLogger(__name__)


class SourceError(RuntimeError):
    """A source cannot be opened or read at all (missing folder, malformed index file...)."""


class FrameDecodeError(RuntimeError):
    """One frame cannot be decoded; the sequence goes on without it."""


class Source(ABC):
    """Anything that yields frames: a recorded sequence, a live sensor, a simulator."""

    #: the name the registry knows the driver by (``--dataset NAME``, ``source.kind`` in config)
    name: ClassVar[str] = ""
    #: "rgbd", "lidar" or "events": which preprocessing and sampling the engine applies
    sensor: ClassVar[str] = "rgbd"
    #: True for live sensors: the consumer should drop stale frames rather than queue them
    live: ClassVar[bool] = False

    def __init__(self) -> None:
        self.frames_skipped = 0
        self.skipped: list[tuple[str, str]] = []  # (which frame, why), for the run's report

    @abstractmethod
    def __iter__(self) -> Iterator[Frame]: ...

    def __len__(self) -> int:
        """Number of frames when known; live sources raise TypeError (like an unsized iterable)."""
        raise TypeError(f"{type(self).__name__} has no known length")

    def length(self) -> int | None:
        try:
            return len(self)
        except TypeError:
            return None

    @classmethod
    def is_live(cls, path: Path | None, options: dict[str, Any]) -> bool:
        """Whether the source configured with ``path`` and ``options`` is a live sensor, before it is
        opened (a driver that plays both a device and its recordings decides by its arguments)."""
        return cls.live

    def health(self) -> dict[str, Any] | None:
        """The sensor's link state for the status topic (connected, reconnecting, ...); None when the
        driver has nothing to say (recordings)."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release files or devices. Safe to call twice."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _skip(self, which: str, why: str) -> None:
        self.frames_skipped += 1
        self.skipped.append((which, why))
        log.warning("skipping %s: %s", which, why)


class SequenceSource(Source):
    """A recorded sequence with frames addressable by position, with first/last/stride selection.

    Subclasses fill ``self._entries`` (one item per frame, any type) in ``__init__`` and implement
    ``_load(position, entry)``; ``_describe(entry)`` names an entry in messages (e.g. its file).
    """

    def __init__(self, first: int = 0, last: int | None = None, stride: int = 1) -> None:
        super().__init__()
        if first < 0:
            raise SourceError(f"first must be >= 0, got {first}")
        if last is not None and last < first:
            raise SourceError(f"last ({last}) must be >= first ({first})")
        if stride < 1:
            raise SourceError(f"stride must be >= 1, got {stride}")
        self.first, self.last, self.stride = first, last, stride
        self._entries: list[Any] = []

    def _selected(self) -> range:
        stop = len(self._entries) if self.last is None else min(self.last + 1, len(self._entries))
        return range(self.first, stop, self.stride)

    def __len__(self) -> int:
        return len(self._selected())

    def __iter__(self) -> Iterator[Frame]:
        for position in self._selected():
            entry = self._entries[position]
            try:
                yield self._load(position, entry)
            except (FrameDecodeError, FrameError, OSError, ValueError) as exc:
                self._skip(self._describe(entry), str(exc))

    @abstractmethod
    def _load(self, position: int, entry: Any) -> Frame: ...

    def _describe(self, entry: Any) -> str:
        return str(entry)


# name -> "module:Class"; modules are imported on first use so that a driver's optional dependency
# (pyrealsense2, rosbags, ...) is only needed by those who use it.
_REGISTRY: dict[str, str] = {
    "7scenes": "drivers.sevenscenes:SevenScenesSource",
    "tum": "drivers.tum:TUMSource",
    "replica": "drivers.replica:ReplicaSource",
    "demo": "drivers.demo:DemoSource",
    "events": "drivers.events.source:EventSource",
    "kitti": "drivers.kitti:KittiSource",
    "pointcloud_folder": "drivers.pointcloud_folder:PointCloudFolderSource",
    "rosbag": "drivers.rosbag:RosbagSource",
    "lidar_demo": "drivers.lidar_demo:LidarDemoSource",
    "realsense": "drivers.realsense:RealSenseSource",
}


def register_source(name: str, target: str) -> None:
    """Make a driver available by name; ``target`` is ``"package.module:ClassName"``."""
    _REGISTRY[name] = target


def available_sources() -> list[str]:
    return sorted(_REGISTRY)


def source_class(name: str) -> type[Source]:
    if name not in _REGISTRY:
        raise SourceError(f"unknown source {name!r}; available: {', '.join(available_sources())}")
    module_name, _, cls_name = _REGISTRY[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SourceError(f"source {name!r} needs a package that is not installed: {exc}") from exc
    return getattr(module, cls_name)


def open_source(name: str, path: str | Path | None = None, **options: Any) -> Source:
    """Build the driver registered as ``name``; ``options`` are its keyword arguments."""
    cls = source_class(name)
    if path is not None:
        options["path"] = Path(path)
    try:
        return cls(**options)
    except TypeError as exc:
        raise SourceError(f"source {name!r}: {exc}") from exc
