"""What is checked before a service starts anything: the driver exists, yields what the engine tracks,
and can run in the requested mode."""

from __future__ import annotations

from drivers.base import Source, source_class
from slam.app.config import SLAMConfig
from slam.frontends import UnsupportedSensor, check_sensor


class ServiceError(RuntimeError):
    """The service cannot do what was asked; the message names the setting or file at fault."""


def check_source(cfg: SLAMConfig, source: Source | None = None) -> tuple[type[Source], str]:
    """The driver class and the run's mode, checked before anything is opened: an unknown or
    uninstalled driver, a sensor the engine cannot track, or a mode the source cannot do."""
    cls = type(source) if source is not None else source_class(cfg.source.kind)
    kind = cfg.source.kind if source is None else (source.name or cls.__name__)
    try:
        check_sensor(cls.sensor, cfg.pipeline)
    except UnsupportedSensor as exc:
        raise ServiceError(f"{exc.key}: driver {kind!r} yields {exc}") from None
    live = source.live if source is not None else cls.is_live(cfg.source.path, cfg.source.options)
    return cls, resolve_mode(cfg.service.mode, live, kind)


def resolve_mode(requested: str, live_source: bool, kind: str) -> str:
    """The run's pacing: ``auto`` follows the source; a recording cannot run ``live`` and a live sensor
    cannot be replayed ``fast`` or ``realtime``."""
    if requested == "auto":
        return "live" if live_source else "fast"
    if requested == "live" and not live_source:
        raise ServiceError(
            f"service.mode: live needs a live sensor, but source {kind!r} is a recording (use realtime to pace it)"
        )
    if requested in ("fast", "realtime") and live_source:
        raise ServiceError(
            f"service.mode: source {kind!r} is a live sensor and paces itself; use live (or auto)"
        )
    return requested
