"""The service's ZeroMQ publisher: one PUB socket carrying the ``pose``, ``mesh`` and ``status`` topics.

Sends never block the caller: the socket has a send high-water mark and every send is non-blocking,
so a slow or dead subscriber loses messages (it sees the gap in ``seq``) instead of stalling
tracking. PUB drops silently per subscriber once that subscriber's queue is full; what this side can
count (and reports in ``stats()`` and in every status message) are sends refused with EAGAIN and
messages dropped because the publisher was closed or its queue was full.

ZeroMQ sockets are not thread-safe. Two ways to share one among the tracking, mapping and status
threads are built in (``sender``): ``lock``, the caller sends under a lock (the default: lowest pose
latency, see ``bench/transport.py``), and ``thread``, callers enqueue and one sender thread sends.
"""

from __future__ import annotations

import errno
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import zmq
from pydantic import Field, field_validator

from slam.core.config import StrictConfig
from slam.transport.wire import MeshBlock, WireError, encode_mesh, encode_pose, encode_status

log = logging.getLogger(__name__)

ZERO_COPY_BYTES = 64 * 1024  # below this zmq copies anyway; above it, send the buffers themselves


def check_zmq_address(address: str) -> str:
    """An endpoint zmq can bind or connect: tcp://host:port, ipc://path or inproc://name."""
    scheme, sep, rest = address.partition("://")
    if not sep or scheme not in ("tcp", "ipc", "inproc") or not rest:
        raise ValueError(
            f"{address!r} is not a ZeroMQ endpoint like tcp://127.0.0.1:5555, ipc://PATH or inproc://NAME"
        )
    if scheme == "tcp" and ":" not in rest:
        raise ValueError(f"{address!r}: tcp endpoints need a port, e.g. tcp://127.0.0.1:5555 (or :* for any)")
    return address


class PublisherConfig(StrictConfig):
    enabled: bool = Field(True, description="publish poses, meshes and status over ZeroMQ")
    address: str = Field(
        "tcp://127.0.0.1:5555",
        description="PUB endpoint to bind; loopback by default, tcp://0.0.0.0:5555 to serve other machines",
    )
    send_hwm: int = Field(
        1000, ge=1, description="messages queued per subscriber before that subscriber's are dropped"
    )
    mesh_every_s: float = Field(
        1.0, gt=0, description="the service sends incremental mesh updates at most this often"
    )
    status_every_s: float = Field(1.0, gt=0, description="the service sends a status message this often")
    map_frame_id: str = Field(
        "map", description="frame the poses and meshes are expressed in (parent_frame_id / frame_id)"
    )
    max_message_bytes: int = Field(
        16 * 2**20, ge=1024, description="a mesh update larger than this is split into several chunk messages"
    )
    sender: Literal["lock", "thread"] = Field(
        "lock",
        description="lock: callers send under a lock (lowest latency); thread: one sender thread and a queue",
    )
    queue_size: int = Field(
        10_000, ge=1, description="sender: thread only; messages waiting before new ones are dropped"
    )
    linger_ms: int = Field(200, ge=0, description="on close, how long queued messages may still be delivered")

    @field_validator("address")
    @classmethod
    def _endpoint(cls, address: str) -> str:
        return check_zmq_address(address)


class _Counts:
    """Sent and dropped messages per topic; updated from several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sent: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()

    def add(self, topic: str, sent: bool) -> None:
        with self._lock:
            (self.sent if sent else self.dropped)[topic] += 1

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {"sent": dict(self.sent), "dropped": dict(self.dropped)}


def _send(socket: zmq.Socket, parts: list[bytes]) -> bool:
    copy = sum(len(p) for p in parts) < ZERO_COPY_BYTES
    try:
        socket.send_multipart(parts, flags=zmq.NOBLOCK, copy=copy)
        return True
    except zmq.Again:
        return False


class _LockedSender:
    """Each caller sends itself, one at a time; encoding happens before, outside the lock."""

    def __init__(self, socket: zmq.Socket, counts: _Counts) -> None:
        self._socket: zmq.Socket | None = socket
        self._counts = counts
        self._lock = threading.Lock()

    def send(self, topic: str, parts: list[bytes]) -> None:
        with self._lock:
            ok = self._socket is not None and _send(self._socket, parts)
        self._counts.add(topic, ok)

    def close(self) -> None:
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None


class _ThreadedSender:
    """Callers enqueue; one thread owns the socket and sends."""

    _STOP = ("", [])

    def __init__(self, socket: zmq.Socket, counts: _Counts, queue_size: int) -> None:
        self._counts = counts
        self._queue: queue.Queue[tuple[str, list[bytes]]] = queue.Queue(maxsize=queue_size)
        self._closed = False
        self._thread = threading.Thread(target=self._run, args=(socket,), name="zmq-publisher", daemon=True)
        self._thread.start()

    def send(self, topic: str, parts: list[bytes]) -> None:
        if self._closed:
            self._counts.add(topic, False)
            return
        try:
            self._queue.put_nowait((topic, parts))
        except queue.Full:
            self._counts.add(topic, False)

    def _run(self, socket: zmq.Socket) -> None:
        try:
            while True:
                topic, parts = self._queue.get()
                if not topic:
                    return
                self._counts.add(topic, _send(socket, parts))
        finally:
            socket.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(self._STOP)  # blocks only while the queue is full, and the thread is draining it
        self._thread.join()
        while not self._queue.empty():  # enqueued by a caller racing with close: never sent
            topic, _ = self._queue.get_nowait()
            self._counts.add(topic, False)


def bind_socket(socket: zmq.Socket, address: str, key: str, retry_s: float = 2.0) -> str:
    """Bind ``socket`` to ``address`` and return the concrete endpoint, or raise ``OSError`` naming ``key``.

    A just-closed socket releases its port asynchronously (zmq's I/O thread), so a service restarted
    in the same process retries "address in use" briefly instead of failing at once.
    """
    deadline = time.monotonic() + retry_s
    while True:
        try:
            socket.bind(address)
            return socket.getsockopt_string(zmq.LAST_ENDPOINT)
        except zmq.ZMQError as exc:
            if exc.errno == errno.EADDRINUSE and time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            socket.close()
            raise OSError(f"{key}: cannot bind {address}: {exc}") from None


def tracking_status(result: Any) -> str:
    """The wire status of an ``engine.TrackingResult``: initialising, lost, recovered or ok."""
    if result.info.get("first"):
        return "initialising"
    if result.lost:
        return "lost"
    return "recovered" if result.recovered else "ok"


def _mesh_chunks(blocks: Sequence[MeshBlock], max_bytes: int) -> list[list[MeshBlock]]:
    """Consecutive groups of blocks whose arrays fit ``max_bytes``; a block is never split."""
    chunks: list[list[MeshBlock]] = [[]]
    size = 0
    for block in blocks:
        n_vertices = len(block.vertices)
        block_bytes = (
            12 * n_vertices + 12 * len(block.faces) + (3 * n_vertices if block.colors is not None else 0)
        )
        if chunks[-1] and size + block_bytes > max_bytes:
            chunks.append([])
            size = 0
        chunks[-1].append(block)
        size += block_bytes
    return chunks


class ServicePublisher:
    """Publishes poses, mesh updates and status on one PUB socket; safe to call from several threads.

    Also an engine observer: ``engine.subscribe(publisher)`` publishes a pose per tracked frame.
    """

    def __init__(self, cfg: PublisherConfig | None = None, context: zmq.Context | None = None) -> None:
        self.cfg = cfg or PublisherConfig()
        self.endpoint: str | None = None
        self._counts = _Counts()
        self._seq_lock = threading.Lock()
        self._status_seq = 0
        self._observed = 0
        self._last_stamp = 0.0
        self._sender: _LockedSender | _ThreadedSender | None = None
        if not self.cfg.enabled:
            return
        socket = (context or zmq.Context.instance()).socket(zmq.PUB)
        socket.setsockopt(zmq.SNDHWM, self.cfg.send_hwm)
        socket.setsockopt(zmq.LINGER, self.cfg.linger_ms)
        self.endpoint = bind_socket(socket, self.cfg.address, "publisher.address")
        if self.cfg.sender == "thread":
            self._sender = _ThreadedSender(socket, self._counts, self.cfg.queue_size)
        else:
            self._sender = _LockedSender(socket, self._counts)
        log.info("publishing pose/mesh/status on %s", self.endpoint)

    def _send(self, topic: str, parts: list[bytes]) -> None:
        if self._sender is not None:
            self._sender.send(topic, parts)

    def publish_pose(
        self,
        *,
        stamp: float,
        seq: int,
        frame_id: str,
        pose: np.ndarray,
        status: str,
        covariance: np.ndarray | None = None,
    ) -> None:
        """One tracked frame's 4×4 camera-to-world pose. ``frame_id`` names the sensor frame."""
        if self._sender is None:
            return
        parts = encode_pose(
            stamp=stamp,
            seq=seq,
            frame_id=frame_id,
            pose=pose,
            status=status,
            covariance=covariance,
            parent_frame_id=self.cfg.map_frame_id,
        )
        self._last_stamp = float(stamp)
        self._send("pose", parts)

    def publish_mesh(self, *, stamp: float, seq: int, blocks: list[MeshBlock], full: bool) -> None:
        """Blocks changed since the last update (``full``: the whole mesh); split to fit max_message_bytes."""
        if self._sender is None:
            return
        chunks = _mesh_chunks(blocks, self.cfg.max_message_bytes)
        # Encode every chunk first, so a bad block raises before any part of the update is sent.
        messages = [
            encode_mesh(
                stamp=stamp,
                seq=seq,
                frame_id=self.cfg.map_frame_id,
                blocks=chunk,
                full=full,
                chunk=i,
                chunks=len(chunks),
            )
            for i, chunk in enumerate(chunks)
        ]
        for parts in messages:
            self._send("mesh", parts)

    def publish_status(self, status: dict[str, Any]) -> None:
        """The service's figures; the transport's own sent/dropped counts are added as ``publisher``."""
        if self._sender is None:
            return
        if not isinstance(status, dict):
            raise WireError(f"status: must be a dict, got {type(status).__name__}")
        with self._seq_lock:
            seq = self._status_seq
            self._status_seq += 1
        body = {**status, "publisher": self.stats()}
        self._send(
            "status",
            encode_status(stamp=self._last_stamp, seq=seq, frame_id=self.cfg.map_frame_id, status=body),
        )

    def on_tracked(self, frame: Any, result: Any) -> None:
        """Engine observer: publish the frame's pose, numbered by the poses this observer has seen."""
        with self._seq_lock:
            seq = self._observed
            self._observed += 1
        self.publish_pose(
            stamp=frame.timestamp,
            seq=seq,
            frame_id=frame.frame_id,
            pose=result.pose,
            status=tracking_status(result),
            covariance=result.info.get("covariance"),
        )

    def stats(self) -> dict[str, dict[str, int]]:
        """Messages sent and dropped (EAGAIN, full queue, or after close) per topic."""
        return self._counts.snapshot()

    def close(self) -> None:
        """Stop sending; later publish calls are counted as dropped. Safe to call twice."""
        if self._sender is not None:
            self._sender.close()

    def __enter__(self) -> ServicePublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
