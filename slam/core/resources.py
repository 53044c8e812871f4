"""What a run costs the machine, measured the same way by the replay's stats, the service and the benchmarks."""

from __future__ import annotations

import resource
import sys
from pathlib import Path


def peak_rss_mb() -> float:
    """The peak resident memory (MiB) of this process since it started its current program (``exec``).

    Linux: ``VmHWM`` of /proc/self/status, the high-water mark of this program's own address space.
    ``ru_maxrss`` is not used there because it survives ``exec``: a benchmark method started by a parent
    that held 2 GB would report at least 2 GB. Where /proc is missing (macOS) it falls back to ``ru_maxrss``
    (bytes on macOS, kilobytes elsewhere), which then includes any such parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    except (OSError, ValueError, IndexError):
        pass
    scale = 1.0 if sys.platform == "darwin" else 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def current_rss_mb() -> float:
    """The resident memory (MiB) of this process now (the service's status)."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20
