"""The end of a run: the trajectory first (it is what matters most), then the map, then the replay's
output contract (mesh, stats.json) with the service's own figures added to the stats."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from drivers.base import Source
from slam.app.config import SLAMConfig
from slam.app.outputs import RunResult, write_run_outputs
from slam.app.persistence import write_trajectory_atomic
from slam.service.pipeline import Pipeline
from slam.service.status import short_of

if TYPE_CHECKING:
    from slam.service.state import RunRecord, Stages, Threads

log = logging.getLogger(__name__)


def write_outputs(
    cfg: SLAMConfig,
    source: Source,
    pipeline: Pipeline,
    service_stats: Callable[[], dict[str, Any]],
    save_map: Callable[[Path], Any],
    wall_s: float,
    interrupted: bool,
) -> RunResult:
    """The run's outputs from its last ``pipeline``: ``service_stats()`` gives stats.json's service
    fields, ``save_map(path)`` writes the map file (``service.save_map``)."""
    out_dir = Path(cfg.output.dir)
    # on its own and first: a kill during the slower writes below must not cost the poses
    stamps, poses = pipeline.trajectory()
    write_trajectory_atomic(out_dir / "trajectory.txt", stamps, poses)
    extra = service_stats()
    if cfg.service.save_map and pipeline.neural_map is not None:
        path = out_dir / cfg.service.map_file
        try:
            save_map(path)
            extra["map_file"] = str(path)
        except Exception as exc:  # a full disk must not cost the mesh and stats as well
            log.exception("could not save the map to %s", path)
            extra["map_error"] = f"{type(exc).__name__}: {exc}"
    return write_run_outputs(
        cfg,
        source,
        pipeline.engine,
        pipeline.recorder,
        wall_s,
        interrupted=interrupted,
        extra_stats=extra,
    )


def service_stats(
    status: dict[str, Any],
    run: RunRecord,
    stages: Stages,
    threads: Threads,
    publisher_stats: dict | None,
    max_age_s: float = 2.0,
) -> dict[str, Any]:
    """stats.json's service fields (besides the replay's), from the run's final ``status``; ``short_of``
    over the whole run, from the median age of the mapped frames (``max_age_s``:
    ``service.mapping_max_age_s``)."""
    worker = threads.mapping
    driver = threads.driver
    pacer = driver.pacer if driver is not None else None
    mesh_ms = worker.mesh_ms if worker is not None else []
    frames, mapping = status["frames"], status["mapping"]
    share, steps_per_s = worker.meter.overall(time.monotonic()) if worker is not None else (0.0, 0.0)
    ages = worker.mapped_age_s if worker is not None else []
    return {
        "mode": run.mode,
        "frames_received": status["frames"]["received"],
        "frames_dropped": stages.frames.dropped,
        "frames_not_mapped": stages.map_queue.dropped,
        "frames_map_skipped": frames["map_skipped"],
        "frames_mapped": worker.mapped if worker is not None else 0,
        # over the run: share of the wall time the mapping thread spent mapping, optimiser steps a second
        "mapping_share": round(share, 3),
        "mapping_steps_per_s": round(steps_per_s, 2),
        "mapping_refine_steps": mapping["refine_steps"],
        "mapping_waited_for_tracking_s": mapping["waited_for_tracking_s"],
        # per mapped frame, wall seconds from its arrival from the driver until it was mapped
        "mapped_age_s_median": round(float(np.median(ages)), 3) if ages else None,
        "mapped_age_s_max": round(float(np.max(ages)), 3) if ages else None,
        "mapped_stamp_lag_s": mapping["mapped_stamp_lag_s"],  # at the end: newest tracked − newest mapped
        "short_of": short_of(
            frames["received"],
            frames["dropped"],
            frames["tracked"],
            frames["not_mapped"],
            float(np.median(ages)) if ages else None,
            max_age_s,
        ),
        "mesh_updates": len(mesh_ms),
        "mesh_update_ms_median": round(float(np.median(mesh_ms)), 1) if mesh_ms else None,
        "mapping_state": status["mapping"]["state"],
        "mapping_error": worker.error if worker is not None else None,
        "mapping_crashes": run.mapping_crashes,
        "driver_error": threads.driver_error(),
        "tracking_error": threads.tracking.error if threads.tracking is not None else None,
        "driver_max_lag_s": round(pacer.max_lag_s, 3) if pacer is not None else None,
        "held_for_first_map_s": round(driver.held_s, 3) if driver is not None else 0.0,
        "segments": list(run.segments),
        "shutdown_reason": run.shutdown_reason,
        **stages.latency.summary(),
        "publisher": publisher_stats,
    }
