"""The ZeroMQ wire format (``docs/wire_format.md``): encode and decode pose, mesh and status messages.

A message is a multipart ``[topic, header, *payloads]``: the topic bytes (``pose``, ``mesh``,
``status``), a UTF-8 JSON header object, then one raw little-endian array per entry of the header's
``payloads`` list. Only numpy and json are used, so robot code (``slam.transport.client``) stays light, and
nothing is ever unpickled: a malformed message raises ``WireError`` naming the part or field at fault.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SCHEMA_VERSION = 1
TOPIC_POSE = b"pose"
TOPIC_MESH = b"mesh"
TOPIC_STATUS = b"status"
TOPICS = (TOPIC_POSE, TOPIC_MESH, TOPIC_STATUS)
TRACKING_STATUSES = ("initialising", "ok", "lost", "recovered")
# The only payload dtypes a decoder must handle; all little-endian (u1 has no byte order).
PAYLOAD_DTYPES = ("<f4", "<f8", "<u4", "<i4", "<u8", "<i8", "|u1")
DEFAULT_MAX_BYTES = 64 * 2**20  # whole message, all parts
MAX_HEADER_BYTES = 2**20  # a header with one entry per mesh block stays far below this


class WireError(ValueError):
    """A message breaks the wire format; the text names the part or header field at fault."""


# ---------------------------------------------------------------------------------------------- messages


@dataclass
class PoseMessage:
    """Camera-to-world pose of ``frame_id`` (the sensor) in ``parent_frame_id`` (the map)."""

    stamp: float  # sensor time of the tracked frame, s
    seq: int
    frame_id: str
    parent_frame_id: str
    position: np.ndarray  # (3,) float64, metres
    quaternion: np.ndarray  # (4,) float64, x y z w, w >= 0
    status: str  # one of TRACKING_STATUSES
    covariance: np.ndarray | None = None  # 6×6 float64, order tx ty tz rx ry rz
    sent: float = 0.0  # publisher wall clock (Unix time, s) when sent

    def matrix(self) -> np.ndarray:
        """The 4×4 camera-to-world transform."""
        out = np.eye(4)
        out[:3, :3] = quaternion_to_matrix(self.quaternion)
        out[:3, 3] = self.position
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "stamp": self.stamp,
            "frame_id": self.frame_id,
            "parent_frame_id": self.parent_frame_id,
            "status": self.status,
            "position": self.position.tolist(),
            "quaternion_xyzw": self.quaternion.tolist(),
            "covariance": None if self.covariance is None else self.covariance.tolist(),
        }


@dataclass
class MeshBlock:
    """One block of the map's mesh; a block with no vertices means the block was removed."""

    id: int
    vertices: np.ndarray  # N×3 float32, metres, in the map frame
    faces: np.ndarray  # M×3 uint32, indices into this block's vertices
    colors: np.ndarray | None = None  # N×3 uint8 RGB

    @property
    def removed(self) -> bool:
        return len(self.vertices) == 0


@dataclass
class MeshMessage:
    stamp: float
    seq: int
    frame_id: str
    full: bool  # the blocks are the whole mesh (over ``chunks`` messages), not the changes
    blocks: list[MeshBlock]
    chunk: int = 0  # index of this message among the ``chunks`` that carry one update
    chunks: int = 1
    sent: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "stamp": self.stamp,
            "frame_id": self.frame_id,
            "full": self.full,
            "chunk": f"{self.chunk + 1}/{self.chunks}",
            "blocks": len(self.blocks),
            "removed": sum(b.removed for b in self.blocks),
            "vertices": int(sum(len(b.vertices) for b in self.blocks)),
            "faces": int(sum(len(b.faces) for b in self.blocks)),
        }


@dataclass
class StatusMessage:
    stamp: float
    seq: int
    frame_id: str
    status: dict[str, Any] = field(default_factory=dict)
    sent: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {"seq": self.seq, "stamp": self.stamp, **self.status}


Message = PoseMessage | MeshMessage | StatusMessage


# ------------------------------------------------------------------------------------------- rotations


def matrix_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    """3×3 rotation to a unit quaternion (x, y, z, w) with w >= 0 (Shepperd's method, stable near 180°)."""
    # Plain floats: one 3×3 matrix per pose, where numpy's per-call overhead would dominate.
    (r00, r01, r02), (r10, r11, r12), (r20, r21, r22) = np.asarray(rotation, dtype=np.float64).tolist()
    trace = r00 + r11 + r22
    # Solve for the largest of the four components first so the division is well conditioned.
    largest = max(trace, r00, r11, r22)
    if largest == trace:
        s = 2.0 * math.sqrt(max(1.0 + trace, 0.0))
        q = [(r21 - r12) / s, (r02 - r20) / s, (r10 - r01) / s, s / 4]
    elif largest == r00:
        s = 2.0 * math.sqrt(max(1.0 + r00 - r11 - r22, 0.0))
        q = [s / 4, (r01 + r10) / s, (r02 + r20) / s, (r21 - r12) / s]
    elif largest == r11:
        s = 2.0 * math.sqrt(max(1.0 + r11 - r00 - r22, 0.0))
        q = [(r01 + r10) / s, s / 4, (r12 + r21) / s, (r02 - r20) / s]
    else:
        s = 2.0 * math.sqrt(max(1.0 + r22 - r00 - r11, 0.0))
        q = [(r02 + r20) / s, (r12 + r21) / s, s / 4, (r10 - r01) / s]
    norm = math.sqrt(sum(c * c for c in q))
    sign = -1.0 if q[3] < 0 else 1.0
    return np.array([sign * c / norm for c in q])


def quaternion_to_matrix(quaternion: np.ndarray) -> np.ndarray:
    """Quaternion (x, y, z, w), normalised here, to a 3×3 rotation."""
    x, y, z, w = np.asarray(quaternion, dtype=np.float64) / np.linalg.norm(quaternion)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


# -------------------------------------------------------------------------------------------- encoding


def _header_bytes(topic: bytes, header: dict[str, Any]) -> bytes:
    try:
        text = json.dumps(header, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise WireError(f"{topic.decode()} header: not JSON-serialisable ({exc})") from None
    return text.encode("utf-8")


def _base_header(stamp: float, seq: int, frame_id: str, sent: float | None) -> dict[str, Any]:
    if not math.isfinite(stamp):
        raise WireError(f"stamp: must be finite, got {stamp}")
    if int(seq) < 0:
        raise WireError(f"seq: must be >= 0, got {seq}")
    return {
        "schema": SCHEMA_VERSION,
        "stamp": float(stamp),
        "seq": int(seq),
        "frame_id": str(frame_id),
        "sent": time.time() if sent is None else float(sent),
    }


def _payload(name: str, array: np.ndarray, dtype: str, **extra: Any) -> tuple[dict[str, Any], bytes]:
    arr = np.ascontiguousarray(array, dtype=np.dtype(dtype))
    return {"name": name, **extra, "dtype": dtype, "shape": list(arr.shape)}, arr.tobytes()


def encode_pose(
    *,
    stamp: float,
    seq: int,
    frame_id: str,
    pose: np.ndarray,
    status: str,
    covariance: np.ndarray | None = None,
    parent_frame_id: str = "map",
    sent: float | None = None,
) -> list[bytes]:
    """A ``pose`` message from a 4×4 camera-to-world matrix."""
    pose = np.asarray(pose, dtype=np.float64)
    if pose.shape != (4, 4):
        raise WireError(f"pose: must be 4x4, got shape {pose.shape}")
    if not np.all(np.isfinite(pose)):
        raise WireError("pose: contains NaN or inf")
    if status not in TRACKING_STATUSES:
        raise WireError(f"status: {status!r} is not one of {', '.join(TRACKING_STATUSES)}")
    header = _base_header(stamp, seq, frame_id, sent)
    header |= {
        "parent_frame_id": str(parent_frame_id),
        "position": pose[:3, 3].tolist(),
        "quaternion": matrix_to_quaternion(pose[:3, :3]).tolist(),
        "status": status,
        "payloads": [],
    }
    parts: list[bytes] = []
    if covariance is not None:
        cov = np.asarray(covariance, dtype=np.float64)
        if cov.shape != (6, 6):
            raise WireError(f"covariance: must be 6x6, got shape {cov.shape}")
        desc, data = _payload("covariance", cov, "<f8")
        header["payloads"].append(desc)
        parts.append(data)
    return [TOPIC_POSE, _header_bytes(TOPIC_POSE, header), *parts]


def _block_payloads(block: MeshBlock) -> tuple[list[dict[str, Any]], list[bytes]]:
    vertices = np.asarray(block.vertices).reshape(-1, 3)
    faces = np.asarray(block.faces).reshape(-1, 3)
    if len(faces) and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise WireError(f"mesh block {block.id}: face index out of range for {len(vertices)} vertices")
    arrays = [("vertices", vertices, "<f4"), ("faces", faces, "<u4")]
    if block.colors is not None:
        colors = np.asarray(block.colors).reshape(-1, 3)
        if len(colors) != len(vertices):
            raise WireError(f"mesh block {block.id}: {len(colors)} colours for {len(vertices)} vertices")
        arrays.append(("colors", colors, "|u1"))
    descs, parts = [], []
    for name, array, dtype in arrays:
        desc, data = _payload(name, array, dtype, block=int(block.id))
        descs.append(desc)
        parts.append(data)
    return descs, parts


def encode_mesh(
    *,
    stamp: float,
    seq: int,
    frame_id: str,
    blocks: Sequence[MeshBlock],
    full: bool,
    chunk: int = 0,
    chunks: int = 1,
    sent: float | None = None,
) -> list[bytes]:
    """A ``mesh`` message: per block its vertices, faces and (optional) colours as payloads."""
    if not 0 <= chunk < chunks:
        raise WireError(f"chunk: {chunk} is not in [0, {chunks})")
    header = _base_header(stamp, seq, frame_id, sent)
    header |= {"full": bool(full), "chunk": int(chunk), "chunks": int(chunks), "payloads": []}
    parts: list[bytes] = []
    for block in blocks:
        descs, data = _block_payloads(block)
        header["payloads"].extend(descs)
        parts.extend(data)
    return [TOPIC_MESH, _header_bytes(TOPIC_MESH, header), *parts]


def _json_safe(value: Any) -> Any:
    """NaN / inf become null (JSON has no such numbers); numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def encode_status(
    *, stamp: float, seq: int, frame_id: str, status: dict[str, Any], sent: float | None = None
) -> list[bytes]:
    """A ``status`` message; the service's figures travel as the header's ``status`` object."""
    if not isinstance(status, dict):
        raise WireError(f"status: must be a dict, got {type(status).__name__}")
    header = _base_header(stamp, seq, frame_id, sent)
    header |= {"status": _json_safe(status), "payloads": []}
    return [TOPIC_STATUS, _header_bytes(TOPIC_STATUS, header)]


# -------------------------------------------------------------------------------------------- decoding


def _field(header: dict[str, Any], name: str, types: type | tuple[type, ...], where: str) -> Any:
    if name not in header:
        raise WireError(f"{where}: missing field {name!r}")
    value = header[name]
    # bool is an int in Python; a JSON true must not pass for a number.
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise WireError(f"{where}.{name}: expected {_type_names(types)}, got bool")
    if not isinstance(value, types):
        raise WireError(f"{where}.{name}: expected {_type_names(types)}, got {type(value).__name__}")
    return value


def _type_names(types: type | tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))


def _parse_header(topic: str, raw: bytes) -> dict[str, Any]:
    where = f"{topic} header"
    if len(raw) > MAX_HEADER_BYTES:
        raise WireError(f"{where}: {len(raw)} bytes exceeds the {MAX_HEADER_BYTES}-byte header limit")
    try:
        header = json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError(f"{where}: not UTF-8 JSON ({exc})") from None
    if not isinstance(header, dict):
        raise WireError(f"{where}: must be a JSON object, got {type(header).__name__}")
    schema = _field(header, "schema", int, where)
    if schema != SCHEMA_VERSION:
        raise WireError(
            f"{where}.schema: version {schema} is not supported (this decoder reads {SCHEMA_VERSION})"
        )
    return header


def _parse_payloads(
    topic: str, header: dict[str, Any], parts: Sequence[bytes]
) -> list[tuple[dict, np.ndarray]]:
    descs = _field(header, "payloads", list, f"{topic} header")
    if len(descs) != len(parts):
        raise WireError(
            f"{topic}: header lists {len(descs)} payloads but the message has {len(parts)} payload parts"
        )
    out = []
    for i, (desc, part) in enumerate(zip(descs, parts)):
        where = f"{topic} header.payloads[{i}]"
        if not isinstance(desc, dict):
            raise WireError(f"{where}: must be an object, got {type(desc).__name__}")
        _field(desc, "name", str, where)
        dtype = _field(desc, "dtype", str, where)
        if dtype not in PAYLOAD_DTYPES:
            raise WireError(f"{where}.dtype: {dtype!r} is not one of {', '.join(PAYLOAD_DTYPES)}")
        shape = _field(desc, "shape", list, where)
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
            raise WireError(f"{where}.shape: must be a list of non-negative integers, got {shape}")
        expected = math.prod(shape) * np.dtype(dtype).itemsize
        if len(part) != expected:
            raise WireError(
                f"{where}: payload is {len(part)} bytes but dtype {dtype} × shape {shape} needs {expected}"
            )
        out.append((desc, np.frombuffer(part, dtype=dtype).reshape(shape)))
    return out


def decode(parts: Sequence[bytes], max_bytes: int = DEFAULT_MAX_BYTES) -> Message:
    """One received multipart message to a ``PoseMessage``, ``MeshMessage`` or ``StatusMessage``.

    Arrays are read-only views of the received bytes (no copy). Raises ``WireError`` on anything
    malformed; fields a decoder of this version does not know are ignored, as the format's rules ask.
    """
    if len(parts) < 2:
        raise WireError(f"message: expected at least 2 parts (topic, header), got {len(parts)}")
    total = sum(len(p) for p in parts)
    if total > max_bytes:
        raise WireError(f"message: {total} bytes exceeds the limit of {max_bytes}")
    topic = bytes(parts[0])
    if topic not in TOPICS:
        raise WireError(
            f"topic: unknown {topic[:32]!r}; expected one of {', '.join(t.decode() for t in TOPICS)}"
        )
    name = topic.decode()
    header = _parse_header(name, parts[1])
    payloads = _parse_payloads(name, header, parts[2:])
    where = f"{name} header"
    common = {
        "stamp": float(_field(header, "stamp", (int, float), where)),
        "seq": _non_negative(_field(header, "seq", int, where), f"{where}.seq"),
        "frame_id": _field(header, "frame_id", str, where),
        "sent": float(_field(header, "sent", (int, float), where)),
    }
    if topic == TOPIC_POSE:
        return _decode_pose(header, payloads, common)
    if topic == TOPIC_MESH:
        return _decode_mesh(header, payloads, common)
    status = _field(header, "status", dict, where)
    return StatusMessage(status=status, **common)


def _non_negative(value: int, where: str) -> int:
    if value < 0:
        raise WireError(f"{where}: must be >= 0, got {value}")
    return value


def _vector(header: dict[str, Any], name: str, length: int) -> np.ndarray:
    values = _field(header, name, list, "pose header")
    if len(values) != length or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values
    ):
        raise WireError(f"pose header.{name}: expected {length} finite numbers, got {values!r}"[:200])
    return np.array(values, dtype=np.float64)


def _decode_pose(header: dict[str, Any], payloads: list, common: dict[str, Any]) -> PoseMessage:
    status = _field(header, "status", str, "pose header")
    if status not in TRACKING_STATUSES:
        raise WireError(f"pose header.status: {status!r} is not one of {', '.join(TRACKING_STATUSES)}")
    quaternion = _vector(header, "quaternion", 4)
    if not 0.9 < np.linalg.norm(quaternion) < 1.1:
        raise WireError(
            f"pose header.quaternion: not a unit quaternion (norm {np.linalg.norm(quaternion):.3g})"
        )
    covariance = None
    for desc, array in payloads:
        if desc["name"] == "covariance":
            if array.shape != (6, 6) or desc["dtype"] != "<f8":
                raise WireError(f"pose covariance: expected <f8 6x6, got {desc['dtype']} {list(array.shape)}")
            covariance = array
    return PoseMessage(
        parent_frame_id=_field(header, "parent_frame_id", str, "pose header"),
        position=_vector(header, "position", 3),
        quaternion=quaternion / np.linalg.norm(quaternion),
        status=status,
        covariance=covariance,
        **common,
    )


_BLOCK_ARRAYS = {"vertices": "<f4", "faces": "<u4", "colors": "|u1"}


def _decode_mesh(header: dict[str, Any], payloads: list, common: dict[str, Any]) -> MeshMessage:
    where = "mesh header"
    arrays: dict[int, dict[str, np.ndarray]] = {}
    for i, (desc, array) in enumerate(payloads):
        name = desc["name"]
        if name not in _BLOCK_ARRAYS:
            continue  # a later minor addition; ignored as the versioning rules say
        block_id = _field(desc, "block", int, f"{where}.payloads[{i}]")
        if desc["dtype"] != _BLOCK_ARRAYS[name] or array.ndim != 2 or array.shape[1] != 3:
            raise WireError(
                f"{where}.payloads[{i}] ({name} of block {block_id}): expected {_BLOCK_ARRAYS[name]} N×3, "
                f"got {desc['dtype']} {list(array.shape)}"
            )
        arrays.setdefault(block_id, {})[name] = array
    blocks = [_mesh_block(block_id, named) for block_id, named in arrays.items()]
    chunks = _field(header, "chunks", int, where)
    chunk = _field(header, "chunk", int, where)
    if not 0 <= chunk < chunks:
        raise WireError(f"{where}.chunk: {chunk} is not in [0, {chunks})")
    return MeshMessage(
        full=_field(header, "full", bool, where), blocks=blocks, chunk=chunk, chunks=chunks, **common
    )


def _mesh_block(block_id: int, named: dict[str, np.ndarray]) -> MeshBlock:
    where = f"mesh block {block_id}"
    if "vertices" not in named or "faces" not in named:
        raise WireError(f"{where}: needs both vertices and faces payloads, got {sorted(named)}")
    vertices, faces, colors = named["vertices"], named["faces"], named.get("colors")
    if len(faces) and int(faces.max()) >= len(vertices):
        raise WireError(f"{where}: face index {int(faces.max())} out of range for {len(vertices)} vertices")
    if colors is not None and len(colors) != len(vertices):
        raise WireError(f"{where}: {len(colors)} colours for {len(vertices)} vertices")
    return MeshBlock(id=block_id, vertices=vertices, faces=faces, colors=colors)
