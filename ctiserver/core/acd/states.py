"""Agent and caller states, and the agent transition table (``AGENT_TRANSITIONS``).

Every change of an agent's state is a row of the table, applied only by
``agents.AgentMachine.apply`` (``Engine`` looks an agent's request up first, so that a
refused one changes nothing). The caller states are a separate enum with values of
their own. See docs/acd.md for the policies.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple


class AcdError(Exception):
    """The engine's user asked for something impossible (unknown agent or queue,
    duplicate call, pause of a logged-out agent). Nothing was changed."""


class AgentState(StrEnum):
    """What an agent is doing (the strings that ``AgentStateChanged`` carries)."""

    LOGGED_OUT = "logged_out"
    READY = "ready"
    NOT_READY = "not_ready"
    OFFERED = "offered"  # a call rings their phone
    ON_CALL = "on_call"
    WRAP_UP = "wrap_up"


class CallerState(StrEnum):
    """Where a caller is, from joining to being answered."""

    WAITING = "waiting"  # in line, any eligible agent may get it
    RESERVED = "reserved"  # in line, but only for its preferred agent (assigned agent first)
    RINGING = "ringing"  # being offered (ringing one agent, or several under ring-all)
    CONNECTED = "connected"  # answered, on a call with an agent


# the members as module globals: a global is cheaper to read than an enum attribute
LOGGED_OUT = AgentState.LOGGED_OUT
READY = AgentState.READY
NOT_READY = AgentState.NOT_READY
OFFERED = AgentState.OFFERED
ON_CALL = AgentState.ON_CALL
WRAP_UP = AgentState.WRAP_UP
STAFFED = frozenset({READY, OFFERED, ON_CALL, WRAP_UP})

WAITING = CallerState.WAITING
RESERVED = CallerState.RESERVED
RINGING = CallerState.RINGING
CONNECTED = CallerState.CONNECTED

# device states that mean "the phone is busy or unreachable" when it is not our call
BLOCKING_DEVICE_STATES = frozenset(
    {"INUSE", "BUSY", "UNAVAILABLE", "INVALID", "RINGING", "RINGINUSE", "ONHOLD"}
)


class AgentInput(StrEnum):
    """What may change an agent's state."""

    # the agent's own requests (AgentLoggedIn / AgentLoggedOut / AgentPaused / AgentReady)
    LOG_IN = "log_in"
    LOG_IN_PAUSED = "log_in_paused"  # AgentLoggedIn(ready=False)
    LOG_OUT = "log_out"
    PAUSE = "pause"
    GO_READY = "go_ready"
    # the engine and the telephony
    OFFER = "offer"  # the engine rings the agent's phone
    ANSWER = "answer"  # the agent answered a call (even one no longer offered to them)
    NO_ANSWER = "no_answer"  # the ring timed out (Asterisk's, or the engine's guard)
    OFFER_ENDED = "offer_ended"  # the ring ended otherwise: busy, cancel, caller gone...
    CALL_ENDED = "call_ended"  # the call is over and its queue has a wrap-up time
    WORK_DONE = "work_done"  # the call (no wrap-up time) or the wrap-up is over


class Act(StrEnum):
    """What a transition does besides setting the state."""

    SET = "set"  # nothing else (the same state and reason again: no change at all)
    IGNORE = "ignore"  # nothing at all
    DEFER = "defer"  # on a call: remembered for its end (``target`` ready: forget it)
    WITHDRAW = "withdraw"  # cancel the agent's ring first (CancelRing)
    END_WORK = "end_work"  # count the handle time (talk + wrap-up) first


class Step(NamedTuple):
    target: AgentState | None  # None: the deferred request's state, else ready
    act: Act


_S, _I, _D, _W, _E = Act.SET, Act.IGNORE, Act.DEFER, Act.WITHDRAW, Act.END_WORK
_In = AgentInput

# (state, input) -> step; a pair not in the table is illegal: AcdError, nothing changes
AGENT_TRANSITIONS: dict[tuple[AgentState, AgentInput], Step] = {
    # logged out
    (LOGGED_OUT, _In.LOG_IN): Step(READY, _S),
    (LOGGED_OUT, _In.LOG_IN_PAUSED): Step(NOT_READY, _S),
    (LOGGED_OUT, _In.LOG_OUT): Step(None, _I),
    (LOGGED_OUT, _In.ANSWER): Step(ON_CALL, _S),  # a ring answered as they logged out
    # ready
    (READY, _In.LOG_IN): Step(None, _I),
    (READY, _In.LOG_IN_PAUSED): Step(None, _I),
    (READY, _In.LOG_OUT): Step(LOGGED_OUT, _S),
    (READY, _In.PAUSE): Step(NOT_READY, _S),
    (READY, _In.GO_READY): Step(None, _I),
    (READY, _In.OFFER): Step(OFFERED, _S),
    (READY, _In.ANSWER): Step(ON_CALL, _S),
    # not ready
    (NOT_READY, _In.LOG_IN): Step(None, _I),
    (NOT_READY, _In.LOG_IN_PAUSED): Step(None, _I),
    (NOT_READY, _In.LOG_OUT): Step(LOGGED_OUT, _S),
    (NOT_READY, _In.PAUSE): Step(NOT_READY, _S),  # a new reason
    (NOT_READY, _In.GO_READY): Step(READY, _S),
    (NOT_READY, _In.ANSWER): Step(ON_CALL, _S),
    # offered (ringing)
    (OFFERED, _In.LOG_IN): Step(None, _I),
    (OFFERED, _In.LOG_IN_PAUSED): Step(None, _I),
    (OFFERED, _In.LOG_OUT): Step(LOGGED_OUT, _W),
    (OFFERED, _In.PAUSE): Step(NOT_READY, _W),
    (OFFERED, _In.GO_READY): Step(None, _I),
    (OFFERED, _In.ANSWER): Step(ON_CALL, _S),
    (OFFERED, _In.NO_ANSWER): Step(NOT_READY, _S),
    (OFFERED, _In.OFFER_ENDED): Step(READY, _S),
    # on a call
    (ON_CALL, _In.LOG_IN): Step(None, _I),
    (ON_CALL, _In.LOG_IN_PAUSED): Step(None, _I),
    (ON_CALL, _In.LOG_OUT): Step(LOGGED_OUT, _D),
    (ON_CALL, _In.PAUSE): Step(NOT_READY, _D),
    (ON_CALL, _In.GO_READY): Step(READY, _D),
    (ON_CALL, _In.CALL_ENDED): Step(WRAP_UP, _S),
    (ON_CALL, _In.WORK_DONE): Step(None, _E),
    # wrap-up
    (WRAP_UP, _In.LOG_IN): Step(None, _I),
    (WRAP_UP, _In.LOG_IN_PAUSED): Step(None, _I),
    (WRAP_UP, _In.LOG_OUT): Step(LOGGED_OUT, _E),
    (WRAP_UP, _In.PAUSE): Step(NOT_READY, _E),
    (WRAP_UP, _In.GO_READY): Step(READY, _E),
    (WRAP_UP, _In.WORK_DONE): Step(None, _E),
}


def agent_step(agent_id: str, state: AgentState, inp: AgentInput) -> Step:
    """The table's row for ``state`` and ``inp``; AcdError when there is none."""
    step = AGENT_TRANSITIONS.get((state, inp))
    if step is None:
        if state == LOGGED_OUT:
            raise AcdError(f"agent {agent_id}: not logged in")
        raise AcdError(f"agent {agent_id}: {inp} is not allowed while {state}")
    return step
