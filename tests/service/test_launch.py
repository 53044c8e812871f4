"""Launch files (slam.service.launch, `slam launch`): the shipped setups validate; a bad launch file fails
with the file, key path and reason. (The live RealSense setup is checked in test_realsense_live.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from drivers.base import source_class
from slam.app.config import ConfigError
from slam.cli import app
from slam.service.launch import load_launch
from slam.service.startup import ServiceError, check_source

LAUNCH = Path(__file__).resolve().parents[2] / "launch"
runner = CliRunner()


def _output(result) -> str:
    return " ".join(result.output.split())  # rich wraps long messages at the terminal width


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return path


def test_shipped_replay_setups_validate(monkeypatch) -> None:
    monkeypatch.setenv("SLAM_SHARED_DATA", "/data/shared")
    cfg, spec = load_launch(LAUNCH / "replay_7scenes.yaml")
    assert spec.description and cfg.source.kind == "7scenes"
    assert cfg.source.path == Path("/data/shared/7scenes-redkitchen")  # ${SLAM_SHARED_DATA:-...}
    assert cfg.service.mode == "realtime" and cfg.service.publish.enabled
    assert cfg.tracker.depth_max == 4.0  # from configs/7scenes.yaml, found relative to the launch file
    assert check_source(cfg)[1] == "realtime"
    monkeypatch.delenv("SLAM_SHARED_DATA")
    assert load_launch(LAUNCH / "replay_7scenes.yaml")[0].source.path == Path(
        "../shared/data/7scenes-redkitchen"
    )

    demo, _ = load_launch(LAUNCH / "demo.yaml")
    assert (
        demo.source.kind == "demo"
        and demo.source.options["frames"] == 300
        and demo.service.mode == "realtime"
    )
    assert str(demo.output.dir) == "runs/demo_service"


def test_lidar_setups_use_the_lidar_preset_and_a_missing_sequence_is_named(monkeypatch) -> None:
    monkeypatch.setenv("KITTI_SEQUENCE", "/nonexistent/sequences/00")
    cfg, _ = load_launch(LAUNCH / "lidar_replay.yaml")
    assert cfg.source.kind == "kitti" and source_class("kitti").sensor == "lidar"
    assert cfg.map.voxel_size >= 0.1  # LiDAR scales from configs/lidar_64.yaml, not the indoor default
    check_source(cfg)  # the engine tracks LiDAR scans
    result = runner.invoke(app, ["launch", str(LAUNCH / "lidar_replay.yaml")])
    assert result.exit_code == 2 and "/nonexistent/sequences/00" in _output(result)
    demo, _ = load_launch(LAUNCH / "lidar_demo.yaml")
    assert demo.source.kind == "lidar_demo" and check_source(demo)[1] == "fast"


def test_event_only_sources_and_the_baseline_with_lidar_are_refused() -> None:
    cfg, _ = load_launch(LAUNCH / "lidar_demo.yaml")
    with pytest.raises(ServiceError, match=r"pipeline: driver 'lidar_demo' yields LiDAR scans; the baseline"):
        check_source(cfg.model_copy(update={"pipeline": "baseline"}))
    events = cfg.model_copy(update={"source": cfg.source.model_copy(update={"kind": "events"})})
    with pytest.raises(
        ServiceError, match=r"driver 'events' yields events data, which the engine does not track"
    ):
        check_source(events)


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "servce:\n  mode: fast\n",
            r"bad\.yaml: servce: unknown key \(a launch file has description, config",
        ),
        (
            "service:\n  mode: fastest\n",
            r"bad\.yaml: service\.mode: Input should be 'auto', 'fast', 'realtime' or 'live'",
        ),
        ("overrides:\n  tracker.depth_maxx: 3\n", r"bad\.yaml: tracker\.depth_maxx: unknown key"),
        (
            "overrides:\n  mapper:\n    rays: many\n",
            r"bad\.yaml: mapper\.rays: Input should be a valid integer",
        ),
        (
            "service:\n  publish:\n    address: udp://x\n",
            r"bad\.yaml: service\.publish\.address: .*not a ZeroMQ endpoint",
        ),
        ("service:\n  localize_only: true\n", r"bad\.yaml: service: Value error, localize_only needs a map"),
        ("config: nowhere.yaml\n", r"bad\.yaml: config: .*nowhere\.yaml: cannot read config"),
        (
            "overrides:\n  source.path: ${SLAM_TEST_UNSET_VAR}/x\n",
            r"bad\.yaml: overrides\.source\.path: environment variable SLAM_TEST_UNSET_VAR is not set",
        ),
        ("- a list\n", r"bad\.yaml: a launch file is a mapping"),
        (
            "overrides:\n  tracker..points: 3\n",
            r"bad\.yaml: overrides: 'tracker\.\.points' is not a key path",
        ),
        ("overrides: [1, 2]\n", r"bad\.yaml: overrides: Input should be a valid dictionary"),
    ],
)
def test_bad_launch_files_name_the_key_and_reason(tmp_path, text, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_launch(_write(tmp_path, text))


def test_cli_launch_check_and_overrides(tmp_path) -> None:
    result = runner.invoke(app, ["launch", str(LAUNCH / "demo.yaml"), "--check"])
    assert result.exit_code == 0 and "ok, realtime mode" in _output(result)
    result = runner.invoke(app, ["launch", str(LAUNCH / "demo.yaml"), "--check", "--fast"])
    assert result.exit_code == 0 and "ok, fast mode" in _output(result)
    result = runner.invoke(
        app, ["launch", str(LAUNCH / "demo.yaml"), "--check", "--set", "service.mode=live"]
    )
    assert result.exit_code == 2 and "service.mode: live needs a live sensor" in _output(result)
    bad = _write(tmp_path, "service:\n  mode: fastest\n")
    result = runner.invoke(app, ["launch", str(bad)])
    assert result.exit_code == 2 and "service.mode: Input should be" in _output(result)
    result = runner.invoke(app, ["launch", str(LAUNCH / "demo.yaml"), "--fast", "--realtime"])
    assert result.exit_code == 2 and "--fast and --realtime exclude each other" in _output(result)


def test_cli_run_rejects_a_bad_start(tmp_path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("service:\n  mode: live\n  publish: {enabled: false}\n  control: {enabled: false}\n")
    result = runner.invoke(app, ["run", str(config)])
    assert result.exit_code == 2 and "service.mode: live needs a live sensor" in _output(result)
    result = runner.invoke(app, ["run", str(config), "--fast", "--load-map", str(tmp_path / "none.pt")])
    assert result.exit_code == 2 and "none.pt: no such map file" in _output(result)
