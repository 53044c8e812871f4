"""slam.transport.client: light imports, iterator and callback APIs, restarts, malformed messages, mesh assembly,
and a subscriber written against docs/wire_format.md alone."""

from __future__ import annotations

import ast
import subprocess
import sys
import threading
import time
from pathlib import Path

import doc_subscriber
import numpy as np
import pytest
import zmq
from transport_util import ANY_PORT, pose_at, wait_subscribed

from slam.transport.client import MeshAssembler, PoseSubscriber, StatusSubscriber
from slam.transport.publishers import PublisherConfig, ServicePublisher
from slam.transport.wire import MeshBlock, MeshMessage, encode_pose

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def context():
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def _publisher(context, address: str = ANY_PORT) -> ServicePublisher:
    return ServicePublisher(PublisherConfig(address=address), context=context)


def test_importing_the_client_loads_neither_torch_nor_the_engine():
    code = (
        "import sys, slam.transport.client; "
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'slam', 'pydantic'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['slam', 'slam.transport', 'slam.transport.client', 'slam.transport.wire']"


def test_doc_subscriber_imports_nothing_from_slam():
    tree = ast.parse(Path(doc_subscriber.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported == {"__future__", "json", "numpy", "zmq"}


def test_subscriber_from_the_document_alone_decodes_poses_and_mesh_blocks(context):
    pub = _publisher(context)
    raw = doc_subscriber.subscribe(context, pub.endpoint, [b"pose", b"mesh"])
    deadline = time.monotonic() + 10
    while not raw.poll(50):  # handshake past the slow-joiner window
        assert time.monotonic() < deadline, "raw subscriber never connected"
        pub.publish_pose(stamp=0.0, seq=0, frame_id="warmup", pose=np.eye(4), status="initialising")
    while raw.poll(200):
        raw.recv_multipart()

    covariance = np.arange(36, dtype=np.float64).reshape(6, 6)
    for i in range(1, 6):
        pub.publish_pose(
            stamp=i / 30,
            seq=i,
            frame_id="camera",
            pose=pose_at(i),
            status="ok",
            covariance=covariance if i == 3 else None,
        )
    rng = np.random.default_rng(0)
    coloured = MeshBlock(
        7,
        rng.normal(size=(5, 3)).astype(np.float32),
        np.array([[0, 1, 2], [2, 3, 4]], np.uint32),
        rng.integers(0, 255, (5, 3)).astype(np.uint8),
    )
    removed = MeshBlock(-2, np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint32))
    pub.publish_mesh(stamp=0.2, seq=1, blocks=[coloured, removed], full=False)

    for i in range(1, 6):
        assert raw.poll(5000)
        parts = raw.recv_multipart()
        topic, header, arrays = doc_subscriber.read_message(parts)
        assert topic == "pose" and header["seq"] == i and header["stamp"] == i / 30
        assert (
            header["frame_id"] == "camera" and header["parent_frame_id"] == "map" and header["status"] == "ok"
        )
        np.testing.assert_allclose(doc_subscriber.pose_matrix(header), pose_at(i), atol=1e-12)
        if i == 3:
            assert np.array_equal(arrays["covariance"][0], covariance)
        else:
            assert "covariance" not in arrays
    assert raw.poll(5000)
    parts = raw.recv_multipart()
    topic, header, _ = doc_subscriber.read_message(parts)
    assert topic == "mesh" and header["full"] is False and (header["chunk"], header["chunks"]) == (0, 1)
    blocks = doc_subscriber.mesh_blocks(header, parts)
    assert set(blocks) == {7, -2}
    assert np.array_equal(blocks[7]["vertices"], coloured.vertices)
    assert np.array_equal(blocks[7]["faces"], coloured.faces)
    assert np.array_equal(blocks[7]["colors"], coloured.colors)
    assert blocks[-2]["vertices"].shape == (0, 3) and "colors" not in blocks[-2]
    raw.close()
    pub.close()


def test_iterator_stops_after_timeout_and_recv_returns_none(context):
    pub = _publisher(context)
    sub = StatusSubscriber(pub.endpoint, timeout_s=0.2, context=context)
    assert sub.recv(0.05) is None
    assert list(sub) == []
    sub.close()
    pub.close()


def test_callback_api_delivers_every_message_on_a_background_thread(context):
    pub = _publisher(context)
    sub = PoseSubscriber(pub.endpoint, context=context)
    first = wait_subscribed(pub, sub)
    got: list[int] = []
    threads: set[str] = set()
    done = threading.Event()

    def on_pose(pose) -> None:
        got.append(pose.seq)
        threads.add(threading.current_thread().name)
        if pose.seq == 1:
            raise ValueError("a robot bug")  # must not end the subscription
        if len(got) == 20:
            done.set()

    sub.start(on_pose)
    with pytest.raises(RuntimeError, match="callback"):
        sub.recv(0.0)
    for i in range(20):
        pub.publish_pose(stamp=float(i), seq=first + i, frame_id="camera", pose=pose_at(i), status="ok")
    assert done.wait(10)
    assert got == list(range(first, first + 20)) and threads == {"sub-pose"}
    sub.close()
    pub.close()


def test_subscriber_keeps_receiving_when_the_service_restarts_on_the_same_address(context):
    pub = _publisher(context)
    address = pub.endpoint  # a concrete port now: the restarted service binds the same one
    sub = PoseSubscriber(address, context=context)
    first = wait_subscribed(pub, sub)
    pub.publish_pose(stamp=1.0, seq=first + 1000, frame_id="camera", pose=pose_at(1), status="ok")
    assert sub.recv(5.0).seq == first + 1000
    pub.close()

    restarted = _publisher(context, address)
    deadline = time.monotonic() + 15
    received = None
    seq = 0
    while received is None or received.frame_id != "camera":  # the reconnect takes ~100 ms
        assert time.monotonic() < deadline, "no message after the publisher restarted"
        restarted.publish_pose(stamp=2.0, seq=seq, frame_id="camera", pose=pose_at(seq), status="recovered")
        seq += 1
        received = sub.recv(0.1)
    assert received.status == "recovered" and received.seq < 1000
    assert sub.restarts == 1  # seq went backwards: a new publisher, not a loss
    sub.close()
    restarted.close()


def test_malformed_messages_are_skipped_and_counted(context):
    raw_pub = context.socket(zmq.PUB)
    raw_pub.bind(ANY_PORT)
    sub = PoseSubscriber(raw_pub.getsockopt_string(zmq.LAST_ENDPOINT), context=context)
    good = encode_pose(stamp=1.0, seq=5, frame_id="camera", pose=np.eye(4), status="ok")
    deadline = time.monotonic() + 10
    while sub.recv(0.05) is None:  # handshake
        assert time.monotonic() < deadline
        raw_pub.send_multipart(good)
    while sub.recv(0.1) is not None:
        pass
    errors_before = sub.errors
    raw_pub.send_multipart([b"pose", b"{broken"])
    raw_pub.send_multipart([b"pose", good[1], b"unexpected payload"])
    raw_pub.send_multipart([b"posex", good[1]])  # matches the prefix subscription, not the topic
    raw_pub.send_multipart(good)
    message = sub.recv(5.0)
    assert message is not None and message.seq == 5
    assert sub.errors - errors_before == 2
    sub.close()
    raw_pub.close()


def _block(block_id: int, n: int, value: float) -> MeshBlock:
    return MeshBlock(
        block_id, np.full((n, 3), value, np.float32), np.zeros((n - 2, 3), np.uint32) + [0, 1, 2]
    )


def _update(blocks: list[MeshBlock], full: bool = False, seq: int = 0) -> MeshMessage:
    return MeshMessage(stamp=0.0, seq=seq, frame_id="map", full=full, blocks=blocks)


def test_mesh_assembler_applies_updates_removals_and_full_meshes():
    assembler = MeshAssembler()
    assert [a.shape for a in assembler.mesh()[:2]] == [(0, 3), (0, 3)]
    assembler.apply(_update([_block(1, 4, 1.0), _block(2, 3, 2.0)]))
    assembler.apply(_update([_block(1, 5, 1.5), MeshBlock(2, np.zeros((0, 3)), np.zeros((0, 3)))], seq=1))
    assert sorted(assembler.blocks) == [1] and assembler.blocks[1].vertices[0, 0] == 1.5
    assembler.apply(_update([_block(3, 3, 3.0)], seq=2))
    vertices, faces, colors = assembler.mesh()
    assert vertices.shape == (8, 3) and colors is None
    np.testing.assert_array_equal(faces, [[0, 1, 2], [0, 1, 2], [0, 1, 2], [5, 6, 7]])  # block 3 offset by 5
    assembler.apply(_update([_block(9, 3, 9.0)], full=True, seq=3))
    assert sorted(assembler.blocks) == [9] and assembler.updates == 4


def test_slam_echo_prints_poses_as_json_lines(context):
    import json

    from typer.testing import CliRunner

    from slam.cli import app

    pub = _publisher(context)
    stop = threading.Event()

    def publish_until_stopped() -> None:  # the echo's subscriber joins at some point; keep publishing
        seq = 0
        while not stop.is_set():
            pub.publish_pose(stamp=seq / 30, seq=seq, frame_id="camera", pose=pose_at(seq), status="ok")
            seq += 1
            time.sleep(0.01)

    thread = threading.Thread(target=publish_until_stopped, daemon=True)
    thread.start()
    try:
        result = CliRunner().invoke(
            app, ["echo", "pose", "--address", pub.endpoint, "--count", "3", "--json", "--timeout", "10"]
        )
    finally:
        stop.set()
        thread.join()
        pub.close()
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 3
    seqs = [line["seq"] for line in lines]
    assert seqs == list(range(seqs[0], seqs[0] + 3))
    for line in lines:
        assert line["status"] == "ok" and line["position"] == pose_at(line["seq"])[:3, 3].tolist()
