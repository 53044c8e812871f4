"""The presets travel with the installed package: a wheel built from this checkout (and an editable
install of it), installed in a fresh virtual environment, runs `slam` from a folder outside the
repository and finds configs and launch files by name. No network: pip builds and installs with
--no-index --no-deps --no-build-isolation; the heavy dependencies (torch, open3d, ...) come from the
running interpreter's environment through a .pth file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIGS, LAUNCH = ROOT / "configs", ROOT / "launch"
#: what a build reads; copied so that the build's egg-info and build/ folders stay out of the checkout
SOURCES = ("pyproject.toml", "README.md", "slam", "drivers", "configs", "launch")

pytestmark = [pytest.mark.slow, pytest.mark.install]


def _pip(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _venv(folder: Path) -> tuple[Path, Path]:
    """A fresh environment without pip (this interpreter's pip installs into it with --python); its
    python and its site-packages."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
    python = folder / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return python, Path(site)


def _see_parent_packages(site: Path) -> None:
    """torch, open3d, ... of the running environment, visible after the new environment's own packages."""
    parents = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (site / "parent_env.pth").write_text("".join(f"{p}\n" for p in parents))


def _slam(python: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # not this checkout's packages
    env.update(SLAM_CACHE_DIR=str(cwd / "cache"), COLUMNS="200")
    script = python.parent / ("slam.exe" if os.name == "nt" else "slam")
    return subprocess.run([str(script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _check_installed_slam(python: Path, cwd: Path, package_root: Path, configs: Path) -> None:
    """From ``cwd`` (outside the repository), the environment's slam (imported from ``package_root``)
    runs presets named without a path, read from ``configs``."""
    where = _slam(python, cwd, "--help")
    assert where.returncode == 0, where.stderr
    imported = subprocess.run(
        [str(python), "-c", "import slam, drivers.realsense; print(slam.__file__)"],
        cwd=cwd,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        capture_output=True,
        text=True,
    )
    assert imported.returncode == 0, imported.stderr
    assert Path(imported.stdout.strip()).is_relative_to(package_root), imported.stdout

    dump = _slam(python, cwd, "config", "dump", "-c", "lidar_64", "--plain")
    assert dump.returncode == 0, dump.stderr
    preset = yaml.safe_load((CONFIGS / "lidar_64.yaml").read_text())
    assert yaml.safe_load(dump.stdout)["map"]["voxel_size"] == preset["map"]["voxel_size"]

    check = _slam(python, cwd, "launch", "lidar_demo", "--check")
    assert check.returncode == 0, check.stderr
    assert check.stdout.startswith("lidar_demo: ok, fast mode"), check.stdout

    unknown = _slam(python, cwd, "launch", "nope", "--check")
    assert unknown.returncode == 2
    for path in LAUNCH.glob("*.yaml"):
        assert path.stem in unknown.stderr, unknown.stderr

    # the bug this guards: a LiDAR replay without -c went on with RGB-D scales when the preset was not
    # found beside the package; now it uses the installed preset (and stops at the missing sequence)
    replay = _slam(python, cwd, "replay", "--dataset", "kitti", "missing_seq", "--out", "out")
    assert f"LiDAR source: using {configs / 'lidar_64.yaml'}" in replay.stderr, replay.stderr
    assert replay.returncode == 2 and "folder missing_seq does not exist" in replay.stderr


@pytest.fixture(scope="module")
def source_copy(tmp_path_factory) -> Path:
    copy = tmp_path_factory.mktemp("source") / "neural-slam"
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            copy.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    return copy


def test_a_wheel_install_finds_presets_by_name(source_copy: Path, tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    _pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(dist), str(source_copy))
    (wheel,) = dist.glob("neural_slam-*.whl")
    python, site = _venv(tmp_path / "venv")
    # installed before the parent environment is made visible: its own neural-slam (an editable
    # install of a checkout) must neither satisfy nor be touched by this install
    _pip("--python", str(python), "install", "--no-deps", "--no-index", str(wheel))
    _see_parent_packages(site)
    work = tmp_path / "elsewhere"
    work.mkdir()
    _check_installed_slam(python, work, site, site / "slam" / "presets" / "configs")
    assert not (site / "configs").exists()  # shipped inside the package, not as a top-level folder


def test_an_editable_install_finds_presets_by_name(source_copy: Path, tmp_path: Path) -> None:
    python, site = _venv(tmp_path / "venv")
    _see_parent_packages(site)  # the build backend (setuptools) runs in the new environment
    _pip(
        "--python",
        str(python),
        "install",
        "--no-deps",
        "--no-index",
        "--no-build-isolation",
        "--ignore-installed",  # never uninstall the parent environment's neural-slam
        "-e",
        str(source_copy),
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    _check_installed_slam(python, work, source_copy, source_copy / "configs")
