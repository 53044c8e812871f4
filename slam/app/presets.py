"""Presets: the ready configs (``configs/*.yaml``) and launch files (``launch/*.yaml``), by name or path.

``slam replay -c lidar_64`` and ``slam launch lidar_demo`` name a preset; a path (``-c my.yaml``,
``launch/demo.yaml``) is read as before. In the repository the presets are the top-level folders
``configs/`` and ``launch/``; a wheel carries the same files as the data packages
``slam.presets.configs`` and ``slam.presets.launch`` (pyproject.toml maps those packages onto the two
folders), found here through ``importlib.resources``. The folders stay siblings in both layouts, so a
launch file's ``config: ../configs/NAME.yaml`` resolves the same way installed or not.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from slam.app.config import ConfigError

#: kind -> the folder (and data package) that holds its presets
FOLDERS = {"config": "configs", "launch": "launch"}
SUFFIXES = (".yaml", ".yml")


class PresetError(ConfigError):
    """A preset name that is not there, or presets missing from the installation."""


def preset_folder(kind: str) -> Path:
    """The folder holding the ``kind`` ("config" or "launch") presets."""
    sub = FOLDERS[kind]
    # A source checkout (run with PYTHONPATH, or installed editable) reads its own folders: the
    # installed data packages of another checkout on the same interpreter must not shadow them.
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file() and (root / sub).is_dir():
        return root / sub
    try:
        found = resources.files(f"slam.presets.{sub}")
    except ModuleNotFoundError:
        found = None
    if isinstance(found, Path):
        return found
    # files() of a folder without __init__.py is a MultiplexedPath: its entries are files on disk
    entry = next(iter(found.iterdir()), None) if found is not None else None
    if not isinstance(entry, Path):
        raise PresetError(
            f"the {sub} presets are missing from this installation (no data package slam.presets.{sub}); "
            "reinstall neural-slam, or give the file's path"
        )
    return entry.parent


def preset_names(kind: str) -> list[str]:
    """The names ``kind`` presets are given by (file names without .yaml), sorted."""
    folder = preset_folder(kind)
    return sorted(p.stem for p in folder.iterdir() if p.suffix in SUFFIXES and p.is_file())


def find_preset(kind: str, name: str) -> Path:
    """The file of the preset ``name`` (``lidar_64`` or ``lidar_64.yaml``); PresetError listing the presets."""
    stem = name[: -len(Path(name).suffix)] if Path(name).suffix in SUFFIXES else name
    folder = preset_folder(kind)
    for suffix in SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    raise PresetError(
        f"{name}: no such {kind} file, and no {kind} preset of that name "
        f"(presets: {', '.join(preset_names(kind)) or 'none'}; in {folder})"
    )


def resolve(kind: str, value: str | os.PathLike) -> Path:
    """``value`` as a file: an existing file as given, else a bare name (no folder part) as a preset.

    A missing path with a folder part fails naming it, with a hint when a preset has its name
    (``-c configs/lidar_64.yaml`` run outside the repository).
    """
    path = Path(value)
    if path.is_file():
        return path  # a folder of that name (runs/demo) does not hide the preset
    if path.parent == Path(".") and not path.is_absolute():
        return find_preset(kind, str(path))
    try:
        preset = find_preset(kind, path.name)
    except PresetError:
        return path  # reading it reports the missing file
    raise PresetError(
        f"{path}: no such file (for the {kind} preset of that name, give just its name: {preset.stem})"
    )
