"""Events attached to RGB-D frames: each frame gets the events between the previous frame and itself.

A frame at time t_k receives, as ``frame.events``, the events with t_{k-1} < t <= t_k (after the
configured ``time_offset_s`` puts event times on the RGB-D clock), in an ``EventPacket`` whose
``timestamp`` and ``index`` are the frame's and which carries the event camera's intrinsics and the
camera-from-sensor transform when they are configured. The first frame has no previous frame: it gets
an empty packet, and the events up to it are dropped (counted in ``SyncStats.before_first_frame``).
Frames a source skipped simply widen the next frame's interval. The event stream is read forward
once, so a recording longer than memory is fine; frames whose timestamps go backwards get an empty
packet (counted), since those events were already handed out.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from drivers.base import Source
from drivers.events.formats import open_event_reader
from drivers.events.reader import EventCursor, EventReader, empty_packet
from slam.core.config import StrictConfig
from slam.core.frames import CameraIntrinsics, EventPacket, RGBDFrame

log = logging.getLogger(__name__)

ROTATION_TOLERANCE = 1e-4


class EventCameraConfig(StrictConfig):
    """The event camera next to the RGB-D camera: its recording, calibration and clock offset."""

    path: Path | None = Field(
        None, description="event recording to attach to the RGB-D frames; null = no events"
    )
    format: Literal["auto", "text", "aedat4", "evt3", "hdf5"] = Field(
        "auto", description="recording format; auto = from the file's suffix or first bytes"
    )
    width: int | None = Field(None, ge=1, description="sensor width (px); null = from the file")
    height: int | None = Field(None, ge=1, description="sensor height (px); null = from the file")
    fx: float | None = Field(None, gt=0, description="event camera focal length x (px); null = uncalibrated")
    fy: float | None = Field(None, gt=0, description="event camera focal length y (px)")
    cx: float | None = Field(None, description="event camera principal point x (px)")
    cy: float | None = Field(None, description="event camera principal point y (px)")
    distortion: list[float] = Field(
        default_factory=list, description="radial-tangential distortion k1 k2 p1 p2 [k3]; empty = none"
    )
    camera_from_sensor: list[list[float]] = Field(
        default_factory=lambda: np.eye(4).tolist(),
        description="4x4 rigid transform taking event-sensor coordinates to RGB-D camera coordinates (m)",
    )
    time_offset_s: float = Field(
        0.0, description="added to event timestamps to put them on the RGB-D clock (s)"
    )
    reader: dict[str, Any] = Field(
        default_factory=dict,
        description="format-specific reader options, e.g. {time_low_wrap: true} for EVT 3.0",
    )

    @field_validator("distortion")
    @classmethod
    def _distortion_length(cls, value: list[float]) -> list[float]:
        if len(value) not in (0, 4, 5):
            raise ValueError(f"expected 0, 4 or 5 coefficients (k1 k2 p1 p2 [k3]), got {len(value)}")
        return value

    @field_validator("camera_from_sensor")
    @classmethod
    def _rigid(cls, value: list[list[float]]) -> list[list[float]]:
        m = np.asarray(value, dtype=np.float64)
        if m.shape != (4, 4):
            raise ValueError(f"must be 4x4, got shape {m.shape}")
        if not np.all(np.isfinite(m)):
            raise ValueError("contains NaN or inf")
        if not np.allclose(m[3], [0, 0, 0, 1]):
            raise ValueError(f"last row must be [0, 0, 0, 1], got {m[3].tolist()}")
        r = m[:3, :3]
        if not np.allclose(r.T @ r, np.eye(3), atol=ROTATION_TOLERANCE) or np.linalg.det(r) <= 0:
            raise ValueError("the upper-left 3x3 block is not a rotation")
        return value

    @model_validator(mode="after")
    def _intrinsics_all_or_none(self) -> EventCameraConfig:
        given = [name for name in ("fx", "fy", "cx", "cy") if getattr(self, name) is not None]
        if given and len(given) != 4:
            missing = sorted({"fx", "fy", "cx", "cy"} - set(given))
            raise ValueError(f"intrinsics need fx, fy, cx and cy together; missing {', '.join(missing)}")
        return self

    def intrinsics(self, width: int, height: int) -> CameraIntrinsics | None:
        if self.fx is None:
            return None
        return CameraIntrinsics(self.fx, self.fy, self.cx, self.cy, width, height)

    def transform(self) -> np.ndarray:
        return np.asarray(self.camera_from_sensor, dtype=np.float64)

    def open_reader(self) -> EventReader:
        if self.path is None:
            raise ValueError("events.path is not set")
        return open_event_reader(self.path, self.format, width=self.width, height=self.height, **self.reader)


@dataclass
class SyncStats:
    frames: int = 0
    attached: int = 0  # events handed to frames
    before_first_frame: int = 0  # events at or before the first frame, dropped
    frames_out_of_order: int = 0  # frames earlier than their predecessor: given no events


def _shifted(packets: Iterable[EventPacket], offset: float) -> Iterator[EventPacket]:
    for packet in packets:
        if offset:
            packet.t = packet.t + offset
        yield packet


class EventSynchronizer:
    """Attaches the events of one stream to a sequence of RGB-D frames (see the module doc)."""

    def __init__(
        self,
        packets: Iterable[EventPacket],
        width: int,
        height: int,
        config: EventCameraConfig | None = None,
    ) -> None:
        self.config = config or EventCameraConfig()
        self.width, self.height = width, height
        self._cursor = EventCursor(_shifted(packets, self.config.time_offset_s), width, height)
        self._intrinsics = self.config.intrinsics(width, height)
        self._transform = self.config.transform()
        self._previous: float | None = None
        self.stats = SyncStats()

    @classmethod
    def from_reader(cls, reader: EventReader, config: EventCameraConfig | None = None) -> EventSynchronizer:
        return cls(reader.chunks(), reader.width, reader.height, config)

    def events_for(self, frame: RGBDFrame) -> EventPacket:
        """The events since the previous frame given to this synchroniser, up to ``frame.timestamp``."""
        t = frame.timestamp
        if self._previous is None:
            self.stats.before_first_frame += len(self._cursor.take_until(t, inclusive=True))
            packet = empty_packet(self.width, self.height)
        elif t < self._previous:
            self.stats.frames_out_of_order += 1
            log.warning("frame %d at t=%.6f is earlier than the previous frame: no events", frame.index, t)
            packet = empty_packet(self.width, self.height)
        else:
            packet = self._cursor.take_until(t, inclusive=True)
        self._previous = t if self._previous is None else max(t, self._previous)
        packet.timestamp, packet.index = t, frame.index
        packet.intrinsics, packet.camera_from_sensor = self._intrinsics, self._transform
        self.stats.frames += 1
        self.stats.attached += len(packet)
        return packet

    def attach(self, frames: Iterable[RGBDFrame]) -> Iterator[RGBDFrame]:
        for frame in frames:
            frame.events = self.events_for(frame)
            yield frame


class EventSyncedSource(Source):
    """An RGB-D source whose frames carry the events of an event recording (``frame.events``)."""

    sensor = "rgbd"

    def __init__(self, frames: Source, config: EventCameraConfig) -> None:
        super().__init__()
        self.frames = frames
        self.config = config
        self.reader = config.open_reader()
        self.synchronizer: EventSynchronizer | None = None
        self.live = frames.live

    def __iter__(self) -> Iterator[RGBDFrame]:
        self.synchronizer = EventSynchronizer.from_reader(self.reader, self.config)
        try:
            yield from self.synchronizer.attach(self.frames)
        finally:  # the RGB-D source's skipped frames are this source's, also when stopped early
            self.frames_skipped, self.skipped = self.frames.frames_skipped, self.frames.skipped

    def __len__(self) -> int:
        return len(self.frames)

    def close(self) -> None:
        self.frames.close()
        self.reader.close()
