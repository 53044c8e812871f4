"""``slam eval``: trajectory (ATE, RPE) and mesh metrics on files.

Every command prints a table, then as the last line of stdout one JSON object with the figures, so
scripts can read ``… | tail -n 1``. Unusable input exits with code 2 and a one-line message naming
the file.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help=(
        "Evaluate trajectories (ATE, RPE; figures match evo's evo_ape / evo_rpe) and meshes "
        "(accuracy, completion). The last line of output is a JSON object with the results."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class AlignChoice(str, Enum):
    none = "none"
    se3 = "se3"
    sim3 = "sim3"


class FormatChoice(str, Enum):
    auto = "auto"
    tum = "tum"
    kitti = "kitti"


class UnitChoice(str, Enum):
    frames = "frames"
    meters = "meters"
    seconds = "seconds"


class DuplicatesChoice(str, Enum):
    error = "error"
    keep = "keep"
    first = "first"


GtArg = Annotated[
    Path,
    typer.Argument(
        help="reference (ground-truth) trajectory, TUM or KITTI", metavar="GT", show_default=False
    ),
]
EstArg = Annotated[
    Path, typer.Argument(help="estimated trajectory, TUM or KITTI", metavar="EST", show_default=False)
]
AlignOpt = Annotated[
    AlignChoice,
    typer.Option(
        "--align",
        "-a",
        help="align the estimate first: none, se3 (Umeyama, like evo -a) or sim3 (with scale, evo -as)",
    ),
]
FormatOpt = Annotated[
    FormatChoice,
    typer.Option(
        "--format",
        "-f",
        help="file format; auto: 8 columns = TUM (t tx ty tz qx qy qz qw), 12 = KITTI (3x4 row-major)",
    ),
]
MaxDiffOpt = Annotated[
    float,
    typer.Option(
        "--max-diff", help="max. timestamp difference (s) when associating poses, as evo's --t_max_diff"
    ),
]
OffsetOpt = Annotated[
    float, typer.Option("--offset", help="time offset (s) added to the estimate's timestamps")
]
GtTimesOpt = Annotated[
    Path | None, typer.Option("--gt-times", help="timestamps file for a KITTI ground truth (one a line)")
]
EstTimesOpt = Annotated[
    Path | None, typer.Option("--est-times", help="timestamps file for a KITTI estimate (one a line)")
]
DuplicatesOpt = Annotated[
    DuplicatesChoice,
    typer.Option(
        "--duplicates",
        help="repeated timestamps in a TUM file: error, keep (all poses, as evo does) or first",
    ),
]


def _fail(message: str) -> NoReturn:
    typer.echo("error: " + " ".join(str(message).split()), err=True)
    raise typer.Exit(2)


def _emit(table: Table, payload: dict[str, Any]) -> None:
    Console(highlight=False).print(table)
    typer.echo(json.dumps(payload))


def _load_pair(
    gt: Path,
    est: Path,
    fmt: FormatChoice,
    gt_times: Path | None,
    est_times: Path | None,
    dup: DuplicatesChoice,
):
    from slam.core.trajectory import read_trajectory

    ref = read_trajectory(gt, fmt.value, times=gt_times, duplicates=dup.value)
    traj = read_trajectory(est, fmt.value, times=est_times, duplicates=dup.value)
    return ref, traj


def _stats_rows(table: Table, stats: Any, unit: str, label: str = "") -> None:
    for key in ("rmse", "mean", "median", "std", "min", "max"):
        table.add_row(f"{label}{key}", f"{getattr(stats, key):.6f} {unit}")


@app.command("ate")
def ate_cmd(
    gt: GtArg,
    est: EstArg,
    align: AlignOpt = AlignChoice.none,
    fmt: FormatOpt = FormatChoice.auto,
    max_diff: MaxDiffOpt = 0.01,
    offset: OffsetOpt = 0.0,
    gt_times: GtTimesOpt = None,
    est_times: EstTimesOpt = None,
    duplicates: DuplicatesOpt = DuplicatesChoice.error,
) -> None:
    """Absolute trajectory error: distance between estimated and true camera positions (m).

    Same figures as `evo_ape tum|kitti GT EST [-a|-as]` (translation part). Poses are paired by nearest timestamp within --max-diff; KITTI files without a times file are paired by index.
    """
    from slam.eval.metrics import ate

    try:
        ref, traj = _load_pair(gt, est, fmt, gt_times, est_times, duplicates)
        result = ate(ref, traj, align=align.value, max_diff=max_diff, offset=offset)
    except (ValueError, OSError) as exc:
        _fail(str(exc))
    table = Table(title=f"ATE (translation, align={align.value})")
    table.add_column("statistic")
    table.add_column("value", justify="right")
    _stats_rows(table, result.stats, "m")
    table.add_row("pairs", f"{result.n} (of {len(ref)} gt, {len(traj)} est poses)")
    if align is AlignChoice.sim3:
        table.add_row("scale", f"{result.scale:.6f}")
    payload = {**result.as_dict(), "n_gt": len(ref), "n_est": len(traj), "gt": str(gt), "est": str(est)}
    _emit(table, payload)


@app.command("rpe")
def rpe_cmd(
    gt: GtArg,
    est: EstArg,
    delta: Annotated[
        float, typer.Option("--delta", "-d", help="distance between the poses of a pair, in --unit")
    ] = 1.0,
    unit: Annotated[
        UnitChoice,
        typer.Option(
            "--unit",
            "-u",
            help="unit of --delta: frames, meters (path length, as evo) or seconds (first pose >= delta later)",
        ),
    ] = UnitChoice.frames,
    all_pairs: Annotated[
        bool,
        typer.Option("--all-pairs", help="use a pair starting at every pose instead of consecutive pairs"),
    ] = False,
    pairs_from_reference: Annotated[
        bool,
        typer.Option(
            "--pairs-from-reference", help="choose pairs on the ground truth instead of the estimate"
        ),
    ] = False,
    align: AlignOpt = AlignChoice.none,
    fmt: FormatOpt = FormatChoice.auto,
    max_diff: MaxDiffOpt = 0.01,
    offset: OffsetOpt = 0.0,
    gt_times: GtTimesOpt = None,
    est_times: EstTimesOpt = None,
    duplicates: DuplicatesOpt = DuplicatesChoice.error,
) -> None:
    """Relative pose error over pose pairs --delta apart: translation (m) and rotation (deg) drift.

    Same figures as `evo_rpe tum|kitti GT EST -d DELTA -u f|m [--all_pairs]` with -r trans_part and -r angle_deg. `--unit seconds` is this project's 1-second RPE (not in evo): each pair ends at the first pose at least --delta seconds after its start.
    """
    from slam.eval.metrics import rpe

    try:
        ref, traj = _load_pair(gt, est, fmt, gt_times, est_times, duplicates)
        result = rpe(
            ref,
            traj,
            delta=delta,
            unit=unit.value,
            all_pairs=all_pairs,
            align=align.value,
            pairs_from_reference=pairs_from_reference,
            max_diff=max_diff,
            offset=offset,
        )
    except (ValueError, OSError) as exc:
        _fail(str(exc))
    mode = "all pairs" if all_pairs else "consecutive pairs"
    table = Table(title=f"RPE (delta={delta:g} {unit.value}, {mode}, align={align.value})")
    table.add_column("statistic")
    table.add_column("value", justify="right")
    _stats_rows(table, result.trans, "m", "trans ")
    _stats_rows(table, result.rot, "deg", "rot ")
    table.add_row("pairs", str(result.n))
    payload = {**result.as_dict(), "gt": str(gt), "est": str(est)}
    _emit(table, payload)


@app.command("mesh")
def mesh_cmd(
    ref: Annotated[
        Path, typer.Argument(help="reference mesh (.ply, .obj, …)", metavar="REF", show_default=False)
    ],
    est: Annotated[
        Path,
        typer.Argument(
            help="reconstructed mesh, in the reference's frame", metavar="EST", show_default=False
        ),
    ],
    points: Annotated[
        int, typer.Option("--points", "-n", help="points sampled on each mesh", min=1)
    ] = 200_000,
    threshold: Annotated[
        float, typer.Option("--threshold", help="completion-ratio distance threshold (m)")
    ] = 0.05,
    seed: Annotated[int, typer.Option("--seed", help="sampling seed (results are repeatable)")] = 0,
    to_samples: Annotated[
        bool,
        typer.Option(
            "--to-samples",
            help="measure to the other mesh's samples, as NICE-SLAM's script does (adds the sampling "
            "spacing to every figure), instead of to its surface",
        ),
    ] = False,
) -> None:
    """Mesh accuracy and completion (cm) and completion ratio, as in the NICE-SLAM evaluation.

    Accuracy: mean distance from estimated-surface samples to the reference; completion: the reverse; completion ratio: share of reference samples within --threshold of the estimate. Both meshes must be in the same frame.
    """
    from slam.eval.mesh import mesh_metrics

    try:
        result = mesh_metrics(
            ref,
            est,
            n_points=points,
            threshold=threshold,
            seed=seed,
            distance="samples" if to_samples else "surface",
        )
    except (ValueError, OSError) as exc:
        _fail(str(exc))
    table = Table(title="Mesh metrics")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("accuracy", f"{result.accuracy_cm:.4f} cm")
    table.add_row("completion", f"{result.completion_cm:.4f} cm")
    table.add_row(f"completion ratio (< {threshold * 100:g} cm)", f"{result.completion_ratio * 100:.2f} %")
    table.add_row("samples per mesh", str(points))
    table.add_row("distance to", "the other mesh's samples" if to_samples else "the other mesh's surface")
    _emit(table, {**result.as_dict(), "ref": str(ref), "est": str(est)})
