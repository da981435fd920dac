"""ACD: callers left without anyone able to serve them, and agents blocked by a
busy/unavailable ring (the block is bounded)."""

from __future__ import annotations

from ctiserver.core.acd.agents import RING_BLOCK_MAX
from ctiserver.core.acd.events import (
    AgentLoggedOut,
    AgentPaused,
    AgentReady,
    CallEnded,
    CallerJoined,
    DeviceStateChanged,
    Overflow,
    QueueChanged,
    RingAnswered,
    RingFailed,
    Tick,
)
from ctiserver.core.acd.model import QueueConfig

from .acd_helpers import Harness, agent, config, of, rung


def skilled(**q: object) -> Harness:
    """a1 and a2 serve front, only a1 speaks "de"; b1 serves back and speaks it too."""
    cfg = config(
        [
            QueueConfig("front", **q),  # type: ignore[arg-type]
            QueueConfig("back"),
        ],
        [
            agent("a1", "front", skills={"de": 5}),
            agent("a2", "front"),
            agent("b1", "back", skills={"de": 9}),
        ],
    )
    return Harness(cfg, t=0.0)


# ------------------------------------------------- when_no_agents="overflow" on logout


def test_waiting_callers_overflow_when_the_last_agent_able_to_serve_logs_out() -> None:
    h = skilled(when_no_agents="overflow", overflow="queue:back")
    h.login("a1", "a2")
    h.at(5, AgentPaused("a1"))
    h.at(5, AgentPaused("a2"))
    h.at(6, CallerJoined("c1", "front", skills={"de": 3}))
    h.at(7, CallerJoined("c2", "front"))
    out = h.at(10, AgentLoggedOut("a1"))
    # c1 needs "de": nobody logged in has it any more; c2 can still get a2
    assert of(out, QueueChanged) == [QueueChanged("c1", "front", "back", "no_agents")]
    assert h.engine.position("c2") == 1
    h.login("b1")
    assert rung(h.log[-2:]) == [("c1", ("b1",))]  # taken in back


def test_logout_of_one_of_two_able_agents_overflows_nobody() -> None:
    h = skilled(when_no_agents="overflow", overflow="voicemail:1")
    h.login("a1", "a2")
    h.at(5, AgentPaused("a1"))
    h.at(5, AgentPaused("a2"))
    h.at(6, CallerJoined("c1", "front"))
    assert of(h.at(10, AgentLoggedOut("a1")), Overflow) == []
    assert h.engine.position("c1") == 1
    out = h.at(11, AgentLoggedOut("a2"))
    assert of(out, Overflow) == [Overflow("c1", "front", "voicemail:1", "no_agents")]
    assert h.engine.position("c1") is None


def test_logout_deferred_to_the_end_of_a_call_overflows_then() -> None:
    h = skilled(when_no_agents="overflow", overflow="voicemail:1")
    h.login("a1")
    h.at(5, CallerJoined("c1", "front"))
    h.at(6, RingAnswered("c1", "a1"))
    h.at(7, CallerJoined("c2", "front"))
    assert of(h.at(8, AgentLoggedOut("a1")), Overflow) == []  # still on the call
    out = h.at(20, CallEnded("c1"))
    assert of(out, Overflow) == [Overflow("c2", "front", "voicemail:1", "no_agents")]


def test_callers_wait_on_logout_when_the_queue_says_wait() -> None:
    h = skilled(overflow="voicemail:1")
    h.login("a1")
    h.at(5, AgentPaused("a1"))
    h.at(6, CallerJoined("c1", "front"))
    assert of(h.at(10, AgentLoggedOut("a1")), Overflow) == []
    assert h.engine.position("c1") == 1


def test_a_ringing_caller_withdrawn_by_the_logout_overflows_too() -> None:
    h = skilled(when_no_agents="overflow", overflow="voicemail:1")
    h.login("a1")
    assert rung(h.at(5, CallerJoined("c1", "front"))) == [("c1", ("a1",))]
    out = h.at(6, AgentLoggedOut("a1"))
    assert of(out, Overflow) == [Overflow("c1", "front", "voicemail:1", "no_agents")]


# ------------------------------------------------- bounded block after a busy ring


def test_busy_ring_blocks_the_agent_for_at_most_ring_block_max() -> None:
    h = skilled()
    h.login("a1")
    h.at(5, CallerJoined("c1", "front"))
    assert rung(h.at(6, RingFailed("c1", "a1", "busy"))) == []
    assert h.engine.next_deadline() == 6 + RING_BLOCK_MAX
    assert rung(h.at(6 + RING_BLOCK_MAX - 0.5, Tick())) == []  # still blocked
    # no device event ever came: offered again once the block runs out
    assert rung(h.at(6 + RING_BLOCK_MAX, Tick())) == [("c1", ("a1",))]


def test_unavailable_block_ends_earlier_with_the_device_event() -> None:
    h = skilled()
    h.login("a1")
    h.at(5, CallerJoined("c1", "front"))
    h.at(6, RingFailed("c1", "a1", "unavailable"))
    assert rung(h.at(8, DeviceStateChanged("PJSIP/a1", "NOT_INUSE"))) == [("c1", ("a1",))]
    h.at(9, RingAnswered("c1", "a1"))
    # the old block timer is stale: it does nothing at 6 + RING_BLOCK_MAX
    assert h.at(6 + RING_BLOCK_MAX, Tick()) == []
    assert h.state("a1") == "on_call"


def test_a_real_device_state_after_the_busy_ring_is_not_time_limited() -> None:
    h = skilled()
    h.login("a1")
    h.at(5, CallerJoined("c1", "front"))
    h.at(6, RingFailed("c1", "a1", "busy"))
    h.at(7, DeviceStateChanged("PJSIP/a1", "INUSE"))  # the phone really is in use
    assert rung(h.at(6 + RING_BLOCK_MAX + 60, Tick())) == []
    assert rung(h.at(200, DeviceStateChanged("PJSIP/a1", "NOT_INUSE"))) == [("c1", ("a1",))]


def test_block_outlives_a_pause_and_still_ends() -> None:
    h = skilled()
    h.login("a1")
    h.at(5, CallerJoined("c1", "front"))
    h.at(6, RingFailed("c1", "a1", "busy"))
    h.at(7, AgentPaused("a1"))
    h.at(8, AgentReady("a1"))
    assert rung(h.at(9, Tick())) == []
    assert rung(h.at(6 + RING_BLOCK_MAX, Tick())) == [("c1", ("a1",))]
