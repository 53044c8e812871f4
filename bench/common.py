"""What the benchmarks share: where the data and outputs are, timing figures, running one method in a
child process (so that its peak memory is its own), the machine's description and the BENCHMARKS.md
section writer. Peak memory is ``slam.core.resources.peak_rss_mb``, the figure stats.json reports."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from slam.core.resources import peak_rss_mb

__all__ = [
    "REPO_ROOT",
    "child_argv",
    "command_line",
    "default_data",
    "machine_info",
    "markdown_grid",
    "peak_rss_mb",
    "replace_section",
    "run_child",
    "timing",
    "write_benchmarks",
]

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data() -> Path:
    """The shared data folder: ``SLAM_SHARED_DATA``, else ``../shared/data`` beside the checkout."""
    shared = os.environ.get("SLAM_SHARED_DATA")
    return Path(shared) if shared else REPO_ROOT.parent / "shared" / "data"


def default_data() -> Path:
    """The RGB-D benchmarks' default sequence: the shared 7-Scenes redkitchen."""
    return shared_data() / "7scenes-redkitchen"


def timing(wall_s: float, frames: int, track_ms: list[float]) -> dict[str, Any]:
    """frames, wall time, fps end to end and tracking ms (median, p90), rounded as stats.json rounds."""
    ms = np.array(track_ms) if track_ms else np.array([np.nan])
    return {
        "frames": frames,
        "wall_s": round(wall_s, 3),
        "fps": round(frames / wall_s, 3) if wall_s > 0 else None,
        "tracking_ms_median": round(float(np.median(ms)), 3),
        "tracking_ms_p90": round(float(np.percentile(ms, 90)), 3),
    }


# -- one method per process ---------------------------------------------------------------------------


def child_argv(module: str, method: str, options: Mapping[str, Any]) -> list[str]:
    """``python -m module --only method --key value ...``: None values are left out, a list repeats its
    flag (``--set a --set b``)."""
    argv = [sys.executable, "-m", module, "--only", method]
    for key, value in options.items():
        for item in value if isinstance(value, list) else [value]:
            if item is not None:
                argv += [f"--{key}", str(item)]
    return argv


def run_child(argv: list[str], capture_output: bool = False) -> subprocess.CompletedProcess:
    """Run a benchmark's child process from the repository root, with the checkout on ``PYTHONPATH``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=capture_output, text=capture_output)


def command_line(module: str, argv: list[str]) -> str:
    """The command as a reader would type it, for BENCHMARKS.md (the venv's python named as such)."""
    exe = Path(sys.executable)
    python = ".venv/bin/python" if exe.parent.parent == REPO_ROOT / ".venv" else "python"
    return shlex.join([python, "-m", module, *argv])


# -- reporting ----------------------------------------------------------------------------------------


def markdown_grid(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table, the first column left-aligned and the others right-aligned."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:
        nproc = os.cpu_count()
    versions = {}
    from importlib.metadata import PackageNotFoundError, version

    for pkg in ("open3d", "torch", "numpy"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    commit = None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if dirty:
            commit += " (with uncommitted changes)"
    except (OSError, subprocess.CalledProcessError):
        pass
    load = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    return {
        "nproc": nproc,
        "cpu": cpu,
        "memory_gb": mem_gb,
        "python": platform.python_version(),
        "versions": versions,
        "commit": commit,
        "load_average_at_start": load,
    }


def replace_section(text: str, section: str, title: str) -> str:
    """``text`` with the ``## title`` section replaced by ``section`` (appended when absent)."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == title), None)
    if start is None:
        body = text.rstrip("\n")
        return (body + "\n\n" if body else "") + section.rstrip("\n") + "\n"
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    before = "\n".join(lines[:start]).rstrip("\n")
    after = "\n".join(lines[end:])
    out = (before + "\n\n" if before else "") + section.rstrip("\n") + "\n"
    return out + ("\n" + after.rstrip("\n") + "\n" if after else "")


def write_benchmarks(section: str, title: str, path: Path = REPO_ROOT / "BENCHMARKS.md") -> Path:
    """Write ``section`` into BENCHMARKS.md in place of its ``## title`` section; returns the path."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    path.write_text(replace_section(text, section, title))
    return path
