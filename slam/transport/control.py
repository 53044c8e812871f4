"""The control socket: JSON requests ``{"cmd": ..., "args": {...}}`` answered by the service's handler.

The server is a ROUTER socket on its own thread. ROUTER rather than REP: replies are addressed by the
peer's identity, so a client that vanishes mid-request costs one dropped reply and nothing else, and
a request with a broken envelope (a DEALER that forgot the empty delimiter frame, extra parts) still
gets an error reply instead of being silently discarded. Every request is validated against the
command's argument model before the handler sees it; anything wrong becomes ``{"ok": false, "error":
...}`` and the server keeps answering.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import zmq
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from slam.core.config import StrictConfig
from slam.transport.publishers import bind_socket, check_zmq_address

log = logging.getLogger(__name__)

Handler = Callable[[str, dict[str, Any]], Any]


class ControlError(RuntimeError):
    """A control request cannot be carried out; the message is sent back as the reply's ``error``."""


class ControlTimeout(ControlError):
    """No reply within the client's timeout (service not running, or busy)."""


class ControlConfig(StrictConfig):
    enabled: bool = Field(True, description="accept control requests (status, save_map, shutdown, ...)")
    address: str = Field("tcp://127.0.0.1:5556", description="ROUTER endpoint to bind; loopback by default")
    max_bytes: int = Field(64 * 1024, ge=256, description="requests larger than this get an error reply")
    poll_ms: int = Field(100, ge=1, le=5000, description="how often the server thread checks for stop()")

    @field_validator("address")
    @classmethod
    def _endpoint(cls, address: str) -> str:
        return check_zmq_address(address)


# ------------------------------------------------------------------------------- commands and their args


class _Args(BaseModel):
    # strict: a JSON 5 is not the path "5", and unknown arguments are errors, not silently ignored.
    model_config = ConfigDict(extra="forbid", strict=True)


class NoArgs(_Args):
    pass


class PathArgs(_Args):
    path: str = Field(min_length=1, description="file on the service's machine")


class LoadMapArgs(PathArgs):
    localize_only: bool = Field(False, description="track in the loaded map without mapping")


COMMANDS: dict[str, type[_Args]] = {
    "status": NoArgs,  # the service's figures (the same as the status topic)
    "save_map": PathArgs,  # map, keyframes and trajectory, written atomically
    "load_map": LoadMapArgs,
    "save_mesh": PathArgs,  # the mesh as .ply
    "reset": NoArgs,  # drop the map and trajectory, start over
    "pause": NoArgs,  # stop taking frames
    "resume": NoArgs,
    "shutdown": NoArgs,  # save as configured and exit
    "full_mesh": NoArgs,  # publish the whole mesh on the mesh topic (full: true)
}


def parse_request(raw: bytes, max_bytes: int) -> tuple[Any, str, dict[str, Any]]:
    """Request bytes to ``(id, cmd, validated args)``; raises ``ControlError`` saying what is wrong."""
    if len(raw) > max_bytes:
        raise ControlError(f"request is {len(raw)} bytes, over the {max_bytes}-byte limit")
    try:
        request = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ControlError(f"request is not UTF-8 JSON: {exc}") from None
    if not isinstance(request, dict):
        raise ControlError(f"request must be a JSON object, got {type(request).__name__}")
    unknown = sorted(set(request) - {"cmd", "args", "id"})
    if unknown:
        raise ControlError(f"request: unknown field(s) {', '.join(unknown)}; expected cmd, args, id")
    cmd = request.get("cmd")
    if not isinstance(cmd, str):
        raise ControlError("cmd: missing or not a string")
    if cmd not in COMMANDS:
        raise ControlError(f"cmd: unknown command {cmd[:64]!r}; known: {', '.join(COMMANDS)}")
    args = request.get("args", {})
    if not isinstance(args, dict):
        raise ControlError(f"args: must be a JSON object, got {type(args).__name__}")
    try:
        validated = COMMANDS[cmd].model_validate(args)
    except ValidationError as exc:
        raise ControlError("; ".join(_arg_error(cmd, err) for err in exc.errors())) from None
    return request.get("id"), cmd, validated.model_dump()


def _arg_error(cmd: str, err: Any) -> str:
    key = ".".join(str(p) for p in err["loc"])
    reason = "unknown argument" if err["type"] == "extra_forbidden" else err["msg"]
    return f"{cmd}: args.{key}: {reason}"


def _reply_bytes(reply: dict[str, Any]) -> tuple[bytes, bool]:
    """The reply as JSON and whether it reports success; an unserialisable result becomes an error."""
    try:
        return json.dumps(reply, allow_nan=False).encode("utf-8"), bool(reply["ok"])
    except (TypeError, ValueError) as exc:
        error = {"ok": False, "error": f"handler result is not JSON-serialisable: {exc}"}
        if "id" in reply:
            error["id"] = reply["id"]
        return json.dumps(error).encode("utf-8"), False


# ---------------------------------------------------------------------------------------------- server


class ControlServer:
    """Answers control requests on its own thread, one at a time, with ``handler(cmd, args)``."""

    def __init__(
        self, cfg: ControlConfig | None, handler: Handler, context: zmq.Context | None = None
    ) -> None:
        self.cfg = cfg or ControlConfig()
        self.handler = handler
        self.endpoint: str | None = None
        self.requests = 0
        self.errors = 0
        self._context = context or zmq.Context.instance()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind (errors raise here, in the caller) and start answering on a background thread."""
        if self._thread is not None:
            raise ControlError("control server already started")
        socket = self._context.socket(zmq.ROUTER)
        socket.setsockopt(zmq.LINGER, 0)
        # Far larger requests are cut off by zmq before they are read into memory (the peer is
        # disconnected); those between max_bytes and this get an error reply.
        socket.setsockopt(zmq.MAXMSGSIZE, 16 * self.cfg.max_bytes)
        self.endpoint = bind_socket(socket, self.cfg.address, "control.address")
        self._thread = threading.Thread(target=self._serve, args=(socket,), name="zmq-control", daemon=True)
        self._thread.start()
        log.info("control requests on %s", self.endpoint)

    def stop(self) -> None:
        """Stop answering and close the socket; callable from the handler itself (e.g. on shutdown)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def _serve(self, socket: zmq.Socket) -> None:
        try:
            while not self._stop.is_set():
                if socket.poll(self.cfg.poll_ms, zmq.POLLIN):
                    self._answer(socket, socket.recv_multipart())
        finally:
            socket.close()

    def _answer(self, socket: zmq.Socket, frames: list[bytes]) -> None:
        # ROUTER prepends the peer identity; a REQ client then sends its envelope (a request id with
        # REQ_CORRELATE) up to an empty delimiter, then one body. Replies carry the envelope back.
        identity, rest = frames[0], frames[1:]
        split = rest.index(b"") + 1 if b"" in rest else 0
        envelope, body = rest[:split], rest[split:]
        reply, ok = _reply_bytes(self._reply(body))
        self.requests += 1
        self.errors += int(not ok)
        try:
            socket.send_multipart([identity, *envelope, reply], flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # the peer went away; nothing to tell it
            log.debug("control reply not delivered: %s", exc)

    def _reply(self, body: list[bytes]) -> dict[str, Any]:
        if len(body) != 1:
            return {
                "ok": False,
                "error": f"request must be one message part after the envelope, got {len(body)}",
            }
        request_id = None
        try:
            request_id, cmd, args = parse_request(body[0], self.cfg.max_bytes)
            result = self.handler(cmd, args)
            reply: dict[str, Any] = {"ok": True, "result": result}
        except ControlError as exc:
            reply = {"ok": False, "error": str(exc)}
        except Exception as exc:  # a handler bug must not take the control socket down
            log.exception("control handler failed")
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        if request_id is not None:
            reply["id"] = request_id
        return reply


# ---------------------------------------------------------------------------------------------- client


class ControlClient:
    """Sends one request at a time and waits for the reply, up to ``timeout_s``."""

    def __init__(
        self,
        address: str = "tcp://127.0.0.1:5556",
        timeout_s: float = 5.0,
        context: zmq.Context | None = None,
    ) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self._socket = (context or zmq.Context.instance()).socket(zmq.REQ)
        # Relaxed + correlate: after a timeout the next request may be sent, and a late reply to the
        # earlier one is discarded instead of being taken for the new one's.
        self._socket.setsockopt(zmq.REQ_RELAXED, 1)
        self._socket.setsockopt(zmq.REQ_CORRELATE, 1)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.connect(address)

    def request(
        self, cmd: str, args: dict[str, Any] | None = None, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """The reply object ``{"ok": ..., "result" | "error": ...}``; ``ControlTimeout`` when none comes."""
        message: dict[str, Any] = {"cmd": cmd}
        if args:
            message["args"] = args
        return self.request_raw(json.dumps(message).encode("utf-8"), timeout_s)

    def request_raw(self, payload: bytes, timeout_s: float | None = None) -> dict[str, Any]:
        timeout = self.timeout_s if timeout_s is None else timeout_s
        self._socket.send(payload)
        if not self._socket.poll(int(timeout * 1000), zmq.POLLIN):
            raise ControlTimeout(
                f"no reply from {self.address} within {timeout:g} s (is the service running?)"
            )
        return json.loads(self._socket.recv())

    def close(self) -> None:
        self._socket.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
