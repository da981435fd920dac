"""ACD ready index (ready_index.py) on its own: whatever tombstones the skill lists hold,
a pick gives the answer of a brute force over the available agents, and pending agents
weigh exactly as if they had been inserted first (same agent, same random draws)."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctiserver.core.acd import ready_index, skill_lists
from ctiserver.core.acd.model import AgentConfig, QueueConfig, Strategy
from ctiserver.core.acd.ready_index import ReadyIndex
from ctiserver.core.acd.runtime import AgentRt, CallerRt
from ctiserver.core.acd.states import READY

SKILLS = ("de", "en", "es", "fr", "it")
N_AGENTS = 14

skill_sets = st.dictionaries(st.sampled_from(SKILLS), st.integers(1, 10), max_size=4)
# most agents speak "en": a skill most members have (no list of its own when told)
speaks_en = st.fixed_dictionaries({"en": st.integers(1, 10)})
agent_skills = st.builds(
    lambda en, other: {**other, **en},
    st.one_of(st.just({}), speaks_en, speaks_en, speaks_en),
    skill_sets,
)
figures = st.tuples(
    st.integers(0, 50),  # idle_since
    st.integers(0, 3),  # talk_total
    st.integers(0, 3),  # calls
    st.integers(0, 4),  # idle periods
)


def make_agents(skills: list[dict[str, int]]) -> list[AgentRt]:
    agents = []
    for i, sk in enumerate(skills):
        a = AgentRt(AgentConfig(f"a{i}", f"A{i}", f"PJSIP/{i}", sk), i)
        a.state = READY
        agents.append(a)
    return agents


def set_figures(a: AgentRt, f: tuple[int, int, int, int]) -> None:
    """New figures for an agent out of the index (keys never go stale inside it)."""
    a.idle_since = float(f[0])
    a.talk_total = float(f[1])
    a.calls = f[2]
    a.idle_periods = f[3]
    a.idle_total = float(f[3] * 7 % 5)


def caller_needs(
    queue: dict[str, int], call: dict[str, int], cap: int | None
) -> tuple[tuple[str, int], ...]:
    """The engine's relaxed requirements (skills.needs_at)."""
    req = dict(queue)
    for name, level in call.items():
        req[name] = max(req.get(name, 0), level)
    return tuple(
        (name, max(1, level if cap is None or cap > level else cap))
        for name, level in sorted(req.items())
    )


def fits(a: AgentRt, needs: tuple[tuple[str, int], ...]) -> bool:
    return all(a.cfg.skills.get(name, 0) >= need for name, need in needs)


def brute_force(
    idx: ReadyIndex, pool: list[AgentRt], caller: CallerRt, needs: tuple[tuple[str, int], ...]
) -> list[str]:
    """The ranking strategies' answer over every available agent (index and pending)."""
    ok = [a for a in pool if fits(a, needs)]
    if not ok:
        return []
    s = idx.strategy
    n = len(idx.member_pos)
    first = idx.last_rung + 1
    names = set(idx.queue.required_skills) | set(caller.skills)

    def rank(a: AgentRt) -> tuple[object, ...]:
        pos = idx.member_pos[a.id]
        if s == Strategy.ROUND_ROBIN:
            return ((pos - first) % n,)
        if s == Strategy.BEST_SKILL:
            score = sum(a.cfg.skills.get(x, 0) for x in names)
            return (-float(score), a.idle_since, pos, a.id)
        return idx.key(a)

    if s == Strategy.RING_ALL:
        return [a.id for a in sorted(ok, key=idx.key)]
    return [min(ok, key=rank).id]


@contextlib.contextmanager
def sweep_limits(slack: int, skill_cap: int) -> Iterator[None]:
    """The ready index's sweep thresholds set for one example, restored after."""
    saved = ready_index._SWEEP_SLACK, skill_lists._SKILL_MIN_CAP
    ready_index._SWEEP_SLACK, skill_lists._SKILL_MIN_CAP = slack, skill_cap
    try:
        yield
    finally:
        ready_index._SWEEP_SLACK, skill_lists._SKILL_MIN_CAP = saved


@settings(max_examples=300, deadline=None)
@given(
    strategy=st.sampled_from(list(Strategy)),
    queue_skills=st.dictionaries(st.sampled_from(SKILLS), st.integers(0, 6), max_size=2),
    skills=st.lists(agent_skills, min_size=N_AGENTS, max_size=N_AGENTS),
    ops=st.lists(st.tuples(st.integers(0, N_AGENTS - 1), figures), max_size=80),
    n_pending=st.integers(0, 3),
    calls=st.lists(
        st.tuples(
            st.one_of(st.just({}), skill_sets),
            st.sampled_from([None, 3, 1, 0]),
            st.integers(-1, N_AGENTS - 1),
        ),
        min_size=1,
        max_size=6,
    ),
    seed=st.integers(0, 2**16),
    slack=st.sampled_from([0, 64]),
    skill_cap=st.sampled_from([1, 8]),
    told=st.booleans(),
)
def test_pick_is_the_brute_force_answer_with_or_without_pending_agents(
    strategy: Strategy,
    queue_skills: dict[str, int],
    skills: list[dict[str, int]],
    ops: list[tuple[int, tuple[int, int, int, int]]],
    n_pending: int,
    calls: list[tuple[dict[str, int], int | None, int]],
    seed: int,
    slack: int,
    skill_cap: int,
    told: bool,
) -> None:
    # small values sweep the lists as often as the rules allow: the main list's
    # tombstones give way to fresh keys of the same value, skill lists are rebuilt
    with sweep_limits(slack, skill_cap):
        q = QueueConfig("q", strategy=strategy, required_skills=queue_skills)
        agents = make_agents(skills)
        by_id = {a.id: a for a in agents}
        pos = {a.id: i for i, a in enumerate(agents)}
        # told: the index knows the members' skills (skills most have get no list)
        member_skills = {a.id: a.cfg.skills for a in agents} if told else None
        idx = ReadyIndex(q, pos, member_skills)
        # toggling agents in and out leaves tombstones in every list
        indexed: set[str] = set()
        for i, f in ops:
            a = agents[i]
            if a.id in indexed:
                idx.remove(a)
                indexed.discard(a.id)
            else:
                set_figures(a, f)
                idx.add(a)
                indexed.add(a.id)
        assert sorted(idx.agent_ids()) == sorted(indexed)
        for sl in idx._skills.values():  # tombstones stay bounded
            assert len(sl.keys) == len(sl.levels) == len(sl.firsts) <= sl.cap
            order = sl.keys if sl.ranks is None else sl.ranks
            assert len(order) == len(sl.keys) and order == sorted(order)
            assert list(sl.firsts) == [float(o[0]) for o in order]
        out = [a for a in agents if a.id not in indexed]
        pending = out[:n_pending]
        # the same index with the pending agents inserted
        ref = ReadyIndex(q, pos, member_skills)
        for a in sorted((by_id[x] for x in indexed), key=lambda a: a.order):
            ref.add(a)
        for a in pending:
            ref.add(a)
        for n, (call_skills, cap, last_rung) in enumerate(calls):
            caller = CallerRt(f"c{n}", "q", 0, call_skills, None, 0.0, n)
            needs = caller_needs(queue_skills, call_skills, cap)

            def eligible(a: AgentRt, needs: tuple[tuple[str, int], ...] = needs) -> bool:
                return fits(a, needs)

            idx.last_rung = ref.last_rung = last_rung
            r1, r2 = random.Random(seed + n), random.Random(seed + n)
            got = idx.pick(caller, by_id, eligible, r1, needs, pending)
            assert got == ref.pick(caller, by_id, eligible, r2, needs, ())
            assert r1.getstate() == r2.getstate()  # the same draws
            if strategy != Strategy.RANDOM:
                pool = [by_id[x] for x in indexed] + pending
                assert got == brute_force(idx, pool, caller, needs)
            else:
                assert all(fits(by_id[x], needs) for x in got)


@pytest.mark.parametrize("n_pending", [1, 4])
def test_random_draws_the_same_agent_whether_pending_agents_are_inserted_or_not(
    n_pending: int,
) -> None:
    agents = make_agents([{"en": 1 + i % 3} for i in range(9)])
    for i, a in enumerate(agents):
        a.idle_since = float((i * 5) % 9)  # pending ones land between the indexed ones
    pos = {a.id: i for i, a in enumerate(agents)}
    q = QueueConfig("q", Strategy.RANDOM, required_skills={"en": 2})
    idx, ref = ReadyIndex(q, pos), ReadyIndex(q, pos)
    for a in agents[: 9 - n_pending]:
        idx.add(a)
        ref.add(a)
    pending = agents[9 - n_pending :]
    for a in pending:
        ref.add(a)
    by_id = {a.id: a for a in agents}
    caller = CallerRt("c", "q", 0, {}, None, 0.0, 1)
    needs = (("en", 2),)

    def eligible(a: AgentRt) -> bool:
        return fits(a, needs)

    seen = set()
    for seed in range(200):
        r1, r2 = random.Random(seed), random.Random(seed)
        got = idx.pick(caller, by_id, eligible, r1, needs, pending)
        assert got == ref.pick(caller, by_id, eligible, r2, needs)
        assert r1.getstate() == r2.getstate()
        seen.update(got)
    assert seen == {a.id for a in agents if fits(a, needs)}


def test_a_rare_call_skill_is_found_without_walking_the_queue() -> None:
    """500 agents, the one who speaks "fr" ranks last: the pick looks at the "fr"
    list, not at the 499 others."""
    skills = [{"en": 5} for _ in range(499)] + [{"en": 5, "fr": 2}]
    agents = make_agents(skills)
    for i, a in enumerate(agents):
        a.idle_since = float(i)
    pos = {a.id: i for i, a in enumerate(agents)}
    idx = ReadyIndex(QueueConfig("q", required_skills={"en": 1}), pos)
    for a in agents:
        idx.add(a)
    by_id = {a.id: a for a in agents}
    looked: list[str] = []

    def eligible(a: AgentRt) -> bool:
        looked.append(a.id)
        return fits(a, needs)

    class Agents(dict[str, AgentRt]):
        def __getitem__(self, aid: str) -> AgentRt:
            looked.append(aid)
            return dict.__getitem__(self, aid)

    needs = (("en", 1), ("fr", 1))
    caller = CallerRt("c", "q", 0, {"fr": 1}, None, 0.0, 1)
    assert idx.pick(caller, Agents(by_id), eligible, random.Random(1), needs) == ["a499"]
    assert len(looked) <= 2


@pytest.mark.parametrize("told", [False, True])
def test_best_skill_with_a_call_skill_adds_its_level_to_the_queue_score(told: bool) -> None:
    # a0: es 9 + de 1 = 10; a1: es 2 + de 9 = 11; a2: es 9, no de (not eligible);
    # most members speak de: its list is kept all the same (best_skill ranks by it)
    agents = make_agents([{"es": 9, "de": 1}, {"es": 2, "de": 9}, {"es": 9}])
    pos = {a.id: i for i, a in enumerate(agents)}
    q = QueueConfig("q", Strategy.BEST_SKILL, required_skills={"es": 1})
    idx = ReadyIndex(q, pos, {a.id: a.cfg.skills for a in agents} if told else None)
    for a in agents:
        idx.add(a)
    by_id = {a.id: a for a in agents}
    needs = (("de", 1), ("es", 1))
    caller = CallerRt("c", "q", 0, {"de": 1}, None, 0.0, 1)

    def eligible(a: AgentRt) -> bool:
        return fits(a, needs)

    assert idx.pick(caller, by_id, eligible, random.Random(1), needs) == ["a1"]
    # without the call skill: the queue's score alone, a0 and a2 tie, a0 is first member
    plain = CallerRt("p", "q", 0, {}, None, 0.0, 2)
    assert idx.pick(plain, by_id, eligible, random.Random(1), (("es", 1),)) == ["a0"]


def test_an_agent_back_with_the_same_key_after_a_sweep_is_found_by_skill() -> None:
    """The main list dropped the agent's tombstone (a sweep), its skill list did not:
    coming back with an unchanged key, the agent must be live in both."""
    agents = make_agents([{"fr": 3}, {}, {}, {}])
    pos = {a.id: i for i, a in enumerate(agents)}
    idx = ReadyIndex(QueueConfig("q", Strategy.FIRST_AVAILABLE), pos)  # keys never change
    for a in agents:
        idx.add(a)
    for a in agents[:3]:
        idx.remove(a)  # the next removal sweeps the main list (tombstones > live + slack)
    saved = ready_index._SWEEP_SLACK
    ready_index._SWEEP_SLACK = 0
    try:
        idx.remove(agents[3])
    finally:
        ready_index._SWEEP_SLACK = saved
    assert idx._sl == []
    idx.add(agents[0])
    by_id = {a.id: a for a in agents}
    needs = (("fr", 1),)
    caller = CallerRt("c", "q", 0, {"fr": 1}, None, 0.0, 1)
    assert idx.pick(caller, by_id, lambda a: fits(a, needs), random.Random(1), needs) == ["a0"]


def test_a_skill_most_members_have_is_checked_on_the_main_list() -> None:
    """ring_all needing en:5, everyone speaks en (no "en" list): only en >= 5 ring."""
    agents = make_agents([{"en": 1 + i} for i in range(10)])
    pos = {a.id: i for i, a in enumerate(agents)}
    q = QueueConfig("q", Strategy.RING_ALL, required_skills={"en": 5})
    idx = ReadyIndex(q, pos, {a.id: a.cfg.skills for a in agents})
    for a in agents:
        idx.add(a)
    assert idx._skills["en"].common
    by_id = {a.id: a for a in agents}
    needs = (("en", 5),)
    caller = CallerRt("c", "q", 0, {}, None, 0.0, 1)
    got = idx.pick(caller, by_id, lambda a: fits(a, needs), random.Random(1), needs)
    assert got == [f"a{i}" for i in range(4, 10)]


def test_best_skill_with_two_call_skills_scores_every_candidate() -> None:
    # score over es (queue) + de + fr (call): a0 and a3 = 9+1+1, a1 = 2+5+5, a2 lacks es;
    # told, es is the rarest requirement and common: the candidates are the main list's
    agents = make_agents(
        [
            {"es": 9, "de": 1, "fr": 1},
            {"es": 2, "de": 5, "fr": 5},
            {"de": 9, "fr": 9},
            {"es": 9, "de": 1, "fr": 1},
        ]
    )
    pos = {a.id: i for i, a in enumerate(agents)}
    q = QueueConfig("q", Strategy.BEST_SKILL, required_skills={"es": 1})
    needs = (("de", 1), ("es", 1), ("fr", 1))

    def eligible(a: AgentRt) -> bool:
        return fits(a, needs)

    for told in (None, {a.id: a.cfg.skills for a in agents}):
        idx = ReadyIndex(q, pos, told)
        for a in agents:
            idx.add(a)
        by_id = {a.id: a for a in agents}
        caller = CallerRt("c", "q", 0, {"de": 1, "fr": 1}, None, 0.0, 1)
        assert idx.pick(caller, by_id, eligible, random.Random(1), needs) == ["a1"]
