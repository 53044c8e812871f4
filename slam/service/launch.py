"""Launch files: a ready setup (driver, SLAM config, service options) that ``slam launch FILE`` runs.

    description: replay the shared 7-Scenes frames at 30 Hz and publish poses
    config: ../configs/7scenes.yaml          # relative to this file; optional
    overrides:                               # any config keys, dotted or nested (like --set)
      source.path: ${SLAM_SHARED_DATA:-../shared/data}/7scenes-redkitchen
    service:                                 # the config's service section (slam config dump)
      mode: realtime

Strings may use ``${VAR}`` and ``${VAR:-default}`` for environment variables. The composed config is
validated as a whole, so a bad key fails at start with the launch file, the key path and the reason.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from slam.app.config import ConfigError, SLAMConfig, merge_trees, read_config_tree, validate_config
from slam.app.presets import resolve

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class LaunchFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = Field("", description="what this setup runs")
    config: Path | None = Field(None, description="SLAM config file, relative to the launch file")
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="config keys (dotted or nested) over the file"
    )
    service: dict[str, Any] = Field(
        default_factory=dict, description="the service section (mode, publish, ...)"
    )


def expand_env(value: Any, where: str) -> Any:
    """``${VAR}`` / ``${VAR:-default}`` in every string of a YAML tree; an unset VAR without default fails."""
    if isinstance(value, dict):
        return {k: expand_env(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is None:
            raise ConfigError(
                f"{where}: environment variable {name} is not set (write ${{{name}:-default}} for a fallback)"
            )
        return default

    return _ENV.sub(substitute, value)


def load_launch(
    path: str | os.PathLike, extra_overrides: dict[str, Any] | None = None
) -> tuple[SLAMConfig, LaunchFile]:
    """The validated config a launch file describes (plus ``--set`` overrides, which win).

    ``path`` is a file, or the name of a launch preset in launch/ (``lidar_demo``: see ``slam.presets``)."""
    path = resolve("launch", path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read launch file ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a launch file is a mapping (description, config, overrides, service)")
    try:
        launch = LaunchFile.model_validate({k: expand_env(v, f"{path}: {k}") for k, v in raw.items()})
    except ValidationError as exc:
        raise ConfigError("\n".join(_launch_error(path, err) for err in exc.errors())) from None

    tree: dict[str, Any] = {}
    if launch.config is not None:
        config_path = launch.config if launch.config.is_absolute() else path.parent / launch.config
        try:
            tree = read_config_tree(config_path)
        except ConfigError as exc:
            raise ConfigError(f"{path}: config: {exc}") from None
    tree = merge_trees(tree, _nested(launch.overrides, path))
    if launch.service:
        tree = merge_trees(tree, {"service": launch.service})
    if extra_overrides:
        tree = merge_trees(tree, extra_overrides)
    return validate_config(tree, str(path)), launch


def _nested(overrides: dict[str, Any], path: Path) -> dict[str, Any]:
    """Dotted keys (``source.path: x``) and nested sections alike, as one nested tree."""
    tree: dict[str, Any] = {}
    for key, value in overrides.items():
        parts = str(key).split(".")
        if not all(parts):
            raise ConfigError(f"{path}: overrides: {key!r} is not a key path like tracker.depth_max")
        node = tree
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{path}: overrides.{key}: {part} is given a value and used as a section")
            node = child
        old = node.get(parts[-1])
        node[parts[-1]] = (
            merge_trees(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
        )
    return tree


def _launch_error(path: Path, err: Any) -> str:
    key = ".".join(str(p) for p in err["loc"])
    reason = (
        "unknown key (a launch file has description, config, overrides, service)"
        if err["type"] == "extra_forbidden"
        else err["msg"]
    )
    return f"{path}: {key}: {reason}"
