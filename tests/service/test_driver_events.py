"""A frame dropped before tracking hands its events to the next one (``carry_over_dropped``): they join
in time order and the successor keeps its own packet's metadata."""

from __future__ import annotations

import numpy as np

from drivers.sim.events import Events
from slam.core.frames import CameraIntrinsics, EventPacket, RGBDFrame
from slam.service.driver import QueuedFrame, carry_over_dropped

INTR = CameraIntrinsics(100.0, 100.0, 3.5, 2.5, 8, 6)


def _frame(index: int, t: list[float], x: list[int], p: list[int]) -> QueuedFrame:
    events = EventPacket(t, x, np.zeros(len(t)), p, 8, 6, timestamp=index * 0.1, index=index, intrinsics=INTR)
    depth = np.ones((6, 8), np.float32)
    return QueuedFrame(RGBDFrame(index, index * 0.1, depth, INTR, events=events), available_at=0.0)


def test_dropped_frames_events_go_first_and_the_successor_keeps_its_metadata() -> None:
    dropped, successor = (
        _frame(1, [0.01, 0.05], [1, 2], [1, -1]),
        _frame(2, [0.12, 0.18, 0.2], [3, 4, 5], [-1, 1, 1]),
    )
    carry_over_dropped(dropped, successor)
    ev = successor.frame.events
    np.testing.assert_array_equal(ev.t, [0.01, 0.05, 0.12, 0.18, 0.2])
    np.testing.assert_array_equal(ev.x, [1, 2, 3, 4, 5])
    np.testing.assert_array_equal(ev.p, [1, -1, -1, 1, 1])
    assert (ev.t.dtype, ev.x.dtype, ev.y.dtype, ev.p.dtype) == (np.float64, np.uint16, np.uint16, np.int8)
    assert (ev.index, ev.timestamp, ev.intrinsics) == (2, 0.2, INTR)
    assert len(dropped.frame.events) == 2  # the dropped frame's packet is left as it was


def test_nothing_to_carry() -> None:
    empty, successor = _frame(1, [], [], []), _frame(2, [0.15], [3], [1])
    carry_over_dropped(empty, successor)
    assert len(successor.frame.events) == 1


def test_simulator_events_concatenate_in_order_skipping_empty_parts() -> None:
    a = Events(
        np.array([0.1, 0.2]),
        np.array([1, 2], np.uint16),
        np.array([0, 0], np.uint16),
        np.array([1, -1], np.int8),
    )
    b = Events(np.array([0.3]), np.array([7], np.uint16), np.array([1], np.uint16), np.array([1], np.int8))
    joined = Events.concat([a, Events.empty(), b])
    np.testing.assert_array_equal(joined.t, [0.1, 0.2, 0.3])
    np.testing.assert_array_equal(joined.x, [1, 2, 7])
    np.testing.assert_array_equal(joined.y, [0, 0, 1])
    np.testing.assert_array_equal(joined.p, [1, -1, 1])
    assert len(Events.concat([Events.empty()])) == 0
