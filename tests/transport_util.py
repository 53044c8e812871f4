"""Helpers for the ZeroMQ and service tests: get past the slow-joiner window before the messages that count;
a publisher stand-in that keeps what the service publishes."""

from __future__ import annotations

import json
import time

import numpy as np

from slam.transport.publishers import tracking_status

WARMUP_FRAME = "warmup"
ANY_PORT = "tcp://127.0.0.1:*"


def _probe(publisher, topic: bytes, seq: int) -> None:
    if topic == b"pose":
        publisher.publish_pose(
            stamp=0.0, seq=seq, frame_id=WARMUP_FRAME, pose=np.eye(4), status="initialising"
        )
    elif topic == b"mesh":
        publisher.publish_mesh(stamp=0.0, seq=seq, blocks=[], full=False)
    else:
        publisher.publish_status({"warmup": True})


def wait_subscribed(publisher, subscriber, timeout_s: float = 10.0) -> int:
    """Publish warm-up messages on the subscriber's topic until it receives one, then drain them.

    A SUB socket misses what is published before its subscription reaches the publisher; a handshake
    is surer than a sleep on a loaded machine. Returns the next free ``seq`` (pose and mesh topics).
    """
    deadline = time.monotonic() + timeout_s
    seq = 0
    while time.monotonic() < deadline:
        _probe(publisher, subscriber.topic, seq)
        seq += 1
        if subscriber.recv(0.05) is not None:
            while subscriber.recv(0.1) is not None:
                pass
            return seq
    raise TimeoutError(f"subscriber never connected to {publisher.endpoint}")


def pose_at(i: int) -> np.ndarray:
    """A distinct, exactly representable pose per index: a rotation about z and a translation."""
    angle = 0.01 * i
    pose = np.eye(4)
    pose[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    pose[:3, 3] = [0.5 * i, -0.25 * i, 1.0]
    return pose


class RecordingPublisher:
    """Stands in for ServicePublisher: keeps what the service publishes."""

    endpoint = None

    def __init__(self) -> None:
        self.poses: list[tuple[float, np.ndarray, str]] = []
        self.meshes: list[tuple[int, list, bool]] = []
        self.statuses: list[dict] = []

    def on_tracked(self, frame, result) -> None:
        self.poses.append((frame.timestamp, result.pose.copy(), tracking_status(result)))

    def publish_mesh(self, *, stamp, seq, blocks, full) -> None:
        self.meshes.append((seq, blocks, full))

    def publish_status(self, status: dict) -> None:
        self.statuses.append(json.loads(json.dumps(status)))  # what goes on the wire is JSON

    def stats(self) -> dict:
        return {}

    def close(self) -> None:
        pass
