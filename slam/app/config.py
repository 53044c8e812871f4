"""Typed configuration: pydantic models loaded from YAML, every field with a default and a description.

Each part of the system owns its config model next to its code (the tracker's in its module, and so
on); ``SLAMConfig`` only composes them. Unknown keys and wrong types fail at load time with the key's
full dotted path and the reason, before any frame is read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

from drivers.events.sync import EventCameraConfig
from slam.app.service_config import ServiceConfig
from slam.core.config import StrictConfig
from slam.engine.baseline import BaselineConfig
from slam.engine.mapper import MapperConfig
from slam.engine.tracker import TrackerConfig
from slam.frontends.events import EventTrackingConfig
from slam.frontends.lidar import LidarConfig
from slam.map.neural_map import NeuralMapConfig


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key and the reason."""


class SourceConfig(StrictConfig):
    kind: str = Field(
        "demo",
        description="driver name (see `slam sources`): demo, 7scenes, tum, replica, lidar_demo, kitti, pointcloud_folder, rosbag, realsense",
    )
    path: Path | None = Field(
        None, description="dataset folder; for demo, the cache root (default ~/.cache/neural-slam)"
    )
    first: int = Field(0, ge=0, description="first frame (position in the sequence) to use")
    last: int | None = Field(None, ge=0, description="last frame to use, inclusive; null = to the end")
    stride: int = Field(1, ge=1, description="use every stride-th frame")
    options: dict[str, Any] = Field(
        default_factory=dict, description="driver-specific keyword arguments, e.g. {depth_scale: 5000}"
    )

    @field_validator("kind")
    @classmethod
    def _known_driver(cls, kind: str) -> str:
        from drivers.base import available_sources  # a name list only; no driver is imported

        if kind not in available_sources():
            raise ValueError(f"unknown driver {kind!r}; available: {', '.join(available_sources())}")
        return kind


class OutputConfig(StrictConfig):
    dir: Path = Field(Path("runs/latest"), description="folder for trajectory.txt, mesh.ply and stats.json")
    save_mesh: bool = Field(True, description="extract and write mesh.ply at the end of a run")
    progress: bool = Field(True, description="show a progress bar on long runs")


class EventsConfig(EventCameraConfig):
    """The event camera (its recording, calibration and clock: ``drivers.events.sync``) and how tracking
    uses its events (``slam.frontends.events``)."""

    tracking: EventTrackingConfig = Field(
        default_factory=EventTrackingConfig,
        description="the event term of tracking: used whenever frames carry events (enabled), else depth alone",
    )


class SLAMConfig(StrictConfig):
    """Everything one run needs. `slam config dump` prints the defaults."""

    source: SourceConfig = Field(default_factory=SourceConfig, description="where frames come from")
    events: EventsConfig = Field(
        default_factory=EventsConfig,
        description="an event camera beside the RGB-D camera (none by default) and the event term of tracking",
    )
    pipeline: Literal["neural", "baseline"] = Field(
        "neural", description="neural: SDF map + tracker + mapper; baseline: Open3D odometry + TSDF fusion"
    )
    map: NeuralMapConfig = Field(default_factory=NeuralMapConfig, description="the neural SDF map")
    tracker: TrackerConfig = Field(default_factory=TrackerConfig, description="frame-to-map tracking")
    mapper: MapperConfig = Field(default_factory=MapperConfig, description="online map fitting")
    lidar: LidarConfig = Field(
        default_factory=LidarConfig,
        description="LiDAR sources: preprocessing, tracking points and mapping rays (configs/lidar_64.yaml, lidar_32.yaml)",
    )
    baseline: BaselineConfig = Field(
        default_factory=BaselineConfig, description="the classical pipeline (pipeline: baseline)"
    )
    output: OutputConfig = Field(default_factory=OutputConfig, description="what a run writes")
    service: ServiceConfig = Field(
        default_factory=ServiceConfig,
        description="slam run / slam launch: threads, pacing, publishing, control, map files",
    )
    seed: int = Field(0, description="seed for every random choice of the run (sampling, noise)")
    threads: int = Field(
        0,
        ge=0,
        description="torch threads (and compiled-loop threads) per engine thread; 0 = half the cores in the "
        "service (tracking and mapping share them, and oversubscribed OpenMP threads spin and slow everything "
        "down), all of them in slam replay (one thread tracks and maps in turn)",
    )


def torch_threads(cfg: SLAMConfig) -> int:
    return cfg.threads or max(1, (os.cpu_count() or 2) // 2)


def _format_validation_error(exc: ValidationError, where: str) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        reason = err["msg"]
        if err["type"] == "extra_forbidden":
            reason = "unknown key"
        lines.append(f"{where}: {key}: {reason}")
    return "\n".join(lines)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["tracker.depth_max=3.5", "source.kind=tum"]`` to a nested dict; values parse as YAML."""
    tree: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. tracker.depth_max=3.5")
        _set_dotted(tree, key.strip(), yaml.safe_load(raw))
    return tree


def merge_trees(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_trees(out[key], value)
        else:
            out[key] = value
    return out


def read_config_tree(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML config file as a nested dict, not yet validated (launch files compose several)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror or exc})") from exc
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(loaded).__name__}")
    return loaded


def validate_config(tree: dict[str, Any], where: str) -> SLAMConfig:
    """Validate a whole config tree; errors name ``where`` (a file), each key path and the reason."""
    try:
        return SLAMConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, where)) from None


def load_config(path: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None) -> SLAMConfig:
    """Defaults, then the YAML file (if any), then overrides; validated as a whole.

    ``path`` is a file, or the name of a preset in configs/ (``lidar_64``: see ``slam.presets``)."""
    tree: dict[str, Any] = {}
    where = "defaults"
    if path is not None:
        from slam.app.presets import resolve  # slam.app.presets imports this module (ConfigError)

        path = resolve("config", path)
        where = str(path)
        tree = read_config_tree(path)
    if overrides:
        tree = merge_trees(tree, overrides)
        where = f"{where} + overrides" if path is not None else "overrides"
    return validate_config(tree, where)


def dump_config(config: BaseModel, commented: bool = True) -> str:
    """YAML of a config; with ``commented``, each key carries its description as a comment."""
    data = config.model_dump(mode="json")
    if not commented:
        return yaml.safe_dump(data, sort_keys=False)
    lines: list[str] = []
    _dump_model(type(config), data, lines, indent=0)
    return "\n".join(lines) + "\n"


def _dump_model(model: type[BaseModel], data: dict[str, Any], lines: list[str], indent: int) -> None:
    pad = "  " * indent
    for name, field in model.model_fields.items():
        value = data[name]
        desc = field.description or ""
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if lines and indent == 0:
                lines.append("")
            lines.append(f"{pad}# {desc}" if desc else f"{pad}#")
            lines.append(f"{pad}{name}:")
            _dump_model(annotation, value, lines, indent + 1)
            continue
        if lines and indent == 0 and lines[-1].startswith("  "):
            lines.append("")
        rendered = yaml.safe_dump({name: value}, default_flow_style=True, width=10_000).strip()
        if rendered.startswith("{") and rendered.endswith("}"):
            rendered = rendered[1:-1]
        lines.append(f"{pad}{rendered}  # {desc}" if desc else f"{pad}{rendered}")
