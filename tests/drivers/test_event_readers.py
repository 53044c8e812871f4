"""Event-file readers: the real recordings in $SLAM_SHARED_DATA/events against independent decodings
(the shipped EVT 3.0 reference, the `aedat` package, numpy.loadtxt), and small generated files in each
format for the bad-input policy (malformed lines, out-of-sensor coordinates, unsorted timestamps,
truncated files, unknown AEDAT streams) and for slicing."""

from __future__ import annotations

import importlib
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
from realdata import require

from drivers.base import open_source
from drivers.events import EventFileError, detect_format, iter_slices, open_event_reader
from drivers.events.aedat4 import Aedat4Reader, describe
from drivers.events.evt3 import Evt3Decoder, Evt3Reader
from drivers.events.hdf5 import Hdf5EventReader
from drivers.events.reader import EventCursor
from drivers.events.text import (
    TextEventReader,
    parse_event_lines,
    read_calibration,
    read_image_index,
    read_imu,
)
from slam.app.config import ConfigError, load_config
from slam.core.frames import EventPacket


@pytest.fixture
def events_dir(shared_data: Path) -> Path:
    path = shared_data / "events"
    require(path)
    return path


def as_records(packet: EventPacket) -> np.ndarray:
    """(t rounded to µs, x, y, p) rows, for comparing packets whatever their chunking."""
    return np.stack([np.round(packet.t * 1e6), packet.x, packet.y, packet.p], axis=1).astype(np.int64)


# ------------------------------------------------------------------------------------------------------
# Prophesee EVT 3.0
# ------------------------------------------------------------------------------------------------------

TIME_HIGH, TIME_LOW, ADDR_Y, ADDR_X, VECT_BASE_X, VECT_12, VECT_8 = 0x8, 0x6, 0x0, 0x2, 0x3, 0x4, 0x5


def evt3_by_loop(words: np.ndarray, time_low_wrap: bool) -> np.ndarray:
    """A plain per-word state machine, written from the format description: the slow, obvious decoder
    the vectorised one must agree with."""
    out = []
    high = low = y = base = -1
    pol = wraps = low_wraps = 0
    last_high_raw = last_low = -1
    for word in words.tolist():
        kind, payload = word >> 12, word & 0xFFF
        if kind == TIME_HIGH:
            if last_high_raw >= 0 and last_high_raw - payload > 2048:
                wraps += 1
            last_high_raw, high = payload, payload + 4096 * wraps
        elif kind == TIME_LOW:
            if time_low_wrap and last_low >= 0 and payload < last_low:
                low_wraps += 1
            last_low = low = payload
        elif kind == ADDR_Y:
            y = payload & 0x7FF
        elif kind == VECT_BASE_X:
            base, pol = payload & 0x7FF, payload >> 11
        elif high >= 0 and y >= 0:
            t = high * 4096 + max(low, 0) + 4096 * low_wraps
            if kind == ADDR_X:
                out.append((t, payload & 0x7FF, y, payload >> 11))
            elif kind in (VECT_12, VECT_8) and base >= 0:
                for bit in range(12 if kind == VECT_12 else 8):
                    if payload >> bit & 1:
                        out.append((t, base + bit, y, pol))
                base += 12 if kind == VECT_12 else 8
    return np.array(out, dtype=np.int64).reshape(-1, 4)


def raw_records(decoded: tuple) -> np.ndarray:
    return np.stack([np.asarray(a, np.int64) for a in decoded], axis=1)


@pytest.mark.shared_data
def test_evt3_reproduces_the_reference_decoding_exactly(events_dir):
    reference = np.load(events_dir / "prophesee-evt3-sample.decoded.npy")
    reader = Evt3Reader(events_dir / "prophesee-evt3-sample.raw", time_low_wrap=True)
    assert (reader.width, reader.height) == (1280, 720)  # from the header's sensor name (gen41)
    decoded = reader.decode_raw()
    assert decoded.dtype == reference.dtype
    assert np.array_equal(decoded, reference)
    assert len(decoded) == 219_596


@pytest.mark.shared_data
def test_evt3_matches_a_per_word_decoder_in_both_time_modes_and_any_chunking(events_dir):
    path = events_dir / "prophesee-evt3-sample.raw"
    header_end = Evt3Reader(path).header.data_offset
    words = np.frombuffer(path.read_bytes()[header_end:], "<u2")
    reference = np.load(events_dir / "prophesee-evt3-sample.decoded.npy")
    for wrap in (False, True):
        expected = evt3_by_loop(words, wrap)
        assert np.array_equal(raw_records(Evt3Decoder(wrap).decode(words)), expected)
        decoder = Evt3Decoder(wrap)  # state carried across chunks that split vectors and time words
        pieces = [raw_records(decoder.decode(words[i : i + 997])) for i in range(0, words.size, 997)]
        assert np.array_equal(np.concatenate(pieces), expected)
        # x, y and polarity never depend on the time mode
        assert np.array_equal(expected[:, 1:], np.stack([reference[k] for k in "xyp"], axis=1))
    # by the format's own time, the sample is monotonic (the reference's is too, but 6x stretched)
    packet = Evt3Reader(path).read_all()
    assert np.all(np.diff(packet.t) >= 0)
    assert packet.t[-1] - packet.t[0] < (reference["t"][-1] - reference["t"][0]) * 1e-6 / 4


def evt3_words(events: list[tuple[int, int, int, int]], vectors: bool) -> np.ndarray:
    """Encode (t µs, x, y, p) events (sorted by t, then y) as EVT 3.0 words; with ``vectors``, runs of
    same-(t, y, p) events become VECT_BASE_X + VECT_12/VECT_8 words, else one EVT_ADDR_X each."""
    words: list[int] = []
    last_high = last_low = last_y = None
    i = 0
    while i < len(events):
        t, _, y, p = events[i]
        if (t >> 12) & 0xFFF != last_high:
            last_high = (t >> 12) & 0xFFF
            words.append(TIME_HIGH << 12 | last_high)
        if t & 0xFFF != last_low:
            last_low = t & 0xFFF
            words.append(TIME_LOW << 12 | last_low)
        if y != last_y:
            last_y = y
            words.append(ADDR_Y << 12 | y)
        j = i
        while j < len(events) and events[j][0] == t and events[j][2] == y and events[j][3] == p:
            j += 1
        xs = sorted(e[1] for e in events[i:j])
        if vectors and len(xs) > 1:
            base = xs[0]
            words.append(VECT_BASE_X << 12 | p << 11 | base)
            while xs:
                size = 12 if xs[-1] - base >= 8 else 8
                mask = sum(1 << (x - base) for x in xs if x - base < size)
                xs = [x for x in xs if x - base >= size]
                words.append((VECT_12 if size == 12 else VECT_8) << 12 | mask)
                base += size
        else:
            words.extend(ADDR_X << 12 | p << 11 | x for x in xs)
        i = j
    return np.array(words, dtype="<u2")


def generated_events(rng: np.random.Generator, n_groups: int, t0: int, width: int = 640, height: int = 480):
    """Groups of events sharing (t, y, p), x sorted within a group, as the encoder expects."""
    events = []
    t = t0
    for _ in range(n_groups):
        t += int(rng.integers(0, 900))
        y, p = int(rng.integers(0, height)), int(rng.integers(0, 2))
        xs = np.unique(rng.integers(0, width - 40, size=int(rng.integers(1, 9))) + rng.integers(0, 30))
        events.extend((t, int(x), y, p) for x in xs)
    return events


def write_raw(path: Path, words: np.ndarray, header: str = "% evt 3.0\n% geometry 640x480\n") -> Path:
    path.write_bytes(header.encode() + words.tobytes())
    return path


@pytest.mark.parametrize("vectors", [False, True])
def test_evt3_generated_stream_round_trips_across_a_24_bit_time_wrap(tmp_path, vectors):
    rng = np.random.default_rng(1)
    events = generated_events(rng, 3000, t0=(1 << 24) - 600_000)  # crosses 2^24 µs
    assert events[0][0] < 1 << 24 < events[-1][0]
    words = evt3_words(events, vectors)
    reader = Evt3Reader(write_raw(tmp_path / "gen.raw", words), words_per_chunk=1001)
    decoded = reader.decode_raw()
    expected = np.array(events, dtype=np.int64)
    assert np.array_equal(np.stack([decoded[k].astype(np.int64) for k in "txyp"], axis=1), expected)
    packet = reader.read_all()
    assert (packet.width, packet.height) == (640, 480)
    assert np.array_equal(as_records(packet)[:, :3], expected[:, :3])
    assert np.array_equal(packet.p, np.where(expected[:, 3] > 0, 1, -1))


def test_evt3_header_geometry_forms_and_errors(tmp_path):
    words = evt3_words([(5, 1, 2, 1)], vectors=False)
    fmt = write_raw(tmp_path / "a.raw", words, "% format EVT3;height=320;width=320\n% end\n")
    assert (Evt3Reader(fmt).width, Evt3Reader(fmt).height) == (320, 320)
    plain = write_raw(tmp_path / "b.raw", words, "% evt 3.0\n")
    with pytest.raises(
        EventFileError, match=r"b\.raw: the sensor size is not in the file; pass width and height"
    ):
        Evt3Reader(plain).read_all()
    assert len(Evt3Reader(plain, width=10, height=10).read_all()) == 1
    evt2 = write_raw(tmp_path / "c.raw", words, "% evt 2.0\n")
    with pytest.raises(EventFileError, match=r"c\.raw: header says evt 2.0"):
        Evt3Reader(evt2)


def test_evt3_truncated_word_and_events_before_any_time_are_dropped_and_counted(tmp_path):
    events = generated_events(np.random.default_rng(2), 50, t0=1000)
    words = evt3_words(events, vectors=True)
    early = np.array([ADDR_Y << 12 | 3, ADDR_X << 12 | 7], dtype="<u2")  # an event before any time word
    path = tmp_path / "cut.raw"
    path.write_bytes(b"% evt 3.0\n% geometry 640x480\n" + np.concatenate((early, words)).tobytes() + b"\x42")
    reader = Evt3Reader(path)
    packet = reader.read_all()
    assert np.array_equal(as_records(packet)[:, :3], np.array(events)[:, :3])
    assert reader.stats.truncated_bytes == 1
    assert reader.stats.malformed == 1
    assert any("cut.raw: truncated" in m for m in reader.stats.problems)


# ------------------------------------------------------------------------------------------------------
# AEDAT 4
# ------------------------------------------------------------------------------------------------------


def aedat_package_decoding(path: Path):
    aedat = pytest.importorskip(
        "aedat", reason="the aedat package is the independent decoder to compare with"
    )
    events, frames, imus, triggers = [], [], [], 0
    for packet in aedat.Decoder(str(path)):
        if "events" in packet:
            events.append(packet["events"])
        if "frame" in packet:
            frames.append(packet["frame"])
        if "imus" in packet:
            imus.append(packet["imus"])
        triggers += "triggers" in packet
    return np.concatenate(events), frames, np.concatenate(imus), triggers


@pytest.mark.shared_data
def test_aedat4_events_frames_and_imu_match_the_aedat_package(events_dir):
    path = events_dir / "davis346-sample.aedat4"
    events, frames, imus, triggers = aedat_package_decoding(path)
    reader = Aedat4Reader(path)
    assert (reader.width, reader.height) == (346, 260)
    assert [s.type for s in describe(path)] == ["EVTS", "FRME", "IMUS", "TRIG"]
    packet = reader.read_all()
    assert len(packet) == len(events) == 6676
    expected = np.stack([events["t"], events["x"], events["y"], np.where(events["on"], 1, -1)], axis=1)
    assert np.array_equal(as_records(packet), expected.astype(np.int64))
    assert reader.stats.skipped_streams == {"TRIG": triggers}
    assert reader.stats.dropped == 0

    aps = list(reader.iter_frames())
    assert len(aps) == len(frames) == 4
    for ours, theirs in zip(aps, frames):
        assert np.array_equal(ours.image, theirs["pixels"])
        assert round(ours.timestamp * 1e6) == theirs["t"]
        assert round(ours.exposure_begin * 1e6) == theirs["exposure_begin_t"]
        assert round(ours.exposure_end * 1e6) == theirs["exposure_end_t"]

    imu = reader.read_imu()
    assert len(imu) == len(imus) == 160
    assert np.array_equal(np.round(imu.t * 1e6), imus["t"].astype(np.float64))
    g = np.stack([imus[f"accelerometer_{a}"] for a in "xyz"], axis=1)
    w = np.stack([imus[f"gyroscope_{a}"] for a in "xyz"], axis=1)
    np.testing.assert_allclose(imu.accel, g.astype(np.float64) * 9.80665, rtol=1e-12)
    np.testing.assert_allclose(imu.gyro, np.deg2rad(w.astype(np.float64)), rtol=1e-12)
    assert 9.0 < np.median(np.linalg.norm(imu.accel, axis=1)) < 10.6  # a sensor at rest feels 1 g


@pytest.mark.shared_data
def test_aedat4_unknown_stream_is_skipped_with_a_warning_and_counted(events_dir, tmp_path, caplog):
    original = (events_dir / "davis346-sample.aedat4").read_bytes()
    path = tmp_path / "with_pose.aedat4"
    path.write_bytes(original.replace(b">TRIG<", b">POSE<", 1))  # same length: the header stays valid
    full = Aedat4Reader(events_dir / "davis346-sample.aedat4").read_all()
    with caplog.at_level(logging.WARNING):
        reader = Aedat4Reader(path)
        packet = reader.read_all()
    assert np.array_equal(as_records(packet), as_records(full))
    assert reader.stats.skipped_streams == {"POSE": 13}
    assert "with_pose.aedat4: packets of stream 3 of unknown type 'POSE' skipped" in caplog.text
    assert len(list(reader.iter_frames())) == 4 and len(reader.read_imu()) == 160


@pytest.mark.shared_data
def test_aedat4_truncated_file_keeps_every_complete_packet(events_dir, tmp_path):
    original = (events_dir / "davis346-sample.aedat4").read_bytes()
    full = as_records(Aedat4Reader(events_dir / "davis346-sample.aedat4").read_all())
    path = tmp_path / "cut.aedat4"
    path.write_bytes(original[: len(original) // 2])
    reader = Aedat4Reader(path)
    part = as_records(reader.read_all())
    assert 0 < len(part) < len(full)
    assert np.array_equal(part, full[: len(part)])  # a prefix: nothing before the cut is lost
    assert reader.stats.truncated_bytes > 0
    assert any("cut.aedat4: truncated: the packet at byte" in m for m in reader.stats.problems)
    with_aedat = pytest.importorskip("aedat")
    decoded = 0
    with pytest.raises(RuntimeError):  # the package gets the same complete packets, then fails
        for p in with_aedat.Decoder(str(path)):
            decoded += len(p.get("events", ()))
    assert decoded == len(part)


@pytest.mark.shared_data
def test_aedat4_corrupt_packet_is_dropped_and_the_rest_read(events_dir, tmp_path):
    source = events_dir / "davis346-sample.aedat4"
    original = bytearray(source.read_bytes())
    header = Aedat4Reader(source).header
    offset = header.data_start  # the first packet is an event packet (stream 0)
    assert int.from_bytes(original[offset : offset + 4], "little") == 0
    original[offset + 8 + 20 : offset + 8 + 60] = b"\xff" * 40  # inside its LZ4 payload
    path = tmp_path / "corrupt.aedat4"
    path.write_bytes(bytes(original))
    reader = Aedat4Reader(path)
    packet = reader.read_all()
    full = Aedat4Reader(source).read_all()
    first_packet_events = 402  # what the aedat package decodes from that packet
    assert len(packet) == len(full) - first_packet_events
    assert reader.stats.malformed == 1
    assert any(
        f"corrupt.aedat4: packet at byte {offset} (stream 0) undecodable" in m for m in reader.stats.problems
    )


def recompressed_aedat4(source: Path, code: int, compress) -> bytes:
    """The file with every packet recompressed (IOHeader compression ``code``) and no file-data table."""
    import struct

    import lz4.frame

    from drivers.events.aedat4 import MAGIC, _Table, read_header

    data = source.read_bytes()
    header = read_header(source)
    length = struct.unpack_from("<I", data, len(MAGIC))[0]
    buf = bytearray(data[len(MAGIC) + 4 : len(MAGIC) + 4 + length])
    table = _Table(bytes(buf), struct.unpack_from("<I", buf, 0)[0])
    struct.pack_into("<i", buf, table.pos + table._offset(0), code)  # both fields are in the vtable
    struct.pack_into("<q", buf, table.pos + table._offset(1), -1)
    out = [MAGIC, struct.pack("<I", length), bytes(buf)]
    at = header.data_start
    while at < header.data_end:
        stream_id, size = struct.unpack_from("<ii", data, at)
        payload = compress(lz4.frame.decompress(data[at + 8 : at + 8 + size]))
        out.append(struct.pack("<ii", stream_id, len(payload)) + payload)
        at += 8 + size
    return b"".join(out)


@pytest.mark.shared_data
@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_aedat4_uncompressed_and_zstd_packets(events_dir, tmp_path, compression):
    source = events_dir / "davis346-sample.aedat4"
    if compression == "zstd":
        try:
            from compression import zstd
        except ImportError:
            zstd = pytest.importorskip("backports.zstd")
        code, compress = 3, zstd.compress
    else:
        code, compress = 0, bytes
    path = tmp_path / f"{compression}.aedat4"
    path.write_bytes(recompressed_aedat4(source, code, compress))
    reader = Aedat4Reader(path)
    assert reader.header.compression == compression
    assert np.array_equal(as_records(reader.read_all()), as_records(Aedat4Reader(source).read_all()))
    assert reader.stats.dropped == 0 and reader.stats.truncated_bytes == 0
    assert len(list(reader.iter_frames())) == 4 and len(reader.read_imu()) == 160


def test_aedat4_not_an_aedat_file(tmp_path):
    path = tmp_path / "x.aedat4"
    path.write_bytes(b"#!AER-DAT2.0\r\nrubbish")
    with pytest.raises(EventFileError, match=r"x\.aedat4: not an AEDAT 4 file"):
        Aedat4Reader(path)
    path.write_bytes(b"#!AER-DAT4.0\r\n\x10\x00\x00\x00abc")
    with pytest.raises(EventFileError, match=r"x\.aedat4: truncated inside the header"):
        Aedat4Reader(path)


# ------------------------------------------------------------------------------------------------------
# Event Camera Dataset text
# ------------------------------------------------------------------------------------------------------


@pytest.mark.shared_data
def test_text_real_file_equals_numpy_loadtxt(events_dir):
    path = events_dir / "dvs128-garfield.events.txt"
    expected = np.loadtxt(path)
    for block_bytes in (1 << 23, 4096):  # one block, and many blocks cut mid-file
        reader = TextEventReader(path, width=128, height=128, block_bytes=block_bytes)
        packet = reader.read_all()
        assert len(packet) == 202_235
        assert np.array_equal(packet.t, expected[:, 0])  # bit-identical floats
        assert np.array_equal(packet.x, expected[:, 1]) and np.array_equal(packet.y, expected[:, 2])
        assert np.array_equal(packet.p, np.where(expected[:, 3] > 0, 1, -1))
        assert reader.stats.dropped == 0 and reader.stats.reordered == 0


def test_text_fast_parser_is_exact_on_varied_number_formats():
    rng = np.random.default_rng(3)
    n = 5000
    t = np.sort(rng.uniform(0, 5e4, n))
    formats = ["%.9f", "%.6f", "%.3f", "%.1f", "%.0f", "%d"]
    choice = rng.integers(0, len(formats), n)
    texts = [formats[c] % (int(v) if formats[c] == "%d" else v) for c, v in zip(choice, t)]
    x, y, p = rng.integers(0, 65536, n), rng.integers(0, 1000, n), rng.integers(0, 2, n)
    block = "".join(f"{a} {b} {c} {d}\n" for a, b, c, d in zip(texts, x, y, p)).encode()
    parsed = parse_event_lines(block)
    assert parsed.bad_lines.size == 0
    assert np.array_equal(parsed.t, np.array([float(s) for s in texts]))
    assert np.array_equal(parsed.x, x) and np.array_equal(parsed.y, y) and np.array_equal(parsed.p, p)


def write_text(path: Path, lines: list[str], final_newline: bool = True) -> Path:
    path.write_text("\n".join(lines) + ("\n" if final_newline else ""))
    return path


def test_text_malformed_lines_are_dropped_counted_and_located(tmp_path):
    lines = [
        "# a comment",
        "0.001 1 2 1",
        "0.002 3 4 0",
        "",
        "0.003 5 6",  # 3 fields
        "0.004 x 6 1",  # not a number
        "4.5e-3 7 8 1",  # valid, in a form the fast path leaves to the slow one
        "0.006 9 10 0",
        "0.007\t11  12 1\r",  # tabs, double spaces and a CR are whitespace
        "0.008 13",  # the last line, cut short by truncation
    ]
    path = write_text(tmp_path / "events.txt", lines, final_newline=False)
    reader = TextEventReader(path, width=64, height=64)
    packet = reader.read_all()
    assert np.array_equal(packet.t, [0.001, 0.002, 4.5e-3, 0.006, 0.007])
    assert np.array_equal(packet.x, [1, 3, 7, 9, 11]) and np.array_equal(packet.y, [2, 4, 8, 10, 12])
    assert np.array_equal(packet.p, [1, -1, 1, -1, 1])
    assert reader.stats.malformed == 3
    assert [m.split(": ")[0] for m in reader.stats.problems] == [f"{path}:5", f"{path}:6", f"{path}:10"]


def test_text_out_of_sensor_and_unsorted_events(tmp_path):
    lines = ["0.010 1 1 1", "0.030 2 2 1", "0.020 3 3 1", "0.040 200 1 1", "0.050 4 99 0", "0.060 5 5 0"]
    reader = TextEventReader(write_text(tmp_path / "e.txt", lines), width=64, height=64)
    packet = reader.read_all()
    assert np.array_equal(packet.t, [0.010, 0.020, 0.030, 0.060])  # sorted within the chunk
    assert reader.stats.out_of_bounds == 2 and reader.stats.reordered == 1 and reader.stats.out_of_order == 0
    # across chunks an event earlier than one already delivered is dropped: blocks of ~2 lines here
    reader = TextEventReader(tmp_path / "e.txt", width=64, height=64, block_bytes=24)
    packet = reader.read_all()
    assert np.all(np.diff(packet.t) >= 0)
    assert np.array_equal(packet.t, [0.010, 0.030, 0.060])
    assert reader.stats.out_of_order == 1


def test_text_geometry_line_and_missing_geometry(tmp_path):
    with_size = write_text(tmp_path / "sized.txt", ["240 180", "0.5 239 179 1", "0.6 240 0 1"])
    reader = TextEventReader(with_size)
    assert (reader.width, reader.height) == (240, 180)
    assert len(reader.read_all()) == 1 and reader.stats.out_of_bounds == 1
    bare = write_text(tmp_path / "bare.txt", ["0.5 1 1 1"])
    with pytest.raises(EventFileError, match=r"bare\.txt: the sensor size is not in the file"):
        TextEventReader(bare).read_all()


def test_text_dataset_folder_files(tmp_path):
    write_text(tmp_path / "events.txt", ["0.1 1 2 1"])
    write_text(tmp_path / "calib.txt", ["199.1 198.9 120.5 89.5 -0.37 0.17 0.0 0.0 0.0"])
    write_text(tmp_path / "images.txt", ["0.0 images/frame_00000000.png", "0.05 images/frame_00000001.png"])
    write_text(
        tmp_path / "imu.txt", ["0.001 0.1 -9.8 0.2 0.01 0.02 0.03", "0.002 0.1 -9.7 0.2 0.01 0.02 0.04"]
    )
    assert detect_format(tmp_path) == "text"
    assert len(open_event_reader(tmp_path, width=240, height=180).read_all()) == 1
    calib = read_calibration(tmp_path / "calib.txt")
    assert (calib.fx, calib.cy, calib.distortion[0]) == (199.1, 89.5, -0.37)
    times, files = read_image_index(tmp_path / "images.txt")
    assert np.array_equal(times, [0.0, 0.05]) and files[1] == tmp_path / "images/frame_00000001.png"
    imu = read_imu(tmp_path / "imu.txt")
    assert np.array_equal(imu.accel[:, 1], [-9.8, -9.7]) and np.array_equal(imu.gyro[:, 2], [0.03, 0.04])
    write_text(tmp_path / "calib.txt", ["199.1 198.9"])
    with pytest.raises(EventFileError, match=r"calib\.txt: expected 'fx fy cx cy"):
        read_calibration(tmp_path / "calib.txt")


# ------------------------------------------------------------------------------------------------------
# HDF5
# ------------------------------------------------------------------------------------------------------


def write_h5(path: Path, t, x, y, p, t_offset=None, attrs=None) -> Path:
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as f:
        group = f.create_group("events")
        for name, values in zip("txyp", (t, x, y, p)):
            group.create_dataset(name, data=values, chunks=True)
        if t_offset is not None:
            f.create_dataset("t_offset", data=t_offset)
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
    return path


def test_hdf5_microseconds_with_offset_read_in_slices(tmp_path):
    rng = np.random.default_rng(4)
    n = 10_000
    t = np.sort(rng.integers(0, 2_000_000, n)).astype(np.int64)
    x, y = rng.integers(0, 640, n).astype(np.uint16), rng.integers(0, 480, n).astype(np.uint16)
    p = rng.integers(0, 2, n).astype(np.int8)
    offset = 1_600_000_000_000_000  # a Unix epoch in µs, as DSEC stores it
    path = write_h5(tmp_path / "e.h5", t, x, y, p, t_offset=offset, attrs={"width": 640, "height": 480})
    reader = Hdf5EventReader(path, rows_per_chunk=777)
    assert (reader.width, reader.height) == (640, 480)
    packet = reader.read_all()
    assert np.array_equal(np.round((packet.t - 1.6e9) * 1e6).astype(np.int64), t)  # µs survive the offset
    assert np.array_equal(packet.x, x) and np.array_equal(packet.y, y)
    assert np.array_equal(packet.p, np.where(p > 0, 1, -1))


def test_hdf5_seconds_and_bad_files(tmp_path):
    t = np.array([0.5, 0.25, 0.75])  # unsorted
    path = write_h5(
        tmp_path / "s.h5", t, [1, 2, 300], [1, 2, 3], [1, 0, 1], attrs={"sensor_resolution": [128, 128]}
    )
    reader = open_event_reader(path)
    packet = reader.read_all()
    assert (
        np.array_equal(packet.t, [0.25, 0.5])
        and reader.stats.out_of_bounds == 1
        and reader.stats.reordered == 1
    )
    uneven = write_h5(tmp_path / "u.h5", [1, 2, 3], [1, 2], [1, 2, 3], [0, 1, 0])
    with pytest.raises(EventFileError, match=r"u\.h5: the event datasets must be 1-D and equally long"):
        Hdf5EventReader(uneven, width=4, height=4)
    cut = tmp_path / "cut.h5"
    cut.write_bytes(path.read_bytes()[:1500])
    with pytest.raises(EventFileError, match=r"cut\.h5: cannot open as HDF5"):
        Hdf5EventReader(cut)


# ------------------------------------------------------------------------------------------------------
# slicing, formats, the registered source
# ------------------------------------------------------------------------------------------------------


def random_packets(rng: np.random.Generator, n: int, width: int = 32, height: int = 24) -> list[EventPacket]:
    t = np.sort(rng.uniform(0.0, 1.0, n))
    t[100:130] = t[100]  # a run of equal timestamps
    cuts = np.sort(rng.choice(np.arange(1, n), size=40, replace=False))
    x, y, p = rng.integers(0, width, n), rng.integers(0, height, n), rng.integers(0, 2, n)
    return [
        EventPacket(t[a:b], x[a:b], y[a:b], p[a:b], width, height) for a, b in zip([0, *cuts], [*cuts, n])
    ]


def test_slices_by_duration_cover_their_windows_exactly():
    packets = random_packets(np.random.default_rng(5), 3000)
    every_t = np.concatenate([p.t for p in packets])
    d = 0.013
    slices = list(iter_slices(packets, 32, 24, duration_s=d))
    t0 = every_t[0]
    assert len(slices) == int(np.floor((every_t[-1] - t0) / d)) + 1
    for k, piece in enumerate(slices):
        assert piece.index == k and piece.timestamp == pytest.approx(t0 + (k + 1) * d)
        expected = every_t[(every_t >= t0 + k * d) & (every_t < t0 + (k + 1) * d)]
        assert np.array_equal(piece.t, expected)


def test_slices_by_count_and_by_both():
    packets = random_packets(np.random.default_rng(6), 2000)
    every_t = np.concatenate([p.t for p in packets])
    by_count = list(iter_slices(packets, 32, 24, max_events=128))
    assert [len(s) for s in by_count] == [128] * 15 + [80]
    assert np.array_equal(np.concatenate([s.t for s in by_count]), every_t)
    both = list(iter_slices(packets, 32, 24, duration_s=0.1, max_events=50))
    assert max(len(s) for s in both) == 50
    assert np.array_equal(np.concatenate([s.t for s in both]), every_t)
    with pytest.raises(ValueError, match="duration_s or max_events"):
        list(iter_slices(packets, 32, 24))


def test_cursor_take_until_inclusive_and_exclusive():
    t = np.array([0.1, 0.2, 0.2, 0.3])
    cursor = EventCursor(
        [EventPacket(t[:2], [0, 0], [0, 0], [1, 1], 4, 4), EventPacket(t[2:], [0, 0], [0, 0], [1, 1], 4, 4)],
        4,
        4,
    )
    assert np.array_equal(cursor.take_until(0.2).t, [0.1])
    assert np.array_equal(cursor.take_until(0.2, inclusive=True).t, [0.2, 0.2])
    assert np.array_equal(cursor.take_until(9.0).t, [0.3]) and cursor.exhausted


@pytest.mark.shared_data
def test_real_files_slice_into_the_same_events(events_dir):
    for name, options in (
        ("dvs128-garfield.events.txt", {"width": 128, "height": 128}),
        ("davis346-sample.aedat4", {}),
        ("prophesee-evt3-sample.raw", {}),
    ):
        reader = open_event_reader(events_dir / name, **options)
        whole = as_records(reader.read_all())
        sliced = list(reader.iter_slices(duration_s=0.002))
        assert np.array_equal(np.concatenate([as_records(s) for s in sliced]), whole), name
        assert all(np.all(s.t < s.timestamp) for s in sliced if len(s))


def test_event_source_is_registered_and_configurable(tmp_path):
    path = write_text(tmp_path / "e.txt", [f"{0.001 * i:.3f} {i % 8} 1 {i % 2}" for i in range(100)])
    load_config(None, {"source": {"kind": "events", "path": str(path)}})  # kind accepted at load
    with open_source("events", path, width=8, height=8, slice_s=0.01, first=2, last=5) as source:
        packets = list(source)
    assert [p.index for p in packets] == [2, 3, 4, 5]
    assert all(len(p) == 10 for p in packets)
    assert packets[0].t[0] == pytest.approx(0.020)
    assert source.stats.dropped == 0
    with pytest.raises(ConfigError, match=r"events\.camera_from_sensor: .*must be 4x4"):
        load_config(None, {"events": {"camera_from_sensor": [[1, 0], [0, 1]]}})


def test_format_detection(tmp_path):
    assert detect_format(write_raw(tmp_path / "noext", evt3_words([(1, 1, 1, 1)], False))) == "evt3"
    (tmp_path / "mystery.bin").write_bytes(b"\x00\x01")
    with pytest.raises(EventFileError, match=r"mystery\.bin: cannot tell the event format"):
        detect_format(tmp_path / "mystery.bin")
    with pytest.raises(EventFileError, match="no such event file"):
        open_event_reader(tmp_path / "absent.aedat4")


@pytest.mark.shared_data
def test_events_io_bench_reads_every_event_of_every_format(events_dir, capsys):
    repo_root = str(Path(__file__).resolve().parents[2])
    if repo_root not in sys.path:  # bench/ is not an installed package: import it from the checkout
        sys.path.insert(0, repo_root)
    events_io = importlib.import_module("bench.events_io")
    main = events_io.main

    assert main(["--data", str(events_dir), "--repeats", "1", "--slice-ms", "5"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    rows = {r["format"]: r for r in json.loads(last)["events_io"]}
    assert {k: r["events"] for k, r in rows.items()} == {
        "text": 202_235,
        "aedat4": 6_676,
        "evt3": 219_596,
        "hdf5": 219_596,
    }
    assert all(r["read_cpu"] > 0 for r in rows.values())
    # 5 ms windows from each file's first event, empty ones included, up to the last event's
    for fmt, name, options in events_io.FILES:
        reader = events_io.open_event_reader(events_dir / name, fmt, **options)
        t = np.concatenate([chunk.t for chunk in reader.chunks()])
        assert rows[fmt]["slices"] == int((t.max() - t[0]) // 0.005) + 1, fmt
    assert rows["hdf5"]["slices"] == rows["evt3"]["slices"]  # the same events
