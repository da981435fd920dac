"""Who gets the call: the available agents of one queue, kept sorted by the queue's
strategy, and the pick itself.

Every queue keeps its available agents (ready, phone free) in a sorted list whose key
is the strategy's measure. Keys only depend on figures that change while the agent is
*not* available (talk time, number of calls, idle clock), so an agent's key is computed
when it enters the index and never goes stale. Picking walks a list from the front and
stops at the first agent who fits the caller: that one ranks best.

Every index also keeps, per skill, the available agents having that skill, sorted by
the same keys (the very same key objects), with each one's level of the skill in a
parallel list. An agent who fits a caller has every required skill (queue's and
call's) at the required level or more (a relaxed requirement still means level 1 or
more), so the skill list of any requirement holds every fitting agent in rank order.
A caller with requirements is served from the list of the *rarest* skill among them
(the one the fewest members have; the main list if most members have it, as its front
then usually fits): levels below the requirement are skipped without looking at the
agent, and in practice the first agent at the level fits. A call with a skill of its
own (a language few agents speak) thus costs about what a plain call costs, however
many agents the queue has; the worst case is one step per agent having that skill.

The sorted lists are plain Python lists kept sorted with ``bisect`` (an insert is a
``memmove``: cheaper than a ``SortedList`` at the size of a queue). Removal is lazy: an
agent leaving the index only leaves ``_keys``; its key stays in the lists as a
*tombstone* (live iff ``_keys[id] is key``), skipped by the walks and dropped when
found at the front. The main list is swept once its tombstones outnumber the live
keys; a skill list is swept by an insertion that finds it twice as long as after its
last sweep (both amortised O(1) per removal; a bisect over a few hundred tuples
scattered in memory costs microseconds, and an agent picked for a call leaves all its
queues). An agent coming back revives its own tombstone if its key is unchanged. The
random strategy removes from the main list at once: its pick draws list positions.
The price of lazy removal: an agent's old keys stay alive until their lists are swept,
which gives the cyclic garbage collector's young generation more to count.

Ties are broken the same way in every strategy: longest idle first (earliest
``idle_since``), then the agent's position in the queue's member order
(``AcdConfig.queue_members``), which is unique.

Strategies:
- first_available: member order only (no idle tie-break: the order is the strategy).
- round_robin: member order, starting after the member rung last in this queue (the
  walks go round the list from there).
- ring_all: every available eligible agent at once.
- longest_idle: earliest ``idle_since`` (the moment the agent last became ready, or, after
  a call, the moment its phone was free of that call, if later).
- highest_average_idle: highest mean of completed idle periods (ready until answering);
  agents who never answered yet rank first.
- least_talk_time / least_average_talk_time / fewest_calls: lowest figure since start.
- best_skill: highest *sum* of the agent's levels over the required skills (queue's
  and call's); a missing skill counts 0 (and makes the agent ineligible anyway). The
  key holds the sum over the queue's skills. The lists of the other skills (which only
  calls bring) are ranked by the key with the agent's level of that skill added, so a
  call with one such skill is served by the same walk as the other strategies; a call
  with several is scored over every candidate.
- random: uniform among the available eligible agents, from the injected ``rng``.

``pick`` may also be given *pending* agents: available agents the engine has not put
in the index yet (it inserts an agent who frees up only if no caller takes them in the
same step, see scheduler.py). Every strategy weighs them as if they were in the index:
the ranking ones compare the best pending agent with the index's best, ring_all and
random merge their keys into the sorted list they draw from (so the draws, and the
decision, are the same as after an insertion).
"""

from __future__ import annotations

import random
from array import array
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .model import QueueConfig, Strategy
from .runtime import AgentRt, CallerRt

IndexKey = tuple[float, float, int, str]
Eligible = Callable[[AgentRt], bool]

_RANDOM_TRIES = 8
# tombstones allowed beyond the number of live keys before a sweep of the main list
_SWEEP_SLACK = 64
# a skill list is swept when an insertion finds it twice as long as after its last
# sweep, and never below this length
_SKILL_MIN_CAP = 8
_NO_MERGE = frozenset({Strategy.RING_ALL, Strategy.RANDOM})
Needs = tuple[tuple[str, int], ...]
Rank = tuple[Any, ...]  # round robin: (cyclic distance,); best_skill with a call skill:
# (-total score, idle since, member position, id); the others: the key


def _discard(lst: list[IndexKey], k: IndexKey) -> None:
    i = bisect_left(lst, k)
    if i < len(lst) and lst[i] == k:
        del lst[i]


def _dead_prefix(lst: list[IndexKey], live: dict[str, IndexKey]) -> int:
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
        keep = [i for i, k in enumerate(self.keys) if live.get(k[3]) is k]
        keys, levels, ranks, firsts = self.keys, self.levels, self.ranks, self.firsts
        self.keys = [keys[i] for i in keep]
        self.levels = [levels[i] for i in keep]
        self.firsts = array("d", [firsts[i] for i in keep])
        if ranks is not None:
            self.ranks = [ranks[i] for i in keep]
        self.cap = max(_SKILL_MIN_CAP, 2 * len(keep))

    def drop_dead_front(self, live: dict[str, IndexKey]) -> None:
        keys = self.keys
        i = _dead_prefix(keys, live)
        if i:
            del keys[:i]
            del self.levels[:i]
            del self.firsts[:i]
            if self.ranks is not None:
                del self.ranks[:i]


class ReadyIndex:
    """The available agents of one queue in strategy order."""

    def __init__(
        self,
        queue: QueueConfig,
        member_pos: dict[str, int],
        member_skills: Mapping[str, Mapping[str, int]] | None = None,
    ) -> None:
        """``member_skills`` (member -> skills), when given, tells which skills are
        common (see SkillList); without it every skill list is kept and members are
        counted as they are first indexed."""
        self.queue = queue
        self.strategy = queue.strategy
        self.member_pos = member_pos
        self._skill_members: Counter[str] | None = None
        if member_skills is not None:
            self._skill_members = Counter(n for sk in member_skills.values() for n in sk)
        self._sl: list[IndexKey] = []  # sorted; may hold tombstones (see above)
        self._keys: dict[str, IndexKey] = {}  # the live keys
        self._dead = 0  # tombstones in _sl
        self._lazy = self.strategy != Strategy.RANDOM
        self._key: Callable[[AgentRt, int], IndexKey] = {
            Strategy.FIRST_AVAILABLE: self._key_member,
            Strategy.ROUND_ROBIN: self._key_member,
            Strategy.HIGHEST_AVERAGE_IDLE: self._key_avg_idle,
            Strategy.LEAST_TALK_TIME: self._key_talk,
            Strategy.LEAST_AVERAGE_TALK_TIME: self._key_avg_talk,
            Strategy.FEWEST_CALLS: self._key_calls,
            Strategy.BEST_SKILL: self._key_skill,
        }.get(self.strategy, self._key_idle)
        self._skill_names = tuple(sorted(queue.required_skills))
        self._skill_set = frozenset(queue.required_skills)
        self._skills: dict[str, SkillList] = {}
        # agent -> its skill lists and its level of each (made once)
        self._groups: dict[str, tuple[tuple[SkillList, int], ...]] = {}
        # the queue's own requirements (level 1 at least), and the agents who do not
        # meet them all before any relax step (and how many of those are indexed)
        self._queue_needs = {n: max(1, lvl) for n, lvl in queue.required_skills.items()}
        self._weak: set[str] = set()
        self._weak_live = 0
        self.last_rung: int = -1  # round robin memory: member position

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, agent_id: str) -> bool:
        return agent_id in self._keys

    def key(self, a: AgentRt) -> IndexKey:
        return self._key(a, self.member_pos[a.id])

    # the keys, one method per strategy (``_key`` is chosen once)

    def _key_member(self, a: AgentRt, pos: int) -> IndexKey:  # first_available, round_robin
        return (float(pos), 0.0, pos, a.id)

    def _key_avg_idle(self, a: AgentRt, pos: int) -> IndexKey:
        avg = a.avg_idle
        return (-avg if avg is not None else float("-inf"), a.idle_since, pos, a.id)

    def _key_talk(self, a: AgentRt, pos: int) -> IndexKey:
        return (a.talk_total, a.idle_since, pos, a.id)

    def _key_avg_talk(self, a: AgentRt, pos: int) -> IndexKey:
        return (a.avg_talk, a.idle_since, pos, a.id)

    def _key_calls(self, a: AgentRt, pos: int) -> IndexKey:
        return (float(a.calls), a.idle_since, pos, a.id)

    def _key_skill(self, a: AgentRt, pos: int) -> IndexKey:
        skills = a.cfg.skills
        score = sum(skills.get(n, 0) for n in self._skill_names)
        return (float(-score), a.idle_since, pos, a.id)

    def _key_idle(self, a: AgentRt, pos: int) -> IndexKey:  # longest_idle, ring_all, random
        return (a.idle_since, 0.0, pos, a.id)

    def _groups_of(self, a: AgentRt) -> tuple[tuple[SkillList, int], ...]:
        """The skill lists ``a`` belongs to, with its levels (made once)."""
        groups = self._groups.get(a.id)
        if groups is None:
            out: list[tuple[SkillList, int]] = []
            skills = a.cfg.skills
            counts = self._skill_members
            for name, level in skills.items():
                sk = self._skills.get(name)
                if sk is None:
                    ranked = self.strategy == Strategy.BEST_SKILL and name not in self._skill_set
                    if counts is None:
                        sk = SkillList(ranked)
                    else:
                        n = counts[name]
                        common = not ranked and 2 * n > len(self.member_pos)
                        sk = SkillList(ranked, n, common)
                    self._skills[name] = sk
                if counts is None:
                    sk.members += 1
                if not sk.common:
                    out.append((sk, level))
            groups = self._groups[a.id] = tuple(out)
            if any(skills.get(n, 0) < lvl for n, lvl in self._queue_needs.items()):
                self._weak.add(a.id)
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
        keys = self._keys
        keys[aid] = k
        groups = self._groups_of(a)
        if aid in self._weak:
            self._weak_live += 1
        x = k[0]
        for sk, level in groups:
            if len(sk.keys) >= sk.cap:
                sk.sweep(keys)
            firsts = sk.firsts
            if sk.ranks is None and (not firsts or firsts[-1] < x):  # SkillList.insert,
                sk.keys.append(k)  # its usual case inlined: the last (idle order)
                sk.levels.append(level)
                firsts.append(x)
            else:
                sk.insert(k, level)

    def remove(self, a: AgentRt) -> None:
        aid = a.id
        k = self._keys.pop(aid, None)
        if k is None:
            return
        if aid in self._weak:
            self._weak_live -= 1
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
            i = _dead_prefix(sl, self._keys)
            if i:
                del sl[:i]
                self._dead -= i
        return sl

    def agent_ids(self) -> list[str]:
        keys = self._keys
        return [k[3] for k in self._sl if keys.get(k[3]) is k]

    # ------------------------------------------------------------------ picking

    def _rarest(self, needs: Needs) -> tuple[SkillList, int, str] | None:
        """The list of the skill of ``needs`` the fewest members have, the level needed
        of it and its name; None when no indexed agent ever had one of the skills."""
        rarest: SkillList | None = None
        rarest_need = 0
        rarest_name = ""
        skills = self._skills
        for name, need in needs:
            sk = skills.get(name)
            if sk is None:
                return None
            if rarest is None or sk.members < rarest.members:
                rarest, rarest_need, rarest_name = sk, need, name
        return None if rarest is None else (rarest, rarest_need, rarest_name)

    def _meets_queue(self, needs: Needs, name: str) -> bool:
        """Whether every indexed agent meets ``needs`` but perhaps the one on ``name``:
        nobody indexed falls short of the queue's own requirements, and those of
        ``needs`` ask no more than them."""
        if self._weak_live:
            return False
        queue_needs = self._queue_needs
        for n, need in needs:
            if n != name and need > queue_needs.get(n, 0):
                return False
        return True

    def _fitting_keys(self, agents: dict[str, AgentRt], needs: Needs) -> list[IndexKey]:
        """The keys of every indexed agent meeting ``needs``, in key order."""
        keys = self._keys
        if not keys:
            return []
        if not needs:
            return [k for k in self._sl if keys.get(k[3]) is k]
        rarest = self._rarest(needs)
        if rarest is None:
            return []
        sk, need, name = rarest
        if sk.common:
            return [k for k in self._sl if keys.get(k[3]) is k and self._fits(agents, k, needs)]
        self._trim(sk)
        if self._meets_queue(needs, name):  # the level is all there is to check
            return [
                k
                for k, lvl in zip(sk.keys, sk.levels, strict=True)
                if lvl >= need and keys.get(k[3]) is k
            ]
        out = []
        for k, lvl in zip(sk.keys, sk.levels, strict=True):
            if lvl < need or keys.get(k[3]) is not k:
                continue
            skills = agents[k[3]].cfg.skills  # eligible(), inlined
            for n, nd in needs:
                if skills.get(n, 0) < nd:
                    break
            else:
                out.append(k)
        return out

    @staticmethod
    def _fits(agents: dict[str, AgentRt], k: IndexKey, needs: Needs) -> bool:
        skills = agents[k[3]].cfg.skills
        for name, need in needs:
            if skills.get(name, 0) < need:
                return False
        return True

    def _trim(self, sk: SkillList) -> None:
        """Before a walk of the whole of ``sk``: sweep it if it has grown to twice the
        number of agents indexed (it may be mostly tombstones: agents left, none came)."""
        if len(sk.keys) > 2 * len(self._keys) + _SKILL_MIN_CAP:
            sk.sweep(self._keys)

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
        inline here): [] when nobody available fits. ``pending``: available agents of
        this queue not in the index yet, weighed as if they were."""
        s = self.strategy
        if s in _NO_MERGE:
            return self._pick_all(caller, agents, eligible, rng, needs, pending)
        if s == Strategy.BEST_SKILL and caller.skills:
            extra = [n for n in caller.skills if n not in self._skill_set]
            if extra:
                return self._best_skill(caller, agents, eligible, needs, extra, pending)
        rr = s == Strategy.ROUND_ROBIN
        n_members = len(self.member_pos)
        first = self.last_rung + 1
        # the best pending agent: its rank (cyclic distance for round robin, else key)
        p_rank: Rank | None = None
        p_id: str | None = None
        for a in pending:
            pos = self.member_pos[a.id]
            r: Rank = ((pos - first) % n_members,) if rr else self._key(a, pos)
            if p_rank is not None and r >= p_rank:
                continue
            skills = a.cfg.skills  # eligible(), inlined
            for name, nd in needs:
                if skills.get(name, 0) < nd:
                    break
            else:
                p_rank, p_id = r, a.id
        fallback = [p_id] if p_id is not None else []
        keys = self._keys
        if not keys:
            return fallback
        # walk, in rank order, the list of the rarest requirement, or the main list if
        # there is none or most members have it (then its front usually fits)
        levels: list[int] | None = None
        need = 0
        lst = self._live_front()
        if needs:
            rarest = self._rarest(needs)
            if rarest is None:
                return fallback
            sk, need, _name = rarest
            if not sk.common and 2 * sk.members <= n_members:
                if not rr:
                    sk.drop_dead_front(keys)
                lst, levels = sk.keys, sk.levels
        m = len(lst)
        start = bisect_left(lst, (float(first),)) if rr and m else 0
        for j in range(m):
            i = start + j
            if i >= m:
                i -= m  # round robin: round the list from ``start``
            if levels is not None and levels[i] < need:
                continue
            k = lst[i]
            if keys.get(k[3]) is not k:
                continue  # a tombstone
            if p_rank is not None:
                r = ((k[2] - first) % n_members,) if rr else k
                if r >= p_rank:
                    return fallback
            skills = agents[k[3]].cfg.skills  # eligible(), inlined
            for name, nd in needs:
                if skills.get(name, 0) < nd:
                    break
            else:
                return [k[3]]
        return fallback

    def _pending_keys(self, pending: Sequence[AgentRt], eligible: Eligible) -> list[IndexKey]:
        return [self.key(a) for a in pending if eligible(a)]

    def _pick_all(
        self,
        caller: CallerRt,
        agents: dict[str, AgentRt],
        eligible: Eligible,
        rng: random.Random,
        needs: Needs,
        pending: Sequence[AgentRt],
    ) -> list[str]:
        """ring_all, random: they look at every fitting agent (random without call
        skills first tries a few at random)."""
        s = self.strategy
        if not self._keys and not pending:
            return []
        if s == Strategy.RANDOM and not caller.skills:
            picked = self._random_tries(agents, eligible, rng, pending)
            if picked is not None:
                return [picked]
        fits = self._fitting_keys(agents, needs)
        if pending:
            fits += self._pending_keys(pending, eligible)
            fits.sort()
        if not fits:
            return []
        if s == Strategy.RING_ALL:
            return [k[3] for k in fits]
        return [fits[rng.randrange(len(fits))][3]]  # random

    def _random_tries(
        self,
        agents: dict[str, AgentRt],
        eligible: Eligible,
        rng: random.Random,
        pending: Sequence[AgentRt],
    ) -> str | None:
        """Up to ``_RANDOM_TRIES`` uniform draws among the positions of the sorted list
        (no tombstones under random) with the pending agents' keys merged in."""
        sl = self._sl
        n = len(sl)
        if not pending:
            for _ in range(_RANDOM_TRIES):
                aid = sl[rng.randrange(n)][3]
                if eligible(agents[aid]):
                    return aid
            return None
        if len(pending) == 1:  # the usual case: the agent who just freed up
            pk = self.key(pending[0])
            at_p = bisect_left(sl, pk)
            for _ in range(_RANDOM_TRIES):
                i = rng.randrange(n + 1)
                drawn = pk if i == at_p else sl[i if i < at_p else i - 1]
                if eligible(agents[drawn[3]]):
                    return drawn[3]
            return None
        merged = sorted(self.key(a) for a in pending)
        # where each pending key would sit in the list after its insertion
        at = [bisect_left(sl, k) + j for j, k in enumerate(merged)]
        for _ in range(_RANDOM_TRIES):
            i = rng.randrange(n + len(merged))
            before = 0  # pending keys before position i
            k: IndexKey | None = None
            for j, p in enumerate(at):
                if p == i:
                    k = merged[j]
                    break
                if p > i:
                    break
                before = j + 1
            if k is None:
                k = sl[i - before]
            if eligible(agents[k[3]]):
                return k[3]
        return None

    def _best_skill(
        self,
        caller: CallerRt,
        agents: dict[str, AgentRt],
        eligible: Eligible,
        needs: Needs,
        extra: list[str],
        pending: Sequence[AgentRt],
    ) -> list[str]:
        """best_skill for a call with skills beyond the queue's (``extra``): the fitting
        agent with the highest sum of levels over the queue's and the call's skills
        (ties: longest idle, member order). The rank is unique (member position)."""
        names = tuple(set(self._skill_names) | set(caller.skills))
        keys = self._keys
        best: Rank | None = None
        for a in pending:
            sk = a.cfg.skills
            score = 0
            for n in names:
                score += sk.get(n, 0)
            r = (-float(score), a.idle_since, self.member_pos[a.id], a.id)
            if (best is None or r < best) and eligible(a):
                best = r
        sl = self._skills.get(extra[0])
        if len(extra) == 1 and sl is not None and sl.ranks is not None and keys:
            # one skill beyond the queue's: its list is ranked by the whole score, the
            # first fitting agent there is the index's best
            self._trim(sl)
            sl.drop_dead_front(keys)
            ranks, levels = sl.ranks, sl.levels
            need = dict(needs).get(extra[0], 1)
            for i, k in enumerate(sl.keys):
                if levels[i] < need or keys.get(k[3]) is not k:
                    continue
                r = ranks[i]
                if best is not None and r >= best:
                    break
                skills = agents[k[3]].cfg.skills  # eligible(), inlined
                for n, nd in needs:
                    if skills.get(n, 0) < nd:
                        break
                else:
                    best = r
                    break
            return [] if best is None else [best[3]]
        rarest = self._rarest(needs) if keys else None
        if rarest is not None:
            sl, need, _name = rarest
            self._trim(sl)
            pool = (
                zip(sl.keys, sl.levels, strict=True)
                if not sl.common
                else ((k, need) for k in self._sl)  # the main list: levels checked below
            )
            for k, level in pool:
                aid = k[3]
                if level < need or keys.get(aid) is not k:
                    continue
                a = agents[aid]
                sk = a.cfg.skills
                score = 0
                for n in names:
                    score += sk.get(n, 0)
                r = (-float(score), a.idle_since, k[2], aid)
                if (best is None or r < best) and eligible(a):
                    best = r
        return [] if best is None else [best[3]]
