"""Per-skill lists of a ready index (ready_index.py): the available agents of one queue
having one skill, in the index's order, with their levels. See docs/acd.md.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from typing import Any

IndexKey = tuple[float, float, int, str]  # the strategy's measure, idle since, position, id
Rank = tuple[Any, ...]  # round robin: (cyclic distance,); best_skill with a call skill:
# (-total score, idle since, member position, id); the others: the key

# a skill list is swept when an insertion finds it twice as long as after its last
# sweep, and never below this length
_SKILL_MIN_CAP = 8


def discard(lst: list[IndexKey], k: IndexKey) -> None:
    i = bisect_left(lst, k)
    if i < len(lst) and lst[i] == k:
        del lst[i]


def dead_prefix(lst: list[IndexKey], live: dict[str, IndexKey]) -> int:
    """How many keys at the front of ``lst`` are tombstones: no longer their agent's live
    key in ``live``."""
    i, n = 0, len(lst)
    while i < n and live.get(lst[i][3]) is not lst[i]:
        i += 1
    return i


class SkillList:
    """The available agents of one queue having one skill: ``keys`` in key order (may
    hold tombstones, see above), ``levels[i]`` the skill's level of ``keys[i]``'s
    agent. ``members``: agents of the queue having the skill, to find the rarest
    requirement. A skill most members have is *common*: its list is not kept (the main
    list serves, its front usually has the skill).

    Ranked lists (best_skill, a skill the queue does not require) are in the order of
    ``ranks[i]``: the key with the level added to the score, (key[0] - level, key[1],
    key[2], key[3]); the others have ``ranks`` None. They are never common.

    ``firsts[i]`` is the first element of entry i's order (key[0] or rank[0]) in a flat
    array: an insertion bisects it (a few cache lines) rather than the tuples (two
    scattered objects per step), and only compares tuples among equal first elements."""

    __slots__ = ("cap", "common", "firsts", "keys", "levels", "members", "ranks")

    def __init__(self, ranked: bool, members: int = 0, common: bool = False) -> None:
        self.keys: list[IndexKey] = []
        self.levels: list[int] = []
        self.ranks: list[Rank] | None = [] if ranked else None
        self.firsts: array[float] = array("d")
        self.cap = _SKILL_MIN_CAP
        self.members = members
        self.common = common

    def insert(self, k: IndexKey, level: int) -> None:
        """Add a live key, or make the agent's own tombstone of the same value live."""
        ranks = self.ranks
        order = k if ranks is None else (k[0] - level, k[1], k[2], k[3])
        x = order[0]
        firsts = self.firsts
        if not firsts or firsts[-1] < x:  # the last (idle order: the usual case)
            i = len(firsts)
        else:
            lo = bisect_left(firsts, x)
            hi = bisect_right(firsts, x, lo)
            seq: list[Any] = self.keys if ranks is None else ranks
            i = bisect_left(seq, order, lo, hi) if hi > lo else lo
            if i < hi and seq[i] == order:  # its own tombstone
                self.keys[i] = k
                return
        if ranks is not None:
            ranks.insert(i, order)
        self.keys.insert(i, k)
        self.levels.insert(i, level)
        firsts.insert(i, x)

    def sweep(self, live: dict[str, IndexKey]) -> None:
        """Drop the tombstones. In place: the lists stay the same (long-lived) objects,
        so a sweep leaves no new container for the garbage collector's young generation
        to walk (a new list of n keys costs a collection n visits, twice)."""
        keys, levels, ranks, firsts = self.keys, self.levels, self.ranks, self.firsts
        keep = [i for i, k in enumerate(keys) if live.get(k[3]) is k]
        keys[:] = [keys[i] for i in keep]
        levels[:] = [levels[i] for i in keep]
        firsts[:] = array("d", [firsts[i] for i in keep])
        if ranks is not None:
            ranks[:] = [ranks[i] for i in keep]
        self.cap = max(_SKILL_MIN_CAP, 2 * len(keep))

    def trim(self, live: dict[str, IndexKey]) -> None:
        """Before a walk of the whole list: sweep it if it has grown to twice the number
        of agents indexed (it may be mostly tombstones: agents left, none came)."""
        if len(self.keys) > 2 * len(live) + _SKILL_MIN_CAP:
            self.sweep(live)

    def drop_dead_front(self, live: dict[str, IndexKey]) -> None:
        keys = self.keys
        i = dead_prefix(keys, live)
        if i:
            del keys[:i]
            del self.levels[:i]
            del self.firsts[:i]
            if self.ranks is not None:
                del self.ranks[:i]
