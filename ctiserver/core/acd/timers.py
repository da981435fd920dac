"""A heap of engine timers with lazy cancellation.

Each timer carries the epoch of the thing it belongs to (an agent's state, a caller's
queue stay or offer); when it fires the engine compares epochs and drops stale ones,
so nothing ever has to be removed from the heap.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator

WRAPUP_END = 0
RING_GUARD = 1
MAX_WAIT = 2
ANNOUNCE = 3
RELAX = 4
PREFERRED_END = 5
RING_BLOCK_END = 6  # an agent's busy/unavailable ring stops blocking them

Timer = tuple[float, int, int, str, int]  # due, seq, kind, target id, epoch


class Timers:
    def __init__(self) -> None:
        # earliest first; read-only outside (the engine peeks at ``heap[0]`` to skip
        # ``pop_due`` when nothing is due, the usual case)
        self.heap: list[Timer] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self.heap)

    def add(self, due: float, kind: int, target: str, epoch: int) -> None:
        self._seq += 1
        heapq.heappush(self.heap, (due, self._seq, kind, target, epoch))

    def next_due(self) -> float | None:
        return self.heap[0][0] if self.heap else None

    def pop_due(self, now: float) -> Iterator[Timer]:
        """Timers due at or before ``now``, earliest first (also those added meanwhile)."""
        heap = self.heap
        while heap and heap[0][0] <= now:
            yield heapq.heappop(heap)

    def drop_stale_head(self, live: Callable[[Timer], bool]) -> None:
        """Pop stale timers off the top, so that ``next_due`` is a real deadline."""
        heap = self.heap
        while heap and not live(heap[0]):
            heapq.heappop(heap)
