"""slam.core.resources: the peak memory every run and benchmark reports, measured in fresh processes
(this test process's own peak is whatever the tests before it reached)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# allocates and touches MB mebibytes, then reports the peak before and after, and the current RSS
ALLOCATE = """
import json, sys
import numpy as np
from slam.core.resources import current_rss_mb, peak_rss_mb
before, now_before = peak_rss_mb(), current_rss_mb()
block = np.ones(int(sys.argv[1]) * 2**20, dtype=np.uint8)
print(json.dumps({"before": before, "after": peak_rss_mb(), "now_before": now_before, "now": current_rss_mb()}))
"""

# holds MB mebibytes, then starts a child that reports its own peak
PARENT = """
import json, subprocess, sys
import numpy as np
from slam.core.resources import peak_rss_mb
block = np.ones(int(sys.argv[1]) * 2**20, dtype=np.uint8)
child = subprocess.run(
    [sys.executable, "-c", "from slam.core.resources import peak_rss_mb; print(peak_rss_mb())"],
    capture_output=True, text=True, check=True,
)
print(json.dumps({"parent": peak_rss_mb(), "child": float(child.stdout)}))
"""


def _run(code: str, mb: int) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, "-c", code, str(mb)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=REPO_ROOT,
    )
    return json.loads(out.stdout)


def test_peak_grows_by_what_the_process_allocates() -> None:
    r = _run(ALLOCATE, 200)
    # a Python process with numpy is tens of MB: the figure is MB, not kB or bytes
    assert 5 < r["before"] < 1000
    assert 190 < r["after"] - r["before"] < 230
    assert 190 < r["now"] - r["now_before"] < 230
    assert r["now"] <= r["after"] + 1  # the peak is never below what is resident now


def test_a_child_reports_its_own_peak_not_its_parents() -> None:
    # ru_maxrss survives exec: a child started by a parent holding 300 MB would report 300 MB or more
    r = _run(PARENT, 300)
    assert r["parent"] > 300
    assert r["child"] < r["parent"] - 250
