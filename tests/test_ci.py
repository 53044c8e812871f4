"""CI cannot go green without the real recordings: ``.ci/run`` stops when they are missing, and under
CI=true the tests that need them fail instead of skipping (tests/realdata.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
CI_RUN = REPO_ROOT / ".ci" / "run"


def ci_check(data: Path | None, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "SLAM_CACHE_DIR": str(tmp_path / "cache")}
    if data is not None:
        env["SLAM_SHARED_DATA"] = str(data)
    return subprocess.run(
        ["bash", str(CI_RUN), "--check"], env=env, capture_output=True, text=True, timeout=30
    )


def fake_data(root: Path, skip: str | None = None) -> Path:
    for name in ("7scenes-redkitchen", "trajectories", "events", "lidar-pair"):
        if name != skip:
            (root / name).mkdir(parents=True)
    return root


def test_ci_run_stops_when_the_data_folder_is_missing(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-data"
    result = ci_check(missing, tmp_path)
    assert result.returncode != 0
    assert f"SLAM_SHARED_DATA={missing} is not a folder" in result.stderr and not result.stdout


def test_ci_run_stops_when_a_recording_is_missing(tmp_path: Path) -> None:
    data = fake_data(tmp_path / "data", skip="events")
    result = ci_check(data, tmp_path)
    assert result.returncode != 0 and f"{data / 'events'} not found" in result.stderr


def test_ci_run_goes_on_with_the_data(tmp_path: Path) -> None:
    data = fake_data(tmp_path / "data")
    result = ci_check(data, tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"real recordings in {data}" in result.stdout


@pytest.mark.parametrize("ci", ["true", ""])
def test_missing_recordings_fail_under_ci_and_skip_locally(tmp_path: Path, ci: str) -> None:
    """A test on a recording, run by pytest in a subprocess with the data folder pointing nowhere."""
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "conftest.py").write_text((REPO_ROOT / "tests" / "conftest.py").read_text())
    (tests / "realdata.py").write_text((REPO_ROOT / "tests" / "realdata.py").read_text())
    absent = tmp_path / "absent.txt"
    (tests / "test_real.py").write_text(
        textwrap.dedent(
            f"""
            from pathlib import Path

            from realdata import require

            def test_kitchen(redkitchen):
                pass

            def test_a_file():
                require(Path({str(absent)!r}))
            """
        )
    )
    env = {"PATH": "/usr/bin:/bin", "SLAM_SHARED_DATA": str(tmp_path / "nowhere"), "CI": ci}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rfs", "-p", "no:cacheprovider", str(tests)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if ci:  # the fixture's failure is reported as an error, the test's as a failure: neither skips
        last = result.stdout.splitlines()[-1]
        assert (
            result.returncode == 1 and "1 failed" in last and "1 error" in last and "skipped" not in last
        ), last
    else:
        assert result.returncode == 0 and "2 skipped" in result.stdout, result.stdout
    assert f"SLAM_SHARED_DATA={tmp_path / 'nowhere'} is not a folder" in result.stdout
    assert f"{absent} not found" in result.stdout
    assert ("CI=true" in result.stdout) == (ci == "true")
