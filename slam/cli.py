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
    Path | None,
    typer.Option(
        "--config", "-c", help="YAML config file, or a preset's name: lidar_64, 7scenes, ... (configs/)"
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="override one config key, e.g. --set tracker.depth_max=3.5 (repeatable)"),
]


def _fail(message: str, code: int = 2) -> None:
    from rich.markup import escape

    # escaped: messages quote user input and install hints like 'neural-slam[realsense]', not markup
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def _load(config: Path | None, sets: list[str] | None, extra: dict[str, Any] | None = None):
    from slam.app.config import ConfigError, load_config, merge_trees, parse_overrides

    try:
        overrides = parse_overrides(sets or [])
        if extra:
            overrides = merge_trees(extra, overrides)
        return load_config(config, overrides)
    except ConfigError as exc:
        _fail(str(exc))


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log progress details")] = False,
) -> None:
    _setup_logging(verbose)


@config_app.command("dump")
def config_dump(
    config: ConfigOpt = None,
    sets: SetOpt = None,
    plain: Annotated[bool, typer.Option(help="omit the description comments")] = False,
) -> None:
    """Print the configuration as YAML: the defaults, or FILE merged over them, with each key described."""
    from slam.app.config import dump_config

    typer.echo(dump_config(_load(config, sets), commented=not plain), nl=False)


@config_app.command("check")
def config_check(path: Annotated[Path, typer.Argument(help="YAML config file or preset name")]) -> None:
    """Validate a config file; exit 2 naming each bad key and the reason."""
    _load(path, None)
    console.print(f"{path}: ok")


@app.command("sources")
def sources() -> None:
    """List the sensor drivers that --dataset / source.kind accept."""
    from drivers.base import available_sources

    for name in available_sources():
        typer.echo(name)


@app.command("devices")
def devices() -> None:
    """List the connected Intel RealSense cameras (serial, model, firmware, USB link, IMU)."""
    from drivers.base import SourceError
    from drivers.realsense import list_devices

    try:
        found = list_devices()
    except SourceError as exc:
        _fail(str(exc))
    if not found:
        _fail("no RealSense device found (check the cable; a USB 3 port is needed for full rate)", code=1)
    table = Table(title="RealSense devices")
    for column in ("serial", "name", "firmware", "USB", "IMU"):
        table.add_column(column)
    for d in found:
        usb = f"{d.usb} (USB 2: reduced modes)" if d.usb2 else d.usb
        table.add_row(d.serial, d.name, d.firmware, usb, "yes" if d.has_imu else "no")
    console.print(table)


@app.command("record")
def record(
    out: Annotated[
        Path, typer.Argument(help="recording to write (.db3), played back by --dataset realsense")
    ],
    seconds: Annotated[float | None, typer.Option(help="stop after this many seconds")] = None,
    frames: Annotated[int | None, typer.Option(help="stop after this many frames")] = None,
    serial: Annotated[
        str | None, typer.Option(help="camera serial (see `slam devices`); default the first")
    ] = None,
    width: Annotated[int, typer.Option(help="image width")] = 640,
    height: Annotated[int, typer.Option(help="image height")] = 480,
    fps: Annotated[int, typer.Option(help="frames per second")] = 30,
) -> None:
    """Record a live RealSense session (depth, colour, IMU) until --seconds / --frames or Ctrl-C.

    Example: slam record runs/desk.db3 --seconds 20 ; slam replay --dataset realsense runs/desk.db3
    """
    import threading

    from drivers.base import SourceError
    from drivers.realsense import record_camera

    stop = threading.Event()
    try:
        result = record_camera(
            out, serial=serial, width=width, height=height, fps=fps, seconds=seconds, frames=frames, stop=stop
        )
    except SourceError as exc:
        _fail(str(exc))
    console.print(
        f"{result.path}: {result.frames} frames in {result.seconds:.1f} s, {result.dropped} dropped by the camera link",
        highlight=False,
    )


def _run(cfg) -> Any:
    from drivers.base import SourceError
    from slam.app.replay import run_replay
    from slam.frontends import UnsupportedSensor

    try:
        return run_replay(cfg)
    except SourceError as exc:
        _fail(str(exc))
    except UnsupportedSensor as exc:
        _fail(f"{exc.key}: source {cfg.source.kind!r} yields {exc}")


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
    for key, label in (
        ("ate_rmse_m", "ATE"),
        ("ate_rmse_aligned_m", "ATE (SE(3)-aligned)"),
        ("rpe_trans_1s_m", "RPE 1 s"),
    ):
        if s.get(key) is not None:
            rows.append((label, f"{s[key] * 100:.2f} cm"))
    if s.get("mesh_accuracy_cm") is not None:
        rows.append(
            (
                "mesh vs ground truth",
                f"accuracy {s['mesh_accuracy_cm']:.2f} cm, completion {s['mesh_completion_cm']:.2f} cm, "
                f"{s['mesh_completion_ratio'] * 100:.1f} % < 5 cm",
            )
        )
    ev = s.get("events") or {}
    if ev.get("frames_with_events"):
        rows.append(
            (
                "events",
                f"{ev['events']:,} in {ev['frames_event_aided']} of {ev['frames_with_events']} frames with events, "
                f"event term {ev['event_term_s']:.2f} s",
            )
        )
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
    path: Annotated[
        Path | None, typer.Argument(help="dataset folder or recording file (optional for --dataset demo)")
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(
            "--dataset",
            "-d",
            help="driver: 7scenes, tum, replica, demo, lidar_demo, kitti, ... (see `slam sources`); default: the "
            "config's source.kind, else demo",
        ),
    ] = None,
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
    # --dataset wins over the config's source.kind; with neither, SourceConfig's default (demo)
    source: dict[str, Any] = {} if dataset is None else {"kind": dataset}
    if path is not None:
        source["path"] = str(path)
    for key, value in (("first", first), ("last", last), ("stride", stride)):
        if value is not None:
            source[key] = value
    if config is None and dataset is not None:
        config = _lidar_preset(dataset)
    cfg = _load(config, sets, {"source": source, "output": {"dir": str(out)}})
    result = _run(cfg)
    _print_summary(result)
    typer.echo(json.dumps({k: v for k, v in result.stats.items() if k != "skipped"}))


def _lidar_preset(dataset: str) -> Path | None:
    """The lidar_64 preset for a LiDAR driver run without -c: the defaults are RGB-D scales (4 cm voxels),
    which outdoors would allocate millions of voxels a scan. Found by name wherever slam is installed;
    when it cannot be found the run stops here rather than go on with those defaults."""
    from drivers.base import SourceError, source_class
    from slam.app.presets import PresetError, find_preset

    try:
        sensor = source_class(dataset).sensor
    except (SourceError, ImportError, ValueError):
        return None  # an unknown driver is reported by the config check
    if sensor != "lidar":
        return None
    try:
        preset = find_preset("config", "lidar_64")
    except PresetError as exc:
        _fail(f"--dataset {dataset} is a LiDAR source and needs LiDAR scales, but {exc}; pass -c FILE")
    err_console.print(
        f"LiDAR source: using {preset} (pass -c lidar_32 or your own file to change)",
        highlight=False,
        soft_wrap=True,  # the path whole, not broken at the terminal's width
    )
    return preset


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


def _serve(cfg) -> None:
    """Run the service until the recording ends, a signal or the shutdown command; print the summary."""
    from drivers.base import SourceError
    from slam.app.persistence import MapFileError
    from slam.service.runtime import SLAMService, shutdown_on_signals
    from slam.service.startup import ServiceError

    try:
        service = SLAMService(cfg)
    except (SourceError, ServiceError, MapFileError, OSError) as exc:
        _fail(str(exc))
    if service.publisher is not None and service.publisher.endpoint:
        err_console.print(f"publishing pose/mesh/status on {service.publisher.endpoint}", highlight=False)
    if service.control is not None:
        err_console.print(f"control requests on {service.control.cfg.address}", highlight=False)
    from tqdm.contrib.logging import logging_redirect_tqdm

    # warnings logged during the run (e.g. falling behind the sensor) go above the progress bar, not into it
    with shutdown_on_signals(service), logging_redirect_tqdm():
        result = service.run()
    _print_summary(result)
    s = result.stats
    console.print(
        f"service:    {s['mode']}, {s['frames_dropped']} frames dropped, {s['frames_not_mapped']} not mapped, "
        f"map {s.get('map_file') or '(not saved)'}",
        highlight=False,
    )
    typer.echo(json.dumps({k: v for k, v in s.items() if k != "skipped"}))
    problems = [
        s[k]
        for k in ("tracking_error", "driver_error", "mapping_error", "map_error", "mesh_error")
        if s.get(k)
    ]
    if problems:
        err_console.print(f"[bold red]finished with errors:[/] {'; '.join(problems)}", highlight=False)
        raise typer.Exit(1)


def _service_overrides(
    fast: bool, realtime: bool, load_map: Path | None, localize_only: bool
) -> dict[str, Any]:
    if fast and realtime:
        _fail("--fast and --realtime exclude each other")
    service: dict[str, Any] = {}
    if fast or realtime:
        service["mode"] = "fast" if fast else "realtime"
    if load_map is not None:
        service["load_map"] = str(load_map)
    if localize_only:
        service["localize_only"] = True
    return {"service": service} if service else {}


FastOpt = Annotated[bool, typer.Option("--fast", help="every frame of a recording, as fast as possible")]
RealtimeOpt = Annotated[
    bool,
    typer.Option("--realtime", help="pace a recording by its timestamps; the tracker drops stale frames"),
]
LoadMapOpt = Annotated[
    Path | None, typer.Option("--load-map", help="start from a map saved by a previous run")
]
LocalizeOpt = Annotated[bool, typer.Option("--localize-only", help="track in the loaded map without mapping")]


@app.command("run")
def run(
    config: Annotated[
        Path, typer.Argument(help="YAML config file or preset name (see `slam config dump`, section service)")
    ],
    fast: FastOpt = False,
    realtime: RealtimeOpt = False,
    sets: SetOpt = None,
    load_map: LoadMapOpt = None,
    localize_only: LocalizeOpt = False,
) -> None:
    """Run the SLAM service: driver, tracking and mapping threads, ZeroMQ topics and control socket.

    Stops at the end of a recording, on Ctrl-C / SIGTERM or on the shutdown command, then writes
    trajectory.txt, map.pt, mesh.ply and stats.json to output.dir.
    Example: slam run configs/7scenes.yaml --realtime --set source.path=../shared/data/7scenes-redkitchen
    """
    cfg = _load(config, sets, _service_overrides(fast, realtime, load_map, localize_only))
    _serve(cfg)


@app.command("launch")
def launch(
    file: Annotated[
        Path, typer.Argument(help="launch file, or a preset's name: demo, lidar_demo, ... (launch/)")
    ],
    fast: FastOpt = False,
    realtime: RealtimeOpt = False,
    sets: SetOpt = None,
    load_map: LoadMapOpt = None,
    localize_only: LocalizeOpt = False,
    check: Annotated[bool, typer.Option("--check", help="validate the launch file and exit")] = False,
) -> None:
    """Run a ready setup from launch/ (a config plus service options); --set and flags override it."""
    from slam.app.config import ConfigError, merge_trees, parse_overrides
    from slam.service.launch import load_launch

    try:
        extra = merge_trees(
            _service_overrides(fast, realtime, load_map, localize_only), parse_overrides(sets or [])
        )
        cfg, spec = load_launch(file, extra)
    except ConfigError as exc:
        _fail(str(exc))
    if check:
        from drivers.base import SourceError
        from slam.service.startup import ServiceError, check_source

        try:
            _, mode = check_source(cfg)
        except (SourceError, ServiceError) as exc:
            _fail(f"{file}: {exc}")
        console.print(f"{file}: ok, {mode} mode ({spec.description or 'no description'})", highlight=False)
        return
    _serve(cfg)


@app.command("echo")
def echo(
    topic: Annotated[str, typer.Argument(help="pose, status or mesh")],
    address: Annotated[
        str, typer.Option(help="the service's PUB endpoint (publish.address)")
    ] = "tcp://127.0.0.1:5555",
    count: Annotated[int, typer.Option("--count", "-n", help="exit after N messages; 0 = until Ctrl-C")] = 0,
    timeout: Annotated[
        float, typer.Option(help="exit after this many seconds without a message; 0 = never")
    ] = 0.0,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line instead of YAML")] = False,
) -> None:
    """Print a topic's messages as they arrive, like `ros2 topic echo` (mesh: a summary per update).

    Example: slam echo pose --count 10
    """
    import yaml
    import zmq

    from slam.transport.client import MeshSubscriber, PoseSubscriber, StatusSubscriber

    subscribers = {"pose": PoseSubscriber, "status": StatusSubscriber, "mesh": MeshSubscriber}
    if topic not in subscribers:
        _fail(f"unknown topic {topic!r}; choose one of {', '.join(subscribers)}")
    try:
        sub = subscribers[topic](address, timeout_s=timeout or None)
    except zmq.ZMQError as exc:
        _fail(f"--address {address}: {exc}")
    with sub:
        try:
            for n, message in enumerate(sub, 1):
                summary = message.summary()
                if as_json:
                    typer.echo(json.dumps(summary))
                else:
                    typer.echo(yaml.safe_dump(summary, sort_keys=False, default_flow_style=None) + "---")
                if count and n >= count:
                    break
        except KeyboardInterrupt:
            pass
        if sub.missed or sub.errors:
            err_console.print(f"{sub.missed} messages missed (gaps in seq), {sub.errors} malformed skipped")


def _mount_eval() -> None:
    from slam.eval.cli import app as eval_app

    app.add_typer(eval_app, name="eval", help="Evaluate trajectories (ATE, RPE) and meshes.")


_mount_eval()

if __name__ == "__main__":
    app()
