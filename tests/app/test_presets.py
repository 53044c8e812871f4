"""Presets by name (slam.app.presets): configs/ and launch/ files named without a path from any folder, paths
as before, an unknown name listing the presets, and a LiDAR run that cannot find its preset failing
instead of going on with RGB-D scales. (An installed wheel: test_wheel_install.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from setuptools import find_packages
from typer.testing import CliRunner

import slam.app.presets as presets
from slam.app.config import ConfigError, load_config
from slam.cli import app
from slam.service.launch import load_launch

ROOT = Path(__file__).resolve().parents[2]
CONFIGS, LAUNCH = ROOT / "configs", ROOT / "launch"
runner = CliRunner()


def _output(result) -> str:
    return " ".join(result.output.split())  # rich wraps long messages at the terminal width


def _voxel(path: Path) -> float:
    return yaml.safe_load(path.read_text())["map"]["voxel_size"]


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch) -> Path:
    """A working folder outside the repository, where configs/... paths do not exist."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_config_preset_is_found_by_name_from_any_folder(elsewhere: Path) -> None:
    expected = load_config(CONFIGS / "lidar_64.yaml")
    assert expected.map.voxel_size == _voxel(CONFIGS / "lidar_64.yaml")
    assert load_config("lidar_64") == expected
    assert load_config("lidar_64.yaml") == expected
    # every shipped config is reachable by its name
    for path in CONFIGS.glob("*.yaml"):
        assert load_config(path.stem) == load_config(path), path.name
    result = runner.invoke(app, ["config", "dump", "-c", "lidar_64", "--plain"])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.output)["map"]["voxel_size"] == _voxel(CONFIGS / "lidar_64.yaml")


def test_an_existing_file_wins_over_a_preset_of_the_same_name(elsewhere: Path) -> None:
    mine = _voxel(CONFIGS / "lidar_64.yaml") * 2
    (elsewhere / "lidar_64.yaml").write_text(f"map:\n  voxel_size: {mine}\n")
    assert load_config("lidar_64.yaml").map.voxel_size == mine  # the file in the working folder
    assert load_config("lidar_64").map.voxel_size == _voxel(CONFIGS / "lidar_64.yaml")  # no such file
    assert load_config(elsewhere / "lidar_64.yaml").map.voxel_size == mine
    (elsewhere / "lidar_32").mkdir()  # a folder (an output folder, say) is not a config file
    assert load_config("lidar_32") == load_config(CONFIGS / "lidar_32.yaml")


def test_an_unknown_name_lists_the_presets(elsewhere: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config("lidar_99")
    message = str(info.value)
    assert message.startswith("lidar_99: no such config file, and no config preset of that name")
    for path in CONFIGS.glob("*.yaml"):
        assert path.stem in message
    result = runner.invoke(app, ["launch", "nope", "--check"])
    assert result.exit_code == 2
    assert "nope: no such launch file" in _output(result)
    for path in LAUNCH.glob("*.yaml"):
        assert path.stem in _output(result)


def test_a_missing_path_is_named_with_a_hint_at_the_preset(elsewhere: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"configs/lidar_64.yaml: no such file .*give just its name: lidar_64"
    ):
        load_config("configs/lidar_64.yaml")  # the README's path, run outside the repository
    with pytest.raises(ConfigError, match=r"mine/x.yaml: cannot read config"):
        load_config("mine/x.yaml")  # no preset of that name: the file is what is missing


def test_a_launch_preset_is_found_by_name_with_its_config(elsewhere: Path) -> None:
    by_path, spec = load_launch(LAUNCH / "lidar_demo.yaml")
    by_name, spec_by_name = load_launch("lidar_demo")
    assert by_name == by_path and spec_by_name == spec
    # the launch file's own config (../configs/lidar_32.yaml) was found beside it
    assert by_name.map.voxel_size == _voxel(CONFIGS / "lidar_32.yaml")
    assert by_name.map.voxel_size != load_config(None).map.voxel_size
    result = runner.invoke(app, ["launch", "lidar_demo", "--check"])
    assert result.exit_code == 0, result.output
    assert _output(result).startswith(f"lidar_demo: ok, fast mode ({spec.description}")


def test_a_lidar_replay_without_config_uses_the_lidar_preset(elsewhere: Path) -> None:
    result = runner.invoke(app, ["replay", "--dataset", "kitti", "missing_seq", "--out", "out"])
    assert f"LiDAR source: using {CONFIGS / 'lidar_64.yaml'}" in result.output
    assert result.exit_code == 2 and "folder missing_seq does not exist" in _output(result)


def test_a_lidar_replay_without_its_preset_fails_instead_of_using_rgbd_scales(
    elsewhere: Path, monkeypatch
) -> None:
    # presets missing, as in a wheel built without them: the run must not go on with the indoor defaults
    monkeypatch.setitem(presets.FOLDERS, "config", "no_such_folder")
    with pytest.raises(presets.PresetError, match="presets are missing from this installation"):
        presets.preset_folder("config")
    result = runner.invoke(app, ["replay", "--dataset", "kitti", "missing_seq", "--out", "out"])
    assert result.exit_code == 2
    assert "--dataset kitti is a LiDAR source and needs LiDAR scales" in _output(result)
    assert "does not exist" not in _output(result)  # stopped before the source was opened
    # an RGB-D driver needs no preset
    result = runner.invoke(app, ["replay", "--dataset", "tum", "missing_seq", "--out", "out"])
    assert "LiDAR" not in _output(result) and "missing_seq" in _output(result)


def test_pyproject_lists_every_package_and_maps_the_presets() -> None:
    """The package list is written out (find cannot discover the mapped preset packages): a new
    package missing from it would be left out of the wheel."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = find_packages(str(ROOT), include=["slam*", "drivers*"])
    data = {"slam.presets.configs": "configs", "slam.presets.launch": "launch"}
    assert sorted(setuptools["packages"]) == sorted([*found, *data])
    assert setuptools["package-dir"] == data
    for package in data:
        assert setuptools["package-data"][package] == ["*.yaml"]
