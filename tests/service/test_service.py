"""The threaded service (slam.service): every pose of a fast run reaches a subscriber in order; realtime
mode drops and counts stale frames; a crashing mapper leaves tracking running and is reported; control
commands work on a running service; a saved map is continued or localised in; SIGTERM during a replay
leaves a complete trajectory and a loadable map.

Frames come from a small noise-free demo scene (160×120, generated once per module in a temporary
cache), with exact ground truth, so tracked poses are checked against known answers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
import zmq
from transport_util import ANY_PORT, RecordingPublisher, wait_subscribed

from drivers.base import Source
from drivers.demo import DemoSource
from slam.app.config import SLAMConfig, merge_trees
from slam.app.persistence import load_session, open_map
from slam.core.trajectory import read_tum
from slam.engine.engine import Engine, TrackingResult
from slam.service.queues import END, HandOff
from slam.service.runtime import SLAMService
from slam.service.startup import ServiceError, resolve_mode
from slam.service.status import DropWatch
from slam.transport.client import MeshSubscriber, PoseSubscriber
from slam.transport.control import ControlClient

REPO = Path(__file__).resolve().parents[2]
SCENE = {"frames": 24, "width": 160, "height": 120, "noise": False, "progress": False}


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo_cache")
    DemoSource(root, **SCENE)  # render the scene once for every test of the module
    return root


@pytest.fixture(scope="module")
def demo_frames(demo_root):
    return list(DemoSource(demo_root, **SCENE))


def service_tree(demo_root: Path, out: Path, **sections) -> dict:
    """A config small enough for seconds per run, still tracking to millimetres on the clean scene."""
    tree = {
        "source": {"kind": "demo", "path": str(demo_root), "options": SCENE},
        "output": {"dir": str(out), "progress": False, "save_mesh": False},  # meshing a room takes seconds
        "threads": 1,
        "mapper": {"rays": 1024, "first_frame_iterations": 40, "keyframe_rays": 1000},
        # The light mapper above fits each voxel corner far fewer times than the default min_hits (20) asks
        # before the tracker trusts it. At the defaults (measured) the fast run loses frames, the
        # localise-only run never leaves the pose of frame 12 (19 cm off by frame 23) and five tests of this
        # module fail; a full mapper (3072 rays) would cost several times the run time.
        "tracker": {"min_hits": 5, "min_inlier_ratio": 0.2},
        "service": {"publish": {"enabled": False}, "control": {"enabled": False}},
    }
    return merge_trees(tree, sections)


def service_config(demo_root: Path, out: Path, **sections) -> SLAMConfig:
    return SLAMConfig.model_validate(service_tree(demo_root, out, **sections))


class ListSource(Source):
    """Frames from memory (re-timed by the tests)."""

    name = "list"

    def __init__(self, frames) -> None:
        super().__init__()
        self.frames = frames

    def __iter__(self):
        yield from self.frames

    def __len__(self) -> int:
        return len(self.frames)


class GroundTruthTracker:
    """A tracker that takes ``delay_s`` per frame and returns the ground truth (for pacing tests)."""

    name = "ground-truth"
    map = None  # no neural map (the Tracker protocol)

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s

    def track(self, obs) -> TrackingResult:
        time.sleep(self.delay_s)
        return TrackingResult(pose=obs.gt_pose.copy())


def position_errors(stamps, poses, frames) -> np.ndarray:
    gt = {round(f.timestamp, 6): f.gt_pose for f in frames}
    return np.array([np.linalg.norm(p[:3, 3] - gt[round(t, 6)][:3, 3]) for t, p in zip(stamps, poses)])


# -- queues ------------------------------------------------------------------------------------------


def test_handoff_policies() -> None:
    newest = HandOff(3, "drop_oldest", "newest")
    for i in range(5):
        assert newest.put(i)
    assert newest.dropped == 2 and len(newest) == 3  # 0 and 1 pushed out
    assert newest.get(0) == 4 and newest.dropped == 4  # 2 and 3 skipped for the newest
    newest.close()
    assert newest.get(0) is END and not newest.put(9) and newest.dropped == 5

    fifo = HandOff(2, "block", "oldest")
    assert fifo.put("a") and fifo.put("b")
    assert not fifo.put("c", give_up=lambda: True) and fifo.dropped == 1  # full, and the consumer is gone
    assert fifo.get(0) == "a" and fifo.get(0) == "b" and fifo.get(0.01) is None


def test_mode_resolution() -> None:
    assert resolve_mode("auto", False, "demo") == "fast" and resolve_mode("auto", True, "cam") == "live"
    with pytest.raises(
        ServiceError, match=r"service.mode: live needs a live sensor, but source 'demo' is a recording"
    ):
        resolve_mode("live", False, "demo")
    with pytest.raises(ServiceError, match=r"service.mode: source 'cam' is a live sensor"):
        resolve_mode("realtime", True, "cam")


# -- pacing and dropping -----------------------------------------------------------------------------


def _paced_run(demo_frames, tmp_path, mode: str, delay_s: float, hz: float):
    frames = [dataclasses.replace(f, timestamp=i / hz) for i, f in enumerate(demo_frames)]
    cfg = service_config(tmp_path, tmp_path / mode, service={"mode": mode, "save_map": False})
    publisher = RecordingPublisher()
    service = SLAMService(
        cfg, source=ListSource(frames), engine=Engine(GroundTruthTracker(delay_s)), publisher=publisher
    )
    t0 = time.monotonic()
    result = service.run()
    return frames, result, publisher, time.monotonic() - t0


def test_realtime_takes_the_newest_frame_and_counts_the_dropped(demo_frames, tmp_path) -> None:
    # a 100 Hz recording and a tracker that needs 50 ms a frame: about four of five frames are stale
    frames, result, publisher, elapsed = _paced_run(demo_frames, tmp_path, "realtime", 0.05, 100.0)
    s = result.stats
    n = len(frames)
    assert elapsed >= (n - 1) / 100.0  # paced: no faster than recorded
    assert s["frames_received"] == n
    assert s["frames"] + s["frames_dropped"] == n  # every frame either tracked or counted as dropped
    assert s["frames_dropped"] >= n // 2
    stamps = [t for t, _, _ in publisher.poses]
    assert stamps[0] == frames[0].timestamp and stamps[-1] == frames[-1].timestamp  # the last is the newest
    assert np.all(np.diff(stamps) > 0) and np.max(np.diff(stamps)) > 1.5 / 100.0  # in order, with gaps
    traj = read_tum(result.trajectory_path)
    np.testing.assert_array_equal(traj.timestamps, stamps)
    assert position_errors(traj.timestamps, traj.poses, frames).max() < 1e-6


def test_drop_watch_warns_once_when_the_tracker_falls_behind() -> None:
    watch = DropWatch(window_s=10.0, share=0.3)
    # 30 frames a second; second by second: 10 % dropped for 20 s, then 50 %, then none again
    received = dropped = 0
    warnings = []
    for second in range(1, 61):
        rate = 0.1 if second <= 20 else (0.5 if second <= 40 else 0.0)
        received += 30
        dropped += int(round(30 * rate))
        warnings.append((second, watch.update(float(second), received, dropped, tracking_ms=120.0)))
    said = [(t, w) for t, w in warnings if w]
    assert len(said) == 1  # once per episode
    t, text = said[0]
    assert 21 < t <= 30  # within the window after the drops began
    assert "falling behind" in text and "120 ms" in text and "%" in text
    # caught up (under half the threshold) and then behind again: warned again
    for second in range(61, 81):
        received += 30
        dropped += 15
        if watch.update(float(second), received, dropped):
            break
    else:
        raise AssertionError("no second warning after catching up and falling behind again")


def test_drop_watch_needs_history_and_frames() -> None:
    watch = DropWatch(window_s=10.0, share=0.3, min_frames=10)
    assert watch.update(0.0, 0, 0) is None
    assert watch.update(2.0, 100, 100) is None  # everything dropped, but only 2 s of history
    slow = DropWatch(window_s=10.0, share=0.3, min_frames=10)
    for second in range(12):  # a 0.5 Hz sensor: 6 frames in 12 s, all dropped: too few to judge
        assert slow.update(float(second), second // 2, second // 2) is None


class SlowFirstMapper:
    """Takes ``first_s`` to integrate the first frame (fitting the first map), no time afterwards."""

    name = "slow-first"
    mesher = None  # no block meshes, no keyframes (the Mapper protocol)
    keyframes: tuple = ()

    def __init__(self, first_s: float) -> None:
        self.first_s = first_s
        self.integrated = 0

    def integrate(self, obs, pose) -> None:
        if self.integrated == 0:
            time.sleep(self.first_s)
        self.integrated += 1

    def extract_mesh(self):
        return None

    def map_bytes(self) -> int:
        return 0


class FirstFlagTracker(GroundTruthTracker):
    def __init__(self, delay_s: float) -> None:
        super().__init__(delay_s)
        self.calls = 0

    def track(self, obs) -> TrackingResult:
        result = super().track(obs)
        result.info["first"] = self.calls == 0
        self.calls += 1
        return result


@pytest.mark.parametrize("hold", [True, False])
def test_realtime_recording_is_held_while_the_first_map_is_fitted(demo_frames, tmp_path, hold) -> None:
    frames = [dataclasses.replace(f, timestamp=i / 50.0) for i, f in enumerate(demo_frames)]
    cfg = service_config(
        tmp_path,
        tmp_path / "held",
        service={"mode": "realtime", "save_map": False, "hold_until_initialised": hold},
    )
    service = SLAMService(
        cfg,
        source=ListSource(frames),
        engine=Engine(FirstFlagTracker(0.001), SlowFirstMapper(0.3)),
        publisher=RecordingPublisher(),
    )
    result = service.run()
    stamps = read_tum(result.trajectory_path).timestamps
    if hold:  # the recording waited: the second frame is tracked, nothing dropped
        assert result.stats["held_for_first_map_s"] >= 0.25
        assert stamps[1] == frames[1].timestamp and result.stats["frames_dropped"] == 0
    else:  # 0.3 s at 50 Hz: the frames of those seconds went stale
        assert result.stats["held_for_first_map_s"] == 0.0
        assert stamps[1] >= frames[10].timestamp and result.stats["frames_dropped"] >= 10


def test_fast_mode_tracks_every_frame(demo_frames, tmp_path) -> None:
    frames, result, publisher, _ = _paced_run(demo_frames, tmp_path, "fast", 0.01, 100.0)
    assert result.stats["frames"] == len(frames) and result.stats["frames_dropped"] == 0
    assert [t for t, _, _ in publisher.poses] == [f.timestamp for f in frames]


# -- the real engine -----------------------------------------------------------------------------------


def test_fast_run_publishes_every_pose_in_order(demo_root, demo_frames, tmp_path) -> None:
    cfg = service_config(
        demo_root,
        tmp_path / "out",
        service={"mode": "fast", "publish": {"enabled": True, "address": ANY_PORT, "mesh_every_s": 0.2}},
    )
    service = SLAMService(cfg)
    with (
        PoseSubscriber(service.publisher.endpoint, timeout_s=5) as poses,
        MeshSubscriber(service.publisher.endpoint) as meshes,
    ):
        wait_subscribed(service.publisher, poses)
        wait_subscribed(service.publisher, meshes)
        result = service.run()
        received = []
        while (msg := poses.recv(2.0)) is not None:
            received.append(msg)
        mesh_updates = []
        while (msg := meshes.recv(0.5)) is not None:
            mesh_updates.append(msg)
    n = len(demo_frames)
    assert [m.seq for m in received] == list(range(n))
    assert [m.stamp for m in received] == [f.timestamp for f in demo_frames]
    assert received[0].status == "initialising" and {m.status for m in received[1:]} <= {"ok", "recovered"}
    traj = read_tum(result.trajectory_path)
    np.testing.assert_allclose([m.position for m in received], traj.poses[:, :3, 3], atol=1e-9)
    assert position_errors(traj.timestamps, traj.poses, demo_frames).max() < 0.03
    assert result.stats["frames_mapped"] == n and result.stats["frames_not_mapped"] == 0  # fast: every frame
    assert mesh_updates and all(not m.full for m in mesh_updates)
    assert sum(len(m.blocks) for m in mesh_updates) > 0
    snapshot = load_session(result.out_dir / "map.pt")
    np.testing.assert_array_equal(snapshot.timestamps, traj.timestamps)


def test_mapping_crash_is_reported_and_tracking_goes_on(
    demo_root, demo_frames, tmp_path, monkeypatch
) -> None:
    cfg = service_config(demo_root, tmp_path / "out", service={"mode": "fast"})
    publisher = RecordingPublisher()
    service = SLAMService(cfg, publisher=publisher)
    mapper = service.pipeline.mapper
    integrate = mapper.integrate

    def integrate_then_crash(obs, pose):
        if mapper.frames_integrated == 8:
            raise RuntimeError("mapper exploded")
        integrate(obs, pose)

    monkeypatch.setattr(mapper, "integrate", integrate_then_crash)
    result = service.run()
    s = result.stats
    assert s["frames"] == len(demo_frames) and s["frames_mapped"] == 8  # tracked to the end, mapped 8
    assert s["mapping_state"] == "crashed" and "RuntimeError: mapper exploded" in s["mapping_error"]
    assert s["mapping_crashes"] == 1
    final = publisher.statuses[-1]
    assert final["mapping"]["state"] == "crashed" and "mapper exploded" in final["mapping"]["error"]
    traj = read_tum(result.trajectory_path)
    errors = position_errors(traj.timestamps, traj.poses, demo_frames)
    assert errors[9:].max() < 0.03  # the frames after the crash, tracked in the map of the first eight
    assert (result.out_dir / "map.pt").is_file()  # the last map is still saved


#: frames the control test localises in the map it loads before shutting down
LOCALISED = 4


def test_control_commands_on_a_running_service(demo_root, demo_frames, tmp_path) -> None:
    out = tmp_path / "out"
    cfg = service_config(
        demo_root,
        out,
        service={
            "mode": "fast",
            "publish": {"enabled": True, "address": ANY_PORT},
            "control": {"enabled": True, "address": ANY_PORT},
        },
    )
    service = SLAMService(cfg)
    service.pause()  # start paused: frames wait for `resume`
    service.start()
    client = ControlClient(service.control.endpoint, timeout_s=30)
    meshes = MeshSubscriber(service.publisher.endpoint)
    try:
        wait_subscribed(service.publisher, meshes)
        status = client.request("status")["result"]
        assert status["state"] == "paused" and status["frames"]["tracked"] == 0

        bad = client.request_raw(b"\xff not json")
        assert not bad["ok"] and "not UTF-8 JSON" in bad["error"]
        missing = client.request("load_map", {"path": "no_such_map.pt"})
        assert not missing["ok"] and "no_such_map.pt: no such map file" in missing["error"]

        assert client.request("resume")["result"]["state"] in ("running", "initialising")
        _wait_for(lambda: service.status()["frames"]["mapped"] >= 10)
        assert client.request("pause")["ok"]

        def settled() -> bool:  # the frame being tracked when pause came may still reach the mapper
            before = service.status()["frames"]
            time.sleep(0.3)
            now = service.status()
            return (
                now["frames"] == before
                and now["queues"]["mapping"] == 0
                and service.mapping_worker.state == "idle"
            )

        _wait_for(settled)
        tracked = service.status()["frames"]["tracked"]

        saved = client.request("save_map", {"path": "snap/map.pt"})["result"]
        assert saved["path"] == str(out / "snap" / "map.pt") and saved["poses"] == tracked
        loaded, _ = open_map(out / "snap" / "map.pt", device="cpu")
        pts = service.pipeline.neural_map.allocated_blocks(0)[:200] + 0.1
        assert torch.equal(loaded.query(pts).sdf, service.pipeline.neural_map.query(pts).sdf)

        mesh_reply = client.request("save_mesh", {"path": "mesh_now.ply"})["result"]
        assert mesh_reply["triangles"] > 0 and (out / "mesh_now.ply").is_file()
        blocks = client.request("full_mesh")["result"]["blocks"]
        full = _recv_full_mesh(meshes)
        assert blocks > 0 and len(full) == blocks

        segment = client.request("reset")["result"]["segment"]
        assert len(read_tum(segment)) == tracked  # the poses before the reset are kept
        assert service.status()["frames"]["tracked"] == tracked and service.status()["map"]["blocks"] == 0

        reply = client.request("load_map", {"path": "snap/map.pt", "localize_only": True})["result"]
        assert reply["blocks"] > 0 and reply["localize_only"]
        assert client.request("resume")["ok"]
        # a few frames localised in the loaded map before the shutdown (which ends the run early)
        localised = min(LOCALISED, len(demo_frames) - tracked)
        _wait_for(lambda: service.status()["frames"]["tracked"] >= tracked + localised)
        assert client.request("shutdown")["result"]["state"] == "stopping"
        assert service.wait(60)
    finally:
        meshes.close()
        client.close()
        result = service.shutdown()
    # after the load: the rest of the frames localised in the saved map, without mapping
    traj = read_tum(result.trajectory_path)
    assert result.stats["mapper"] is None and result.stats["mapping_state"] == "off"
    # localised in a map saved mid-run by threads (what it holds depends on timing). Measured: 0.8 cm at
    # worst (3 runs); a tracker stuck at the pose where the map was saved scores 7 cm over 4 frames
    assert 1 <= localised <= len(traj) <= len(demo_frames) - tracked
    assert position_errors(traj.timestamps, traj.poses, demo_frames).max() < 0.02


def _wait_for(condition, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def _recv_full_mesh(meshes: MeshSubscriber) -> list:
    blocks = []
    while (msg := meshes.recv(10.0)) is not None:
        if msg.full:
            blocks += msg.blocks
            if msg.chunk == msg.chunks - 1:
                return blocks
    raise AssertionError("no full mesh received")


def test_load_map_continues_or_localises(demo_root, demo_frames, tmp_path) -> None:
    first = service_config(demo_root, tmp_path / "first", source={"last": 11}, service={"mode": "fast"})
    first_run = SLAMService(first).run()
    saved, mapped_first = first_run.out_dir / "map.pt", first_run.stats["frames_mapped"]
    blocks_before = open_map(saved, device="cpu")[0].grids[0].num_blocks

    rest = {"first": 12}
    localise = service_config(
        demo_root,
        tmp_path / "loc",
        source=rest,
        service={"mode": "fast", "load_map": str(saved), "localize_only": True},
    )
    result = SLAMService(localise).run()
    traj = read_tum(result.trajectory_path)
    assert len(traj) == len(demo_frames) - 12 and result.stats["mapper"] is None
    # the saved map comes from a threaded run (which frames the tracker saw mapped depends on timing), and
    # the later frames look past its edge. Measured: 0.9 cm at worst (3 runs); a tracker frozen at frame
    # 11 or 12 scores 19-21 cm
    assert position_errors(traj.timestamps, traj.poses, demo_frames).max() < 0.02
    kept = load_session(result.out_dir / "map.pt")  # saved history first, then this run's poses
    assert len(kept.timestamps) == len(demo_frames) and kept.frames_integrated == mapped_first == 12

    more = service_config(
        demo_root, tmp_path / "more", source=rest, service={"mode": "fast", "load_map": str(saved)}
    )
    result = SLAMService(more).run()
    grown = load_session(result.out_dir / "map.pt")
    assert (
        grown.frames_integrated == mapped_first + result.stats["frames_mapped"] and len(grown.keyframes) >= 2
    )
    assert open_map(result.out_dir / "map.pt", device="cpu")[0].grids[0].num_blocks >= blocks_before
    traj = read_tum(result.trajectory_path)
    # mapping on: measured 2.2-2.3 cm at worst (3 runs, each at the second frame after the load); frozen: 21 cm
    assert position_errors(traj.timestamps, traj.poses, demo_frames).max() < 0.035


def test_bad_start_fails_before_anything_runs(demo_root, tmp_path) -> None:
    cfg = service_config(demo_root, tmp_path, service={"mode": "live"})
    with pytest.raises(ServiceError, match="service.mode: live needs a live sensor"):
        SLAMService(cfg)
    cfg = service_config(demo_root, tmp_path, service={"load_map": str(tmp_path / "gone.pt")})
    with pytest.raises(Exception, match=r"gone\.pt: no such map file"):
        SLAMService(cfg)
    with pytest.raises(Exception, match=r"service: Value error, localize_only needs a map"):
        from slam.app.config import validate_config

        validate_config(service_tree(demo_root, tmp_path, service={"localize_only": True}), "x.yaml")


# -- the command line, as a user runs it -----------------------------------------------------------------


def test_sigterm_during_replay_leaves_complete_trajectory_and_map(demo_root, demo_frames, tmp_path) -> None:
    out = tmp_path / "out"
    pub = f"ipc://{tmp_path}/pose"
    tree = service_tree(demo_root, out, service={"publish": {"enabled": True, "address": pub}})
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tree))
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"pose")
    sub.connect(pub)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "slam.cli", "run", str(config), "--fast"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        received = 0
        deadline = time.monotonic() + 120
        while received < 4:  # a few frames tracked, so the run is well under way
            assert time.monotonic() < deadline and proc.poll() is None, (
                proc.stderr.read() if proc.poll() else "slow"
            )
            if sub.poll(100):
                sub.recv_multipart()
                received += 1
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        sub.close()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "SIGTERM: shutting down" in stderr
    stats = json.loads((out / "stats.json").read_text())
    assert stats["interrupted"] and stats["shutdown_reason"] == "SIGTERM"
    traj = read_tum(out / "trajectory.txt")
    k = len(traj)
    assert received <= k == stats["frames"] < len(demo_frames)  # stopped early, every tracked frame written
    np.testing.assert_array_equal(traj.timestamps, [f.timestamp for f in demo_frames[:k]])  # no gap
    snapshot = load_session(out / "map.pt")
    np.testing.assert_array_equal(snapshot.timestamps, traj.timestamps)
    open_map(out / "map.pt", device="cpu")
    assert sorted(p.name for p in out.iterdir()) == [
        "map.pt",
        "stats.json",
        "trajectory.txt",
    ]  # no temporaries


def test_replay_scores_its_mesh_against_the_scene_mesh_where_the_camera_looked(demo_root, tmp_path) -> None:
    from slam.app.replay import run_replay

    tree = service_tree(demo_root, tmp_path / "replay")
    tree["output"]["save_mesh"] = True
    result = run_replay(SLAMConfig.model_validate(tree))
    stats = json.loads((result.out_dir / "stats.json").read_text())
    # 24 small frames and a few mapping steps (about 3 cm / 10 cm / 69 %): completion counts the
    # observed ground truth only, so a short sweep of a whole room still covers well over half of it
    assert 0.0 < stats["mesh_accuracy_cm"] < 5.0
    assert 0.0 < stats["mesh_completion_cm"] < 15.0 and stats["mesh_completion_ratio"] > 0.5


def test_baseline_pipeline_runs_with_no_neural_map_no_mesher_no_keyframes(
    demo_root, demo_frames, tmp_path
) -> None:
    # the Open3D baseline declares map / mesher / keyframes as None / empty: status, mesh updates and the
    # end of the run take those paths (whole meshes only, on request), not an AttributeError
    cfg = service_config(demo_root, tmp_path / "baseline", pipeline="baseline", service={"mode": "fast"})
    publisher = RecordingPublisher()
    service = SLAMService(cfg, publisher=publisher)
    service.start()
    while not service.wait(0.05):
        pass
    status = service.status()
    assert status["map"]["keyframes"] == 0 and status["map"]["blocks"] is None and status["map"]["mb"] > 0
    assert service.publish_full_mesh() == 1  # the whole TSDF mesh as one block
    result = service.shutdown()
    assert result.stats["frames"] == len(demo_frames) and result.stats["frames_mapped"] == len(demo_frames)
    assert result.stats["mesh_updates"] == 0  # no block mesher: no incremental updates
    assert [full for _, _, full in publisher.meshes] == [True] and len(publisher.meshes[0][1][0].vertices) > 0
    assert "map_file" not in result.stats  # the TSDF map is not saved
    traj = read_tum(result.trajectory_path)
    assert position_errors(traj.timestamps, traj.poses, demo_frames).max() < 0.05
