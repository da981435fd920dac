"""Who gets the call: the available agents of one queue, kept sorted by the queue's
strategy, and the pick itself.

Every queue keeps its available agents (ready, phone free) in a sorted list whose key
is the strategy's measure. Keys only depend on figures that change while the agent is
*not* available (talk time, number of calls, idle clock), so an agent's key is computed
when it enters the index and never goes stale. Picking is then a walk from the front
of the list that stops at the first agent whose skills fit the caller (usually the
first one).

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


class ReadyIndex:
    """The available agents of one queue in strategy order."""

    def __init__(self, queue: QueueConfig, member_pos: dict[str, int]) -> None:
        self.queue = queue
        self.strategy = queue.strategy
        self.member_pos = member_pos
        self._sl = SortedList()
        self._keys: dict[str, IndexKey] = {}
        self._skill_names = tuple(sorted(queue.required_skills))
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

    def remove(self, agent_id: str) -> None:
        k = self._keys.pop(agent_id, None)
        if k is not None:
            self._sl.remove(k)

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
        if s == Strategy.BEST_SKILL and caller.skills:
            return self._best_skill_with_call_skills(caller, agents, eligible)
        for k in sl:
            if eligible(agents[k[3]]):
                return [k[3]]
        return []

    def _best_skill_with_call_skills(
        self, caller: CallerRt, agents: dict[str, AgentRt], eligible: Eligible
    ) -> list[str]:
        # The index is sorted by the queue-skill score; the call's own skills can add at
        # most 10 per extra skill, so stop once nobody further down can catch up.
        extra = tuple(n for n in caller.skills if n not in self.queue.required_skills)
        headroom = 10 * len(extra)
        best: tuple[float, float, int, str] | None = None
        for k in self._sl:
            qscore = -k[0]
            if best is not None and qscore + headroom < -best[0]:
                break
            a = agents[k[3]]
            if not eligible(a):
                continue
            score = qscore + sum(a.cfg.skills.get(n, 0) for n in extra)
            cand = (-score, k[1], k[2], k[3])
            if best is None or cand < best:
                best = cand
        return [best[3]] if best is not None else []
