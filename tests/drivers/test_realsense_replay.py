"""`slam replay --dataset realsense FILE.db3` end to end: a box room rendered along a known path,
recorded through pyrealsense2's software_device, replayed through the engine; the trajectory has the
recording's timestamps and follows the path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("pyrealsense2", reason="pyrealsense2 wheels exist for x86_64 / aarch64 only")

from realsense_recording import Intr, Recording, write_recording  # noqa: E402
from synthetic import box_room, look_at, render_frame  # noqa: E402
from transport_util import RecordingPublisher  # noqa: E402

from slam.cli import app  # noqa: E402
from slam.core.geometry import invert_pose  # noqa: E402

TARGET = np.array([0.6, -0.4, -0.6])


def _pose(s: float) -> np.ndarray:
    return look_at(np.array([-1.3 + 0.3 * s, 0.9 - 0.2 * s, 0.4]), TARGET)


@pytest.fixture(scope="module")
def room_recording(tmp_path_factory) -> tuple[Path, list[np.ndarray], list[float]]:
    """Six frames of the box room along a 7.5 cm path, recorded through a software_device."""
    room = box_room()
    poses = [_pose(s) for s in np.linspace(0.0, 0.25, 6)]
    rendered = [render_frame(room, p, width=160, height=120, f=130.0, index=i) for i, p in enumerate(poses)]
    depth = [np.round(f.depth * 1000.0).astype(np.uint16) for f in rendered]  # 1 mm units
    # colour: a shading of the depth, so that the colour head has something to fit
    color = [
        np.repeat((np.clip(f.depth / 4.0, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=2)
        for f in rendered
    ]
    intr = Intr(160, 120, 130.0, 130.0, 79.5, 59.5)
    stamps = [5000.0 + 33.333 * i for i in range(len(poses))]
    path = tmp_path_factory.mktemp("realsense") / "room.db3"
    write_recording(path, Recording(depth, color, intr, intr, stamps))
    return path, poses, stamps


def test_slam_replay_plays_a_realsense_recording(room_recording, tmp_path: Path) -> None:
    path, poses, stamps = room_recording
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            "replay",
            str(path),
            "--dataset",
            "realsense",
            "--out",
            str(out),
            "--set",
            "output.progress=false",
            "--set",
            "mapper.first_frame_iterations=60",
            "--set",
            "output.save_mesh=false",
        ],
    )
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output.strip().splitlines()[-1])
    assert stats["frames"] == len(poses) and stats["frames_skipped"] == 0 and stats["frames_lost"] == 0
    traj = np.loadtxt(out / "trajectory.txt")
    np.testing.assert_array_equal(traj[:, 0], [round(t, 6) / 1000.0 for t in stamps])
    # the tracker starts at the identity: compare with the path relative to its first pose
    from slam.core.geometry import pose_from_tum

    estimates = pose_from_tum(traj[:, 1:])
    for estimate, truth in zip(estimates, poses):
        relative = invert_pose(poses[0]) @ truth
        assert np.linalg.norm(estimate[:3, 3] - relative[:3, 3]) < 0.01


def test_service_runs_a_recording_and_reports_the_sensor(room_recording, tmp_path: Path) -> None:
    from slam.app.config import SLAMConfig
    from slam.service.runtime import SLAMService

    path, poses, stamps = room_recording
    cfg = SLAMConfig.model_validate(
        {
            "source": {"kind": "realsense", "path": str(path)},
            "output": {"dir": str(tmp_path / "svc"), "progress": False, "save_mesh": False},
            "threads": 1,
            "mapper": {"first_frame_iterations": 40, "iterations": 5},
            "service": {
                "mode": "fast",
                "save_map": False,
                "publish": {"enabled": False, "status_every_s": 0.1},
                "control": {"enabled": False},
            },
        }
    )
    publisher = RecordingPublisher()
    service = SLAMService(cfg, publisher=publisher)
    assert service.mode == "fast" and not service.source.live  # auto would choose fast too: a recording
    result = service.run()
    assert result.stats["frames"] == len(poses) and result.stats["frames_lost"] == 0
    last = publisher.statuses[-1]
    assert last["sensor"]["kind"] == "realsense" and last["sensor"]["state"] == "stopped"
    assert last["sensor"]["frames_dropped"] == 0 and last["driver_error"] is None
