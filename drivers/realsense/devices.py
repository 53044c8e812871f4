"""Connected RealSense devices: listing, choosing one by serial, and the mode a USB link can carry."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from drivers.realsense.common import import_pyrealsense2
from drivers.reconnect import DeviceUnavailable

log = logging.getLogger(__package__)  # one logger for the driver, named as before it was a package

#: what a D4xx streams on a USB 2 link with depth and colour together (USB 3 modes need ~3x the bandwidth)
USB2_PROFILE = (640, 480, 15)


@dataclass(frozen=True)
class DeviceInfo:
    serial: str
    name: str
    firmware: str
    usb: str  # USB type descriptor, e.g. "3.2" or "2.1"; "" when the device does not say
    has_imu: bool

    @property
    def usb2(self) -> bool:
        return self.usb.startswith("2")


def _info(dev: Any, field: str) -> str:
    rs = import_pyrealsense2()
    key = getattr(rs.camera_info, field)
    return str(dev.get_info(key)) if dev.supports(key) else ""


def _has_imu(dev: Any) -> bool:
    return any(s.is_motion_sensor() for s in dev.query_sensors())


def describe_device(dev: Any) -> DeviceInfo:
    return DeviceInfo(
        serial=_info(dev, "serial_number"),
        name=_info(dev, "name"),
        firmware=_info(dev, "firmware_version"),
        usb=_info(dev, "usb_type_descriptor"),
        has_imu=_has_imu(dev),
    )


def list_devices(context: Any | None = None) -> list[DeviceInfo]:
    """The connected RealSense devices (``slam devices``)."""
    rs = import_pyrealsense2()
    ctx = context if context is not None else rs.context()
    return [describe_device(dev) for dev in ctx.query_devices()]


def find_device(serial: str | None, context: Any | None = None) -> DeviceInfo:
    """The device with ``serial`` (the first one when None); DeviceUnavailable naming what is there."""
    devices = list_devices(context)
    if not devices:
        raise DeviceUnavailable("no RealSense device found (is it plugged in? `slam devices` lists them)")
    if serial is None:
        if len(devices) > 1:
            log.warning(
                "realsense: %d devices found (%s); using %s (set source.options.serial to choose)",
                len(devices),
                ", ".join(d.serial for d in devices),
                devices[0].serial,
            )
        return devices[0]
    for dev in devices:
        if dev.serial == serial:
            return dev
    raise DeviceUnavailable(
        f"no RealSense device with serial {serial} (connected: {', '.join(d.serial for d in devices)})"
    )


def choose_profile(
    requested: tuple[int, int, int], usb: str, usb2_profile: tuple[int, int, int] | None
) -> tuple[tuple[int, int, int], str | None]:
    """The (width, height, fps) to stream and a warning when a USB 2 link forces a smaller mode.

    A D4xx on USB 2 cannot carry depth and colour at 640x480@30 (its USB 3 modes fail to start or drop
    most frames); ``usb2_profile`` is what to use instead (None: keep the request and let it fail).
    """
    if not usb.startswith("2") or usb2_profile is None:
        return requested, None
    w, h, fps = requested
    uw, uh, ufps = usb2_profile
    if w * h * fps <= uw * uh * ufps:
        return requested, None
    return usb2_profile, (
        f"the camera is on a USB {usb} link, too slow for {w}x{h}@{fps}: streaming {uw}x{uh}@{ufps} "
        "instead (plug it into a USB 3 port with a USB 3 cable for the full mode; source.options.usb2_profile "
        "sets the fallback)"
    )
