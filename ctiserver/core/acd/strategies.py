"""Who gets the call: the available agents of one queue, kept sorted by the queue's
strategy, and the pick itself.

Every queue keeps its available agents (ready, phone free) in a sorted list whose key
is the strategy's measure. Keys only depend on figures that change while the agent is
*not* available (talk time, number of calls, idle clock), so an agent's key is computed
when it enters the index and never goes stale. Picking is then a walk from the front
of the list that stops at the first agent whose skills fit the caller (usually the
first one).

A call with skills of its own would make that walk long when few agents have them, so
each index also keeps, per skill, the set of available agents having it; when that
group is small (size^2 <= queue size), or the strategy must see every fitting agent
anyway (ring_all, random, best_skill), only the smallest group is examined.

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
"""

from __future__ import annotations

import random
from collections.abc import Callable

from sortedcontainers import SortedList

from .model import QueueConfig, Strategy
from .runtime import AgentRt, CallerRt

IndexKey = tuple[float, float, int, str]
Eligible = Callable[[AgentRt], bool]

_RANDOM_TRIES = 8
# with call skills these look at every fitting agent anyway: use the smallest group
_GROUP_ALWAYS = frozenset({Strategy.BEST_SKILL, Strategy.RING_ALL, Strategy.RANDOM})


class ReadyIndex:
    """The available agents of one queue in strategy order."""

    def __init__(self, queue: QueueConfig, member_pos: dict[str, int]) -> None:
        self.queue = queue
        self.strategy = queue.strategy
        self.member_pos = member_pos
        self._sl = SortedList()
        self._keys: dict[str, IndexKey] = {}
        self._skill_names = tuple(sorted(queue.required_skills))
        self._by_skill: dict[str, set[str]] = {}  # skill -> available agents having it
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

    def add(self, a: AgentRt) -> None:
        k = self.key(a)
        self._keys[a.id] = k
        self._sl.add(k)
        by_skill = self._by_skill
        for name in a.cfg.skills:
            group = by_skill.get(name)
            if group is None:
                by_skill[name] = {a.id}
            else:
                group.add(a.id)

    def remove(self, a: AgentRt) -> None:
        k = self._keys.pop(a.id, None)
        if k is not None:
            self._sl.remove(k)
            by_skill = self._by_skill
            for name in a.cfg.skills:
                by_skill[name].discard(a.id)

    def agent_ids(self) -> list[str]:
        return [k[3] for k in self._sl]

    # ------------------------------------------------------------------ picking

    def pick(
        self,
        caller: CallerRt,
        agents: dict[str, AgentRt],
        eligible: Eligible,
        rng: random.Random,
    ) -> list[str]:
        """The agent(s) to ring for ``caller``: [] when nobody available fits."""
        s = self.strategy
        sl = self._sl
        if not sl:
            return []
        if caller.skills:
            # The call needs skills of its own: if few available agents have the rarest
            # of them, look at those only instead of walking the whole queue.
            group = min(
                (self._by_skill.get(n, set()) for n in caller.skills), key=len, default=None
            )
            if group is not None and (s in _GROUP_ALWAYS or len(group) * len(group) <= len(sl)):
                return self._pick_in_group(caller, group, agents, eligible, rng)
        if s == Strategy.RING_ALL:
            return [k[3] for k in sl if eligible(agents[k[3]])]
        if s == Strategy.ROUND_ROBIN:
            start = sl.bisect_left((float(self.last_rung + 1),))
            n = len(sl)
            for i in range(n):
                aid: str = sl[(start + i) % n][3]
                if eligible(agents[aid]):
                    return [aid]
            return []
        if s == Strategy.RANDOM:
            n = len(sl)
            for _ in range(_RANDOM_TRIES):
                aid = sl[rng.randrange(n)][3]
                if eligible(agents[aid]):
                    return [aid]
            fits = [k[3] for k in sl if eligible(agents[k[3]])]
            return [fits[rng.randrange(len(fits))]] if fits else []
        for k in sl:
            if eligible(agents[k[3]]):
                return [k[3]]
        return []

    def _pick_in_group(
        self,
        caller: CallerRt,
        group: set[str],
        agents: dict[str, AgentRt],
        eligible: Eligible,
        rng: random.Random,
    ) -> list[str]:
        fits = sorted(self._keys[aid] for aid in group if eligible(agents[aid]))
        if not fits:
            return []
        s = self.strategy
        if s == Strategy.RING_ALL:
            return [k[3] for k in fits]
        if s == Strategy.RANDOM:
            return [fits[rng.randrange(len(fits))][3]]
        if s == Strategy.ROUND_ROBIN:
            n = len(self.member_pos)
            start = self.last_rung + 1
            return [min(fits, key=lambda k: (k[2] - start) % n)[3]]
        if s == Strategy.BEST_SKILL:
            names = set(self._skill_names) | set(caller.skills)

            def score(k: IndexKey) -> tuple[float, float, int, str]:
                sk = agents[k[3]].cfg.skills
                return (
                    -float(sum(sk.get(n, 0) for n in names)),
                    agents[k[3]].idle_since,
                    k[2],
                    k[3],
                )

            return [min(fits, key=score)[3]]
        return [fits[0][3]]
