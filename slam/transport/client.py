"""Subscribing to the SLAM service from a robot: poses, mesh updates and status over ZeroMQ.

Imports only numpy, pyzmq and ``slam.transport.wire`` (no torch, nothing else of the engine), so it is cheap to
use on a robot. Two ways to consume a topic::

    with PoseSubscriber("tcp://127.0.0.1:5555", timeout_s=5) as poses:
        for pose in poses:                       # stops after 5 s without a message
            print(pose.seq, pose.position, pose.status)

    sub = PoseSubscriber()
    sub.start(lambda pose: robot.update(pose.matrix()))   # callback on a background thread
    ...
    sub.close()

A subscriber connects (the service binds), so it may start before the service, and ZeroMQ reconnects
by itself when the service restarts. ``missed`` counts messages lost in between (gaps in ``seq``),
``restarts`` the times ``seq`` went backwards (a new publisher), ``errors`` malformed messages skipped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

import numpy as np
import zmq

from slam.transport.wire import (
    DEFAULT_MAX_BYTES,
    TOPIC_MESH,
    TOPIC_POSE,
    TOPIC_STATUS,
    MeshBlock,
    MeshMessage,
    PoseMessage,
    StatusMessage,
    WireError,
    decode,
)

__all__ = [
    "MeshAssembler",
    "MeshBlock",
    "MeshMessage",
    "MeshSubscriber",
    "PoseMessage",
    "PoseSubscriber",
    "StatusMessage",
    "StatusSubscriber",
    "WireError",
]

log = logging.getLogger(__name__)

DEFAULT_ADDRESS = "tcp://127.0.0.1:5555"
M = TypeVar("M", PoseMessage, MeshMessage, StatusMessage)


class _Subscriber(Generic[M]):
    topic: bytes = b""

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        timeout_s: float | None = None,
        rcvhwm: int = 1000,
        max_bytes: int = DEFAULT_MAX_BYTES,
        context: zmq.Context | None = None,
    ) -> None:
        """``timeout_s``: how long iteration waits for a message before it stops (None: forever)."""
        self.address = address
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.received = 0
        self.missed = 0
        self.restarts = 0
        self.errors = 0
        self._last_seq: int | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._socket = (context or zmq.Context.instance()).socket(zmq.SUB)
        self._socket.setsockopt(zmq.RCVHWM, rcvhwm)
        self._socket.setsockopt(zmq.MAXMSGSIZE, max_bytes)  # larger parts: zmq drops the connection
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.SUBSCRIBE, self.topic)
        self._socket.connect(address)

    @property
    def socket(self) -> zmq.Socket:
        """The SUB socket, to register with a ``zmq.Poller`` next to a robot's own sockets."""
        return self._socket

    def recv(self, timeout_s: float | None = None) -> M | None:
        """The next message of this topic, or None when none arrives within ``timeout_s`` (None: wait)."""
        if self._thread is not None:
            raise RuntimeError(
                "this subscriber delivers to a callback (start() was called); recv() is not available"
            )
        return self._recv(timeout_s)

    def _recv(self, timeout_s: float | None) -> M | None:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            wait_ms = -1 if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            if not self._socket.poll(wait_ms, zmq.POLLIN):
                return None
            message = self._decode(self._socket.recv_multipart(copy=True))
            if message is not None:
                return message
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def _decode(self, parts: list[bytes]) -> M | None:
        if parts[0] != self.topic:  # the subscription is a prefix: "pose" also matches "pose2"
            return None
        try:
            message = decode(parts, self.max_bytes)
        except WireError as exc:
            self.errors += 1
            log.warning("%s: skipped a malformed %s message: %s", self.address, self.topic.decode(), exc)
            return None
        self._count(message.seq)
        return message  # type: ignore[return-value]

    def _count(self, seq: int) -> None:
        self.received += 1
        last, self._last_seq = self._last_seq, seq
        if last is None:
            return
        if seq > last:
            self.missed += seq - last - 1
        elif seq < last:
            self.restarts += 1

    def __iter__(self) -> Iterator[M]:
        """Messages as they arrive; ends when none comes for ``timeout_s`` (never, if it is None)."""
        while True:
            message = self.recv(self.timeout_s)
            if message is None:
                return
            yield message

    def start(self, callback: Callable[[M], object]) -> None:
        """Call ``callback(message)`` for each message on a background thread until ``close()``."""
        if self._thread is not None:
            raise RuntimeError("start() was already called")
        self._thread = threading.Thread(
            target=self._run, args=(callback,), name=f"sub-{self.topic.decode()}", daemon=True
        )
        self._thread.start()

    def _run(self, callback: Callable[[M], object]) -> None:
        while not self._stop.is_set():
            message = self._recv(0.1)
            if message is None:
                continue
            try:
                callback(message)
            except Exception:  # the robot's callback must not end the subscription
                log.exception("%s callback failed", self.topic.decode())

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._socket.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PoseSubscriber(_Subscriber[PoseMessage]):
    """``pose`` topic: one ``PoseMessage`` per tracked frame."""

    topic = TOPIC_POSE


class MeshSubscriber(_Subscriber[MeshMessage]):
    """``mesh`` topic: ``MeshMessage`` updates; feed them to a ``MeshAssembler`` for the whole mesh."""

    topic = TOPIC_MESH


class StatusSubscriber(_Subscriber[StatusMessage]):
    """``status`` topic: the service's figures about once a second."""

    topic = TOPIC_STATUS


class MeshAssembler:
    """The latest mesh, built from incremental updates: blocks by id, replaced or removed as they come.

    Thread-safe, so ``MeshSubscriber.start(assembler.apply)`` can feed it while another thread reads.
    """

    def __init__(self) -> None:
        self.blocks: dict[int, MeshBlock] = {}
        self.updates = 0
        self._lock = threading.Lock()

    def apply(self, message: MeshMessage) -> None:
        with self._lock:
            if message.full and message.chunk == 0:  # a full mesh replaces everything held so far
                self.blocks.clear()
            for block in message.blocks:
                if block.removed:
                    self.blocks.pop(block.id, None)
                else:
                    self.blocks[block.id] = block
            self.updates += 1

    def mesh(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """All blocks as one mesh: vertices N×3 float32, faces M×3 uint32, colours N×3 uint8 (or None).

        Blocks in id order; blocks without colours get mid grey when others have them.
        """
        with self._lock:
            blocks = [self.blocks[k] for k in sorted(self.blocks)]
        if not blocks:
            return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint32), None
        n_vertices = np.array([len(b.vertices) for b in blocks])
        n_faces = np.array([len(b.faces) for b in blocks])
        offsets = np.concatenate([[0], np.cumsum(n_vertices)[:-1]]).astype(np.uint32)
        vertices = np.concatenate([b.vertices for b in blocks]).astype(np.float32, copy=False)
        faces = (
            np.concatenate([b.faces for b in blocks]).astype(np.uint32) + np.repeat(offsets, n_faces)[:, None]
        )
        colors = None
        if any(b.colors is not None for b in blocks):
            grey = [np.full((len(b.vertices), 3), 128, np.uint8) for b in blocks]
            colors = np.concatenate([b.colors if b.colors is not None else g for b, g in zip(blocks, grey)])
        return vertices, faces, colors
