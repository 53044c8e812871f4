"""``RealSenseSource``: a live camera (reconnecting when unplugged) or a recording played back."""

from __future__ import annotations

import logging
import math
import tempfile
import threading
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from drivers.base import FrameDecodeError, Source, SourceError
from drivers.realsense.common import import_pyrealsense2
from drivers.realsense.devices import USB2_PROFILE, DeviceInfo, choose_profile, describe_device, find_device
from drivers.realsense.imu import ImuBuffer, ImuPlayback
from drivers.realsense.pairing import (
    SUPPORTED_COLOR,
    DropCounter,
    FramePair,
    FramePairer,
    Image,
    color_rgb,
    depth_metres,
)
from drivers.realsense.streams import (
    LiveRequest,
    PipelineStream,
    open_live,
    open_playback,
    output_camera,
    playable_path,
    recorded_depth_frames,
    recorded_streams,
    stream_intrinsics,
    transform_between,
)
from drivers.reconnect import Backoff, DeviceLost, DeviceUnavailable, ReconnectingReader, StreamEnded
from slam.core.frames import FrameError, RGBDFrame

log = logging.getLogger(__package__)  # one logger for the driver, named as before it was a package

RECORDING_SUFFIXES = (".db3", ".bag")
#: times a playback that ended before its first frame is started again (see ``open_playback``)
PLAYBACK_RESTARTS = 3


class RealSenseSource(Source):
    """A RealSense camera (``path`` None) or a recording of one (``path``: .db3 / .bag)."""

    name = "realsense"
    sensor = "rgbd"
    live = True  # per instance: False when playing a file (see ``is_live``)

    def __init__(
        self,
        path: Path | None = None,
        first: int = 0,
        last: int | None = None,
        stride: int = 1,
        *,
        serial: str | int | None = None,
        width: int = 640,
        height: int = 480,
        fps: int = 30,
        color: bool = True,
        align_to_color: bool = True,
        imu: bool | None = None,
        realtime: bool = False,
        usb2_profile: tuple[int, int, int] | list[int] | None = USB2_PROFILE,
        reconnect_initial_s: float = 0.5,
        reconnect_max_s: float = 5.0,
        reconnect_attempts: int | None = None,
        lost_after_s: float = 3.0,
        global_time: bool | None = None,
        context: Any | None = None,
    ) -> None:
        """``global_time``: True stamps live frames with the device's hardware clock mapped to the host
        clock, False with the raw hardware clock, None leaves the device's setting (on by default on D4xx)."""
        super().__init__()
        if first < 0 or stride < 1 or (last is not None and last < first):
            raise SourceError(f"realsense: bad selection first={first} last={last} stride={stride}")
        self.first, self.last, self.stride = first, last, stride
        self.path = Path(path) if path is not None else None
        self.live = self.path is None
        self.color, self.align_to_color = color, align_to_color and color
        self.realtime = realtime
        self.frames_dropped = 0  # missing from the stream (gaps in the depth timestamps, a short playback)
        self.expected_frames: int | None = None  # depth frames in the recording, when it says
        self._state, self._message = "starting", ""
        self.transitions: deque[tuple[str, str]] = deque(maxlen=200)  # (state, message), oldest first
        self._stop = threading.Event()
        self._imu = ImuBuffer()
        self._imu_playback: ImuPlayback | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.device: DeviceInfo | None = None
        self.timestamp_domain: str | None = None  # of the first frame: hardware_clock, global_time, ...
        self.global_time = global_time
        rs = import_pyrealsense2()
        self._align = rs.align(rs.stream.color) if self.align_to_color else None
        try:
            if self.path is not None:
                self._stream = self._open_recording(self.path)
                self._reader: Any = self._playback_items(self._stream)
            else:
                self._reader = self._open_camera(
                    serial,
                    (width, height, fps),
                    imu,
                    usb2_profile,
                    context,
                    Backoff(reconnect_initial_s, 2.0, max(reconnect_max_s, reconnect_initial_s)),
                    reconnect_attempts,
                    lost_after_s,
                )
            self._fps = self._stream_fps()
        except BaseException:
            self.close()  # a half-opened pipeline or temporary folder must not outlive the error
            raise

    @classmethod
    def is_live(cls, path: Path | None, options: dict[str, Any]) -> bool:
        return path is None

    # -- opening ----------------------------------------------------------------------------------------
    def _open_recording(self, path: Path) -> PipelineStream:
        if not path.is_file():
            raise SourceError(f"realsense: recording {path} not found")
        if path.suffix not in RECORDING_SUFFIXES:
            raise SourceError(f"realsense: {path}: expected a .db3 or .bag recording")
        self._tmp = tempfile.TemporaryDirectory(prefix="realsense-")
        playable = playable_path(path, Path(self._tmp.name))
        self._recorded, streams = recorded_streams(playable)
        self._check_streams(streams, str(path))
        self._playable, self._kinds = playable, ["depth", "color"] if self.color else ["depth"]
        self.expected_frames = recorded_depth_frames(playable)
        stream = open_playback(playable, self.realtime, self._kinds)
        if "accel" in streams or "gyro" in streams:
            self._imu = ImuBuffer(keep=None)  # the IMU playback runs ahead of the images
            camera = output_camera(streams, self.align_to_color)
            imu_profile = streams.get("accel") or streams.get("gyro")
            self._imu.camera_from_imu = transform_between(imu_profile, camera) if camera else None
            self._imu_playback = ImuPlayback(playable, self._imu)
        dev = stream.profile.get_device()
        self.device = describe_device(dev)
        self._depth_scale = float(dev.first_depth_sensor().get_depth_scale())
        self._set_state("playing", f"playing {path}{' in real time' if self.realtime else ''}")
        return stream

    def _check_streams(self, kinds: dict[str, Any], what: str) -> None:
        if "depth" not in kinds:
            raise SourceError(
                f"realsense: {what} has no depth stream (streams: {', '.join(kinds) or 'none'})"
            )
        if kinds["depth"].format().name != "z16":
            raise SourceError(f"realsense: {what}: depth format {kinds['depth'].format().name}, expected z16")
        if self.color and "color" not in kinds:
            log.warning("realsense: %s has no colour stream; frames come without colour", what)
            self.color = self.align_to_color = False
            self._align = None
        if self.color and kinds["color"].format().name not in SUPPORTED_COLOR:
            raise SourceError(
                f"realsense: {what}: colour format {kinds['color'].format().name} is not supported "
                f"({', '.join(SUPPORTED_COLOR)} are)"
            )

    def _open_camera(
        self,
        serial: str | int | None,
        requested: tuple[int, int, int],
        imu: bool | None,
        usb2_profile: Any,
        context: Any | None,
        backoff: Backoff,
        attempts: int | None,
        lost_after_s: float,
    ) -> ReconnectingReader:
        try:
            self.device = find_device(None if serial is None else str(serial), context)
        except DeviceUnavailable as exc:
            raise SourceError(f"realsense: {exc}") from None
        dev = self.device
        profile, warning = choose_profile(requested, dev.usb, tuple(usb2_profile) if usb2_profile else None)
        if warning:
            log.warning("realsense %s: %s", dev.serial, warning)
        self.usb_warning = warning
        request = LiveRequest(
            dev.serial,
            *profile,
            color=self.color,
            imu=dev.has_imu if imu is None else imu,
            global_time=self.global_time,
        )
        self._request = request
        try:
            self._stream = open_live(request, self._imu, context)
        except DeviceUnavailable as exc:
            raise SourceError(f"realsense: {exc}") from None
        self._depth_scale = float(self._stream.profile.get_device().first_depth_sensor().get_depth_scale())
        self._locate_imu(self._stream)
        what = f"RealSense {dev.serial}"
        log.info("%s (%s, USB %s): %dx%d@%d", what, dev.name, dev.usb or "?", *profile)

        def reopen() -> PipelineStream:
            find_device(dev.serial, context)  # DeviceUnavailable while it is still unplugged
            try:
                stream = open_live(request, self._imu, context)
            except (SourceError, RuntimeError) as exc:  # a camera still enumerating is busy: retry later
                raise DeviceUnavailable(str(exc)) from None
            self._stream = stream
            self._locate_imu(stream)
            return stream

        return ReconnectingReader(
            reopen,
            initial=self._stream,
            backoff=backoff,
            max_attempts=attempts,
            lost_after_s=lost_after_s,
            stop=self._stop,
            on_state=self._set_state,
            what=what,
        )

    def _locate_imu(self, stream: PipelineStream) -> None:
        """The IMU-to-camera transform of a live camera, from its calibration."""
        if self._imu.profile is None:
            return
        images = {p.stream_type().name: p for p in stream.profile.get_streams()}
        camera = output_camera(images, self.align_to_color)
        self._imu.camera_from_imu = transform_between(self._imu.profile, camera) if camera else None

    def _stream_fps(self) -> float:
        for p in self._stream.profile.get_streams():
            if p.stream_type().name == "depth":
                return float(p.fps())
        return 30.0

    def _playback_items(self, stream: PipelineStream) -> Iterator[Any]:
        """The recording's framesets. A non-real-time playback that ends short of the file's depth
        frames (it raced past the pipeline: see ``open_playback``) is started again; the frames
        already delivered are skipped by their timestamps (``FramePairer``)."""
        seen, last_ms, restarts = 0, -math.inf, 0
        while not self._stop.is_set():
            try:
                item = stream.read(1.0)
            except StreamEnded:
                expected = self.expected_frames
                short = seen == 0 if expected is None else seen < expected
                if short and not self.realtime and restarts < PLAYBACK_RESTARTS:
                    restarts += 1
                    log.info(
                        "realsense: %s ended after %d of %s depth frames; playing it again for the rest",
                        self.path,
                        seen,
                        expected if expected is not None else "?",
                    )
                    stream.close()
                    stream = self._stream = open_playback(self._playable, self.realtime, self._kinds)
                    continue
                self._set_state("stopped", f"end of {self.path}")
                return
            except DeviceLost as exc:
                raise SourceError(f"realsense: {self.path}: playback failed: {exc}") from None
            if item is None:
                continue
            depth = item.as_frameset().get_depth_frame()
            if depth and depth.get_timestamp() > last_ms:
                last_ms = depth.get_timestamp()
                seen += 1
            yield item

    # -- status -----------------------------------------------------------------------------------------
    def _set_state(self, state: str, message: str) -> None:
        self._state, self._message = state, message
        self.transitions.append((state, message))

    @property
    def reconnects(self) -> int:
        reader = getattr(self, "_reader", None)
        return reader.reconnects if isinstance(reader, ReconnectingReader) else 0

    def health(self) -> dict[str, Any]:
        """What the status topic shows about the camera (``sensor`` key)."""
        dev = self.device
        return {
            "kind": "realsense",
            "state": self._state,
            "message": self._message,
            "serial": dev.serial if dev else None,
            "usb": dev.usb if dev else None,
            "usb_warning": getattr(self, "usb_warning", None),
            "reconnects": self.reconnects,
            "frames_dropped": self.frames_dropped,
            "frames_skipped": self.frames_skipped,
            "timestamp_domain": self.timestamp_domain,
        }

    # -- frames -----------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[RGBDFrame]:
        pairer = FramePairer(self.color)
        drops = DropCounter(self._fps)
        position, reconnects = 0, self.reconnects
        try:
            for frameset in self._reader:
                if self.reconnects != reconnects:
                    # a reconnected camera may restart its clock: pairing and gap counting start over
                    reconnects = self.reconnects
                    pairer, drops = FramePairer(self.color), DropCounter(self._fps)
                try:
                    depth, color = self._decode(frameset)
                except (FrameDecodeError, FrameError, RuntimeError, ValueError) as exc:
                    self._skip(f"{self._where()} frameset", str(exc))
                    continue
                for pair in pairer.push(depth, color):
                    frame = self._frame(pair, position, drops)
                    position += 1
                    if frame is not None:
                        yield frame
                    if self.last is not None and position > self.last:
                        return
        except DeviceUnavailable as exc:  # reconnection gave up (reconnect_attempts)
            raise SourceError(f"realsense: {exc}") from None
        for pair in pairer.flush():  # the last depth frame, whose colour did not come
            frame = self._frame(pair, position, drops)
            position += 1
            if frame is not None:
                yield frame
        if self.expected_frames is not None and position < self.expected_frames:
            # frames lost after the last one delivered leave no gap in the timestamps: count them here
            missing = self.expected_frames - position
            if missing > self.frames_dropped:
                log.warning(
                    "realsense: %s: %d of %d depth frames not delivered",
                    self.path,
                    missing,
                    self.expected_frames,
                )
                self.frames_dropped = missing
        if position == 0 and self.path is not None:
            log.warning("realsense: %s delivered no frame", self.path)

    def _where(self) -> str:
        return (
            str(self.path)
            if self.path is not None
            else f"RealSense {self.device.serial if self.device else '?'}"
        )

    def _selected(self, position: int) -> bool:
        if position < self.first or (self.last is not None and position > self.last):
            return False
        return (position - self.first) % self.stride == 0

    def _frame(self, pair: FramePair, position: int, drops: DropCounter) -> RGBDFrame | None:
        missing = drops.see(pair.depth.stamp_ms)
        if missing:
            self.frames_dropped += missing
            log.info("realsense: %d frame(s) missing before t=%.3f ms", missing, pair.depth.stamp_ms)
        if self._imu_playback is not None and not self._imu.wait_past(
            pair.depth.stamp_ms, self._imu_playback.finished
        ):
            log.warning(
                "realsense: %s: IMU samples up to t=%.3f ms did not come", self._where(), pair.depth.stamp_ms
            )
        imu = self._imu.take_until(pair.depth.stamp_ms)
        if not self._selected(position):
            return None
        assert pair.depth.intrinsics is not None
        try:
            return RGBDFrame(
                index=position,
                timestamp=pair.depth.stamp_ms / 1000.0,
                depth=depth_metres(pair.depth.data, self._depth_scale),
                intrinsics=pair.depth.intrinsics,
                color=pair.color.data if pair.color is not None else None,
                frame_id="camera_color_optical_frame"
                if self.align_to_color
                else "camera_depth_optical_frame",
                source_name=f"{self._where()} depth frame {pair.depth.number} (t={pair.depth.stamp_ms} ms)",
                imu=imu if len(imu) else None,
            )
        except FrameError as exc:
            self._skip(f"{self._where()} frame {position}", str(exc))
            return None

    def _decode(self, frameset: Any) -> tuple[Image | None, Image | None]:
        """Copy the frameset's images out of librealsense (aligned depth, colour) and keep its IMU."""
        rs = import_pyrealsense2()
        for f in frameset:  # motion frames ride along in a recording's framesets
            if f.profile.stream_type() in (rs.stream.accel, rs.stream.gyro):
                self._imu.on_frame(f)
        fs = frameset.as_frameset()
        raw_depth = fs.get_depth_frame()
        raw_color = fs.get_color_frame() if self.color else None
        if self._align is not None and raw_depth and raw_color:
            fs = self._align.process(fs)
            raw_depth = fs.get_depth_frame()
        depth = None
        if raw_depth:
            if self.timestamp_domain is None:
                self.timestamp_domain = str(raw_depth.get_frame_timestamp_domain()).rsplit(".", 1)[-1]
                log.info("realsense: %s: frame timestamps from the %s", self._where(), self.timestamp_domain)
            data = np.asanyarray(raw_depth.get_data())
            if data.dtype != np.uint16 or data.ndim != 2:
                raise FrameDecodeError(f"depth frame is {data.dtype} {data.shape}, expected uint16 H×W")
            depth = Image(
                raw_depth.get_timestamp(),
                raw_depth.get_frame_number(),
                data.copy(),
                stream_intrinsics(raw_depth.profile),
            )
        color = None
        if raw_color:
            fmt = raw_color.profile.format().name
            rgb = color_rgb(np.asanyarray(raw_color.get_data()), fmt)
            color = Image(raw_color.get_timestamp(), raw_color.get_frame_number(), rgb.copy())
            if depth is not None and color.data.shape[:2] != depth.data.shape:
                if self.align_to_color:
                    raise FrameDecodeError(
                        f"aligned depth {depth.data.shape} and colour {color.data.shape[:2]} differ in size"
                    )
                color = None  # unaligned streams of different sizes: depth only
        return depth, color

    def close(self) -> None:
        self._stop.set()
        stream = getattr(self, "_stream", None)
        if stream is not None:
            stream.close()
        if self._imu_playback is not None:
            self._imu_playback.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        if self._state not in ("stopped", "failed"):
            self._set_state("stopped", "closed")
