"""A subscriber written from docs/wire_format.md alone: raw pyzmq, json, numpy and no ``slam`` import.

It stands in for a robot's own code (C++, Rust, ...): if it decodes what the service publishes, the
document is a sufficient contract. test_client.py checks that this file imports nothing from slam.
"""

from __future__ import annotations

import json

import numpy as np
import zmq


def subscribe(context: zmq.Context, address: str, topics: list[bytes]) -> zmq.Socket:
    socket = context.socket(zmq.SUB)
    for topic in topics:
        socket.setsockopt(zmq.SUBSCRIBE, topic)
    socket.connect(address)
    return socket


def read_message(parts: list[bytes]) -> tuple[str, dict, dict[str, list[np.ndarray]]]:
    """Topic, header and the payload arrays by name (a list per name: mesh blocks repeat names)."""
    topic = parts[0].decode("ascii")
    header = json.loads(parts[1].decode("utf-8"))
    assert header["schema"] == 1, "unknown schema version"
    arrays: dict[str, list[np.ndarray]] = {}
    assert len(parts) == 2 + len(header["payloads"])
    for desc, data in zip(header["payloads"], parts[2:]):
        array = np.frombuffer(data, dtype=np.dtype(desc["dtype"])).reshape(desc["shape"])
        arrays.setdefault(desc["name"], []).append(array)
    return topic, header, arrays


def pose_matrix(header: dict) -> np.ndarray:
    """4×4 camera-to-world from the header's position and quaternion (x, y, z, w)."""
    x, y, z, w = header["quaternion"]
    rotation = np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = header["position"]
    return matrix


def mesh_blocks(header: dict, parts: list[bytes]) -> dict[int, dict[str, np.ndarray]]:
    """Block id -> {"vertices", "faces", optional "colors"} as the payload list describes them."""
    blocks: dict[int, dict[str, np.ndarray]] = {}
    for desc, data in zip(header["payloads"], parts[2:]):
        array = np.frombuffer(data, dtype=np.dtype(desc["dtype"])).reshape(desc["shape"])
        blocks.setdefault(desc["block"], {})[desc["name"]] = array
    return blocks
