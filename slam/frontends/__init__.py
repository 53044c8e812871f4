"""Sensor frontends: each turns one sensor's frames into the observations the engine consumes
(``slam.core.observation``). ``slam.app.build.build_frontend`` picks one by a source's ``sensor``."""

from __future__ import annotations

#: the sensor kinds (``Source.sensor``) a frontend exists for, as a message names their data
SENSORS = {"rgbd": "RGB-D frames", "lidar": "LiDAR scans"}


class UnsupportedSensor(ValueError):
    """A source whose data the configured pipeline cannot track; ``key`` is the setting at fault and the
    message reads on from "driver X yields "."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def check_sensor(sensor: str, pipeline: str) -> None:
    """Whether a source of ``sensor`` data can be tracked by ``pipeline`` ("neural" or "baseline"). Checked
    before a run opens anything (the service) and when an engine is built (replay)."""
    if sensor not in SENSORS:
        raise UnsupportedSensor(
            "source.kind",
            f"{sensor} data, which the engine does not track on its own (no frontend for {sensor!r} sources; "
            "it tracks RGB-D frames and LiDAR scans)",
        )
    if sensor != "rgbd" and pipeline != "neural":
        raise UnsupportedSensor(
            "pipeline", f"{SENSORS[sensor]}; the {pipeline} pipeline is RGB-D only (use neural)"
        )
