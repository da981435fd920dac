"""The agent transition table (states.py): one owner for every agent state change;
an illegal transition raises AcdError and changes nothing; caller and agent states
are distinct enums with distinct values."""

from __future__ import annotations

import copy

import pytest

from ctiserver.core.acd.engine import AcdError
from ctiserver.core.acd.events import (
    AgentLoggedIn,
    AgentPaused,
    AgentReady,
    AgentStateChanged,
    CallEnded,
    CallerJoined,
    RingAnswered,
)
from ctiserver.core.acd.model import QueueConfig
from ctiserver.core.acd.states import (
    AGENT_TRANSITIONS,
    Act,
    AgentInput,
    AgentState,
    CallerState,
)

from .acd_helpers import Harness, agent, config

REQUESTS = (
    AgentInput.LOG_IN,
    AgentInput.LOG_IN_PAUSED,
    AgentInput.LOG_OUT,
    AgentInput.PAUSE,
    AgentInput.GO_READY,
)


def test_caller_and_agent_states_share_no_value() -> None:
    assert not {s.value for s in AgentState} & {s.value for s in CallerState}


def test_every_request_has_a_row_but_pause_or_ready_when_logged_out() -> None:
    for state in AgentState:
        for inp in REQUESTS:
            illegal = state is AgentState.LOGGED_OUT and inp in (
                AgentInput.PAUSE,
                AgentInput.GO_READY,
            )
            assert ((state, inp) in AGENT_TRANSITIONS) != illegal, (state, inp)


def test_rows_are_consistent() -> None:
    for (state, inp), step in AGENT_TRANSITIONS.items():
        if step.act is Act.IGNORE:
            assert step.target is None
        elif step.act is Act.END_WORK:
            assert state in (AgentState.ON_CALL, AgentState.WRAP_UP)
        elif step.act is Act.DEFER:
            assert state is AgentState.ON_CALL and inp in REQUESTS
        elif step.act is Act.WITHDRAW:
            assert state is AgentState.OFFERED
        else:
            assert step.target is not None


def harness() -> Harness:
    cfg = config([QueueConfig("q", wrapup=5)], [agent("a1", "q"), agent("a2", "q")])
    return Harness(cfg)


def test_an_illegal_request_raises_and_changes_nothing() -> None:
    h = harness()
    h.login("a1")
    h.after(1, CallerJoined("c1", "q"))
    before = h.engine.snapshot(h.t)
    deadline = h.engine.next_deadline()
    for event in (AgentPaused("a2"), AgentReady("a2")):  # a2 is logged out
        with pytest.raises(AcdError, match="not logged in"):
            h.engine.handle(event, h.t + 50)  # a late step: no timer fires either
    assert h.engine.snapshot(h.t) == before
    assert h.engine.next_deadline() == deadline


def test_an_illegal_internal_input_raises_and_changes_nothing() -> None:
    h = harness()
    h.login("a1")
    h.after(1, AgentPaused("a1", "lunch"))
    machine = h.engine._machine
    a = h.engine.agents["a1"]
    fields = {k: copy.copy(getattr(a, k)) for k in type(a).__slots__}
    out: list[object] = []
    for inp in (AgentInput.OFFER, AgentInput.CALL_ENDED, AgentInput.WORK_DONE):
        with pytest.raises(AcdError):
            machine.apply(a, inp, h.t, out)  # type: ignore[arg-type]
    assert out == []
    assert {k: getattr(a, k) for k in type(a).__slots__} == fields


def test_every_state_change_seen_is_a_row_of_the_table() -> None:
    """A day of one agent, replayed: each AgentStateChanged goes from a state to a
    target some row allows."""
    h = harness()
    h.login("a1")
    h.after(1, CallerJoined("c1", "q"))
    h.after(1, RingAnswered("c1", "a1"))
    h.after(1, AgentPaused("a1", "meeting"))  # deferred to the end of the call
    h.after(10, CallEnded("c1"))
    h.after(1, AgentReady("a1"))
    h.after(1, CallerJoined("c2", "q"))
    h.after(1, RingAnswered("c2", "a1"))
    h.after(10, CallEnded("c2"))  # wrap-up
    h.after(6, AgentLoggedIn("a1"))  # ignored; the wrap-up timer fired first
    allowed = {(s, step.target) for (s, _i), step in AGENT_TRANSITIONS.items()}
    prev = AgentState.LOGGED_OUT
    seen = []
    for e in h.log:
        if isinstance(e, AgentStateChanged) and e.agent_id == "a1":
            target = AgentState(e.state)
            deferred = (prev, None) in allowed  # work done: the deferred state or ready
            assert (prev, target) in allowed or deferred, (prev, target)
            seen.append(target)
            prev = target
    assert seen == [
        AgentState.READY,
        AgentState.OFFERED,
        AgentState.ON_CALL,
        AgentState.NOT_READY,
        AgentState.READY,
        AgentState.OFFERED,
        AgentState.ON_CALL,
        AgentState.WRAP_UP,
        AgentState.READY,
    ]
