"""The skill-fit test is defined once (skills.fits); the relaxed requirements
(skills.needs_at, cached per caller) and the dispatcher's pick of a caller for a freed
agent (best_caller_for, with fits and needs_at's cached case inlined) are held equal to
a reference written from the spec (docs/acd.md, Skills). ReadyIndex.pick's inlined copy
is held to a brute force in test_acd_ready_index."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from ctiserver.core.acd.engine import Engine
from ctiserver.core.acd.events import (
    AgentLoggedIn,
    CallEnded,
    CallerJoined,
    Ring,
    RingAnswered,
    Tick,
)
from ctiserver.core.acd.model import QueueConfig, SkillRelax, Strategy
from ctiserver.core.acd.runtime import CallerRt
from ctiserver.core.acd.skills import caller_req, fits, needs_at
from ctiserver.core.acd.states import WAITING

from .acd_helpers import agent, config

NAMES = ("de", "en", "es", "fr")
skill_maps = st.dictionaries(st.sampled_from(NAMES), st.integers(0, 10), max_size=4)
needs_maps = st.dictionaries(st.sampled_from(NAMES), st.integers(1, 10), max_size=4)


def reference_needs(
    queue: dict[str, int], call: dict[str, int], relax: list[tuple[float, int]], waited: float
) -> dict[str, int]:
    req = dict(queue)
    for k, v in call.items():
        req[k] = max(req.get(k, 0), v)
    cap = None
    for after, level in sorted(relax):
        if waited >= after:
            cap = level if cap is None else min(cap, level)
    return {k: max(1, v if cap is None else min(v, cap)) for k, v in req.items()}


def reference_fits(skills: dict[str, int], needs: dict[str, int]) -> bool:
    return all(skills.get(k, 0) >= v for k, v in needs.items())


@given(skills=skill_maps, needs=needs_maps)
def test_fits_is_every_skill_at_its_level(skills: dict[str, int], needs: dict[str, int]) -> None:
    assert fits(skills, tuple(sorted(needs.items()))) == reference_fits(skills, needs)


@settings(max_examples=200, deadline=None)
@given(
    queue=needs_maps,
    call=needs_maps,
    relax=st.lists(st.tuples(st.integers(0, 60), st.integers(0, 10)), max_size=3),
    waits=st.lists(st.floats(0, 90), min_size=1, max_size=8),
)
def test_relaxed_needs_follow_the_steps_whatever_the_cache_holds(
    queue: dict[str, int],
    call: dict[str, int],
    relax: list[tuple[int, int]],
    waits: list[float],
) -> None:
    steps = []
    low: int | None = None
    for after, level in sorted(relax):
        low = level if low is None else min(low, level)
        steps.append((float(after), low))
    c = CallerRt("c", "q", 0, call, None, 100.0, 1)
    c.req = caller_req(queue, call)
    for w in sorted(waits):  # time only goes forward
        got = dict(needs_at(c, tuple(steps), 100.0 + w))
        ref = reference_needs(queue, call, [(float(a), lv) for a, lv in relax], w)
        assert got == ref


@settings(max_examples=100, deadline=None)
@given(
    queue=needs_maps,
    calls=st.lists(needs_maps, min_size=1, max_size=4),
    relax=st.lists(st.tuples(st.integers(0, 60), st.integers(0, 10)), max_size=3),
    waits=st.lists(st.floats(0, 90), min_size=1, max_size=8),
)
def test_relaxed_needs_shared_through_the_queue_memo_stay_each_callers_own(
    queue: dict[str, int],
    calls: list[dict[str, int]],
    relax: list[tuple[int, int]],
    waits: list[float],
) -> None:
    """Callers of one queue looked up with its memo: those with requirements of their
    own (not shared) among those with the queue's only (the same ``req`` tuple)."""
    steps = []
    low: int | None = None
    for after, level in sorted(relax):
        low = level if low is None else min(low, level)
        steps.append((float(after), low))
    queue_req = caller_req(queue, {})
    memo: dict[int | None, tuple[tuple[str, int], ...]] = {}
    cs = []
    for i, call in enumerate([{}, *calls]):
        c = CallerRt(f"c{i}", "q", 0, call, None, 100.0 + i, i)
        c.req = caller_req(queue, call) if call else queue_req
        cs.append(c)
    for w in sorted(waits):
        for c in cs:
            got = dict(needs_at(c, tuple(steps), c.arrival + w, memo))
            ref = reference_needs(queue, dict(c.skills), [(float(a), lv) for a, lv in relax], w)
            assert got == ref
    assert len(memo) <= len(steps) + 1


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    agent_skills=st.lists(skill_maps, min_size=2, max_size=6),
    calls=st.lists(
        st.tuples(st.sampled_from(("q1", "q2")), needs_maps, st.integers(0, 2)),
        min_size=1,
        max_size=12,
    ),
)
def test_a_freed_agent_gets_the_first_caller_it_fits(
    seed: int, agent_skills: list[dict[str, int]], calls: list[tuple[str, dict[str, int], int]]
) -> None:
    """dispatch.best_caller_for (class heads, tags, the needs cache) against every
    waiting caller of the agent's queues checked with the reference."""
    relax = (SkillRelax(10, 4), SkillRelax(25, 1))
    queues = [
        QueueConfig("q1", Strategy.LONGEST_IDLE, skill_relax=relax, required_skills={"en": 2}),
        QueueConfig("q2", Strategy.FIRST_AVAILABLE, priority=1, skill_relax=relax),
    ]
    agents = [
        agent(f"a{i}", *(("q1", "q2") if i % 2 else ("q1",)), skills=sk)
        for i, sk in enumerate(agent_skills)
    ]
    eng = Engine(config(queues, agents), rng=random.Random(seed))
    t = 1000.0
    rng = random.Random(seed)
    for a in agents:
        eng.handle(AgentLoggedIn(a.id), t)
    for i, (q, sk, prio) in enumerate(calls):  # every agent busy, then callers waiting
        t += rng.choice((0.0, 1.0, 7.0))
        for e in eng.handle(CallerJoined(f"c{i}", q, prio, sk), t):
            if isinstance(e, Ring):
                eng.handle(RingAnswered(e.call_id, e.agent_ids[0]), t)
    t += rng.choice((0.0, 12.0, 30.0))
    eng.handle(Tick(), t)
    dispatcher = eng._dispatcher
    for a in eng.agents.values():
        want = None
        for c in eng.calls.values():
            if c.status is not WAITING or c.queue not in a.queues:
                continue
            needs = reference_needs(
                dict(eng.config.queues[c.queue].required_skills),
                c.skills,
                [(s.after, s.min_level) for s in relax],
                t - c.arrival,
            )
            if reference_fits(a.cfg.skills, needs) and (
                want is None or c.order_key < want.order_key
            ):
                want = c
        got = dispatcher.best_caller_for(a, t)
        assert (got.call_id if got else None) == (want.call_id if want else None)
    for c in list(eng.calls.values()):  # and the engine is still whole
        eng.handle(CallEnded(c.call_id), t)
