"""The `slam` command line: `demo` on a tiny scene, `sources`, `config dump` and `config check` (typer's
CliRunner, in process)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from drivers.base import available_sources
from drivers.demo import DemoSource
from slam.app.config import SLAMConfig
from slam.cli import app
from slam.core.trajectory import read_tum

#: 8 clean frames of 160×120: the demo scene renders and replays in seconds
DEMO_FRAMES = 8
DEMO_SCENE = {"frames": DEMO_FRAMES, "width": 160, "height": 120, "noise": False, "progress": False}


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_sources_lists_every_driver() -> None:
    res = invoke("sources")
    assert res.exit_code == 0, res.output
    names = res.output.split()
    assert names == available_sources()
    assert {"demo", "7scenes", "tum", "kitti"} <= set(names)


def test_config_dump_is_the_defaults_with_each_key_described() -> None:
    res = invoke("config", "dump")
    assert res.exit_code == 0, res.output
    assert SLAMConfig.model_validate(yaml.safe_load(res.output)) == SLAMConfig()
    # each key carries its description as a comment
    described = SLAMConfig.model_fields["mapper"].annotation.model_fields["freeze_decoder_after"].description
    assert described.split(":")[0] in res.output
    plain = invoke("config", "dump", "--plain")
    assert plain.exit_code == 0 and "#" not in plain.output
    assert yaml.safe_load(plain.output) == yaml.safe_load(res.output)


def test_config_dump_merges_a_file_and_overrides(tmp_path: Path) -> None:
    config = tmp_path / "my.yaml"
    config.write_text("mapper:\n  rays: 2048\ntracker:\n  depth_max: 3.0\n")
    res = invoke("config", "dump", "--plain", "-c", str(config), "--set", "tracker.depth_max=3.5")
    assert res.exit_code == 0, res.output
    dumped = SLAMConfig.model_validate(yaml.safe_load(res.output))
    assert dumped.mapper.rays == 2048 and dumped.tracker.depth_max == 3.5  # --set wins over the file
    expected = SLAMConfig()
    expected.mapper.rays, expected.tracker.depth_max = 2048, 3.5
    assert dumped == expected  # and nothing else changed


def test_config_check_accepts_a_dump_and_names_bad_keys(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(invoke("config", "dump").output)
    res = invoke("config", "check", str(good))
    assert res.exit_code == 0 and f"{good}: ok" in res.output.replace("\n", "")

    for text, named in (("mapper:\n  rayz: 1\n", "rayz"), ("mapper:\n  rays: -5\n", "rays")):
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        res = invoke("config", "check", str(bad))
        assert res.exit_code == 2, res.output
        assert "error" in res.output and named in res.output and "ok" not in res.output

    res = invoke("config", "check", str(tmp_path / "missing.yaml"))
    assert res.exit_code == 2 and "missing.yaml" in res.output


@pytest.mark.slow
def test_demo_tracks_a_tiny_scene(tmp_path: Path) -> None:
    out, cache = tmp_path / "run", tmp_path / "cache"
    # --set source.path: the scene renders into this test's own cache folder, not the user's
    sets = [f"source.path={cache}", "source.options.width=160", "source.options.height=120"]
    sets += ["source.options.progress=false", "output.save_mesh=false", "output.progress=false", "threads=1"]
    args = ["demo", "--out", str(out), "--frames", str(DEMO_FRAMES), "--no-noise"]
    res = invoke(*args, *[item for s in sets for item in ("--set", s)])
    assert res.exit_code == 0, res.output
    stats = json.loads(res.output.strip().splitlines()[-1])  # the last line: the run's stats as JSON
    assert stats["frames"] == DEMO_FRAMES and stats["frames_lost"] == 0 and stats["source"]["kind"] == "demo"
    assert json.loads((out / "stats.json").read_text())["frames"] == DEMO_FRAMES
    traj = read_tum(out / "trajectory.txt")
    truth = np.array([f.gt_pose[:3, 3] for f in DemoSource(cache, **DEMO_SCENE)])
    assert len(traj) == DEMO_FRAMES
    errors = np.linalg.norm(traj.poses[:, :3, 3] - truth, axis=1)
    np.testing.assert_allclose(stats["ate_rmse_m"], np.sqrt(np.mean(errors**2)), atol=1e-5)
    # measured 0.31 cm; a tracker frozen at frame 0 scores 7.4 cm (the camera moves 12 cm in 8 frames)
    assert stats["ate_rmse_m"] < 0.01, stats
    assert str(out / "trajectory.txt") in res.output.replace("\n", "")  # the summary names the outputs


def test_replay_refuses_a_pipeline_that_cannot_track_the_source_before_opening_it(tmp_path: Path) -> None:
    # the baseline is RGB-D only: the generated LiDAR drive is refused by name, before its scene is generated
    res = invoke(
        "replay",
        "--dataset",
        "lidar_demo",
        "--set",
        "pipeline=baseline",
        "--set",
        f"source.path={tmp_path / 'c'}",
    )
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "pipeline: source 'lidar_demo' yields LiDAR scans; the baseline pipeline is RGB-D only" in text
    assert not (tmp_path / "c").exists()  # nothing generated
