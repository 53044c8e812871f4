"""ServicePublisher: poses arrive complete and in order, a stalled subscriber never blocks, config checks."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np
import pytest
import zmq
from pydantic import ValidationError
from transport_util import ANY_PORT, pose_at, wait_subscribed

from slam.engine.engine import TrackingResult
from slam.transport.client import MeshAssembler, MeshSubscriber, PoseSubscriber, StatusSubscriber
from slam.transport.publishers import PublisherConfig, ServicePublisher, tracking_status
from slam.transport.wire import MeshBlock, MeshMessage


@pytest.fixture
def context():
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def _publisher(context, **cfg) -> ServicePublisher:
    return ServicePublisher(PublisherConfig(address=ANY_PORT, **cfg), context=context)


def test_config_defaults_descriptions_and_errors():
    cfg = PublisherConfig()
    assert cfg.address == "tcp://127.0.0.1:5555" and cfg.status_every_s == 1.0 and cfg.enabled
    for name, field in PublisherConfig.model_fields.items():
        assert field.description, f"{name} has no description"
    with pytest.raises(ValidationError, match="not a ZeroMQ endpoint"):
        PublisherConfig(address="127.0.0.1:5555")
    with pytest.raises(ValidationError, match="tcp endpoints need a port"):
        PublisherConfig(address="tcp://127.0.0.1")
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        PublisherConfig(adress="tcp://127.0.0.1:5555")
    with pytest.raises(ValidationError, match="send_hwm"):
        PublisherConfig(send_hwm=0)


@pytest.mark.parametrize("sender", ["lock", "thread"])
def test_every_pose_received_in_order_with_exact_values(context, sender):
    pub = _publisher(context, sender=sender)
    sub = PoseSubscriber(pub.endpoint, timeout_s=2.0, context=context)
    first = wait_subscribed(pub, sub)
    n = 500  # below the default high-water mark: nothing may be dropped
    for i in range(n):
        pub.publish_pose(stamp=i / 30, seq=first + i, frame_id="camera", pose=pose_at(i), status="ok")
    received = [m for _, m in zip(range(n), sub)]
    assert [m.seq for m in received] == list(range(first, first + n))
    for i, m in enumerate(received):
        assert m.stamp == i / 30 and m.frame_id == "camera" and m.parent_frame_id == "map"
        assert np.array_equal(m.position, pose_at(i)[:3, 3])
        np.testing.assert_allclose(m.matrix(), pose_at(i), atol=1e-12)
    assert sub.missed == 0 and sub.errors == 0
    assert pub.stats()["sent"]["pose"] == first + n and pub.stats()["dropped"] == {}
    sub.close()
    pub.close()


@pytest.mark.parametrize("sender", ["lock", "thread"])
def test_concurrent_callers_never_corrupt_messages(context, sender):
    pub = _publisher(context, sender=sender, send_hwm=100_000)
    sub = PoseSubscriber(pub.endpoint, timeout_s=10.0, rcvhwm=100_000, context=context)
    wait_subscribed(pub, sub)
    threads, per_thread = 4, 250

    def publish(k: int) -> None:
        for i in range(per_thread):
            pub.publish_pose(stamp=float(i), seq=i, frame_id=f"cam{k}", pose=pose_at(i), status="ok")

    workers = [threading.Thread(target=publish, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    by_camera: dict[str, list[int]] = {}
    for _, m in zip(range(threads * per_thread), sub):
        by_camera.setdefault(m.frame_id, []).append(m.seq)
        np.testing.assert_allclose(m.matrix(), pose_at(m.seq), atol=1e-12)
    assert sub.errors == 0 and sub.recv(0.2) is None
    # each caller's messages complete and in its own order
    assert by_camera == {f"cam{k}": list(range(per_thread)) for k in range(threads)}
    pub.close()
    sub.close()


def test_stalled_subscriber_does_not_block_publishing(context):
    pub = _publisher(context, send_hwm=10)
    stalled = PoseSubscriber(pub.endpoint, rcvhwm=1, context=context)
    first = wait_subscribed(pub, stalled)
    n = 10_000
    done = threading.Event()

    covariance = np.eye(6)  # makes each message ~0.7 kB: 10k of them overflow the loopback TCP buffers

    def publish_all() -> None:
        for i in range(n):
            pub.publish_pose(
                stamp=float(i),
                seq=first + i,
                frame_id="camera",
                pose=pose_at(i),
                status="ok",
                covariance=covariance,
            )
        done.set()

    publisher_thread = threading.Thread(target=publish_all, daemon=True)
    publisher_thread.start()
    # a blocking send would hang here forever; the wait only detects that, it is not a speed test
    assert done.wait(120), "publish_pose blocked on a subscriber that never reads"
    assert pub.stats()["sent"]["pose"] == first + n
    # PUB drops silently for the stalled subscriber; it sees the loss as gaps in seq. (What it still
    # gets is what the kernel's and zmq's buffers held: several MB on loopback.)
    seqs = []
    while (m := stalled.recv(0.5)) is not None:
        seqs.append(m.seq)
    assert 0 < len(seqs) < n and stalled.missed > 0
    assert seqs == sorted(set(seqs)) and len(seqs) + stalled.missed == seqs[-1] - first + 1
    pub.close()
    stalled.close()


def test_publishing_after_close_is_counted_as_dropped(context):
    for sender in ("lock", "thread"):
        pub = _publisher(context, sender=sender)
        pub.close()
        pub.close()  # idempotent
        pub.publish_pose(stamp=0.0, seq=0, frame_id="camera", pose=np.eye(4), status="ok")
        pub.publish_status({"fps": 1.0})
        assert pub.stats()["dropped"] == {"pose": 1, "status": 1}


def test_disabled_publisher_binds_nothing_and_ignores_calls():
    cfg = PublisherConfig(enabled=False, address="tcp://127.0.0.1:1")
    pub = ServicePublisher(cfg)
    pub.publish_pose(stamp=0.0, seq=0, frame_id="camera", pose=np.eye(4), status="ok")
    assert pub.endpoint is None and pub.stats() == {"sent": {}, "dropped": {}}
    pub.close()


def test_bind_conflict_names_the_config_key(context):
    pub = _publisher(context)
    with pytest.raises(OSError, match=f"publisher.address: cannot bind {pub.endpoint}"):
        ServicePublisher(PublisherConfig(address=pub.endpoint), context=context)
    pub.close()


def test_engine_observer_publishes_tracking_status(context):
    pub = _publisher(context)
    sub = PoseSubscriber(pub.endpoint, timeout_s=2.0, context=context)
    wait_subscribed(pub, sub)
    results = [
        TrackingResult(pose=pose_at(0), info={"first": True}),
        TrackingResult(pose=pose_at(1)),
        TrackingResult(pose=pose_at(2), lost=True),
        TrackingResult(pose=pose_at(3), recovered=True, info={"covariance": np.eye(6) * 1e-4}),
    ]
    for i, result in enumerate(results):
        pub.on_tracked(SimpleNamespace(timestamp=10.0 + i, frame_id="lidar"), result)
    got = [m for _, m in zip(range(4), sub)]
    assert [m.status for m in got] == ["initialising", "ok", "lost", "recovered"]
    assert [tracking_status(r) for r in results] == ["initialising", "ok", "lost", "recovered"]
    assert [m.seq for m in got] == [0, 1, 2, 3] and [m.stamp for m in got] == [10.0, 11.0, 12.0, 13.0]
    assert got[0].frame_id == "lidar" and got[0].covariance is None
    np.testing.assert_array_equal(got[3].covariance, np.eye(6) * 1e-4)
    pub.close()
    sub.close()


def _block(block_id: int, n: int) -> MeshBlock:
    vertices = np.arange(n * 3, dtype=np.float32).reshape(n, 3) + block_id
    faces = np.stack([np.arange(n - 2), np.arange(1, n - 1), np.arange(2, n)], axis=1).astype(np.uint32)
    return MeshBlock(id=block_id, vertices=vertices, faces=faces, colors=np.full((n, 3), block_id, np.uint8))


def test_large_mesh_update_is_split_into_chunks_that_reassemble(context):
    pub = _publisher(context, max_message_bytes=2200)
    mesh_sub = MeshSubscriber(pub.endpoint, timeout_s=10.0, context=context)
    seq = wait_subscribed(pub, mesh_sub)
    blocks = [_block(k, 40) for k in range(10)]  # 40 vertices: 480 + 456 + 120 bytes, two blocks a chunk
    pub.publish_mesh(stamp=5.0, seq=seq, blocks=blocks, full=True)
    messages = [m for _, m in zip(range(5), mesh_sub)]
    assert mesh_sub.recv(0.2) is None and {m.chunks for m in messages} == {5}
    assert [m.chunk for m in messages] == list(range(5)) and {m.seq for m in messages} == {seq}
    assert all(m.full and len(m.blocks) == 2 for m in messages)
    assembler = MeshAssembler()
    # a block held from before: the full mesh's first chunk replaces everything
    assembler.apply(MeshMessage(stamp=0.0, seq=0, frame_id="map", full=False, blocks=[_block(99, 5)]))
    assert list(assembler.blocks) == [99]
    for m in messages:
        assembler.apply(m)
    assert sorted(assembler.blocks) == list(range(10))
    vertices, faces, colors = assembler.mesh()
    assert vertices.shape == (400, 3) and faces.shape == (380, 3) and colors.shape == (400, 3)
    # after concatenation the faces of block 7 (rows 38*7 onwards) still index block 7's vertices
    block7 = faces[38 * 7 : 38 * 8]
    np.testing.assert_array_equal(vertices[block7], blocks[7].vertices[blocks[7].faces])
    assert np.all(colors[block7] == 7)
    pub.close()
    mesh_sub.close()


def test_status_carries_transport_counts_and_last_pose_stamp(context):
    pub = _publisher(context)
    status_sub = StatusSubscriber(pub.endpoint, timeout_s=10.0, context=context)
    probes = wait_subscribed(pub, status_sub)
    pub.publish_pose(stamp=42.5, seq=0, frame_id="camera", pose=np.eye(4), status="ok")
    pub.publish_status({"fps": 29.5, "state": "running"})
    pub.publish_status({"fps": float("nan")})
    got = [m for _, m in zip(range(2), status_sub)]
    assert (
        status_sub.recv(0.2) is None and [m.seq for m in got] == [probes, probes + 1] and got[0].stamp == 42.5
    )
    assert (
        got[0].status["fps"] == 29.5 and got[0].status["state"] == "running" and got[1].status["fps"] is None
    )
    assert got[0].status["publisher"] == {"sent": {"status": probes, "pose": 1}, "dropped": {}}
    pub.close()
    status_sub.close()
