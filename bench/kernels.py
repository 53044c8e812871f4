"""Hot-path benchmark: the compiled kernels (``slam/map/kernels.py``, ``slam/engine/normal_equations.py``)
against the torch reference they replace, on maps built from real frames, in the same process.

A map is fitted by replaying frames (RGB-D: the first ``--frames`` of the shared 7-Scenes redkitchen;
LiDAR: the first ``--scans`` of the generated 64-beam drive); then, on that map, each case runs by both
paths and the best of ``--repeat`` timings is kept (min: the machine is shared and noisy):

* ``track query``: the tracker's SDF-and-gradient query of its points (2500 RGB-D / 4000 LiDAR points
  sampled from the last frame at its tracked pose), the unit of one Gauss-Newton iteration;
* ``GN iteration``: the tracker's whole ``_step`` (query, normal equations, solve);
* ``mapper step``: one optimiser step of the mapper on the last frame's rays (features, decoders,
  backward, embedding update);
* ``allocate``: allocating around the last frame's surface points (mostly already mapped space).

Each with one thread and with two (torch's intra-op threads and the kernels' parallel loops: a stage
running alone may use both cores). The ratio column is torch ÷ compiled.

Usage (from the repository root)::

    .venv/bin/python -m bench.kernels                     # RGB-D and LiDAR
    .venv/bin/python -m bench.kernels --write-benchmarks  # and its section of BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import sys
import timeit
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from bench.common import command_line, default_data, machine_info, markdown_grid, write_benchmarks

SECTION_TITLE = "Hot paths: compiled kernels vs the torch reference (bench/kernels.py)"


def fitted_engine(sensor: str, count: int):
    """An engine whose map was fitted on the first ``count`` frames, and the last frame's observation
    and tracked pose."""
    from slam.app.build import build_engine, open_configured_source
    from slam.app.config import load_config

    if sensor == "rgbd":
        over = {"source": {"path": str(default_data()), "last": count - 1}, "output": {"progress": False}}
        cfg = load_config("configs/7scenes.yaml", over)
    else:
        over = {"source": {"kind": "lidar_demo", "options": {"scans": count}}, "output": {"progress": False}}
        cfg = load_config("configs/lidar_64.yaml", over)
    source = open_configured_source(cfg)
    engine = build_engine(cfg, source.sensor)
    result = None
    with source:
        for frame in source:
            result = engine.track(frame)
            if engine.wants_mapping(result):
                engine.map(result)
    assert result is not None and result.observation is not None
    return engine, result


def best_ms(fn: Callable[[], Any], repeat: int) -> float:
    fn()
    return min(timeit.repeat(fn, number=1, repeat=repeat)) * 1e3


def cases(engine, result) -> dict[str, Callable[[], Any]]:
    tracker, mapper, neural_map = engine.tracker, engine.mapper, engine.tracker.map
    obs, pose = result.observation, result.pose
    pts = torch.from_numpy(np.asarray(obs.points, dtype=np.float32))
    world = tracker._world(pts, pose)
    weights = None if obs.weights is None else torch.from_numpy(np.asarray(obs.weights, dtype=np.float64))
    rays = obs.mapping_rays(pose, np.random.default_rng(0))
    rng_state = mapper.rng.bit_generator.state

    def mapper_step() -> None:
        mapper.rng.bit_generator.state = rng_state  # the same rays every time
        mapper.step(rays)

    from slam.engine.mapper import _surface_points

    surface = _surface_points(rays)
    return {
        "track query": lambda: neural_map.query(world, gradient=True, min_hits=tracker.cfg.min_hits),
        "GN iteration": lambda: tracker._step(pts, pose, tracker.cfg.robust_scale, weights),
        "mapper step": mapper_step,
        "allocate": lambda: neural_map.allocate(surface, dilate=mapper.cfg.allocate_dilation),
    }


def measure(sensor: str, count: int, repeat: int) -> list[dict[str, Any]]:
    from slam.map.neural_map import set_compute_threads

    engine, result = fitted_engine(sensor, count)
    neural_map = engine.tracker.map
    compiled = neural_map.compiled
    rows = []
    for name, fn in cases(engine, result).items():
        row: dict[str, Any] = {"sensor": sensor, "case": name}
        for threads in (1, 2):
            set_compute_threads(threads)
            for path in ("torch", "compiled"):
                neural_map.compiled = path == "compiled" and compiled
                row[f"{path}_{threads}t_ms"] = round(best_ms(fn, repeat), 3)
        neural_map.compiled = compiled
        rows.append(row)
    set_compute_threads(1)
    return rows


def section(rows: list[dict[str, Any]], argv: list[str]) -> str:
    table = [
        [
            f"{r['sensor']}: {r['case']}",
            *(f"{r[f'{p}_{t}t_ms']:.2f}" for t in (1, 2) for p in ("torch", "compiled")),
            f"{r['torch_1t_ms'] / r['compiled_1t_ms']:.1f}x",
            f"{r['torch_2t_ms'] / r['compiled_2t_ms']:.1f}x",
        ]
        for r in rows
    ]
    header = [
        "case",
        "torch 1t ms",
        "compiled 1t ms",
        "torch 2t ms",
        "compiled 2t ms",
        "ratio 1t",
        "ratio 2t",
    ]
    info = machine_info()
    return "\n".join(
        [
            f"## {SECTION_TITLE}",
            "",
            f"`{command_line('bench.kernels', argv)}` — commit {info.get('commit')}, {info.get('cpu')}, "
            f"{info.get('nproc')} cores. Best of the repeats (ms); ratio = torch ÷ compiled.",
            "",
            markdown_grid(header, table),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.kernels", description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=150, help="7-Scenes frames fitted before timing")
    p.add_argument("--scans", type=int, default=40, help="LiDAR scans fitted before timing")
    p.add_argument("--repeat", type=int, default=30, help="timings per case (the best is kept)")
    p.add_argument("--sensors", nargs="+", choices=("rgbd", "lidar"), default=["rgbd", "lidar"])
    p.add_argument("--write-benchmarks", action="store_true", help="write its section of BENCHMARKS.md")
    args = p.parse_args(argv)
    rows = []
    for sensor in args.sensors:
        rows += measure(sensor, args.frames if sensor == "rgbd" else args.scans, args.repeat)
    for r in rows:
        print(r)
    text = section(rows, argv if argv is not None else sys.argv[1:])
    print(text)
    if args.write_benchmarks:
        write_benchmarks(text, SECTION_TITLE)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
