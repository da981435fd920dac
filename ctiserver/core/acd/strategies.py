"""Who gets the call: the available agents of one queue, kept sorted by the queue's
strategy, and the pick itself.

Every queue keeps its available agents (ready, phone free) in a sorted list whose key
is the strategy's measure. Keys only depend on figures that change while the agent is
*not* available (talk time, number of calls, idle clock), so an agent's key is computed
when it enters the index and never goes stale. Picking is then a walk from the front
of the list that stops at the first agent whose skills fit the caller (usually the
first one).

Every index also keeps, per skill and level, the set of available agents having that
skill at exactly that level. An agent who fits a caller has every required skill
(queue's and call's) at the required level or more (a relaxed requirement still
means level 1 or more), so the agents at or above the level of the *rarest*
requirement are a superset of the fitting ones: the *candidates*. Picking then
chooses by their number ``c`` against the queue's ``n`` available agents:

- ``c == 0``: nobody fits, answered at once;
- ``c * c <= n``: look at the candidates only (``c`` checks, then the best by key);
- otherwise walk the sorted list, where one agent in about ``n / c`` fits, for at
  most ``c`` steps, then fall back to the candidates: never more than ``2c`` checks.

The sorted list is a plain Python list kept sorted with ``bisect`` (an insert is a
``memmove``: cheaper than a ``SortedList`` at the size of a queue); the skill sets cost
one set operation per skill of the agent. Removal from the sorted list is lazy: an
agent leaving the index only leaves ``_keys`` (and its skill sets), its key stays in
the list as a *tombstone* (live iff ``_keys[id] is key``), skipped by the walks,
dropped when found at the front, and swept out once tombstones outnumber the live
keys (amortised O(1) per removal; a bisect over a few hundred tuples scattered in
memory costs microseconds, and an agent picked for a call leaves all its queues).
The random strategy removes at once: its pick draws list positions.

Ties are broken the same way in every strategy: longest idle first (earliest
``idle_since``), then the agent's position in the queue's member order
(``AcdConfig.queue_members``), which is unique.

Strategies:
- first_available: member order only (no idle tie-break: the order is the strategy).
- round_robin: member order, starting after the member rung last in this queue.
- ring_all: every available eligible agent at once.
- longest_idle: earliest ``idle_since`` (the moment the agent last became ready).
- highest_average_idle: highest mean of completed idle periods (ready until answering);
  agents who never answered yet rank first.
- least_talk_time / least_average_talk_time / fewest_calls: lowest figure since start.
- best_skill: highest *sum* of the agent's levels over the required skills (queue's
  and call's); a missing skill counts 0 (and makes the agent ineligible anyway).
- random: uniform among the available eligible agents, from the injected ``rng``.

``pick`` may also be given *pending* agents: available agents the engine has not put
in the index yet (it inserts an agent who frees up only if no caller takes them in the
same step, see scheduler.py). For the strategies that rank by key (all but ring_all,
random, and best_skill with call skills) they are ranked against the index's best; for
the others the engine inserts them first.
"""

from __future__ import annotations

import random
from bisect import bisect_left
from collections.abc import Callable, Sequence
from typing import Any

from .model import QueueConfig, Strategy
from .runtime import AgentRt, CallerRt

IndexKey = tuple[float, float, int, str]
Eligible = Callable[[AgentRt], bool]

_RANDOM_TRIES = 8
# tombstones allowed beyond the number of live keys before a sweep of the sorted list
_SWEEP_SLACK = 64
# strategies whose pick is not "the smallest rank": pending agents are inserted first
_NO_MERGE = frozenset({Strategy.RING_ALL, Strategy.RANDOM})
Needs = tuple[tuple[str, int], ...]
Rank = tuple[Any, ...]  # round robin: (cyclic distance,); the others: the key


def _discard(lst: list[IndexKey], k: IndexKey) -> None:
    i = bisect_left(lst, k)
    if i < len(lst) and lst[i] == k:
        del lst[i]


class ReadyIndex:
    """The available agents of one queue in strategy order."""

    def __init__(self, queue: QueueConfig, member_pos: dict[str, int]) -> None:
        self.queue = queue
        self.strategy = queue.strategy
        self.member_pos = member_pos
        self._sl: list[IndexKey] = []  # sorted; may hold tombstones (see above)
        self._keys: dict[str, IndexKey] = {}  # the live keys
        self._dead = 0  # tombstones in _sl
        self._lazy = self.strategy != Strategy.RANDOM
        self._skill_names = tuple(sorted(queue.required_skills))
        # skill -> level -> available agents having the skill at that level
        self._levels: dict[str, dict[int, set[str]]] = {}
        self._groups: dict[str, tuple[set[str], ...]] = {}  # agent -> its sets above
        self.last_rung: int = -1  # round robin memory: member position

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, agent_id: str) -> bool:
        return agent_id in self._keys

    def key(self, a: AgentRt) -> IndexKey:
        pos = self.member_pos[a.id]
        s = self.strategy
        if s in (Strategy.FIRST_AVAILABLE, Strategy.ROUND_ROBIN):
            return (float(pos), 0.0, pos, a.id)
        if s == Strategy.HIGHEST_AVERAGE_IDLE:
            avg = a.avg_idle
            return (-avg if avg is not None else float("-inf"), a.idle_since, pos, a.id)
        if s == Strategy.LEAST_TALK_TIME:
            return (a.talk_total, a.idle_since, pos, a.id)
        if s == Strategy.LEAST_AVERAGE_TALK_TIME:
            return (a.avg_talk, a.idle_since, pos, a.id)
        if s == Strategy.FEWEST_CALLS:
            return (float(a.calls), a.idle_since, pos, a.id)
        if s == Strategy.BEST_SKILL:
            skills = a.cfg.skills
            score = sum(skills.get(n, 0) for n in self._skill_names)
            return (float(-score), a.idle_since, pos, a.id)
        # longest_idle, ring_all, random: idle order
        return (a.idle_since, 0.0, pos, a.id)

    def _groups_of(self, a: AgentRt) -> tuple[set[str], ...]:
        """The skill/level sets ``a`` belongs to (made once: sets are never dropped)."""
        groups = self._groups.get(a.id)
        if groups is None:
            levels = self._levels
            out: list[set[str]] = []
            for name, level in a.cfg.skills.items():
                by_level = levels.get(name)
                if by_level is None:
                    by_level = levels[name] = {}
                group = by_level.get(level)
                if group is None:
                    group = by_level[level] = set()
                out.append(group)
            groups = self._groups[a.id] = tuple(out)
        return groups

    def add(self, a: AgentRt) -> None:
        k = self.key(a)
        aid = a.id
        sl = self._sl
        i = bisect_left(sl, k)
        if i < len(sl) and sl[i] == k:  # its own tombstone (keys are unique): revive it
            k = sl[i]
            self._dead -= 1
        else:
            sl.insert(i, k)
        self._keys[aid] = k
        for group in self._groups_of(a):
            group.add(aid)

    def remove(self, a: AgentRt) -> None:
        aid = a.id
        k = self._keys.pop(aid, None)
        if k is None:
            return
        for group in self._groups[aid]:
            group.discard(aid)
        if not self._lazy:
            _discard(self._sl, k)
            return
        self._dead += 1
        if self._dead > len(self._keys) + _SWEEP_SLACK:
            keys = self._keys
            self._sl = [k for k in self._sl if keys.get(k[3]) is k]
            self._dead = 0

    def _live_front(self) -> list[IndexKey]:
        """``_sl`` with the tombstones at its front dropped."""
        sl = self._sl
        if self._dead:
            keys = self._keys
            i = 0
            n = len(sl)
            while i < n and keys.get(sl[i][3]) is not sl[i]:
                i += 1
            if i:
                del sl[:i]
                self._dead -= i
        return sl

    def agent_ids(self) -> list[str]:
        keys = self._keys
        return [k[3] for k in self._sl if keys.get(k[3]) is k]

    def can_rank(self, caller: CallerRt) -> bool:
        """Whether ``pick`` can weigh pending agents for this caller (else insert them)."""
        s = self.strategy
        return s not in _NO_MERGE and not (s == Strategy.BEST_SKILL and caller.skills)

    # ------------------------------------------------------------------ picking

    def _candidates(self, needs: Needs) -> tuple[int, list[set[str]]]:
        """The sets of agents meeting the rarest requirement, and their total size."""
        best_n = len(self._keys) + 1
        best: list[set[str]] = []
        levels = self._levels
        for name, need in needs:
            by_level = levels.get(name)
            if by_level is None:
                return 0, []
            sets = [g for lvl, g in by_level.items() if lvl >= need]
            n = sum(len(g) for g in sets)
            if n < best_n:
                best_n, best = n, sets
                if not n:
                    break
        return best_n, best

    def pick(
        self,
        caller: CallerRt,
        agents: dict[str, AgentRt],
        eligible: Eligible,
        rng: random.Random,
        needs: Needs,
        pending: Sequence[AgentRt] = (),
    ) -> list[str]:
        """The agent(s) to ring for ``caller``, whose relaxed requirements are
        ``needs`` (``eligible(a)``: ``a`` meets every one of them, a check also done
        inline here): [] when nobody available fits. ``pending``: available agents of this
        queue not in the index yet (only when ``can_rank(caller)``)."""
        s = self.strategy
        if s in _NO_MERGE or (s == Strategy.BEST_SKILL and caller.skills):
            return self._pick_all(caller, agents, eligible, rng, needs)
        rr = s == Strategy.ROUND_ROBIN
        n_members = len(self.member_pos)
        first = self.last_rung + 1
        # the best pending agent: its rank (cyclic distance for round robin, else key)
        p_rank: Rank | None = None
        p_id: str | None = None
        for a in pending:
            if rr:
                r: Rank = ((self.member_pos[a.id] - first) % n_members,)
            else:
                r = self.key(a)
            if (p_rank is None or r < p_rank) and eligible(a):
                p_rank, p_id = r, a.id
        fallback = [p_id] if p_id is not None else []
        keys = self._keys
        n = len(keys)
        if not n:
            return fallback
        sl = self._live_front()
        total = len(sl)
        # walk the live keys in rank order (from ``start``, cyclically, for round robin):
        # the first one is always looked at, then at most ``steps`` in all, ``steps``
        # being chosen (with the candidates) only if the first does not fit
        start = bisect_left(sl, (float(first),)) if rr else 0
        steps = -1
        count = n
        cands: list[set[str]] = []
        seen = 0
        for j in range(total):
            k = sl[(start + j) % total]
            if keys.get(k[3]) is not k:
                continue  # a tombstone
            if rr:
                if p_rank is not None and ((k[2] - first) % n_members,) >= p_rank:
                    return fallback
            elif p_rank is not None and k >= p_rank:
                return fallback
            if eligible(agents[k[3]]):
                return [k[3]]
            seen += 1
            if steps < 0:
                if needs:
                    count, cands = self._candidates(needs)
                    if not count:
                        return fallback
                    # few candidates: look at them only
                    steps = 0 if count * count <= n else min(n, count)
                else:
                    steps = n
            if seen >= steps:
                break
        if seen >= n:
            return fallback
        # then the candidates
        best: IndexKey | None = None
        best_rank: Rank | None = None
        for group in cands:
            for aid in group:
                k = keys[aid]
                r = ((k[2] - first) % n_members,) if rr else k
                if best_rank is not None and r >= best_rank:
                    continue
                skills = agents[aid].cfg.skills  # eligible(), inlined: meets every need
                for name, need in needs:
                    if skills.get(name, 0) < need:
                        break
                else:
                    best, best_rank = k, r
        if best is None or best_rank is None or (p_rank is not None and p_rank < best_rank):
            return fallback
        return [best[3]]

    def _pick_all(
        self,
        caller: CallerRt,
        agents: dict[str, AgentRt],
        eligible: Eligible,
        rng: random.Random,
        needs: Needs,
    ) -> list[str]:
        """ring_all, random, best_skill with call skills: they look at every fitting
        agent (random without call skills first tries a few at random)."""
        s = self.strategy
        sl = self._sl  # without tombstones under random (removed at once)
        n = len(sl)
        keys = self._keys
        if not keys:
            return []
        if s == Strategy.RANDOM and not caller.skills:
            for _ in range(_RANDOM_TRIES):
                aid = sl[rng.randrange(n)][3]
                if eligible(agents[aid]):
                    return [aid]
        if s == Strategy.BEST_SKILL:
            return self._best_skill(caller, agents, eligible, needs)
        if needs:
            _count, cands = self._candidates(needs)
            fits = sorted(keys[aid] for g in cands for aid in g if eligible(agents[aid]))
        else:
            fits = [k for k in sl if keys.get(k[3]) is k and eligible(agents[k[3]])]
        if not fits:
            return []
        if s == Strategy.RING_ALL:
            return [k[3] for k in fits]
        return [fits[rng.randrange(len(fits))][3]]  # random

    def _best_skill(
        self, caller: CallerRt, agents: dict[str, AgentRt], eligible: Eligible, needs: Needs
    ) -> list[str]:
        """best_skill with call skills: the fitting agent with the highest sum of levels
        over the queue's and the call's skills (ties: longest idle, member order). The
        rank is unique (member position), so no sorting is needed, only a minimum."""
        names = tuple(set(self._skill_names) | set(caller.skills))
        keys = self._keys
        if needs:
            pool: list[str] = [aid for g in self._candidates(needs)[1] for aid in g]
        else:
            pool = list(keys)
        best: tuple[float, float, int, str] | None = None
        for aid in pool:
            a = agents[aid]
            sk = a.cfg.skills
            score = 0
            for n in names:
                score += sk.get(n, 0)
            k = keys[aid]
            r = (-float(score), a.idle_since, k[2], aid)
            if (best is None or r < best) and eligible(a):
                best = r
        return [] if best is None else [best[3]]
