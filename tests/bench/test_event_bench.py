"""bench/events.py: the table and the BENCHMARKS.md section (no data, no tracking)."""

from __future__ import annotations

from bench.common import replace_section
from bench.events import SECTION_TITLE, markdown_table, section


def _results() -> dict:
    run = {
        "frames": 10,
        "lost": 0,
        "ate_rmse_m": 0.08,
        "ate_rmse_aligned_m": 0.05,
        "rpe_trans_1s_m": 0.03,
        "hz": 4.0,
    }
    with_events = {
        **run,
        "ate_rmse_m": 0.06,
        "hz": 2.0,
        "event_term_events_per_s": 1.5e6,
        "event_term_events_per_cpu_s": 2.0e6,
    }
    io = {"events": 1000, "sync_events_per_s": 6e7, "slice_1ms_events_per_s": 2e7}
    return {"(a) seq": {"rgbd": run, "events": with_events, "io": io}}


def test_table_has_both_runs_and_the_ate_change():
    table = markdown_table(_results())
    lines = table.splitlines()
    assert len(lines) == 4
    assert "| (a) seq | RGB-D | 10 (0) | 8.00 |" in lines[2]
    assert "-25.0 %" in lines[3] and "1.50 / 2.00" in lines[3] and "60.0 / 20.0" in lines[3]


def test_section_replaces_only_its_own():
    text = "# Benchmarks\n\n## Other\n\nkeep me\n"
    new = replace_section(
        text, section(_results(), "python -m bench.events", "today", ["note"]), SECTION_TITLE
    )
    assert "keep me" in new and SECTION_TITLE in new and "Command: `python -m bench.events`" in new
    again = replace_section(
        new, section(_results(), "python -m bench.events --quick", "today", []), SECTION_TITLE
    )
    assert again.count(SECTION_TITLE) == 1 and "--quick" in again and "keep me" in again


def test_run_tracking_reads_the_event_frontends_counters() -> None:
    """A few demo frames with their events through ``run_tracking``: the event term's counters come from
    the engine's frontend (they lived on an event tracker before the frontends existed)."""
    from bench.events import attach_events, prepare_demo, run_tracking

    seq = prepare_demo(frames_total=12, stride=4, progress=False)
    attach_events(seq)
    out = run_tracking(seq, with_events=True)
    assert out["frames"] == len(seq.frames) == 3
    assert out["event_term_events"] > 0 and out["event_term_s"] > 0
    assert out["event_term_events_per_s"] > 0
