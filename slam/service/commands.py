"""The control handler: ``ServiceCommands(service)(cmd, args)`` for ``slam.transport.control.ControlServer``.

The server has validated ``args`` against each command's model already; what can still go wrong
(an unreadable map file, nothing mapped yet, a shutdown in progress) becomes a ``ControlError``, which
the server sends back as the reply's error while the service carries on. Relative paths are taken
relative to the run's ``output.dir``: a service's working directory is rarely what a remote client
has in mind.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slam.app.persistence import MapFileError
from slam.service.startup import ServiceError
from slam.transport.control import ControlError

if TYPE_CHECKING:
    from slam.service.runtime import SLAMService


class ServiceCommands:
    def __init__(self, service: SLAMService) -> None:
        self.svc = service
        self._commands: dict[str, Callable[[dict[str, Any]], Any]] = {
            "status": lambda args: self.svc.status(),
            "save_map": lambda args: self.svc.save_map(self._path(args)),
            "load_map": lambda args: self.svc.load_map(
                self._path(args), bool(args.get("localize_only", False))
            ),
            "save_mesh": lambda args: self.svc.save_mesh(self._path(args)),
            "reset": lambda args: {"segment": self.svc.reset()},
            "pause": self._pause,
            "resume": self._resume,
            "shutdown": self._shutdown,
            "full_mesh": lambda args: {"blocks": self.svc.publish_full_mesh()},
        }

    def __call__(self, cmd: str, args: dict[str, Any]) -> Any:
        command = self._commands.get(cmd)
        if command is None:
            raise ControlError(f"cmd: {cmd!r} is not handled by this service")
        try:
            return command(args)
        except (ServiceError, MapFileError) as exc:
            raise ControlError(f"{cmd}: {exc}") from None
        except OSError as exc:
            raise ControlError(f"{cmd}: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")) from None

    def _path(self, args: dict[str, Any]) -> Path:
        path = Path(args["path"]).expanduser()
        return path if path.is_absolute() else Path(self.svc.cfg.output.dir) / path

    def _pause(self, args: dict[str, Any]) -> dict[str, Any]:
        self.svc.pause()
        return {"state": self.svc.state}

    def _resume(self, args: dict[str, Any]) -> dict[str, Any]:
        self.svc.resume()
        return {"state": self.svc.state}

    def _shutdown(self, args: dict[str, Any]) -> dict[str, Any]:
        self.svc.request_shutdown("shutdown command")
        return {"state": "stopping"}
