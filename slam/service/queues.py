"""``HandOff``: the bounded queue between two service threads, with the two policies the modes need.

- ``overflow="block"``: a full queue makes the producer wait (fast replay: every frame is processed);
  ``"drop_oldest"``: the oldest waiting item is discarded to make room (live: never hold the producer).
- ``take="oldest"``: items come out in order; ``"newest"``: the consumer takes the latest item and the
  older ones are discarded (the tracker must work on the freshest frame, not on a backlog).

Every discarded item is counted in ``dropped``. ``close()`` marks the end of the stream: the consumer
gets what is left, then ``END``. An optional ``carry(dropped, successor)`` hands what a dropped item holds
that its successor needs (the events since the previous frame) to the item after it.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, Literal, TypeVar

T = TypeVar("T")


class _End:
    def __repr__(self) -> str:
        return "END"


END: Any = _End()  # returned by ``get`` once the queue is closed and empty


class HandOff(Generic[T]):
    def __init__(
        self,
        maxsize: int,
        overflow: Literal["block", "drop_oldest"],
        take: Literal["oldest", "newest"],
        carry: Callable[[T, T], None] | None = None,
    ) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self.maxsize, self.overflow, self.take = maxsize, overflow, take
        self.carry = carry
        self._items: deque[T] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.put_count = 0
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, item: T, give_up: Callable[[], bool] = lambda: False, poll_s: float = 0.1) -> bool:
        """Hand ``item`` over; False (and counted as dropped) when the queue is closed, or when a blocking
        put sees ``give_up()`` turn true while it waits (shutdown, or a consumer that died)."""
        with self._cond:
            while self.overflow == "block" and len(self._items) >= self.maxsize and not self._closed:
                if give_up():
                    self.dropped += 1
                    return False
                self._cond.wait(poll_s)
            if self._closed:
                self.dropped += 1
                return False
            if len(self._items) >= self.maxsize:  # drop_oldest
                gone = self._items.popleft()
                self.dropped += 1
                if self.carry is not None:
                    self.carry(gone, self._items[0] if self._items else item)
            self._items.append(item)
            self.put_count += 1
            self._cond.notify_all()
            return True

    def get(self, timeout: float | None = None) -> T | None:
        """The next item (the newest, for ``take="newest"``), ``END`` once closed and drained, or None
        when nothing arrives within ``timeout``."""
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout)
            if not self._items:
                return END if self._closed else None
            if self.take == "newest":
                if self.carry is not None:
                    for gone, successor in zip(self._items, list(self._items)[1:], strict=False):
                        self.carry(gone, successor)
                item = self._items.pop()
                self.dropped += len(self._items)
                self._items.clear()
            else:
                item = self._items.popleft()
            self._cond.notify_all()
            return item

    def clear(self) -> int:
        """Discard everything waiting (counted as dropped); returns how many."""
        with self._cond:
            n = len(self._items)
            self._items.clear()
            self.dropped += n
            self._cond.notify_all()
            return n

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
