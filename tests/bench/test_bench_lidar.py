"""bench/lidar.py writes its own BENCHMARKS.md section: one per drive, with command, commit and rows."""

from __future__ import annotations

from pathlib import Path

from bench.common import write_benchmarks
from bench.lidar import benchmark_section, parse_args, section_title

MACHINE = {"commit": "abc1234", "nproc": 2, "cpu": "CPU", "memory_gb": 23.5, "load_average_at_start": [0.5]}
OURS = {
    "method": "ours",
    "ate_rmse_m": 0.05,
    "ate_rmse_aligned_m": 0.024,
    "rel_trans_pct": 0.067,
    "rel_rot_deg_per_100m": 0.096,
    "hz": 2.15,
    "tracking_ms_median": 66.6,
    "mapping_ms_median": 390.0,
    "lost": 0,
    "peak_rss_mb": 2261.0,
    "mesh_accuracy_cm": 4.0,
    "mesh_completion_cm": 4.7,
    "path_m": 355.2,
    "segment_lengths_m": [100, 200],
    "segments": 42,
}
KISS = {**OURS, "method": "kiss", "ate_rmse_m": 0.128, "hz": 12.0, "lost": None, "mesh_accuracy_cm": None}
KISS.pop("tracking_ms_median")


def test_each_drive_has_its_own_section() -> None:
    default = section_title(parse_args([]))
    assert default == "## LiDAR: generated 64-beam drive, ours vs KISS-ICP (bench/lidar.py)"
    assert section_title(parse_args(["--seed", "1"])) != default
    assert "2048 columns" in section_title(parse_args(["--columns", "2048"]))
    assert "32-beam" in section_title(parse_args(["--beams", "32"]))


def test_section_names_command_commit_and_one_row_per_method(tmp_path: Path) -> None:
    args = parse_args(["--scans", "655"])
    meta = {"scans": 655, "folder": "/cache/drive"}
    text = benchmark_section(
        args, meta, [OURS, KISS], "python -m bench.lidar --scans 655", MACHINE, "2026-12-08 00:30"
    )
    assert text.startswith(section_title(args) + "\n")
    assert (
        "`python -m bench.lidar --scans 655`" in text and "abc1234" in text and "2026-12-08 00:30 UTC" in text
    )
    assert "655 scans, 64x1024, 355 m, seed 0" in text
    rows = [line for line in text.splitlines() if line.startswith("| ours") or line.startswith("| KISS")]
    assert rows[0].split(" | ")[1:6] == ["0.050", "0.024", "0.067", "0.096", "2.15"]
    assert "67 / 390" in rows[0] and "4.0 / 4.7" in rows[0]
    assert rows[1].split(" | ")[1] == "0.128" and rows[1].count("–") == 3  # no timings split, lost, mesh
    # written into BENCHMARKS.md: replaces this drive's section only
    bench_md = tmp_path / "BENCHMARKS.md"
    other = "## LiDAR: generated 64-beam drive (seed 1), ours vs KISS-ICP (bench/lidar.py)\n\nkeep me\n"
    bench_md.write_text(f"# Benchmarks\n\n{section_title(args)}\n\nold figures\n\n{other}")
    write_benchmarks(text, section_title(args), bench_md)
    written = bench_md.read_text()
    assert "old figures" not in written and "keep me" in written and written.count("| ours") == 1
