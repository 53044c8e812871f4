"""The wire format: round trips with known answers, and a clear WireError for each kind of bad message."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from slam.transport.wire import (
    SCHEMA_VERSION,
    MeshBlock,
    MeshMessage,
    PoseMessage,
    StatusMessage,
    WireError,
    decode,
    encode_mesh,
    encode_pose,
    encode_status,
    matrix_to_quaternion,
    quaternion_to_matrix,
)


def _pose(rotvec=(0.1, -0.2, 0.3), t=(1.0, 2.0, 3.0)) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    pose[:3, 3] = t
    return pose


def _header(parts: list[bytes]) -> dict:
    return json.loads(parts[1])


def _with_header(parts: list[bytes], **changes) -> list[bytes]:
    header = _header(parts) | changes
    return [parts[0], json.dumps(header).encode(), *parts[2:]]


# ------------------------------------------------------------------------------------------------ rotations


def test_quaternion_known_answer_90_degrees_about_z():
    rz = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(matrix_to_quaternion(rz), [0, 0, math.sqrt(0.5), math.sqrt(0.5)], atol=1e-12)


def test_quaternion_matches_scipy_and_round_trips_including_180_degrees():
    rng = np.random.default_rng(0)
    rotations = list(Rotation.random(200, random_state=1).as_matrix())
    # rotations by pi about several axes: the trace is -1, where naive formulas divide by ~0
    for axis in np.eye(3).tolist() + [rng.normal(size=3).tolist()]:
        rotations.append(Rotation.from_rotvec(np.pi * np.array(axis) / np.linalg.norm(axis)).as_matrix())
    for r in rotations:
        q = matrix_to_quaternion(r)
        assert q[3] >= 0 and abs(np.linalg.norm(q) - 1) < 1e-12
        expected = Rotation.from_matrix(r).as_quat()
        assert min(np.abs(q - expected).max(), np.abs(q + expected).max()) < 1e-9
        np.testing.assert_allclose(quaternion_to_matrix(q), r, atol=1e-9)


# ---------------------------------------------------------------------------------------------- round trips


def test_pose_round_trip_exact_float64_with_covariance():
    pose = _pose()
    cov = np.diag([1e-4, 2e-4, 3e-4, 1e-5, 2e-5, 3e-5]) + 1e-7
    parts = encode_pose(
        stamp=12.345678901, seq=7, frame_id="camera", pose=pose, status="ok", covariance=cov, sent=1.5
    )
    assert parts[0] == b"pose" and len(parts) == 3
    msg = decode(parts)
    assert isinstance(msg, PoseMessage)
    assert (msg.stamp, msg.seq, msg.frame_id, msg.parent_frame_id, msg.status, msg.sent) == (
        12.345678901,
        7,
        "camera",
        "map",
        "ok",
        1.5,
    )
    assert np.array_equal(msg.position, pose[:3, 3])  # JSON floats round-trip float64 exactly
    np.testing.assert_allclose(msg.quaternion, Rotation.from_matrix(pose[:3, :3]).as_quat(), atol=1e-12)
    np.testing.assert_allclose(msg.matrix(), pose, atol=1e-12)
    assert msg.covariance.dtype == np.float64 and np.array_equal(msg.covariance, cov)


def test_pose_without_covariance_has_two_parts_and_documented_header():
    parts = encode_pose(stamp=1.0, seq=0, frame_id="camera", pose=np.eye(4), status="initialising")
    assert len(parts) == 2
    header = _header(parts)
    assert header["schema"] == SCHEMA_VERSION == 1
    assert header["payloads"] == [] and header["quaternion"] == [0.0, 0.0, 0.0, 1.0]
    assert {"stamp", "seq", "frame_id", "sent", "parent_frame_id", "position", "status"} <= set(header)
    assert decode(parts).covariance is None


def test_mesh_round_trip_with_removed_block_and_optional_colours():
    rng = np.random.default_rng(3)
    coloured = MeshBlock(
        id=2**40 + 5,  # block ids are int64 keys; large ones must survive JSON
        vertices=rng.normal(size=(30, 3)).astype(np.float32),
        faces=rng.integers(0, 30, size=(40, 3)).astype(np.uint32),
        colors=rng.integers(0, 256, size=(30, 3)).astype(np.uint8),
    )
    plain = MeshBlock(id=-3, vertices=rng.normal(size=(4, 3)), faces=[[0, 1, 2], [1, 2, 3]])
    removed = MeshBlock(id=9, vertices=np.zeros((0, 3)), faces=np.zeros((0, 3)))
    parts = encode_mesh(stamp=2.0, seq=4, frame_id="map", blocks=[coloured, plain, removed], full=False)
    assert len(parts) == 2 + 3 + 2 + 2
    msg = decode(parts)
    assert isinstance(msg, MeshMessage)
    assert (msg.seq, msg.full, msg.chunk, msg.chunks) == (4, False, 0, 1)
    got = {b.id: b for b in msg.blocks}
    assert set(got) == {2**40 + 5, -3, 9}
    assert np.array_equal(got[coloured.id].vertices, coloured.vertices)
    assert np.array_equal(got[coloured.id].faces, coloured.faces)
    assert np.array_equal(got[coloured.id].colors, coloured.colors)
    assert (
        got[-3].vertices.dtype == np.float32 and got[-3].faces.dtype == np.uint32 and got[-3].colors is None
    )
    np.testing.assert_allclose(got[-3].vertices, plain.vertices, rtol=1e-6)
    assert got[9].removed and not got[-3].removed


def test_status_round_trip_turns_nan_into_null():
    status = {"fps": float("nan"), "frames": np.int64(12), "queues": {"tracking": 1}, "state": "running"}
    msg = decode(encode_status(stamp=3.0, seq=1, frame_id="map", status=status))
    assert isinstance(msg, StatusMessage)
    assert msg.status == {"fps": None, "frames": 12, "queues": {"tracking": 1}, "state": "running"}


# ------------------------------------------------------------------------------------------- encode errors


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"pose": np.eye(3)}, "pose: must be 4x4"),
        ({"pose": np.full((4, 4), np.nan)}, "pose: contains NaN"),
        ({"status": "fine"}, "status: 'fine'"),
        ({"covariance": np.eye(3)}, "covariance: must be 6x6"),
        ({"stamp": float("inf")}, "stamp: must be finite"),
        ({"seq": -1}, "seq: must be >= 0"),
    ],
)
def test_encode_pose_rejects_bad_input_naming_the_field(kwargs, field):
    args = {"stamp": 0.0, "seq": 0, "frame_id": "camera", "pose": np.eye(4), "status": "ok"} | kwargs
    with pytest.raises(WireError, match=field):
        encode_pose(**args)


def test_encode_mesh_rejects_face_index_out_of_range():
    block = MeshBlock(id=1, vertices=np.zeros((3, 3)), faces=[[0, 1, 3]])
    with pytest.raises(WireError, match="mesh block 1: face index out of range"):
        encode_mesh(stamp=0.0, seq=0, frame_id="map", blocks=[block], full=True)


# ------------------------------------------------------------------------------------------- decode errors


def _good_pose_parts() -> list[bytes]:
    return encode_pose(stamp=0.5, seq=1, frame_id="camera", pose=_pose(), status="ok", covariance=np.eye(6))


def _good_mesh_parts() -> list[bytes]:
    block = MeshBlock(id=1, vertices=np.zeros((3, 3)), faces=[[0, 1, 2]])
    return encode_mesh(stamp=0.0, seq=0, frame_id="map", blocks=[block], full=True)


@pytest.mark.parametrize(
    "mutate, error",
    [
        (lambda p: p[:1], "expected at least 2 parts"),
        (lambda p: p[:2], "header lists 1 payloads but the message has 0"),
        (lambda p: [*p, b"extra"], "header lists 1 payloads but the message has 2"),
        (lambda p: [b"posture", *p[1:]], "topic: unknown"),
        (lambda p: [p[0], b"{not json", *p[2:]], "pose header: not UTF-8 JSON"),
        (lambda p: [p[0], b"\xff\xfe", *p[2:]], "pose header: not UTF-8 JSON"),
        (lambda p: [p[0], b"[1, 2]", *p[2:]], "pose header: must be a JSON object"),
        (lambda p: _with_header(p, schema=2), "pose header.schema: version 2 is not supported"),
        (lambda p: _with_header(p, schema="1"), r"pose header.schema: expected int, got str"),
        (lambda p: _with_header(p, seq=True), r"pose header.seq: expected int, got bool"),
        (lambda p: _with_header(p, seq=-4), r"pose header.seq: must be >= 0"),
        (lambda p: _with_header(p, stamp=None), r"pose header.stamp: expected int or float"),
        (lambda p: _with_header(p, status="dizzy"), r"pose header.status: 'dizzy'"),
        (lambda p: _with_header(p, position=[1, 2]), r"pose header.position: expected 3 finite numbers"),
        (
            lambda p: _with_header(p, quaternion=[0, 0, 0, 3]),
            r"pose header.quaternion: not a unit quaternion",
        ),
        (
            lambda p: [*p[:2], p[2][:-8]],
            r"payloads\[0\]: payload is 280 bytes but dtype <f8 × shape \[6, 6\] needs 288",
        ),
    ],
)
def test_decode_pose_rejects_malformed_messages(mutate, error):
    with pytest.raises(WireError, match=error):
        decode(mutate(_good_pose_parts()))


def test_decode_rejects_missing_fields_and_bad_payload_descriptions():
    parts = _good_pose_parts()
    header = _header(parts)
    del header["frame_id"]
    with pytest.raises(WireError, match="pose header: missing field 'frame_id'"):
        decode([parts[0], json.dumps(header).encode(), parts[2]])
    for desc, error in [
        ({"name": "covariance", "dtype": ">f8", "shape": [6, 6]}, r"dtype: '>f8' is not one of"),
        ({"name": "covariance", "dtype": "<f8", "shape": [6, -6]}, "shape: must be a list of non-negative"),
        ({"name": "covariance", "dtype": "<f4", "shape": [6, 12]}, "pose covariance: expected <f8 6x6"),
        ({"dtype": "<f8", "shape": [6, 6]}, r"payloads\[0\]: missing field 'name'"),
    ]:
        with pytest.raises(WireError, match=error):
            decode(_with_header(parts, payloads=[desc]))


def test_decode_rejects_oversized_message_before_parsing():
    parts = _good_mesh_parts()
    with pytest.raises(WireError, match="exceeds the limit of 100"):
        decode(parts, max_bytes=100)
    assert isinstance(decode(parts, max_bytes=10_000), MeshMessage)


def test_decode_mesh_rejects_inconsistent_blocks():
    parts = _good_mesh_parts()
    bad_faces = np.array([[0, 1, 7]], dtype="<u4").tobytes()
    with pytest.raises(WireError, match="mesh block 1: face index 7 out of range for 3 vertices"):
        decode([*parts[:3], bad_faces])
    header = _header(parts)
    with pytest.raises(WireError, match="mesh block 1: needs both vertices and faces"):
        decode([parts[0], json.dumps(header | {"payloads": header["payloads"][:1]}).encode(), parts[2]])
    with pytest.raises(WireError, match=r"mesh header.chunk: 3 is not in \[0, 2\)"):
        decode(_with_header(parts, chunk=3, chunks=2))
    with pytest.raises(WireError, match="mesh header.full: expected bool"):
        decode(_with_header(parts, full=1))


def test_decoder_ignores_unknown_fields_and_payloads_of_the_same_version():
    """The versioning rule: additions within a schema version must not break older decoders."""
    parts = _good_mesh_parts()
    header = _header(parts)
    header["new_field"] = {"anything": [1, 2]}
    header["payloads"].append({"name": "normals", "block": 1, "dtype": "<f4", "shape": [3, 3]})
    msg = decode([parts[0], json.dumps(header).encode(), *parts[2:], np.zeros((3, 3), "<f4").tobytes()])
    assert [b.id for b in msg.blocks] == [1] and msg.blocks[0].vertices.shape == (3, 3)
