"""The callers of one queue: their line (positions) and the lists agents pick from
(how the lists keep an agent's pick cheap: ``QueueLine``'s docstring)."""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from sortedcontainers import SortedList

if TYPE_CHECKING:
    from .runtime import CallerRt

ClassKey = tuple[int, tuple[tuple[str, int], ...]]
LineKey = tuple[int, float, int, str]
ClassEntry = tuple[float, int, str]


class QueueLine:
    """``line`` holds every caller of the queue who is not yet answered (waiting, reserved
    for a preferred agent, or ringing), in service order: higher priority first, then
    earlier arrival, then join order. A caller's position is its rank in ``line``.

    For the agent's side of the decision, the callers that any eligible agent may take
    (status WAITING) are also split into *classes*: same effective priority and same
    skill requirements. Inside a class the callers are in arrival order, and because
    skill requirements only relax with waiting time (the queue's steps apply to all of
    them alike), the head of a class is its most relaxed caller: if the head does not fit
    an agent, nobody in the class does. So an agent who frees up only looks at the head
    of each class of each of its queues: the cost is the number of classes, not of
    callers.

    The class heads are further filed by *tag*: ``None`` for classes that need no skill
    beyond the queue's own, else the first skill (by name) the class needs beyond them.
    An agent lacking that skill cannot fit the class, so an agent only walks the heads
    filed under ``None`` and under the skills it has: classes stuck on skills it lacks
    are never looked at.
    """

    def __init__(self, queue_skills: Iterable[str] = ()) -> None:
        self.line = SortedList()
        self.classes: dict[ClassKey, list[ClassEntry]] = {}  # each sorted by arrival
        # the head of every class, in service order: (-priority, arrival, seq, call_id),
        # filed by tag (see above)
        self.heads: dict[str | None, list[LineKey]] = {}
        self._queue_skills = frozenset(queue_skills)

    def tag(self, req: tuple[tuple[str, int], ...]) -> str | None:
        qs = self._queue_skills
        for name, _lvl in req:
            if name not in qs:
                return name
        return None

    def __len__(self) -> int:
        return len(self.line)

    @staticmethod
    def _line_key(c: CallerRt) -> LineKey:
        return (-c.priority, c.arrival, c.seq, c.call_id)

    def join(self, c: CallerRt) -> None:
        self.line.add(self._line_key(c))

    def leave(self, c: CallerRt) -> None:
        self.line.discard(self._line_key(c))

    def position(self, c: CallerRt) -> int:
        return int(self.line.bisect_left(self._line_key(c))) + 1

    def call_ids(self) -> Iterator[str]:
        for k in self.line:
            yield k[3]

    # ---------------------------------------------------- pickable (WAITING) callers

    def add_pickable(self, c: CallerRt) -> None:
        ck: ClassKey = (c.priority, c.req)
        entry = (c.arrival, c.seq, c.call_id)
        lst = self.classes.get(ck)
        if lst is None:
            self.classes[ck] = [entry]
        elif entry < lst[0]:
            self._drop_head(ck, lst[0])
            lst.insert(0, entry)
        else:
            insort(lst, entry)
            return
        self._add_head(ck, entry)

    def remove_pickable(self, c: CallerRt) -> None:
        ck: ClassKey = (c.priority, c.req)
        lst = self.classes.get(ck)
        if lst is None:
            return
        entry = (c.arrival, c.seq, c.call_id)
        # usually the head: an agent is offered the head of a class (no bisect through
        # the class's entries, each a tuple elsewhere in memory)
        i = 0 if lst and lst[0] == entry else bisect_left(lst, entry)
        if i == len(lst) or lst[i] != entry:
            return
        del lst[i]
        if i == 0:
            if lst:
                self._replace_head(ck, entry, lst[0])
            else:
                self._drop_head(ck, entry)
                del self.classes[ck]

    def _add_head(self, ck: ClassKey, entry: ClassEntry) -> None:
        tag = self.tag(ck[1])
        heads = self.heads.get(tag)
        key = (-ck[0], *entry)
        if heads is None:
            self.heads[tag] = [key]
        else:
            insort(heads, key)

    def _replace_head(self, ck: ClassKey, old: ClassEntry, new: ClassEntry) -> None:
        """The class's head ``old`` left, ``new`` is its head now (same tag)."""
        tag = self.tag(ck[1])
        heads = self.heads.get(tag)
        if heads is None:
            self.heads[tag] = [(-ck[0], *new)]
            return
        key = (-ck[0], *old)
        i = bisect_left(heads, key)
        if i < len(heads) and heads[i] == key:
            del heads[i]
        insort(heads, (-ck[0], *new))

    def _drop_head(self, ck: ClassKey, entry: ClassEntry) -> None:
        tag = self.tag(ck[1])
        heads = self.heads.get(tag)
        if heads is None:
            return
        key = (-ck[0], *entry)
        i = bisect_left(heads, key)
        if i < len(heads) and heads[i] == key:
            del heads[i]
            if not heads:
                del self.heads[tag]
