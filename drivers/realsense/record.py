"""Recording a live camera to a ``.db3`` file with librealsense's recorder (``slam record``)."""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drivers.base import SourceError
from drivers.realsense.common import import_pyrealsense2
from drivers.realsense.devices import USB2_PROFILE, choose_profile, find_device
from drivers.realsense.pairing import DropCounter
from drivers.reconnect import DeviceUnavailable

log = logging.getLogger(__package__)  # one logger for the driver, named as before it was a package


@dataclass
class RecordResult:
    path: Path
    frames: int
    dropped: int
    seconds: float


def record_camera(
    path: Path,
    *,
    serial: str | None = None,
    width: int = 640,
    height: int = 480,
    fps: int = 30,
    color: bool = True,
    seconds: float | None = None,
    frames: int | None = None,
    usb2_profile: tuple[int, int, int] | None = USB2_PROFILE,
    stop: threading.Event | None = None,
    context: Any | None = None,
) -> RecordResult:
    """Record a live camera (depth, colour and, when present, IMU) to ``path`` with librealsense's
    recorder, until ``seconds`` or ``frames`` or ``stop``; ``RealSenseSource(path)`` plays it back."""
    path = Path(path)
    if path.suffix != ".db3":
        raise SourceError(
            f"realsense: record to {path}: librealsense records ROS 2 .db3 files (it refuses other names); "
            "name the file .db3"
        )
    if seconds is None and frames is None and stop is None:
        raise SourceError("realsense: record: give seconds or frames (or a stop event)")
    if not path.parent.is_dir():
        raise SourceError(f"realsense: record: folder {path.parent} does not exist")
    rs = import_pyrealsense2()
    ctx = context if context is not None else rs.context()
    try:
        dev = find_device(serial, ctx)
    except DeviceUnavailable as exc:
        raise SourceError(f"realsense: {exc}") from None
    (w, h, rate), warning = choose_profile((width, height, fps), dev.usb, usb2_profile)
    if warning:
        log.warning("realsense %s: %s", dev.serial, warning)
    pipeline = rs.pipeline(ctx)
    config = rs.config()
    config.enable_device(dev.serial)
    config.enable_stream(rs.stream.depth, w, h, rs.format.z16, rate)
    if color:
        config.enable_stream(rs.stream.color, w, h, rs.format.rgb8, rate)
    if dev.has_imu:  # the recorder writes at the sensors, before the pipeline's syncer: every sample
        config.enable_stream(rs.stream.accel)
        config.enable_stream(rs.stream.gyro)
    config.enable_record_to_file(str(path))
    try:
        pipeline.start(config)
    except RuntimeError as exc:
        raise SourceError(f"realsense {dev.serial}: cannot record {w}x{h}@{rate}: {exc}") from None
    stop = stop or threading.Event()
    drops = DropCounter(rate)
    count, t0, last_ms = 0, time.monotonic(), -math.inf
    try:
        while not stop.is_set():
            if seconds is not None and time.monotonic() - t0 >= seconds:
                break
            if frames is not None and count >= frames:
                break
            ok, frameset = pipeline.try_wait_for_frames(1000)
            if not ok:
                log.warning("realsense %s: no frame for 1 s while recording", dev.serial)
                continue
            depth = frameset.get_depth_frame()
            if depth and depth.get_timestamp() > last_ms:
                last_ms = depth.get_timestamp()
                drops.see(last_ms)
                count += 1
    except KeyboardInterrupt:  # Ctrl-C is how a recording without a limit ends; the file is closed below
        log.warning("realsense %s: recording stopped by Ctrl-C", dev.serial)
    finally:
        pipeline.stop()  # closes the file
    return RecordResult(path, count, drops.dropped, time.monotonic() - t0)
