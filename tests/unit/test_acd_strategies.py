"""ACD strategies: which agent gets the call, and in which order callers are served."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from ctiserver.core.acd.engine import Engine
from ctiserver.core.acd.events import (
    AgentLoggedIn,
    AgentPaused,
    AgentReady,
    CallEnded,
    CallerJoined,
    CallerLeft,
    DeviceStateChanged,
    RingAnswered,
    RingFailed,
    Tick,
)
from ctiserver.core.acd.model import QueueConfig, SkillRelax, Strategy

from .acd_helpers import Harness, agent, config, rung, states


def team(strategy: Strategy, n: int = 4, **q: object) -> Harness:
    names = [f"a{i}" for i in range(1, n + 1)]
    cfg = config(
        [QueueConfig("q", strategy=strategy, members=tuple(names), **q)],  # type: ignore[arg-type]
        [agent(a) for a in names],
    )
    return Harness(cfg)


def serve(h: Harness, call: str, talk: float = 10.0, queue: str = "q") -> str:
    """A caller joins, the rung agent answers and talks ``talk`` seconds; who took it."""
    out = h.after(1, CallerJoined(call, queue))
    [(_, agents)] = rung(out)
    h.after(1, RingAnswered(call, agents[0]))
    h.after(talk, CallEnded(call))
    return agents[0]


def test_first_available_uses_member_order_not_idle_time() -> None:
    h = team(Strategy.FIRST_AVAILABLE)
    h.login("a3", "a2", "a1")  # a3 has been idle longest
    assert serve(h, "c1") == "a1"
    assert serve(h, "c2") == "a1"  # back to ready: first again
    h.after(1, AgentPaused("a1"))
    assert serve(h, "c3") == "a2"


def test_round_robin_continues_after_the_last_rung_member() -> None:
    h = team(Strategy.ROUND_ROBIN)
    h.login("a1", "a2", "a3", "a4")
    got = [serve(h, f"c{i}") for i in range(6)]
    assert got == ["a1", "a2", "a3", "a4", "a1", "a2"]


def test_round_robin_skips_unavailable_members_and_wraps() -> None:
    h = team(Strategy.ROUND_ROBIN)
    h.login("a1", "a2", "a3", "a4")
    assert serve(h, "c1") == "a1"
    h.after(1, AgentPaused("a2"))
    assert serve(h, "c2") == "a3"
    assert serve(h, "c3") == "a4"
    assert serve(h, "c4") == "a1"


def test_ring_all_rings_everyone_and_first_answer_wins() -> None:
    h = team(Strategy.RING_ALL)
    h.login("a1", "a2", "a3")
    out = h.after(1, CallerJoined("c1", "q"))
    assert rung(out) == [("c1", ("a1", "a2", "a3"))]
    assert all(h.state(a) == "offered" for a in ("a1", "a2", "a3"))
    out = h.after(2, RingAnswered("c1", "a2"))
    assert h.state("a2") == "on_call"
    assert h.state("a1") == "ready" and h.state("a3") == "ready"
    # late cancel reports for the losers change nothing
    assert h.after(0.1, RingFailed("c1", "a1", "cancel")) == []
    # the losers are offered the next caller together
    assert rung(h.after(1, CallerJoined("c2", "q"))) == [("c2", ("a1", "a3"))]


def test_ring_all_caller_is_reoffered_only_when_all_legs_failed() -> None:
    h = team(Strategy.RING_ALL)
    h.login("a1", "a2")
    h.after(1, CallerJoined("c1", "q"))
    assert rung(h.after(15, RingFailed("c1", "a1", "noanswer"))) == []
    out = h.after(0.01, RingFailed("c1", "a2", "busy"))
    assert rung(out) == []  # a1 paused (no answer), a2's phone busy
    assert h.engine.position("c1") == 1


def test_longest_idle_picks_the_true_maximum_with_subsecond_resolution() -> None:
    h = team(Strategy.LONGEST_IDLE)
    h.at(100.0, AgentLoggedIn("a3"))
    h.at(100.0004, AgentLoggedIn("a1"))
    h.at(100.0002, AgentLoggedIn("a2"))  # clock does not go back: counts as 100.0004
    h.at(100.001, AgentLoggedIn("a4"))
    assert serve(h, "c1") == "a3"
    # a1 and a2 tie at 100.0004: the member order decides
    assert serve(h, "c2") == "a1"
    assert serve(h, "c3") == "a2"


def test_longest_idle_counts_from_end_of_wrapup() -> None:
    h = team(Strategy.LONGEST_IDLE, n=2, wrapup=5)
    h.login("a1", "a2")
    assert serve(h, "c1") == "a1"
    h.after(5, Tick())  # a1 ready again, after a2
    assert serve(h, "c2") == "a2"


def connect(h: Harness, call: str) -> str:
    """A caller joins and the rung agent answers; who took it (the call goes on)."""
    [(_, agents)] = rung(h.after(1, CallerJoined(call, "q")))
    h.after(1, RingAnswered(call, agents[0]))
    return agents[0]


def caller_hangs_up(h: Harness, call: str, aid: str, dt: float) -> None:
    """The caller hangs up first, as the call adapter tells it: the agent's phone stays
    busy with the call's own leg (INUSE) until that leg hangs up, a few ms later."""
    h.after(dt, DeviceStateChanged(f"PJSIP/{aid}", "INUSE"))
    h.after(0, CallerLeft(call))


def test_longest_idle_counts_from_the_moment_the_phone_is_free() -> None:
    # a1's caller hangs up before a2's, but a2's phone is free of its call first: a2 has
    # been idle (ready with a free phone) longer, as Asterisk's own events tell it
    h = team(Strategy.LONGEST_IDLE, n=2)
    h.login("a1", "a2")
    assert connect(h, "c1") == "a1"
    assert connect(h, "c2") == "a2"
    caller_hangs_up(h, "c1", "a1", 10)
    caller_hangs_up(h, "c2", "a2", 0.001)
    h.after(0.001, DeviceStateChanged("PJSIP/a2", "NOT_INUSE"))
    h.after(0.002, DeviceStateChanged("PJSIP/a1", "NOT_INUSE"))
    assert serve(h, "c3") == "a2"
    assert serve(h, "c4") == "a1"


def test_an_offer_withdrawn_keeps_the_agents_place_in_line() -> None:
    # the caller hangs up while a1 rings: a1 is back in line where it was, even though its
    # phone frees a few ms after the caller left
    h = team(Strategy.LONGEST_IDLE, n=2)
    h.login("a1", "a2")
    [(_, agents)] = rung(h.after(1, CallerJoined("c1", "q")))
    assert agents == ("a1",)
    caller_hangs_up(h, "c1", "a1", 1)
    h.after(0.003, DeviceStateChanged("PJSIP/a1", "NOT_INUSE"))
    assert serve(h, "c2") == "a1"


def test_highest_average_idle_beats_longest_idle() -> None:
    h = team(Strategy.HIGHEST_AVERAGE_IDLE, n=2)
    h.at(0, AgentLoggedIn("a1"))
    h.at(0, AgentLoggedIn("a2"))
    # nobody has a history yet: equal, member order -> a1, who was idle 10 s
    assert rung(h.at(10, CallerJoined("x1", "q"))) == [("x1", ("a1",))]
    h.at(10, RingAnswered("x1", "a1"))
    h.at(11, CallEnded("x1"))
    # a2 never answered yet: ranks first; answers after 100 s idle
    assert rung(h.at(100, CallerJoined("x2", "q"))) == [("x2", ("a2",))]
    h.at(100, RingAnswered("x2", "a2"))
    h.at(101, CallEnded("x2"))
    # a1 has been idle longer now (since 11), but a2's average idle (100 s) is higher
    assert rung(h.at(120, CallerJoined("c", "q"))) == [("c", ("a2",))]


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        (Strategy.LEAST_TALK_TIME, "a2"),  # a1 talked 100 s in 1 call, a2 60 s in 2
        (Strategy.LEAST_AVERAGE_TALK_TIME, "a2"),  # 100 vs 30
        (Strategy.FEWEST_CALLS, "a1"),  # 1 vs 2
    ],
)
def test_talk_and_call_count_strategies(strategy: Strategy, expected: str) -> None:
    h = team(strategy, n=2)
    h.login("a1", "a2")
    # drive the history with first-come service by pausing the other agent
    h.after(1, AgentPaused("a2"))
    assert serve(h, "c1", talk=100) == "a1"
    h.after(1, AgentReady("a2"))
    h.after(1, AgentPaused("a1"))
    assert serve(h, "c2", talk=30) == "a2"
    assert serve(h, "c3", talk=30) == "a2"
    # the expected agent becomes ready last, so longest idle would pick the other one
    other = "a1" if expected == "a2" else "a2"
    h.after(1, AgentPaused("a2"))
    h.after(1, AgentReady(other))
    h.after(1, AgentReady(expected))
    assert serve(h, "c4") == expected


def test_least_talk_time_tie_goes_to_longest_idle() -> None:
    h = team(Strategy.LEAST_TALK_TIME, n=3)
    h.login("a3", "a1", "a2")
    assert serve(h, "c1") == "a3"


def test_best_skill_sums_levels_over_required_skills() -> None:
    q = QueueConfig("q", strategy=Strategy.BEST_SKILL, required_skills={"es": 1, "tech": 1})
    cfg = config(
        [q],
        [
            agent("a1", "q", skills={"es": 9, "tech": 2}),  # 11
            agent("a2", "q", skills={"es": 6, "tech": 6}),  # 12
            agent("a3", "q", skills={"es": 10}),  # lacks tech: not eligible
        ],
    )
    h = Harness(cfg)
    h.login("a1", "a2", "a3")
    assert serve(h, "c1") == "a2"


def test_best_skill_counts_the_calls_own_skills_too() -> None:
    q = QueueConfig("q", strategy=Strategy.BEST_SKILL, required_skills={"es": 1})
    cfg = config(
        [q],
        [
            agent("a1", "q", skills={"es": 9, "vip": 1}),  # 10 with vip
            agent("a2", "q", skills={"es": 5, "vip": 8}),  # 13 with vip
            agent("a3", "q", skills={"es": 10}),  # lacks vip
        ],
    )
    h = Harness(cfg)
    h.login("a1", "a2", "a3")
    out = h.after(1, CallerJoined("c1", "q", skills={"vip": 1}))
    assert rung(out) == [("c1", ("a2",))]
    # without the call skill the queue score alone decides
    assert rung(h.after(1, CallerJoined("c2", "q"))) == [("c2", ("a3",))]


def test_random_uses_the_injected_rng_and_spreads_calls() -> None:
    def run(seed: int) -> list[str]:
        names = [f"a{i}" for i in range(1, 6)]
        cfg = config([QueueConfig("q", strategy=Strategy.RANDOM)], [agent(a, "q") for a in names])
        h = Harness(cfg)
        h.engine = Engine(cfg, rng=random.Random(seed))
        h.login(*names)
        return [serve(h, f"c{i}") for i in range(200)]

    first = run(7)
    assert run(7) == first  # same seed, same choices
    counts = Counter(first)
    assert set(counts) == {"a1", "a2", "a3", "a4", "a5"}
    assert max(counts.values()) < 70


def test_random_only_picks_eligible_agents() -> None:
    q = QueueConfig("q", strategy=Strategy.RANDOM, required_skills={"de": 5})
    agents = [agent(f"a{i}", "q", skills={"de": 1}) for i in range(30)]
    agents.append(agent("expert", "q", skills={"de": 7}))
    h = Harness(config([q], agents))
    h.login(*(a.id for a in agents))
    assert rung(h.after(1, CallerJoined("c1", "q"))) == [("c1", ("expert",))]


# ----------------------------------------------------------------- assigned agent first


def test_preferred_agent_gets_the_call_when_ready() -> None:
    h = team(Strategy.LONGEST_IDLE, preferred_agent_timeout=30)
    h.login("a1", "a2", "a3")
    out = h.after(1, CallerJoined("c1", "q", preferred_agent="a3"))
    assert rung(out) == [("c1", ("a3",))]


def test_caller_waits_for_busy_preferred_agent_within_timeout() -> None:
    h = team(Strategy.LONGEST_IDLE, preferred_agent_timeout=30)
    h.login("a1", "a2", "a3")
    h.after(1, AgentPaused("a3", "coffee"))
    assert rung(h.after(1, CallerJoined("c1", "q", preferred_agent="a3"))) == []
    # a3 comes back within the window: the customer goes to them, not to a1
    assert rung(h.after(10, AgentReady("a3"))) == [("c1", ("a3",))]


def test_after_the_preferred_timeout_the_strategy_takes_over() -> None:
    h = team(Strategy.LONGEST_IDLE, preferred_agent_timeout=30)
    h.login("a1", "a2", "a3")
    h.after(1, AgentPaused("a3", "coffee"))
    start = h.t + 1
    h.at(start, CallerJoined("c1", "q", preferred_agent="a3"))
    assert rung(h.at(start + 29.9, Tick())) == []
    assert rung(h.at(start + 30, Tick())) == [("c1", ("a1",))]


def test_the_routing_rules_timeout_overrides_the_queues() -> None:
    # queue: no waiting for the preferred agent; the rule said "agent_of …, timeout: 20"
    h = team(Strategy.LONGEST_IDLE)
    h.login("a1", "a2", "a3")
    h.after(1, AgentPaused("a3", "coffee"))
    start = h.t + 1
    joined = CallerJoined("c1", "q", preferred_agent="a3", preferred_timeout=20)
    assert rung(h.at(start, joined)) == []
    assert rung(h.at(start + 19.9, Tick())) == []
    assert rung(h.at(start + 20, Tick())) == [("c1", ("a1",))]


def test_preferred_agent_logged_out_means_no_waiting() -> None:
    h = team(Strategy.LONGEST_IDLE, preferred_agent_timeout=30)
    h.login("a1")
    assert rung(h.after(1, CallerJoined("c1", "q", preferred_agent="a4"))) == [("c1", ("a1",))]


def test_preferred_agent_no_answer_hands_over_to_the_strategy() -> None:
    h = team(Strategy.LONGEST_IDLE, preferred_agent_timeout=60)
    h.login("a1", "a2")
    h.after(1, CallerJoined("c1", "q", preferred_agent="a2"))
    assert rung(h.after(15, RingFailed("c1", "a2"))) == [("c1", ("a1",))]


def test_preferred_with_zero_timeout_only_if_ready_now() -> None:
    h = team(Strategy.FIRST_AVAILABLE)
    h.login("a1", "a2")
    assert rung(h.after(1, CallerJoined("c1", "q", preferred_agent="a2"))) == [("c1", ("a2",))]
    assert rung(h.after(1, CallerJoined("c2", "q", preferred_agent="a2"))) == [("c2", ("a1",))]


def test_freed_agent_takes_their_reserved_customer_before_older_callers() -> None:
    h = team(Strategy.LONGEST_IDLE, n=1, preferred_agent_timeout=120)
    h.login("a1")
    h.after(1, CallerJoined("c0", "q"))
    h.after(1, RingAnswered("c0", "a1"))
    h.after(1, CallerJoined("old", "q"))
    h.after(1, CallerJoined("mine", "q", preferred_agent="a1"))
    out = h.after(10, CallEnded("c0"))
    assert rung(out) == [("mine", ("a1",))]


# ----------------------------------------------------------------- caller order


def test_higher_priority_first_then_longest_waiting() -> None:
    h = team(Strategy.LONGEST_IDLE, n=1)
    h.login("a1")
    h.after(1, AgentPaused("a1"))
    h.after(1, CallerJoined("low-old", "q", priority=0))
    h.after(1, CallerJoined("high-new", "q", priority=5))
    h.after(1, CallerJoined("high-newer", "q", priority=5))
    h.after(1, CallerJoined("low-new", "q", priority=0))
    assert [h.engine.position(c) for c in ("high-new", "high-newer", "low-old", "low-new")] == [
        1,
        2,
        3,
        4,
    ]
    order = []
    for _ in range(4):
        out = h.after(1, AgentReady("a1"))
        [(call, _)] = rung(out)
        order.append(call)
        h.after(1, RingAnswered(call, "a1"))
        h.after(1, CallEnded(call))
        h.after(0, AgentPaused("a1"))
    assert order == ["high-new", "high-newer", "low-old", "low-new"]


def test_queue_priority_adds_to_caller_priority_across_queues() -> None:
    cfg = config(
        [QueueConfig("normal"), QueueConfig("vip", priority=10)],
        [agent("a1", "normal", "vip")],
    )
    h = Harness(cfg)
    h.login("a1")
    h.after(1, AgentPaused("a1"))
    h.after(1, CallerJoined("n1", "normal", priority=5))
    h.after(1, CallerJoined("v1", "vip"))
    assert rung(h.after(1, AgentReady("a1"))) == [("v1", ("a1",))]


def test_multi_queue_agent_takes_the_oldest_caller_among_queues() -> None:
    cfg = config(
        [QueueConfig("sales"), QueueConfig("support")],
        [agent("a1", "sales", "support"), agent("a2", "sales")],
    )
    h = Harness(cfg)
    h.login("a1", "a2")
    h.after(1, AgentPaused("a1"))
    h.after(1, AgentPaused("a2"))
    h.after(1, CallerJoined("support-old", "support"))
    h.after(1, CallerJoined("sales-new", "sales"))
    assert rung(h.after(1, AgentReady("a1"))) == [("support-old", ("a1",))]
    assert rung(h.after(1, AgentReady("a2"))) == [("sales-new", ("a2",))]


def test_agent_skips_callers_whose_skills_they_lack() -> None:
    q = QueueConfig("q")
    cfg = config([q], [agent("a1", "q", skills={"en": 5})])
    h = Harness(cfg)
    h.login("a1")
    h.after(1, AgentPaused("a1"))
    h.after(1, CallerJoined("needs-de", "q", skills={"de": 3}))
    h.after(1, CallerJoined("needs-en", "q", skills={"en": 3}))
    assert rung(h.after(1, AgentReady("a1"))) == [("needs-en", ("a1",))]


# ----------------------------------------------------------------- skill escalation


def relax_queue() -> Harness:
    q = QueueConfig(
        "q",
        required_skills={"fr": 8},
        skill_relax=(SkillRelax(30, 5), SkillRelax(60, 0)),
    )
    cfg = config(
        [q],
        [
            agent("mid", "q", skills={"fr": 5}),
            agent("low", "q", skills={"fr": 1}),
            agent("none", "q", skills={"en": 9}),
        ],
    )
    h = Harness(cfg, t=0.0)
    return h


def test_skill_requirements_relax_in_steps_over_waiting_time() -> None:
    h = relax_queue()
    h.login("mid", "low", "none")
    h.at(10, CallerJoined("c1", "q"))
    assert rung(h.at(39.9, Tick())) == []
    assert h.engine.next_deadline() == 40
    assert rung(h.at(40, Tick())) == [("c1", ("mid",))]


def test_last_relax_step_accepts_anyone_with_the_skill_but_not_without() -> None:
    h = relax_queue()
    h.login("low", "none")
    h.at(10, CallerJoined("c1", "q"))
    assert rung(h.at(40, Tick())) == []
    assert rung(h.at(70, Tick())) == [("c1", ("low",))]


def relax_queue_with_a_high_agent(ring_timeout: float = 15.0) -> Harness:
    q = QueueConfig(
        "q",
        required_skills={"fr": 8},
        skill_relax=(SkillRelax(30, 5), SkillRelax(60, 0)),
        ring_timeout=ring_timeout,
    )
    cfg = config([q], [agent("high", "q", skills={"fr": 9}), agent("mid", "q", skills={"fr": 5})])
    h = Harness(cfg, t=0.0)
    h.login("high", "mid")
    return h


def test_caller_rung_at_once_whose_offer_fails_relaxes_on_time() -> None:
    # rung as it joined (its relax timers are set only when it is back in line)
    h = relax_queue_with_a_high_agent()
    assert rung(h.at(10, CallerJoined("c1", "q"))) == [("c1", ("high",))]
    assert rung(h.at(15, RingFailed("c1", "high", "noanswer"))) == []
    assert rung(h.at(39.9, Tick())) == []
    assert h.engine.next_deadline() == 40
    assert rung(h.at(40, Tick())) == [("c1", ("mid",))]


def test_caller_back_in_line_after_a_relax_step_is_relaxed_at_once() -> None:
    h = relax_queue_with_a_high_agent(ring_timeout=60)
    assert rung(h.at(10, CallerJoined("c1", "q"))) == [("c1", ("high",))]
    assert rung(h.at(45, RingFailed("c1", "high", "noanswer"))) == [("c1", ("mid",))]


def test_relaxed_caller_goes_to_an_agent_freeing_up_later() -> None:
    h = relax_queue()
    h.login("mid")
    h.at(5, AgentPaused("mid"))
    h.at(10, CallerJoined("c1", "q"))
    h.at(50, Tick())
    assert rung(h.at(51, AgentReady("mid"))) == [("c1", ("mid",))]


def test_ring_no_answer_reports_reason_for_dashboards() -> None:
    h = team(Strategy.LONGEST_IDLE, n=2)
    h.login("a1", "a2")
    h.after(1, CallerJoined("c1", "q"))
    out = h.after(15, RingFailed("c1", "a1", "noanswer"))
    assert ("a1", "not_ready", "no answer") in states(out)
