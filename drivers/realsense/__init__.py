"""Intel RealSense D4xx: a live camera, or a recording of one played back through librealsense.

``RealSenseSource(path=None)`` streams a plugged-in camera (``live``); ``RealSenseSource(path=FILE)``
plays back a ``.db3`` (what librealsense >= 2.56 records) or a legacy ``.bag`` file (``live`` False).
Both yield the same ``RGBDFrame``s:

- depth in metres (the device's depth scale), aligned to the colour camera by default
  (``align_to_color``), with the intrinsics of the camera it is expressed in, read from the device
  or the file;
- timestamps in seconds from the frames' own timestamps (the device's hardware clock, or the host-
  synchronised "global time" when the device reports that domain), so a recording replays with the
  times it was made with;
- IMU samples (D435i, D455) since the previous frame in ``frame.imu``.

librealsense 2.59 facts this driver is built on (measured):

- playback must be switched to non-real-time before the pipeline starts, or the first frames are
  lost; even so the pipeline sometimes loses the rest of a file (1 start in 20 delivers nothing), so
  a playback that ends short of the file's depth frame count (read from the .db3) is played again,
  frames already delivered skipped; in real-time mode those frames are counted as dropped;
- the end of a file shows only as a timeout of ``wait_for_frames``;
- playback does not convert formats: each stream is requested in whatever format it was recorded;
- the pipeline's syncer repeats a stream's previous frame in a frameset when the other stream's frame
  is newer, so framesets are paired here by timestamp (``FramePairer``);
- through the pipeline a frameset carries only the newest IMU sample, and with IMU streams in it the
  syncer loses a recording's first frames at random; so IMU samples are read from the motion sensor
  itself, by a callback: on the live camera, and on a second playback of a recording;
- the recorder stamps messages with the wall-clock push time and stores the video streams'
  extrinsics only (a recording has no IMU-to-camera transform; a live camera does).

pyrealsense2 is imported only when a RealSense source is opened (pip install 'neural-slam[realsense]').

The package, by the seams of the driver (every name below is importable from ``drivers.realsense``):

- ``devices``: connected cameras (``list_devices``, ``find_device``) and the mode a USB link carries;
- ``pairing``: frame assembly in numpy (``FramePairer``, ``DropCounter``, depth and colour conversion);
- ``imu``: the IMU sample buffer and a recording's IMU playback;
- ``streams``: started librealsense pipelines (``open_live``, ``open_playback``) and calibration;
- ``source``: ``RealSenseSource``, the driver registered as ``realsense``;
- ``record``: ``record_camera`` (``slam record``).
"""

from __future__ import annotations

from drivers.realsense.common import INSTALL_HINT, import_pyrealsense2
from drivers.realsense.devices import (
    USB2_PROFILE,
    DeviceInfo,
    choose_profile,
    describe_device,
    find_device,
    list_devices,
)
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
from drivers.realsense.record import RecordResult, record_camera
from drivers.realsense.source import PLAYBACK_RESTARTS, RECORDING_SUFFIXES, RealSenseSource
from drivers.realsense.streams import (
    LiveRequest,
    PipelineStream,
    open_live,
    open_playback,
    playable_path,
    recorded_depth_frames,
    recorded_streams,
    transform_between,
)

__all__ = [
    "DeviceInfo",
    "DropCounter",
    "FramePair",
    "FramePairer",
    "INSTALL_HINT",
    "Image",
    "ImuBuffer",
    "ImuPlayback",
    "LiveRequest",
    "PLAYBACK_RESTARTS",
    "PipelineStream",
    "RECORDING_SUFFIXES",
    "RealSenseSource",
    "RecordResult",
    "SUPPORTED_COLOR",
    "USB2_PROFILE",
    "choose_profile",
    "color_rgb",
    "depth_metres",
    "describe_device",
    "find_device",
    "import_pyrealsense2",
    "list_devices",
    "open_live",
    "open_playback",
    "playable_path",
    "record_camera",
    "recorded_depth_frames",
    "recorded_streams",
    "transform_between",
]
