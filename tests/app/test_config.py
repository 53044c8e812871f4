"""Config: defaults, YAML loading, overrides and the errors a user sees for bad keys and types."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from slam.app.config import ConfigError, SLAMConfig, dump_config, load_config, parse_overrides

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))


def test_every_field_has_a_description():
    def walk(model):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            ann = field.annotation
            if isinstance(ann, type) and hasattr(ann, "model_fields"):
                walk(ann)

    walk(SLAMConfig)


def test_dump_round_trips_to_the_defaults():
    text = dump_config(SLAMConfig())
    assert "# ignore depth beyond this (m)" in text
    assert SLAMConfig.model_validate(yaml.safe_load(text)) == SLAMConfig()


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_are_valid(path):
    load_config(path)


def test_unknown_key_names_full_path(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("tracker:\n  depth_maxx: 3.0\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert f"{bad}: tracker.depth_maxx: unknown key" in str(info.value)


def test_wrong_type_names_key_and_reason(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("map:\n  voxel_size: big\nsource:\n  stride: 0\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    msg = str(info.value)
    assert "map.voxel_size: Input should be a valid number" in msg
    assert "source.stride: Input should be greater than or equal to 1" in msg


def test_unknown_driver_is_rejected_at_load():
    with pytest.raises(ConfigError, match=r"source.kind: .*unknown driver 'kinect9'"):
        load_config(None, {"source": {"kind": "kinect9"}})


def test_not_yaml_and_not_a_mapping(tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text("tracker: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(f)
    f.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(f)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")


def test_overrides_take_precedence_and_parse_as_yaml(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("tracker:\n  depth_max: 3.0\nbaseline:\n  odometry:\n    iterations: [4, 2]\n")
    cfg = load_config(f, parse_overrides(["tracker.depth_max=2.5", "output.save_mesh=false"]))
    assert cfg.tracker.depth_max == 2.5
    assert cfg.baseline.odometry.iterations == [4, 2]
    assert cfg.output.save_mesh is False
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_overrides(["tracker.depth_max"])


def test_replay_takes_the_driver_from_the_config_unless_dataset_is_given(tmp_path) -> None:
    """`slam replay -c configs/7scenes.yaml PATH` (as the config's own header says) must read PATH with the
    config's driver: --dataset used to default to demo and silently replay the generated room instead."""
    from typer.testing import CliRunner

    from slam.cli import app

    missing = tmp_path / "no-such-sequence"
    config = Path(__file__).resolve().parents[2] / "configs" / "7scenes.yaml"
    res = CliRunner().invoke(app, ["replay", "-c", str(config), str(missing), "--out", str(tmp_path / "out")])
    assert res.exit_code != 0
    assert "7scenes" in res.output and str(missing) in res.output
    res = CliRunner().invoke(
        app, ["replay", "-c", str(config), "--dataset", "tum", str(missing), "--out", str(tmp_path / "o2")]
    )
    assert res.exit_code != 0 and "tum" in res.output
