"""Event-reader throughput: events per second read, and read and cut into slices, for each format.

Runs on the shared recordings (``$SLAM_SHARED_DATA/events`` or ``--data``): the DVS128 text file, the
DAVIS346 AEDAT 4 file and the Prophesee EVT 3.0 raw file. There is no shared HDF5 recording, so the
HDF5 row reads the Prophesee sample's events written to a temporary ``events/{t,x,y,p}`` file
(µs integers, chunked, uncompressed).

Each measurement is the best of ``--repeats`` passes (the files are small and the machine is shared),
reported as wall-clock and as process CPU time: on a loaded 2-core machine the CPU figure is what the
reader costs, the wall figure what a run saw. "read" is a full pass of validated chunks
(``EventReader.chunks``); "slices" is the same pass cut into ``--slice-ms`` windows by ``iter_slices``.

Usage (from the repository root)::

    .venv/bin/python -m bench.events_io
    .venv/bin/python -m bench.events_io --repeats 20 --slice-ms 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from drivers.events import EventReader, open_event_reader
from drivers.events.evt3 import Evt3Reader

TARGET_EVENTS_PER_S = 5e6
FILES = (
    ("text", "dvs128-garfield.events.txt", {"width": 128, "height": 128}),
    ("aedat4", "davis346-sample.aedat4", {}),
    ("evt3", "prophesee-evt3-sample.raw", {}),
)


@dataclass
class Row:
    format: str
    file: str
    events: int
    read_wall: float  # events/s
    read_cpu: float
    slices_wall: float
    slices_cpu: float
    slices: int


def best_of(repeats: int, work: Callable[[], int]) -> tuple[float, float, int]:
    """(best wall s, best CPU s, work's result) over ``repeats`` runs."""
    wall, cpu, result = np.inf, np.inf, 0
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        result = work()
        wall = min(wall, time.perf_counter() - w0)
        cpu = min(cpu, time.process_time() - c0)
    return wall, cpu, result


def measure(fmt: str, name: str, reader: EventReader, repeats: int, slice_s: float) -> Row:
    def read() -> int:
        return sum(len(chunk) for chunk in reader.chunks())

    def read_and_slice() -> int:
        return sum(1 for _ in reader.iter_slices(duration_s=slice_s))

    read()  # warm the page cache and imports
    r_wall, r_cpu, n = best_of(repeats, read)
    s_wall, s_cpu, n_slices = best_of(repeats, read_and_slice)
    return Row(fmt, name, n, n / r_wall, n / r_cpu, n / s_wall, n / s_cpu, n_slices)


def hdf5_copy(raw: Path, folder: Path) -> Path:
    """The EVT 3.0 sample's events as an HDF5 file in the common layout."""
    import h5py

    events = Evt3Reader(raw).decode_raw()
    path = folder / "prophesee-evt3-sample.h5"
    with h5py.File(path, "w") as f:
        group = f.create_group("events")
        for name in ("t", "x", "y", "p"):
            group.create_dataset(name, data=events[name], chunks=(1 << 16,))
        f.attrs["width"], f.attrs["height"] = 1280, 720
    return path


def run(data: Path, repeats: int, slice_s: float) -> list[Row]:
    rows = []
    for fmt, name, options in FILES:
        path = data / name
        if not path.is_file():
            print(f"skipping {fmt}: {path} not found", file=sys.stderr)
            continue
        rows.append(measure(fmt, name, open_event_reader(path, fmt, **options), repeats, slice_s))
    raw = data / "prophesee-evt3-sample.raw"
    if raw.is_file():
        with tempfile.TemporaryDirectory() as tmp:
            path = hdf5_copy(raw, Path(tmp))
            rows.append(measure("hdf5", "(EVT3 sample as HDF5)", open_event_reader(path), repeats, slice_s))
    return rows


def print_table(rows: list[Row], slice_s: float) -> None:
    def mev(value: float) -> str:
        mark = "" if value >= TARGET_EVENTS_PER_S else " *"
        return f"{value / 1e6:6.2f}{mark}"

    head = (
        f"{'format':7} {'file':30} {'events':>8} {'read wall':>10} {'read CPU':>10} "
        f"{'slices wall':>12} {'slices CPU':>11} {'slices':>7}"
    )
    print(
        f"event reading, M events/s (best of the repeats; * below the {TARGET_EVENTS_PER_S / 1e6:g} M/s target)"
    )
    print(
        f"slices: {slice_s * 1e3:g} ms windows; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f} (timings scale with it)"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r.format:7} {r.file:30} {r.events:8d} {mev(r.read_wall):>10} {mev(r.read_cpu):>10} "
            f"{mev(r.slices_wall):>12} {mev(r.slices_cpu):>11} {r.slices:7d}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_data = Path(os.environ.get("SLAM_SHARED_DATA", "../shared/data")) / "events"
    parser.add_argument("--data", type=Path, default=default_data, help="folder of the shared event files")
    parser.add_argument("--repeats", type=int, default=10, help="passes per measurement; the best counts")
    parser.add_argument("--slice-ms", type=float, default=1.0, help="slice duration for the slicing pass")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"{args.data}: no such folder (set SLAM_SHARED_DATA or pass --data)", file=sys.stderr)
        return 2
    rows = run(args.data, args.repeats, args.slice_ms / 1e3)
    print_table(rows, args.slice_ms / 1e3)
    print(json.dumps({"events_io": [asdict(r) for r in rows]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
