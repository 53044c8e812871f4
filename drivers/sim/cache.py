"""The cache of generated sequences: where it lives and how a folder is generated atomically.

A sequence is generated into a hidden ``.partial-<digest>-<pid>-<token>`` folder next to its final place
and renamed into place when complete, so an interrupted run is never mistaken for a finished one; a
finished folder is reused as is. Partial folders left by processes that no longer run are removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


def default_cache_root() -> Path:
    """``$SLAM_CACHE_DIR``, else ``~/.cache/neural-slam``."""
    value = os.environ.get("SLAM_CACHE_DIR")
    return Path(value).expanduser() if value else Path.home() / ".cache" / "neural-slam"


def config_digest(params: dict, generator_version: int) -> str:
    """12 hex digits that change with any generation parameter or the generator's version."""
    text = json.dumps({"generator_version": generator_version, **params}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cache_folder(kind: str, digest: str, cache_root: Path | None = None) -> Path:
    """``<cache root>/<kind>/<digest>``; the root is ``cache_root`` or :func:`default_cache_root`."""
    root = Path(cache_root).expanduser() if cache_root is not None else default_cache_root()
    return root / kind / digest


def finished_count(meta_file: Path, generator_version: int, digest: str | None, count_key: str) -> int | None:
    """The item count (``count_key``: frames, scans) a finished generation wrote into ``meta_file``, or
    None when the file is missing or unreadable, unfinished, from another generator version, of another
    ``digest`` (when given), or has no positive count."""
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError):
        return None
    if not meta.get("complete") or meta.get("generator_version") != generator_version:
        return None
    if digest is not None and meta.get("digest") != digest:
        return None
    count = meta.get(count_key)
    return count if isinstance(count, int) and count >= 1 else None


def generate_atomically(
    folder: Path,
    digest: str,
    is_complete: Callable[[Path], bool],
    generate: Callable[[Path], object],
    what: str,
) -> Path:
    """``folder``, generating it first with ``generate(partial_folder)`` unless ``is_complete(folder)``."""
    if is_complete(folder):
        log.debug("%s: reusing %s", what, folder)
        return folder
    parent = folder.parent
    parent.mkdir(parents=True, exist_ok=True)
    if folder.exists():
        # not produced by a finished generation (only those are renamed into place): start over
        log.warning("%s: %s is incomplete, generating it again", what, folder)
        shutil.rmtree(folder)
    remove_stale_partials(parent, digest)
    partial = parent / f".partial-{digest}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    partial.mkdir()
    try:
        generate(partial)
        try:
            partial.rename(folder)
        except OSError:
            if not is_complete(folder):  # not another process finishing first: a real error
                raise
            shutil.rmtree(partial, ignore_errors=True)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    log.info("%s: generated %s", what, folder)
    return folder


def remove_stale_partials(parent: Path, digest: str) -> None:
    """Delete partial folders of ``digest`` left by processes that no longer run."""
    for path in parent.glob(f".partial-{digest}-*"):
        try:
            pid = int(path.name.split("-")[2])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and pid_alive(pid):
            continue  # another process may be generating the same sequence right now
        shutil.rmtree(path, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True
