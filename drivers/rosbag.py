"""``sensor_msgs/PointCloud2`` scans from ROS 1 bags (``.bag``) and ROS 2 bags (a folder with
``metadata.yaml`` and ``.db3`` or ``.mcap`` storage), read with the PyPI package ``rosbags`` (no ROS).

- ``topic``: the PointCloud2 topic; when omitted and the bag has exactly one, that one. A topic that the
  bag does not have, or one of another type, fails at construction with the list of topics the bag has.
- A scan's ``timestamp`` is its ``header.stamp`` (the bag's record time when the stamp is zero); which
  instant of the sweep that is depends on the LiDAR driver that recorded it (Ouster: the start,
  velodyne_pointcloud: the last packet).
- Fields are decoded straight from the message buffer with a numpy structured dtype built from the
  message's ``fields``, ``point_step``, ``row_step`` and ``is_bigendian``: ``x y z`` (any float or
  integer type), intensity (``intensity``, ``i``, ...), per-point time (``t``, ``time``, ``timestamp``,
  ``offset_time``: floats are seconds, integers nanoseconds unless ``time_unit`` says otherwise; values
  that are absolute epoch times are made relative to the header stamp) and ``ring``. ``point_times`` are
  seconds relative to ``timestamp``.
- Points with NaN or inf (the "no return" of organised clouds) are dropped and counted in
  ``points_dropped``; a message that cannot be decoded, or that has no finite point, is skipped and
  counted with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from drivers.base import FrameDecodeError, SequenceSource, SourceError
from drivers.lidar_io import (
    INTENSITY_FIELDS,
    RING_FIELDS,
    TIME_FIELDS,
    TimeUnit,
    finite_rows,
    first_present,
    point_times_seconds,
)
from slam.core.frames import FrameError, LidarScan

log = logging.getLogger(__name__)

POINTCLOUD2 = "sensor_msgs/msg/PointCloud2"
#: sensor_msgs/PointField datatype codes to numpy types
POINTFIELD_DTYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}


def pointcloud2_fields(
    fields: list[Any], point_step: int, is_bigendian: bool, what: str = "PointCloud2"
) -> np.dtype:
    """The structured dtype of one point: every field at its offset, itemsize = point_step."""
    order = ">" if is_bigendian else "<"
    names, formats, offsets = [], [], []
    for f in fields:
        if f.datatype not in POINTFIELD_DTYPES:
            raise FrameDecodeError(f"{what}: field {f.name!r} has unknown datatype {f.datatype}")
        if f.name in names:
            continue  # duplicated names (seen in some drivers): the first one wins
        count = max(int(f.count), 1)
        base = np.dtype(order + POINTFIELD_DTYPES[f.datatype])
        if f.offset + base.itemsize * count > point_step:
            raise FrameDecodeError(
                f"{what}: field {f.name!r} (offset {f.offset}, {count}×{base.itemsize} bytes) overruns "
                f"point_step {point_step}"
            )
        names.append(f.name)
        formats.append(base if count == 1 else (base, (count,)))
        offsets.append(int(f.offset))
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": int(point_step)})


def decode_pointcloud2(msg: Any, what: str = "PointCloud2") -> np.ndarray:
    """A PointCloud2 message's points as a structured array (one row per point, padding skipped)."""
    height, width, step, row_step = int(msg.height), int(msg.width), int(msg.point_step), int(msg.row_step)
    if step <= 0:
        raise FrameDecodeError(f"{what}: point_step must be positive, got {step}")
    if row_step < width * step:
        raise FrameDecodeError(
            f"{what}: row_step {row_step} is shorter than width {width} × point_step {step}"
        )
    dtype = pointcloud2_fields(list(msg.fields), step, bool(msg.is_bigendian), what)
    data = np.asarray(msg.data, dtype=np.uint8).reshape(-1)
    if data.size < height * row_step:
        raise FrameDecodeError(
            f"{what}: data has {data.size} bytes, {height} rows of {row_step} bytes need {height * row_step}"
        )
    # rows may carry padding after width × point_step bytes: view each row's points separately
    rows = data[: height * row_step].reshape(height, row_step)[:, : width * step]
    return np.ascontiguousarray(rows).view(dtype).reshape(-1)


def _column(cloud: np.ndarray, name: str) -> np.ndarray:
    values = cloud[name]
    return values.reshape(len(cloud), -1)[:, 0] if values.ndim > 1 else values


def _stamp_seconds(msg: Any) -> float:
    stamp = msg.header.stamp
    return float(stamp.sec) + 1e-9 * float(stamp.nanosec)


def _bag_paths(path: Path) -> list[Path]:
    """What ``rosbags.highlevel.AnyReader`` opens for ``path``."""
    if path.is_dir():
        if not (path / "metadata.yaml").is_file():
            raise SourceError(f"rosbag: {path} is a folder without metadata.yaml (not a ROS 2 bag)")
        return [path]
    if not path.exists():
        raise SourceError(f"rosbag: {path} does not exist")
    if path.suffix == ".bag":
        return [path]
    if path.suffix in (".db3", ".mcap") and (path.parent / "metadata.yaml").is_file():
        return [path.parent]
    raise SourceError(
        f"rosbag: {path}: expected a ROS 1 .bag file or a ROS 2 bag folder (metadata.yaml with .db3 or .mcap)"
    )


class RosbagSource(SequenceSource):
    name = "rosbag"
    sensor = "lidar"

    def __init__(
        self,
        path: Path,
        first: int = 0,
        last: int | None = None,
        stride: int = 1,
        *,
        topic: str | None = None,
        time_unit: TimeUnit = "auto",
        time_field: str | None = None,
    ) -> None:
        """``time_field``: the per-point time field to use instead of the first of ``TIME_FIELDS``."""
        super().__init__(first, last, stride)
        try:
            from rosbags.highlevel import AnyReader
        except ImportError as exc:  # a core dependency, but keep the message useful
            raise SourceError(f"rosbag: the package rosbags is needed ({exc})") from exc
        if path is None:
            raise SourceError("rosbag: no path given")
        self.path = Path(path).expanduser()
        self._paths = _bag_paths(self.path)
        self._reader_cls = AnyReader
        self.time_unit = time_unit
        self.time_field = time_field
        self.points_dropped = 0
        try:
            with AnyReader(self._paths) as reader:
                topics = {name: info.msgtype for name, info in reader.topics.items()}
                counts = {name: info.msgcount for name, info in reader.topics.items()}
        except Exception as exc:  # rosbags raises several unrelated types for unreadable bags
            raise SourceError(f"rosbag: cannot open {self.path}: {exc}") from exc
        self.topic = self._choose_topic(topic, topics)
        self._entries = list(range(counts[self.topic]))

    def _choose_topic(self, topic: str | None, topics: dict[str, str | None]) -> str:
        listing = ", ".join(f"{name} ({kind})" for name, kind in sorted(topics.items())) or "none"
        if topic is None:
            clouds = [name for name, kind in topics.items() if kind == POINTCLOUD2]
            if len(clouds) != 1:
                raise SourceError(
                    f"rosbag: {self.path}: {len(clouds)} PointCloud2 topics; choose one with topic=... "
                    f"Topics: {listing}"
                )
            return clouds[0]
        if topic not in topics:
            raise SourceError(f"rosbag: {self.path} has no topic {topic!r}. Topics: {listing}")
        if topics[topic] != POINTCLOUD2:
            raise SourceError(f"rosbag: {self.path}: topic {topic!r} is {topics[topic]}, not {POINTCLOUD2}")
        return topic

    def __iter__(self) -> Iterator[LidarScan]:
        # a bag is read front to back: stream it once and decode only the selected messages
        selected = self._selected()
        if len(selected) == 0:
            return
        with self._reader_cls(self._paths) as reader:
            connections = [c for c in reader.connections if c.topic == self.topic]
            for position, (connection, bag_time, raw) in enumerate(reader.messages(connections=connections)):
                if position >= selected.stop:
                    break
                if position not in selected:
                    continue
                what = f"{self.path} {self.topic} message {position}"
                try:
                    msg = reader.deserialize(raw, connection.msgtype)
                    yield self._scan(position, msg, bag_time * 1e-9, what)
                except (FrameDecodeError, FrameError, ValueError) as exc:
                    self._skip(what, str(exc))
                except Exception as exc:  # rosbags' deserialisation errors share no base class
                    self._skip(what, f"cannot deserialise: {exc}")

    def _load(self, position: int, entry: Any) -> LidarScan:
        raise NotImplementedError("rosbag scans are decoded while streaming the bag (see __iter__)")

    def _scan(self, position: int, msg: Any, bag_time: float, what: str) -> LidarScan:
        cloud = decode_pointcloud2(msg, what)
        names = cloud.dtype.names or ()
        missing = [axis for axis in "xyz" if axis not in names]
        if missing:
            raise FrameDecodeError(f"{what}: no {', '.join(missing)} field (fields: {', '.join(names)})")
        stamp = _stamp_seconds(msg) or bag_time
        points = np.stack([_column(cloud, axis).astype(np.float64) for axis in "xyz"], axis=1)
        intensity_name = first_present(INTENSITY_FIELDS, names)
        intensity = _column(cloud, intensity_name).astype(np.float64) if intensity_name else None
        time_name = self.time_field if self.time_field is not None else first_present(TIME_FIELDS, names)
        times = None
        if time_name is not None:
            if time_name not in names:
                raise FrameDecodeError(f"{what}: no time field {time_name!r} (fields: {', '.join(names)})")
            times = point_times_seconds(
                _column(cloud, time_name), self.time_unit, stamp, f"{what}: {time_name}"
            )
        ring_name = first_present(RING_FIELDS, names)
        ring = _column(cloud, ring_name) if ring_name else None
        keep = finite_rows(points, intensity, times)
        if not keep.any():
            raise FrameDecodeError(f"{what}: no finite point ({len(points)} points)")
        dropped = int(len(points) - keep.sum())
        self.points_dropped += dropped
        return LidarScan(
            index=position,
            timestamp=stamp,
            points=points[keep],
            intensity=None if intensity is None else intensity[keep],
            point_times=None if times is None else times[keep],
            ring=None if ring is None else ring[keep],
            frame_id=str(msg.header.frame_id) or "lidar",
            source_name=what,
            extra={"points_dropped": dropped},
        )
