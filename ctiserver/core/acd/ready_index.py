"""The ready index: one queue's available agents kept sorted by its strategy, and the pick.

Keys never go stale inside the index (they only depend on figures that change while
the agent is out of it), removal is lazy (tombstones), and a caller with skill
requirements is served from the list of its rarest skill (skill_lists.py). The
design and every strategy's order are written down in docs/acd.md.
"""

from __future__ import annotations

import random
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from .model import QueueConfig, Strategy
from .skill_lists import IndexKey, Rank, SkillList, dead_prefix, discard
from .skills import Needs, fits

if TYPE_CHECKING:
    from .runtime import AgentRt, CallerRt

Eligible = Callable[["AgentRt"], bool]

_RANDOM_TRIES = 8
# tombstones allowed beyond the number of live keys before a sweep of the main list
_SWEEP_SLACK = 64
_NO_MERGE = frozenset({Strategy.RING_ALL, Strategy.RANDOM})


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
        # the strategy's branches of ``pick``, told once (an enum member's lookup and
        # comparison at every pick cost more than the rest of a short pick's start)
        self._merge = self.strategy not in _NO_MERGE
        self._best_skill_calls = self.strategy == Strategy.BEST_SKILL
        self._rr = self.strategy == Strategy.ROUND_ROBIN
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
            if not fits(skills, tuple(self._queue_needs.items())):
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
            discard(self._sl, k)
            return
        self._dead += 1
        if self._dead > len(self._keys) + _SWEEP_SLACK:
            keys = self._keys
            # in place, as SkillList.sweep does
            self._sl[:] = [k for k in self._sl if keys.get(k[3]) is k]
            self._dead = 0

    def _live_front(self) -> list[IndexKey]:
        """``_sl`` with the tombstones at its front dropped."""
        sl = self._sl
        if self._dead:
            i = dead_prefix(sl, self._keys)
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
            return [
                k for k in self._sl if keys.get(k[3]) is k and fits(agents[k[3]].cfg.skills, needs)
            ]
        sk.trim(self._keys)
        if self._meets_queue(needs, name):  # the level is all there is to check
            return [
                k
                for k, lvl in zip(sk.keys, sk.levels, strict=True)
                if lvl >= need and keys.get(k[3]) is k
            ]
        return [
            k
            for k, lvl in zip(sk.keys, sk.levels, strict=True)
            if lvl >= need and keys.get(k[3]) is k and fits(agents[k[3]].cfg.skills, needs)
        ]

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
        ``needs`` (``eligible(a)``: ``a`` meets every one of them, the same test as
        ``skills.fits``): [] when nobody available fits. ``pending``: available agents of
        this queue not in the index yet, weighed as if they were."""
        if not self._merge:
            return self._pick_all(caller, agents, eligible, rng, needs, pending)
        if self._best_skill_calls and caller.skills:
            extra = [n for n in caller.skills if n not in self._skill_set]
            if extra:
                return self._best_skill(caller, agents, eligible, needs, extra, pending)
        rr = self._rr
        n_members = len(self.member_pos)
        first = self.last_rung + 1
        # the best pending agent: its rank (cyclic distance for round robin, else key)
        p_rank: Rank | None = None
        p_id: str | None = None
        for a in pending:
            pos = self.member_pos[a.id]
            r: Rank = ((pos - first) % n_members,) if rr else self._key(a, pos)
            if (p_rank is None or r < p_rank) and fits(a.cfg.skills, needs):
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
            skills = agents[k[3]].cfg.skills  # fits(), inlined
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
            sl.trim(keys)
            sl.drop_dead_front(keys)
            ranks, levels = sl.ranks, sl.levels
            need = dict(needs).get(extra[0], 1)
            for i, k in enumerate(sl.keys):
                if levels[i] < need or keys.get(k[3]) is not k:
                    continue
                r = ranks[i]
                if best is not None and r >= best:
                    break
                if fits(agents[k[3]].cfg.skills, needs):
                    best = r
                    break
            return [] if best is None else [best[3]]
        rarest = self._rarest(needs) if keys else None
        if rarest is not None:
            sl, need, _name = rarest
            sl.trim(keys)
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
