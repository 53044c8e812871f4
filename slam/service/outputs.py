"""The end of a run: the trajectory first (it is what matters most), then the map, then the replay's
output contract (mesh, stats.json) with the service's own figures added to the stats."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from slam.app.outputs import RunResult, write_run_outputs
from slam.app.persistence import write_trajectory_atomic
from slam.service.status import service_status

if TYPE_CHECKING:
    from slam.service.runtime import SLAMService

log = logging.getLogger(__name__)


def write_outputs(svc: SLAMService, wall_s: float, interrupted: bool) -> RunResult:
    assert svc.source is not None
    out_dir = Path(svc.cfg.output.dir)
    pipeline = svc.pipeline
    # on its own and first: a kill during the slower writes below must not cost the poses
    stamps, poses = pipeline.trajectory()
    write_trajectory_atomic(out_dir / "trajectory.txt", stamps, poses)
    extra = service_stats(svc)
    if svc.cfg.service.save_map and pipeline.neural_map is not None:
        path = out_dir / svc.cfg.service.map_file
        try:
            svc.save_map(path)
            extra["map_file"] = str(path)
        except Exception as exc:  # a full disk must not cost the mesh and stats as well
            log.exception("could not save the map to %s", path)
            extra["map_error"] = f"{type(exc).__name__}: {exc}"
    return write_run_outputs(
        svc.cfg,
        svc.source,
        pipeline.engine,
        pipeline.recorder,
        wall_s,
        interrupted=interrupted,
        extra_stats=extra,
    )


def service_stats(svc: SLAMService) -> dict[str, Any]:
    """stats.json's service fields (besides the replay's)."""
    worker = svc.mapping_worker
    status = service_status(svc)
    pacer = svc.driver.pacer if svc.driver is not None else None
    mesh_ms = worker.mesh_ms if worker is not None else []
    return {
        "mode": svc.mode,
        "frames_received": status["frames"]["received"],
        "frames_dropped": svc.frames.dropped,
        "frames_not_mapped": svc.map_queue.dropped,
        "frames_mapped": worker.mapped if worker is not None else 0,
        "mesh_updates": len(mesh_ms),
        "mesh_update_ms_median": round(float(np.median(mesh_ms)), 1) if mesh_ms else None,
        "mapping_state": status["mapping"]["state"],
        "mapping_error": worker.error if worker is not None else None,
        "mapping_crashes": svc.mapping_crashes,
        "driver_error": svc.driver_error(),
        "tracking_error": svc.tracking_worker.error if svc.tracking_worker is not None else None,
        "driver_max_lag_s": round(pacer.max_lag_s, 3) if pacer is not None else None,
        "held_for_first_map_s": round(svc.driver.held_s, 3) if svc.driver is not None else 0.0,
        "segments": list(svc.segments),
        "shutdown_reason": svc.shutdown_reason,
        **svc.latency.summary(),
        "publisher": svc.publisher.stats() if svc.publisher_enabled and svc.publisher is not None else None,
    }
