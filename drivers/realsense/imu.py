"""IMU samples: the buffer a motion sensor's callback fills, and the second playback that reads a
recording's IMU streams (the pipeline would keep only each stream's newest sample)."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from drivers.realsense.common import import_pyrealsense2
from slam.core.frames import ImuSamples

log = logging.getLogger(__package__)  # one logger for the driver, named as before it was a package


class ImuBuffer:
    """IMU samples as they arrive (a librealsense callback thread appends, the reader takes)."""

    def __init__(self, keep: int | None = 20_000) -> None:
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._samples: dict[str, deque[tuple[float, float, float, float]]] = {
            "accel": deque(maxlen=keep),
            "gyro": deque(maxlen=keep),
        }
        self._last_ms = {"accel": -math.inf, "gyro": -math.inf}
        self.camera_from_imu: np.ndarray | None = None  # set by whoever opens the motion streams
        self.profile: Any | None = None  # a live camera's accel (or gyro) stream profile

    def add(self, kind: str, stamp_ms: float, xyz: tuple[float, float, float]) -> None:
        with self._lock:
            if stamp_ms <= self._last_ms[kind]:
                return  # a recording's framesets repeat the newest sample
            self._last_ms[kind] = stamp_ms
            self._samples[kind].append((stamp_ms, *xyz))
            self._arrived.notify_all()

    def wait_past(self, stamp_ms: float, finished: Any, timeout_s: float = 2.0) -> bool:
        """Wait until both streams have a sample after ``stamp_ms`` or ``finished()`` (a recording's IMU
        is read by another playback thread, which may lag the images); False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._arrived:
            while min(self._last_ms.values()) <= stamp_ms and not finished():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._arrived.wait(min(left, 0.05))  # polled: ``finished`` changes without a notify
        return True

    def on_frame(self, frame: Any) -> None:
        """librealsense frame callback (motion sensor): keep the sample."""
        try:
            kind = frame.profile.stream_type().name
            if kind not in self._samples:
                return
            v = frame.as_motion_frame().get_motion_data()
            self.add(kind, frame.get_timestamp(), (v.x, v.y, v.z))
        except Exception as exc:  # an exception must not escape into librealsense's thread
            log.warning("realsense: IMU sample skipped: %s", exc)

    def take_until(self, stamp_ms: float) -> ImuSamples:
        """The samples up to ``stamp_ms`` (inclusive), removed from the buffer; times in seconds."""
        taken: dict[str, np.ndarray] = {}
        with self._lock:
            for kind, samples in self._samples.items():
                rows = []
                while samples and samples[0][0] <= stamp_ms:
                    rows.append(samples.popleft())
                taken[kind] = np.array(rows, dtype=np.float64).reshape(-1, 4)
        return ImuSamples(
            accel_t=taken["accel"][:, 0] / 1000.0,
            accel=taken["accel"][:, 1:],
            gyro_t=taken["gyro"][:, 0] / 1000.0,
            gyro=taken["gyro"][:, 1:],
            camera_from_imu=self.camera_from_imu,
        )


class ImuPlayback:
    """Every IMU sample of a recording, read by a second playback of the file through its motion sensor
    (non-real-time: it runs ahead of the images; the buffer keeps everything until a frame takes it)."""

    def __init__(self, path: Path, buffer: ImuBuffer) -> None:
        rs = import_pyrealsense2()
        self.device = rs.context().load_device(str(path))
        playback = self.device.as_playback()
        playback.set_real_time(False)
        # the status reads "stopped" before the playback thread has started as well as after it has ended:
        # only a stop after "playing" means every sample was delivered
        self._played = False
        playback.set_status_changed_callback(self._on_status)
        sensors = [s for s in self.device.query_sensors() if s.is_motion_sensor()]
        self.sensor = sensors[0] if sensors else None
        if self.sensor is not None:
            profiles = [
                p for p in self.sensor.get_stream_profiles() if p.stream_type().name in ("accel", "gyro")
            ]
            self.sensor.open(profiles)
            self.sensor.start(buffer.on_frame)

    def _on_status(self, status: Any) -> None:
        rs = import_pyrealsense2()
        if status == rs.playback_status.playing:
            self._played = True

    def finished(self) -> bool:
        rs = import_pyrealsense2()
        if self.sensor is None:
            return True
        status = self.device.as_playback().current_status()
        if status == rs.playback_status.playing:
            self._played = True
        return self._played and status == rs.playback_status.stopped

    def close(self) -> None:
        if self.sensor is not None:
            for step in (self.sensor.stop, self.sensor.close):
                try:
                    step()
                except RuntimeError:
                    pass
            self.sensor = None
