"""The `slam` command line."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="Neural implicit SDF SLAM: replay recordings, run the built-in demo, evaluate trajectories and meshes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect and check configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")

console = Console()
err_console = Console(stderr=True)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config file (see `slam config dump`)")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="override one config key, e.g. --set tracker.depth_max=3.5 (repeatable)"),
]


def _fail(message: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def _load(config: Path | None, sets: list[str] | None, extra: dict[str, Any] | None = None):
    from slam.config import ConfigError, load_config, merge_trees, parse_overrides

    try:
        overrides = parse_overrides(sets or [])
        if extra:
            overrides = merge_trees(extra, overrides)
        return load_config(config, overrides)
    except ConfigError as exc:
        _fail(str(exc))


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log progress details")] = False) -> None:
    _setup_logging(verbose)


@config_app.command("dump")
def config_dump(
    config: ConfigOpt = None,
    sets: SetOpt = None,
    plain: Annotated[bool, typer.Option(help="omit the description comments")] = False,
) -> None:
    """Print the configuration as YAML: the defaults, or FILE merged over them, with each key described."""
    from slam.config import dump_config

    typer.echo(dump_config(_load(config, sets), commented=not plain), nl=False)


@config_app.command("check")
def config_check(path: Annotated[Path, typer.Argument(help="YAML config file")]) -> None:
    """Validate a config file; exit 2 naming each bad key and the reason."""
    _load(path, None)
    console.print(f"{path}: ok")


@app.command("sources")
def sources() -> None:
    """List the sensor drivers that --dataset / source.kind accept."""
    from drivers.base import available_sources

    for name in available_sources():
        typer.echo(name)


def _run(cfg) -> Any:
    from drivers.base import SourceError
    from slam.replay import run_replay

    try:
        return run_replay(cfg)
    except SourceError as exc:
        _fail(str(exc))


def _print_summary(result) -> None:
    s = result.stats
    table = Table(title=f"run: {s['tracker']}", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    rows = [
        ("frames", f"{s['frames']} ({s['frames_skipped']} skipped, {s['frames_lost']} lost)"),
        ("speed", f"{s['fps']:.1f} frames/s, tracking median {s['tracking_ms_median']:.1f} ms"),
        ("peak RSS", f"{s['peak_rss_mb']:.0f} MB"),
    ]
    for key, label in (("ate_rmse_m", "ATE"), ("ate_rmse_aligned_m", "ATE (SE(3)-aligned)"), ("rpe_trans_1s_m", "RPE 1 s")):
        if s.get(key) is not None:
            rows.append((label, f"{s[key] * 100:.2f} cm"))
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print(f"trajectory: {result.trajectory_path}")
    console.print(f"mesh:       {result.mesh_path or '(none)'}")
    console.print(f"stats:      {result.out_dir / 'stats.json'}")
    if result.interrupted:
        console.print("[yellow]interrupted: outputs hold the frames tracked before the interrupt[/]")


@app.command("replay")
def replay(
    path: Annotated[Path | None, typer.Argument(help="dataset folder (optional for --dataset demo)")] = None,
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="driver: 7scenes, tum, replica, demo (see `slam sources`)")] = "demo",
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder")] = Path("runs/replay"),
    first: Annotated[int | None, typer.Option(help="first frame (position in the sequence)")] = None,
    last: Annotated[int | None, typer.Option(help="last frame, inclusive")] = None,
    stride: Annotated[int | None, typer.Option(help="use every K-th frame")] = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Replay a recorded sequence; writes OUT/trajectory.txt, OUT/mesh.ply and OUT/stats.json.

    Example: slam replay --dataset 7scenes ../shared/data/7scenes-redkitchen --out /tmp/r --stride 2
    """
    source: dict[str, Any] = {"kind": dataset}
    if path is not None:
        source["path"] = str(path)
    for key, value in (("first", first), ("last", last), ("stride", stride)):
        if value is not None:
            source[key] = value
    cfg = _load(config, sets, {"source": source, "output": {"dir": str(out)}})
    result = _run(cfg)
    _print_summary(result)
    typer.echo(json.dumps({k: v for k, v in result.stats.items() if k != "skipped"}))


@app.command("demo")
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder")] = Path("runs/demo"),
    frames: Annotated[int, typer.Option(help="frames of the generated sequence (30 per second)")] = 300,
    seed: Annotated[int, typer.Option(help="scene and noise seed")] = 0,
    noise: Annotated[bool, typer.Option(help="simulate depth-sensor noise")] = True,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Generate (first time only) the built-in indoor scene and replay it; prints ATE and the output paths."""
    source = {"kind": "demo", "options": {"frames": frames, "seed": seed, "noise": noise}}
    cfg = _load(config, sets, {"source": source, "output": {"dir": str(out)}})
    result = _run(cfg)
    _print_summary(result)
    typer.echo(json.dumps({k: v for k, v in result.stats.items() if k != "skipped"}))


def _mount_eval() -> None:
    from slam.eval.cli import app as eval_app

    app.add_typer(eval_app, name="eval", help="Evaluate trajectories (ATE, RPE) and meshes.")


_mount_eval()

if __name__ == "__main__":
    app()
