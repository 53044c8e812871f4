"""Control socket: valid requests reach the handler; every bad one gets an error reply and the server goes on."""

from __future__ import annotations

import json

import pytest
import zmq
from pydantic import ValidationError
from transport_util import ANY_PORT

from slam.transport.control import (
    COMMANDS,
    ControlClient,
    ControlConfig,
    ControlError,
    ControlServer,
    ControlTimeout,
)


@pytest.fixture
def context():
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


class RecordingHandler:
    """Echoes each call; raises on the commands a test asks it to."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    def __call__(self, cmd: str, args: dict):
        self.calls.append((cmd, args))
        if cmd == "load_map" and args["path"] == "missing.map":
            raise ControlError("missing.map: no such file")
        if cmd == "reset":
            raise RuntimeError("mapper crashed")
        if cmd == "save_mesh":
            return {"not json": object()}
        return {"cmd": cmd, "args": args}


@pytest.fixture
def served(context):
    handler = RecordingHandler()
    server = ControlServer(ControlConfig(address=ANY_PORT, max_bytes=1024), handler, context=context)
    server.start()
    client = ControlClient(server.endpoint, timeout_s=5.0, context=context)
    yield server, client, handler
    client.close()
    server.stop()


def _still_serving(client: ControlClient) -> None:
    assert client.request("status") == {"ok": True, "result": {"cmd": "status", "args": {}}}


def test_config_defaults_and_descriptions():
    cfg = ControlConfig()
    assert cfg.address == "tcp://127.0.0.1:5556" and cfg.enabled
    assert all(f.description for f in ControlConfig.model_fields.values())
    with pytest.raises(ValidationError, match="not a ZeroMQ endpoint"):
        ControlConfig(address="localhost")


def test_every_known_command_reaches_the_handler_with_validated_args(served):
    server, client, handler = served
    args = {"save_map": {"path": "/tmp/a.map"}, "load_map": {"path": "a.map", "localize_only": True}}
    for cmd in ("status", "save_map", "load_map", "pause", "resume", "shutdown", "full_mesh"):
        reply = client.request(cmd, args.get(cmd))
        assert reply["ok"] is True, reply
    assert handler.calls == [
        ("status", {}),
        ("save_map", {"path": "/tmp/a.map"}),
        ("load_map", {"path": "a.map", "localize_only": True}),
        ("pause", {}),
        ("resume", {}),
        ("shutdown", {}),
        ("full_mesh", {}),
    ]
    assert client.request("load_map", {"path": "b.map"})["result"]["args"] == {
        "path": "b.map",
        "localize_only": False,
    }
    assert set(COMMANDS) == {
        "status", "save_map", "load_map", "save_mesh", "reset", "pause", "resume", "shutdown", "full_mesh",
    }  # fmt: skip


@pytest.mark.parametrize(
    "payload, error",
    [
        (b"{not json", "request is not UTF-8 JSON"),
        (b"\xff\xfe", "request is not UTF-8 JSON"),
        (b"[1, 2]", "request must be a JSON object, got list"),
        (b'{"args": {}}', "cmd: missing or not a string"),
        (b'{"cmd": 3}', "cmd: missing or not a string"),
        (b'{"cmd": "explode"}', "cmd: unknown command 'explode'; known: status, save_map"),
        (b'{"cmd": "status", "argz": {}}', "request: unknown field(s) argz"),
        (b'{"cmd": "status", "args": [1]}', "args: must be a JSON object, got list"),
        (b'{"cmd": "status", "args": {"verbose": true}}', "status: args.verbose: unknown argument"),
        (b'{"cmd": "save_map"}', "save_map: args.path: Field required"),
        (b'{"cmd": "save_map", "args": {"path": 5}}', "save_map: args.path: Input should be a valid string"),
        (b'{"cmd": "save_map", "args": {"path": ""}}', "save_map: args.path: String should have at least 1"),
        (b'{"cmd": "load_map", "args": {"path": "a", "localize_only": "yes"}}', "args.localize_only: Input should be a valid boolean"),
        (json.dumps({"cmd": "status", "args": {"pad": "x" * 2000}}).encode(), "over the 1024-byte limit"),
    ],
)  # fmt: skip
def test_bad_requests_get_error_replies_and_the_server_goes_on(served, payload, error):
    server, client, handler = served
    reply = client.request_raw(payload)
    assert reply["ok"] is False and error in reply["error"], reply
    assert handler.calls == []  # nothing invalid reaches the handler
    _still_serving(client)
    assert server.errors == 1 and server.requests == 2


def test_handler_errors_become_error_replies(served):
    server, client, _ = served
    assert client.request("load_map", {"path": "missing.map"}) == {
        "ok": False,
        "error": "missing.map: no such file",
    }
    assert client.request("reset") == {"ok": False, "error": "RuntimeError: mapper crashed"}
    reply = client.request("save_mesh", {"path": "m.ply"})
    assert reply["ok"] is False and "not JSON-serialisable" in reply["error"]
    _still_serving(client)
    assert server.errors == 3


def test_request_id_is_echoed(served):
    _, client, _ = served
    reply = client.request_raw(b'{"cmd": "pause", "id": 17}')
    assert reply == {"ok": True, "result": {"cmd": "pause", "args": {}}, "id": 17}


def test_dealer_client_with_a_broken_envelope_gets_an_error_reply(served, context):
    """A DEALER that omits REQ's empty delimiter, or sends extra parts, is still answered."""
    server, client, _ = served
    dealer = context.socket(zmq.DEALER)
    dealer.connect(server.endpoint)
    dealer.send(b'{"cmd": "status"}')  # no empty delimiter frame: still one body part
    assert dealer.poll(5000)
    assert json.loads(dealer.recv_multipart()[-1])["ok"] is True
    dealer.send_multipart([b"", b'{"cmd": "status"}', b"extra"])
    assert dealer.poll(5000)
    reply = json.loads(dealer.recv_multipart()[-1])
    assert reply["ok"] is False and "one message part after the envelope, got 2" in reply["error"]
    dealer.close()
    _still_serving(client)


def test_far_oversized_request_is_cut_off_by_zmq_and_the_server_goes_on(served, context):
    server, client, _ = served
    rogue = ControlClient(server.endpoint, timeout_s=0.5, context=context)
    with pytest.raises(ControlTimeout):  # over 16x max_bytes: zmq drops the connection, no reply
        rogue.request_raw(b"x" * (16 * 1024 + 1))
    rogue.close()
    _still_serving(client)


def test_client_times_out_then_recovers_when_a_server_appears(context):
    probe = context.socket(zmq.ROUTER)
    probe.bind(ANY_PORT)
    endpoint = probe.getsockopt_string(zmq.LAST_ENDPOINT)
    probe.close()  # a free port with no server behind it
    client = ControlClient(endpoint, timeout_s=0.3, context=context)
    with pytest.raises(ControlTimeout, match="no reply from"):
        client.request("status")
    server = ControlServer(ControlConfig(address=endpoint), lambda cmd, args: "pong", context=context)
    server.start()
    try:
        # the relaxed REQ socket may send again after a timeout; the stale request's reply is discarded
        reply = client.request("status", timeout_s=5.0)
        while reply.get("result") != "pong":
            reply = client.request("status", timeout_s=5.0)
        assert reply == {"ok": True, "result": "pong"}
    finally:
        client.close()
        server.stop()


def test_stop_from_inside_the_handler_and_bind_conflict(context):
    holder: dict[str, ControlServer] = {}

    def handler(cmd: str, args: dict):
        if cmd == "shutdown":
            holder["server"].stop()  # the service does this on shutdown: must not deadlock
        return "bye"

    server = ControlServer(ControlConfig(address=ANY_PORT), handler, context=context)
    holder["server"] = server
    server.start()
    with pytest.raises(OSError, match="control.address: cannot bind"):
        ControlServer(ControlConfig(address=server.endpoint), handler, context=context).start()
    client = ControlClient(server.endpoint, timeout_s=5.0, context=context)
    assert client.request("shutdown") == {"ok": True, "result": "bye"}
    server.stop()  # joins the finished thread
    assert not server._thread.is_alive()
    client.close()
