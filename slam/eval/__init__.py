"""Evaluation: trajectory accuracy (ATE, RPE, evo-compatible) and mesh quality (accuracy, completion).

Command line: ``slam eval ate|rpe|mesh`` (see :mod:`slam.eval.cli`).
"""

from slam.core.trajectory import (
    Trajectory,
    TrajectoryError,
    associate,
    associate_indices,
    read_kitti,
    read_trajectory,
    read_tum,
    write_kitti,
    write_tum,
)
from slam.eval.mesh import MeshError, MeshMetrics, mesh_metrics
from slam.eval.metrics import (
    Alignment,
    ATEResult,
    ErrorStats,
    RPEResult,
    align_trajectory,
    ate,
    pair_up,
    rpe,
    rpe_pairs,
    umeyama_alignment,
)

__all__ = [
    "ATEResult",
    "Alignment",
    "ErrorStats",
    "MeshError",
    "MeshMetrics",
    "RPEResult",
    "Trajectory",
    "TrajectoryError",
    "align_trajectory",
    "associate",
    "associate_indices",
    "ate",
    "mesh_metrics",
    "pair_up",
    "read_kitti",
    "read_trajectory",
    "read_tum",
    "rpe",
    "rpe_pairs",
    "umeyama_alignment",
    "write_kitti",
    "write_tum",
]
