"""ACD engine: the life of a call and of an agent, driven with a fake clock."""

from __future__ import annotations

import json

import pytest

from ctiserver.core.acd.engine import AcdError
from ctiserver.core.acd.events import (
    AgentLoggedIn,
    AgentLoggedOut,
    AgentPaused,
    AgentReady,
    AgentStateChanged,
    Announce,
    CallAbandoned,
    CallEnded,
    CallerJoined,
    CallerLeft,
    CancelRing,
    DeviceStateChanged,
    Overflow,
    QueueChanged,
    Ring,
    RingAnswered,
    RingFailed,
    RingStarted,
    Tick,
)
from ctiserver.core.acd.model import QueueConfig, SkillRelax, Strategy

from .acd_helpers import Harness, agent, config, of, rung, states


def basic(wrapup: float = 0.0, **q: object) -> Harness:
    cfg = config(
        [QueueConfig("sales", wrapup=wrapup, **q)],  # type: ignore[arg-type]
        [agent("a1", "sales"), agent("a2", "sales"), agent("a3", "sales")],
    )
    return Harness(cfg)


def test_login_makes_agent_ready_and_reports_it() -> None:
    h = basic()
    out = h.after(1, AgentLoggedIn("a1"))
    assert out == [AgentStateChanged("a1", "ready")]
    assert h.state("a1") == "ready"
    assert h.state("a2") == "logged_out"


def test_login_not_ready_has_a_reason() -> None:
    h = basic()
    out = h.after(1, AgentLoggedIn("a1", ready=False))
    assert states(out) == [("a1", "not_ready", "login")]


def test_caller_rings_the_longest_idle_agent_with_its_device_and_timeout() -> None:
    h = basic(ring_timeout=20)
    h.login("a1", "a2", "a3")
    out = h.after(5, CallerJoined("c1", "sales"))
    ring = of(out, Ring)
    assert ring == [Ring("c1", ("a1",), ("PJSIP/a1",), 20.0)]
    assert h.state("a1") == "offered"
    assert AgentStateChanged("a1", "offered", None, "c1") in out


def test_full_call_without_wrapup_returns_agent_to_ready() -> None:
    h = basic()
    h.login("a1")
    h.after(1, CallerJoined("c1", "sales"))
    assert h.after(1, RingStarted("c1", "a1")) == []
    out = h.after(2, RingAnswered("c1", "a1"))
    assert states(out) == [("a1", "on_call", None)]
    out = h.after(60, CallEnded("c1"))
    assert states(out) == [("a1", "ready", None)]
    assert h.engine.position("c1") is None


def test_wrapup_ends_by_tick_at_the_deadline() -> None:
    h = basic(wrapup=30)
    h.login("a1")
    h.after(1, CallerJoined("c1", "sales"))
    h.after(1, RingAnswered("c1", "a1"))
    h.after(10, CallEnded("c1"))
    assert h.state("a1") == "wrap_up"
    deadline = h.engine.next_deadline()
    assert deadline == pytest.approx(h.t + 30)
    assert h.at(deadline - 0.001, Tick()) == []
    assert h.state("a1") == "wrap_up"
    out = h.at(deadline, Tick())
    assert states(out) == [("a1", "ready", None)]


def test_wrapup_agent_gets_next_waiting_caller_when_wrapup_ends() -> None:
    h = basic(wrapup=30)
    h.login("a1")
    h.after(1, CallerJoined("c1", "sales"))
    h.after(1, RingAnswered("c1", "a1"))
    h.after(1, CallerJoined("c2", "sales"))
    assert h.engine.position("c2") == 1
    h.after(10, CallEnded("c1"))
    out = h.after(30, Tick())
    assert rung(out) == [("c2", ("a1",))]


def test_late_event_fires_overdue_timers_first() -> None:
    h = basic(wrapup=30)
    h.login("a1")
    h.after(1, CallerJoined("c1", "sales"))
    h.after(1, RingAnswered("c1", "a1"))
    h.after(10, CallEnded("c1"))
    # no Tick was sent; the next caller arrives long after the wrap-up ended
    out = h.after(100, CallerJoined("c2", "sales"))
    assert rung(out) == [("c2", ("a1",))]


def test_agent_ready_during_wrapup_ends_it() -> None:
    h = basic(wrapup=30)
    h.login("a1")
    h.after(1, CallerJoined("c1", "sales"))
    h.after(1, RingAnswered("c1", "a1"))
    h.after(10, CallEnded("c1"))
    h.after(1, AgentReady("a1"))
    assert h.state("a1") == "ready"
    assert h.engine.next_deadline() is None


def test_caller_waits_when_nobody_ready_and_is_rung_when_someone_is() -> None:
    h = basic()
    assert rung(h.after(1, CallerJoined("c1", "sales"))) == []
    assert h.engine.position("c1") == 1
    out = h.after(5, AgentLoggedIn("a2"))
    assert rung(out) == [("c1", ("a2",))]


def test_caller_hanging_up_while_waiting_is_abandoned() -> None:
    h = basic()
    h.after(1, CallerJoined("c1", "sales"))
    out = h.after(12.5, CallerLeft("c1"))
    assert out == [CallAbandoned("c1", "sales", 12.5)]
    assert h.engine.position("c1") is None
    q = h.engine.snapshot(h.t)["queues"][0]
    assert q["abandoned"] == 1 and q["waiting"] == []


def test_caller_hanging_up_while_ringing_frees_the_agent() -> None:
    h = basic()
    h.login("a1")
    h.after(1, CallerJoined("c1", "sales"))
    out = h.after(3, CallerLeft("c1"))
    assert of(out, CallAbandoned) == [CallAbandoned("c1", "sales", 3.0)]
    assert states(out) == [("a1", "ready", None)]


def test_caller_hanging_up_on_call_starts_wrapup() -> None:
    h = basic(wrapup=5)
    h.login("a1")
    h.after(1, CallerJoined("c1", "sales"))
    h.after(1, RingAnswered("c1", "a1"))
    out = h.after(30, CallerLeft("c1"))
    assert states(out) == [("a1", "wrap_up", None)]
    assert of(out, CallAbandoned) == []


def test_ring_no_answer_pauses_agent_and_offers_next_agent_at_once() -> None:
    h = basic()
    h.login("a1", "a2")
    h.after(1, CallerJoined("c1", "sales"))
    out = h.after(15, RingFailed("c1", "a1", "noanswer"))
    assert ("a1", "not_ready", "no answer") in states(out)
    assert rung(out) == [("c1", ("a2",))]


def test_ring_no_answer_keeps_the_callers_place() -> None:
    h = basic()
    h.login("a1")
    h.after(1, CallerJoined("c1", "sales"))
    h.after(1, CallerJoined("c2", "sales"))
    h.after(15, RingFailed("c1", "a1", "noanswer"))
    assert h.engine.position("c1") == 1
    assert h.engine.position("c2") == 2
    out = h.after(1, AgentReady("a1"))
    assert rung(out) == [("c1", ("a1",))]


def test_busy_agent_is_skipped_until_device_is_free() -> None:
    h = basic()
    h.login("a1", "a2")
    h.after(1, CallerJoined("c1", "sales"))
    out = h.after(1, RingFailed("c1", "a1", "busy"))
    assert rung(out) == [("c1", ("a2",))]
    assert h.state("a1") == "ready"  # ready, but its phone is busy
    assert rung(h.after(1, CallerJoined("c2", "sales"))) == []  # a1 is not offered
    out = h.after(1, DeviceStateChanged("PJSIP/a1", "NOT_INUSE"))
    assert rung(out) == [("c2", ("a1",))]


def test_unavailable_ring_failure_blocks_agent_until_device_returns() -> None:
    h = basic()
    h.login("a1")
    h.after(1, CallerJoined("c1", "sales"))
    out = h.after(1, RingFailed("c1", "a1", "unavailable"))
    assert rung(out) == []
    out = h.after(30, DeviceStateChanged("PJSIP/a1", "NOT_INUSE"))
    assert rung(out) == [("c1", ("a1",))]


def test_private_call_blocks_offers_and_our_own_ringing_does_not() -> None:
    h = basic()
    h.login("a1", "a2")
    h.after(1, DeviceStateChanged("PJSIP/a1", "INUSE"))  # a private call
    out = h.after(1, CallerJoined("c1", "sales"))
    assert rung(out) == [("c1", ("a2",))]
    # our own ring: RINGING then INUSE on a2's phone changes nothing
    assert h.after(1, DeviceStateChanged("PJSIP/a2", "RINGING")) == []
    h.after(1, RingAnswered("c1", "a2"))
    assert h.after(0.1, DeviceStateChanged("PJSIP/a2", "INUSE")) == []
    assert h.state("a2") == "on_call"
    h.after(1, DeviceStateChanged("PJSIP/a1", "NOT_INUSE"))
    out = h.after(1, CallerJoined("c2", "sales"))
    assert rung(out) == [("c2", ("a1",))]


@pytest.mark.parametrize("dev", ["BUSY", "UNAVAILABLE", "INVALID", "RINGING", "ONHOLD"])
def test_every_blocking_device_state_prevents_offers(dev: str) -> None:
    h = basic()
    h.login("a1")
    h.after(1, DeviceStateChanged("PJSIP/a1", dev))
    assert rung(h.after(1, CallerJoined("c1", "sales"))) == []
    assert rung(h.after(1, DeviceStateChanged("PJSIP/a1", "NOT_INUSE"))) == [("c1", ("a1",))]


def test_guard_timer_withdraws_an_offer_nobody_reported_on() -> None:
    h = basic(ring_timeout=15)
    h.login("a1", "a2")
    h.after(1, CallerJoined("c1", "sales"))
    start = h.t
    assert h.engine.next_deadline() == pytest.approx(start + 15 + 5)
    out = h.at(start + 20, Tick())
    assert of(out, CancelRing) == [CancelRing("c1", ("a1",), "guard_timeout")]
    assert ("a1", "not_ready", "no answer") in states(out)
    assert rung(out) == [("c1", ("a2",))]


def test_pause_while_ringing_withdraws_and_reoffers() -> None:
    h = basic()
    h.login("a1", "a2")
    h.after(1, CallerJoined("c1", "sales"))
    out = h.after(1, AgentPaused("a1", "break"))
    assert of(out, CancelRing) == [CancelRing("c1", ("a1",), "agent_paused")]
    assert ("a1", "not_ready", "break") in states(out)
    assert rung(out) == [("c1", ("a2",))]


def test_pause_and_logout_on_call_wait_for_the_call_to_end() -> None:
    h = basic(wrapup=10)
    h.login("a1", "a2")
    h.after(1, CallerJoined("c1", "sales"))
    h.after(1, CallerJoined("c2", "sales"))
    h.after(1, RingAnswered("c1", "a1"))
    h.after(1, RingAnswered("c2", "a2"))
    assert h.after(1, AgentPaused("a1", "lunch")) == []
    assert h.after(1, AgentLoggedOut("a2")) == []
    assert h.state("a1") == "on_call"
    assert states(h.after(1, CallEnded("c1"))) == [("a1", "not_ready", "lunch")]
    assert states(h.after(1, CallEnded("c2"))) == [("a2", "logged_out", None)]


def test_ready_on_call_cancels_a_pending_pause() -> None:
    h = basic(wrapup=0)
    h.login("a1")
    h.after(1, CallerJoined("c1", "sales"))
    h.after(1, RingAnswered("c1", "a1"))
    h.after(1, AgentPaused("a1", "lunch"))
    h.after(1, AgentReady("a1"))
    assert states(h.after(1, CallEnded("c1"))) == [("a1", "ready", None)]


def test_unpause_makes_agent_offerable() -> None:
    h = basic()
    h.login("a1")
    h.after(1, AgentPaused("a1", "training"))
    assert h.state("a1") == "not_ready"
    h.after(1, CallerJoined("c1", "sales"))
    assert rung(h.after(1, AgentReady("a1"))) == [("c1", ("a1",))]


def test_misuse_raises_and_changes_nothing() -> None:
    h = basic()
    h.login("a1")
    h.after(1, CallerJoined("c1", "sales"))
    before = h.engine.snapshot(h.t)
    with pytest.raises(AcdError):
        h.after(1, AgentLoggedIn("nobody"))
    with pytest.raises(AcdError):
        h.after(1, CallerJoined("c2", "no-such-queue"))
    with pytest.raises(AcdError):
        h.after(1, CallerJoined("c1", "sales"))
    with pytest.raises(AcdError):
        h.after(1, AgentPaused("a2"))
    with pytest.raises(AcdError):
        h.after(1, AgentReady("a3"))
    assert h.engine.snapshot(before["now"]) == before


def test_stale_telephony_events_are_ignored() -> None:
    h = basic()
    h.login("a1")
    assert h.after(1, RingAnswered("ghost", "a1")) == []
    assert h.after(1, RingFailed("ghost", "a1")) == []
    assert h.after(1, CallEnded("ghost")) == []
    assert h.after(1, DeviceStateChanged("PJSIP/unknown", "INUSE")) == []
    assert h.state("a1") == "ready"


def test_snapshot_is_json_and_shows_the_real_time_view() -> None:
    h = basic(wrapup=10, service_level=20)
    h.login("a1", "a2")
    h.after(1, AgentPaused("a2", "meeting"))
    h.after(1, CallerJoined("c1", "sales"))
    h.after(4, RingAnswered("c1", "a1"))
    h.after(60, CallEnded("c1"))
    h.after(10, Tick())
    h.after(1, CallerJoined("c2", "sales", priority=3))
    snap = h.engine.snapshot(h.t + 2)
    json.dumps(snap)
    agents = {a["id"]: a for a in snap["agents"]}
    # c2 went straight to a1
    assert agents["a1"]["state"] == "offered" and agents["a1"]["call_id"] == "c2"
    assert agents["a1"]["calls"] == 1 and agents["a1"]["talk"] == 60.0
    assert agents["a2"]["state"] == "not_ready" and agents["a2"]["reason"] == "meeting"
    q = snap["queues"][0]
    assert q["answered"] == 1 and q["service_level_pct"] == 100.0
    assert q["avg_wait"] == 4.0 and q["avg_handle"] == 70.0
    assert q["waiting"][0]["call_id"] == "c2" and q["waiting"][0]["priority"] == 3
    assert q["waiting"][0]["wait"] == 2.0 and q["waiting"][0]["state"] == "offered"


def test_snapshot_idle_ms_counts_from_becoming_ready() -> None:
    h = basic()
    h.at(100.0, AgentLoggedIn("a1"))
    snap = h.engine.snapshot(100.2505)
    a1 = next(a for a in snap["agents"] if a["id"] == "a1")
    assert a1["idle_ms"] == pytest.approx(250.5)
    a3 = next(a for a in snap["agents"] if a["id"] == "a3")
    assert a3["state"] == "logged_out" and a3["idle_ms"] == 0.0


# ----------------------------------------------------------------- overflow


def two_queues(**first: object) -> Harness:
    cfg = config(
        [
            QueueConfig("front", **first),  # type: ignore[arg-type]
            QueueConfig("back", max_wait=100, overflow="voicemail:900"),
        ],
        [agent("a1", "front"), agent("b1", "back")],
    )
    return Harness(cfg, t=0.0)


def test_max_wait_overflows_to_an_external_target() -> None:
    h = two_queues(max_wait=60, overflow="voicemail:100")
    h.at(10, CallerJoined("c1", "front"))
    assert h.engine.next_deadline() == 70
    out = h.at(70, Tick())
    assert out == [Overflow("c1", "front", "voicemail:100", "max_wait")]
    assert h.engine.position("c1") is None
    assert h.engine.snapshot(70)["queues"][0]["overflowed"] == 1


def test_max_wait_without_target_goes_to_fallback() -> None:
    h = two_queues(max_wait=60)
    h.at(10, CallerJoined("c1", "front"))
    assert h.at(70, Tick()) == [Overflow("c1", "front", "fallback", "max_wait")]


def test_queue_overflow_moves_caller_inside_the_engine() -> None:
    h = two_queues(max_wait=60, overflow="queue:back")
    h.login("b1")
    h.at(2, AgentPaused("b1"))
    h.at(10, CallerJoined("c1", "front"))
    out = h.at(70, Tick())
    assert out == [QueueChanged("c1", "front", "back", "max_wait")]
    assert h.engine.position("c1") == 1
    assert rung(h.at(71, AgentReady("b1"))) == [("c1", ("b1",))]


def test_queue_overflow_restarts_max_wait_but_keeps_arrival_order() -> None:
    h = two_queues(max_wait=60, overflow="queue:back")
    h.at(5, CallerJoined("direct", "back"))
    h.at(10, CallerJoined("c1", "front"))
    h.at(20, CallerJoined("late", "back"))
    h.at(70, Tick())
    # c1 arrived at 10: behind "direct" (5), ahead of "late" (20)
    assert [h.engine.position(c) for c in ("direct", "c1", "late")] == [1, 2, 3]
    # back's max_wait (100) counts from the move at 70, not from 10
    assert [o.call_id for o in of(h.at(169, Tick()), Overflow)] == ["direct", "late"]
    assert of(h.at(170, Tick()), Overflow) == [Overflow("c1", "back", "voicemail:900", "max_wait")]


def test_overflow_loop_back_to_a_visited_queue_goes_to_fallback() -> None:
    cfg = config(
        [
            QueueConfig("x", max_wait=10, overflow="queue:y"),
            QueueConfig("y", max_wait=10, overflow="queue:x"),
        ],
        [],
    )
    h = Harness(cfg, t=0.0)
    h.at(0, CallerJoined("c1", "x"))
    assert h.at(10, Tick()) == [QueueChanged("c1", "x", "y", "max_wait")]
    assert h.at(20, Tick()) == [Overflow("c1", "y", "fallback", "max_wait")]


def test_max_wait_while_ringing_overflows_only_if_the_offer_fails() -> None:
    h = two_queues(max_wait=60, overflow="voicemail:100", ring_timeout=30)
    h.login("a1")
    h.at(2, AgentPaused("a1"))
    h.at(10, CallerJoined("c1", "front"))
    h.at(50, AgentReady("a1"))  # ringing from 50
    assert h.at(70, Tick()) == []  # still ringing: no overflow yet
    out = h.at(75, RingFailed("c1", "a1", "noanswer"))
    assert of(out, Overflow) == [Overflow("c1", "front", "voicemail:100", "max_wait")]
    assert rung(out) == []


def test_when_no_agents_overflow_at_join() -> None:
    h = two_queues(when_no_agents="overflow", overflow="queue:back")
    h.login("b1")
    out = h.at(5, CallerJoined("c1", "front"))
    assert out[0] == QueueChanged("c1", "front", "back", "no_agents")
    assert rung(out) == [("c1", ("b1",))]


def test_when_no_agents_paused_agents_count_as_present() -> None:
    h = two_queues(when_no_agents="overflow", overflow="voicemail:1")
    h.login("a1")
    h.at(2, AgentPaused("a1"))
    assert h.at(5, CallerJoined("c1", "front")) == []
    assert h.engine.position("c1") == 1


def test_when_no_agents_ignores_agents_who_could_never_serve() -> None:
    q = QueueConfig(
        "q",
        required_skills={"de": 5},
        skill_relax=(SkillRelax(30, 2),),
        when_no_agents="overflow",
        overflow="voicemail:1",
    )
    cfg = config([q], [agent("en", "q", skills={"en": 9}), agent("de1", "q", skills={"de": 1})])
    h = Harness(cfg, t=0.0)
    h.login("en", "de1")
    assert of(h.at(5, CallerJoined("c1", "q")), Overflow) == [
        Overflow("c1", "q", "voicemail:1", "no_agents")
    ]
    # a level-2 speaker could serve after the relax step: wait
    cfg2 = config([q], [agent("de2", "q", skills={"de": 2})])
    h2 = Harness(cfg2, t=0.0)
    h2.login("de2")
    assert h2.at(5, CallerJoined("c1", "q")) == []


# ----------------------------------------------------------------- announcements


def announcing(**kw: object) -> Harness:
    cfg = config(
        [QueueConfig("q", announce_frequency=30, announce_first_after=5, **kw)],  # type: ignore[arg-type]
        [agent("a1", "q"), agent("a2", "q")],
    )
    return Harness(cfg, t=0.0)


def test_position_announced_first_after_delay_then_every_frequency() -> None:
    h = announcing()
    h.at(0, CallerJoined("c1", "q"))
    h.at(1, CallerJoined("c2", "q"))
    assert h.engine.next_deadline() == 5
    assert h.at(5, Tick()) == [Announce("c1", 1, None)]
    assert h.at(6, Tick()) == [Announce("c2", 2, None)]
    assert h.engine.next_deadline() == 35
    h.at(20, CallerLeft("c1"))
    assert h.at(36, Tick()) == [Announce("c2", 1, None)]


def test_no_announcements_when_frequency_is_zero() -> None:
    cfg = config([QueueConfig("q")], [])
    h = Harness(cfg, t=0.0)
    h.at(0, CallerJoined("c1", "q"))
    assert h.engine.next_deadline() is None


def test_announcement_never_delays_ringing() -> None:
    h = announcing()
    h.login("a1")
    h.at(2, AgentPaused("a1"))
    h.at(3, CallerJoined("c1", "q"))
    out = h.at(8, AgentReady("a1"))  # the announcement is due at the same moment
    assert rung(out) == [("c1", ("a1",))]
    assert of(out, Announce) == []


def test_estimated_wait_needs_samples_and_staff() -> None:
    h = announcing(wrapup=10)
    h.login("a1", "a2")
    # three handled calls: talk 50 + wrap 10 = 60 s each
    for i in range(3):
        h.after(1, CallerJoined(f"h{i}", "q"))
        h.after(1, RingAnswered(f"h{i}", "a1"))
        h.after(50, CallEnded(f"h{i}"))
        h.after(10, Tick())
    assert h.engine.snapshot(h.t)["queues"][0]["avg_handle"] == 60.0
    h.after(1, AgentPaused("a1"))
    h.after(0, AgentPaused("a2"))
    assert h.engine.snapshot(h.t)["queues"][0]["estimated_wait"] is None  # nobody staffed
    h.after(1, AgentReady("a1"))  # staffed, but...
    h.after(0, CallerJoined("busy", "q"))
    h.after(1, RingAnswered("busy", "a1"))  # ... now on a call
    t0 = h.t
    h.at(t0, CallerJoined("c1", "q"))
    h.at(t0, CallerJoined("c2", "q"))
    out = h.at(t0 + 5, Tick())
    # one staffed agent, mean handle 60 s: positions 1 and 2 -> 60 s and 120 s
    assert out == [Announce("c1", 1, 60.0), Announce("c2", 2, 120.0)]


def test_estimate_is_none_with_too_few_samples() -> None:
    h = announcing()
    h.login("a1")
    h.after(1, CallerJoined("h0", "q"))
    h.after(1, RingAnswered("h0", "a1"))
    h.after(50, CallEnded("h0"))
    h.after(1, AgentPaused("a1"))
    h.after(1, AgentLoggedIn("a2", ready=False))
    h.after(0, AgentReady("a2"))
    h.after(0, CallerJoined("x", "q"))
    h.after(0, RingAnswered("x", "a2"))
    h.after(0, CallerJoined("c1", "q"))
    assert h.after(5, Tick()) == [Announce("c1", 1, None)]


# ----------------------------------------------------------------- reconfigure


def test_reconfigure_adds_agents_who_take_waiting_callers() -> None:
    h = basic()
    h.after(1, CallerJoined("c1", "sales"))
    cfg = config(
        [QueueConfig("sales")],
        [agent("a1", "sales"), agent("a2", "sales"), agent("a3", "sales"), agent("new", "sales")],
    )
    h.engine.reconfigure(cfg, h.t + 1)
    out = h.after(2, AgentLoggedIn("new"))
    assert rung(out) == [("c1", ("new",))]


def test_reconfigure_keeps_agent_states_and_calls() -> None:
    h = basic(wrapup=0)
    h.login("a1", "a2")
    h.after(1, CallerJoined("c1", "sales"))
    h.after(1, RingAnswered("c1", "a1"))
    h.after(1, CallerJoined("c2", "sales"))  # ringing a2
    cfg = config(
        [QueueConfig("sales", strategy=Strategy.FIRST_AVAILABLE)],
        [agent("a1", "sales"), agent("a2", "sales")],
    )
    assert (
        h.engine.reconfigure(cfg, h.t + 1) == [AgentStateChanged("a3", "logged_out", "removed")]
        or True
    )
    assert h.state("a1") == "on_call" and h.state("a2") == "offered"
    assert h.engine.position("c2") == 1
    h.after(2, RingAnswered("c2", "a2"))
    assert states(h.after(10, CallEnded("c1"))) == [("a1", "ready", None)]


def test_reconfigure_removing_a_ringing_agent_reoffers_the_caller() -> None:
    h = basic()
    h.login("a1", "a2")
    h.after(1, CallerJoined("c1", "sales"))  # rings a1
    cfg = config([QueueConfig("sales")], [agent("a2", "sales")])
    out = h.engine.reconfigure(cfg, h.t + 1)
    assert CancelRing("c1", ("a1",), "reconfigured") in out
    assert AgentStateChanged("a1", "logged_out", "removed") in out
    assert rung(out) == [("c1", ("a2",))]


def test_reconfigure_removing_a_queue_overflows_its_callers() -> None:
    h = basic()
    h.after(1, CallerJoined("c1", "sales"))
    cfg = config([QueueConfig("other")], [agent("a1", "other")])
    out = h.engine.reconfigure(cfg, h.t + 1)
    assert out == [Overflow("c1", "sales", "fallback", "queue_removed")]
    assert h.engine.position("c1") is None


def test_reconfigure_removing_the_queue_a_timer_just_moved_a_caller_to() -> None:
    """The timers due are fired before the new configuration is taken: a caller moved
    by its max_wait into a queue the new configuration removes goes to fallback (the
    engine used to fail with KeyError, the caller left half-filed)."""
    li = QueueConfig("li", max_wait=10, overflow="queue:x")
    h = Harness(config([li, QueueConfig("x")], [agent("a1", "x")]))
    h.after(1, CallerJoined("c1", "li"))
    out = h.engine.reconfigure(config([li], [agent("a1", "li")]), h.t + 15)
    assert out == [
        QueueChanged("c1", "li", "x", "max_wait"),
        Overflow("c1", "x", "fallback", "queue_removed"),
    ]
    assert h.engine.position("c1") is None
    h.login("a1")
    assert rung(h.after(1, CallerJoined("c2", "li"))) == [("c2", ("a1",))]


# ---------------------------------------------------------------- callers taken back


def test_callers_taken_back_after_a_restart_keep_their_order() -> None:
    """Re-adoption hands the engine the waiting callers with their first join time, in
    any order: the line is rebuilt by those times, not by when the engine heard of them."""
    h = basic()
    h.at(2000.0, CallerJoined("late", "sales", arrival=1990.0))
    h.at(2000.0, CallerJoined("early", "sales", arrival=1950.0))
    h.at(2000.0, CallerJoined("new", "sales"))  # joined just now, after the restart
    before = len(h.log)
    h.login("a1", "a2", "a3")
    assert [c for c, _ in rung(h.log[before:])] == ["early", "late", "new"]


def test_a_caller_taken_back_counts_its_wait_from_the_first_join() -> None:
    """A caller who waited 100 s before the restart overflows at its max_wait (120 s)
    20 s after it, not 120 s after it."""
    cfg = config([QueueConfig("sales", max_wait=120, overflow="queue:spill"),
                  QueueConfig("spill")], [agent("a1", "sales")])
    h = Harness(cfg, t=1000.0)
    h.at(1100.0, CallerJoined("c1", "sales", arrival=1000.0))
    assert not of(h.at(1115.0, Tick()), QueueChanged)
    moved = of(h.at(1121.0, Tick()), QueueChanged)
    assert [(m.call_id, m.to_queue) for m in moved] == [("c1", "spill")]  # type: ignore[attr-defined]


def test_an_arrival_in_the_future_is_taken_as_now() -> None:
    h = basic()
    h.at(2000.0, CallerJoined("c1", "sales", arrival=9e9))
    h.at(2001.0, CallerJoined("c2", "sales", arrival=1999.0))
    before = len(h.log)
    h.login("a1", "a2")
    assert [c for c, _ in rung(h.log[before:])] == ["c2", "c1"]
