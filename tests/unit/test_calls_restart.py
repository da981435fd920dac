"""Asterisk restarts and AMI outages are not agents' faults: the calls feature behind its AMI
adapter, fed with what Asterisk 22 sent at `core restart now` (recorded on the sandbox) or
told that the link dropped; the engine is the real one, the AMI side and the screen-pop
recorders."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ctiserver.asterisk.ami import parse_event
from ctiserver.asterisk.ami_calls import AmiCallEvents
from ctiserver.calls.model import Call, CallInfo, HeldChannel
from ctiserver.core.acd import events as ev
from ctiserver.core.acd.engine import Engine
from ctiserver.core.acd.model import AcdConfig, AgentConfig, QueueConfig, Strategy
from tests.unit.test_calls_tracker import Actions, adapter_for, ami

RESTART = Path(__file__).parent / "fixtures" / "ami_core_restart_now.txt"
CALLER, CHANNEL = "1796685949.0", "PJSIP/trunk-00000000"
JOINED = 1796685949.05  # the recorded caller joined then (its DialBegin: 1796685949.09)


def recorded(path: Path = RESTART) -> list[str]:
    """The fixture's events as AMI text (CRLF), in the order received."""
    lines = [line for line in path.read_text().splitlines() if not line.startswith(";")]
    return ["\r\n".join(block.strip().splitlines())
            for block in "\n".join(lines).split("\n\n") if block.strip()]


class Pops:
    """The screen-pop side (a recorder of our own ``CallObserver`` port)."""

    def __init__(self) -> None:
        self.ended: list[dict[str, Any]] = []

    def prefetch(self, info: CallInfo) -> None:
        pass

    def offered_nowait(self, info: CallInfo, agent: str) -> None:
        pass

    def answered_nowait(self, call_id: str, agent: str) -> None:
        pass

    def ended_nowait(self, call_id: str, agent: str | None, **kw: Any) -> None:
        self.ended.append({"call_id": call_id, "agent": agent, **kw})

    def agent_state_changed(self, *_: object) -> None:
        pass


@dataclass
class Stack:
    adapter: AmiCallEvents
    engine: Engine
    actions: Actions
    pops: Pops
    now: list[float]
    fed: list[ev.Event] = field(default_factory=list)
    states: list[tuple[str, str, str | None]] = field(default_factory=list)

    def states_of(self, agent: str) -> list[str]:
        return [f"{s}" + (f" ({r})" if r else "") for a, s, r in self.states if a == agent]

    def feed(self, *texts: str) -> None:
        for text in texts:
            self.adapter.on_ami_event(parse_event(text) if "\r\n" in text else ami(text))


def stack(now: float = 1000.0) -> Stack:
    """Agents 1005 (rung first) and 1001 in one first-available queue, logged in at
    ``now``."""
    cfg = AcdConfig({"support": QueueConfig("support", strategy=Strategy.FIRST_AVAILABLE,
                                            ring_timeout=30)},
                    {a: AgentConfig(a, a, f"PJSIP/{a}", queues=("support",))
                     for a in ("1005", "1001")})
    engine = Engine(cfg)
    s: Stack

    def submit(event: ev.Event, at: float | None) -> None:
        s.fed.append(event)
        effects = engine.handle(event, at or s.now[0])
        s.states.extend((e.agent_id, e.state, e.reason) for e in effects
                        if isinstance(e, ev.AgentStateChanged))
        s.adapter.tracker.carry_out(event, effects)

    actions, pops = Actions(), Pops()
    s = Stack(adapter_for(actions, submit, pops, cfg), engine, actions, pops, [now])
    s.adapter.tracker.clock = lambda: s.now[0]
    for a in ("1005", "1001"):
        submit(ev.AgentLoggedIn(a), now - 1)
    return s


async def join(s: Stack, call_id: str = CALLER, channel: str = CHANNEL) -> str:
    call = Call(call_id, channel, CallInfo(call_id, "+34600000001", joined_at=s.now[0]))
    action, _vars = await s.adapter.tracker.join(call, ev.CallerJoined(call_id, "support"))
    return action


def offerable(engine: Engine, agent: str) -> bool:
    return {a["id"]: a for a in engine.snapshot(2e9)["agents"]}[agent]["offerable"]


def no_answer_told(s: Stack) -> bool:
    return any(isinstance(e, ev.RingFailed) and e.reason == "noanswer" for e in s.fed)


# ---------------------------------------------------------------- Asterisk stopping


async def test_a_ring_cut_by_core_restart_leaves_the_agent_ready(
        caplog: pytest.LogCaptureFixture) -> None:
    s = stack(JOINED)
    assert await join(s) == "connect"  # 1005 rung through FastAGI, as recorded
    with caplog.at_level(logging.INFO, logger="ctiserver.calls"):
        s.feed(*recorded())
    # Asterisk said NOANSWER; the SoftHangupRequests (cause 4) before it said why
    assert not no_answer_told(s)
    assert s.engine.agent_state("1005") == "ready" and offerable(s.engine, "1005")
    assert s.states_of("1005") == ["ready", "offered", "ready"]
    # the dying caller is not offered again in between: no Redirect at all
    assert s.actions.sent == []
    lines = [r.getMessage() for r in caplog.records if r.name == "ctiserver.calls"]
    assert f"[{CALLER}] ring of agent 1005 withdrawn: Asterisk is stopping (NOANSWER)" in lines
    assert any(line.startswith(f"[{CALLER}] caller hung up (Asterisk stopping)")
               for line in lines), lines
    assert s.adapter.tracker.stopping == set()  # forgotten at their Hangups


async def test_when_the_agents_leg_is_hung_up_first_the_agent_is_ready_too() -> None:
    # Asterisk walks its channels in no set order: the agent's leg may be hung up before
    # the caller; the ring is withdrawn then, and the caller (alive for a moment) offered
    # again; its own hang-up follows and frees the agent once more
    events = recorded()
    caller_soft, agent_soft, dial_end = events[1], events[2], events[3]
    s = stack(JOINED)
    await join(s)
    s.feed(events[0], agent_soft, dial_end, caller_soft, *events[4:])
    assert not no_answer_told(s)
    assert [e for e in s.fed if isinstance(e, ev.RingFailed)] == [
        ev.RingFailed(CALLER, "1005", "withdrawn")]
    assert all("not_ready" not in state for state in s.states_of("1005"))
    assert s.engine.agent_state("1005") == "ready" and offerable(s.engine, "1005")
    assert s.engine.agent_state("1001") == "ready"


async def test_a_soft_hangup_for_another_reason_is_no_excuse() -> None:
    # an Asterisk with the legacy filter sends every SoftHangupRequest (16: the dialplan
    # hung up after the Dial): a ring that timed out is still the agent's no-answer
    s = stack(JOINED)
    await join(s)
    events = recorded()
    s.feed(events[0], events[1].replace("Cause: 4", "Cause: 16"),
           events[3].replace("1796685950.164818", "1796685979.1"))  # 30 s: rang out
    assert no_answer_told(s)
    assert s.engine.agent_state("1005") == "not_ready"


# ---------------------------------------------------------------- the AMI link lost


async def test_a_ring_that_ended_while_ami_was_down_is_withdrawn_at_the_resync(
        caplog: pytest.LogCaptureFixture) -> None:
    s = stack()
    await join(s)
    s.feed(recorded()[0])  # 1005 rings
    s.now[0] = 1005.0
    s.adapter.link_lost()
    s.now[0] = 1020.0  # the caller still on hold; the ring is gone (it rang out meanwhile)
    with caplog.at_level(logging.INFO, logger="ctiserver.calls"):
        s.adapter.tracker.resync([("PJSIP/trunk", CALLER, CALLER, None)],
                                 [("PJSIP/1005", "NOT_INUSE", None),
                                  ("PJSIP/1001", "NOT_INUSE", None)])
    assert not no_answer_told(s)
    assert "[1796685949.0] ring of agent 1005 withdrawn: its ring ended while AMI was " \
           "disconnected" in caplog.messages
    assert all("not_ready" not in state for state in s.states_of("1005"))
    # the caller, back in line, is offered at once, by redirect, to the agent free first
    assert s.engine.agent_state("1005") == "offered"
    assert [(a["Action"], a.get("Value") or a.get("Context")) for a in s.actions.sent] == [
        ("Setvar", "PJSIP/1005"), ("Redirect", "ctiserver-connect")]


async def test_a_ring_still_live_at_the_resync_goes_on() -> None:
    s = stack()
    await join(s)
    s.feed(recorded()[0])
    s.adapter.link_lost()
    s.adapter.tracker.resync([("PJSIP/trunk", CALLER, CALLER, None),
                              ("PJSIP/1005", "1796685949.1", CALLER, None)],
                             [("PJSIP/1005", "RINGING", None), ("PJSIP/1001", "NOT_INUSE", None)])
    assert [e for e in s.fed if isinstance(e, ev.RingFailed)] == []
    assert s.engine.agent_state("1005") == "offered"
    s.feed(recorded()[3].replace("NOANSWER", "ANSWER"))
    assert s.engine.agent_state("1005") == "on_call"


async def test_nobody_is_offered_while_ami_is_down_and_waiting_callers_are_after() -> None:
    # an offer ctiserver cannot follow would end in the engine's ring guard: a no-answer
    s = stack()
    for a in ("1005", "1001"):
        s.adapter.tracker.submit(ev.AgentPaused(a, "lunch"), None)
    assert await join(s) == "hold"
    s.adapter.link_lost()
    assert not offerable(s.engine, "1005") and not offerable(s.engine, "1001")
    s.adapter.tracker.submit(ev.AgentReady("1005"), None)  # from the agent's page
    assert s.engine.agent_state("1005") == "ready" and s.actions.sent == []
    s.adapter.tracker.resync([("PJSIP/trunk", CALLER, CALLER, None)],
                             [("PJSIP/1005", "NOT_INUSE", None), ("PJSIP/1001", "INUSE", None)])
    assert not offerable(s.engine, "1001")  # in use: a call of its own
    assert s.engine.agent_state("1005") == "offered"  # free: offered the waiting caller
    assert [a["Action"] for a in s.actions.sent] == ["Setvar", "Redirect"]


async def test_a_phone_asterisk_does_not_list_or_a_failed_resync_leaves_it_offerable() -> None:
    s = stack()
    s.adapter.link_lost()
    # Asterisk still booting, or a Local device: DeviceStateList says nothing of 1001
    s.adapter.tracker.resync([], [("PJSIP/1005", "UNAVAILABLE", None)])
    assert not offerable(s.engine, "1005") and offerable(s.engine, "1001")
    s.adapter.link_lost()
    s.adapter.tracker.resync_failed()
    assert offerable(s.engine, "1005") and offerable(s.engine, "1001")


async def test_a_call_that_ended_during_an_outage_ends_when_the_link_was_lost(
        caplog: pytest.LogCaptureFixture) -> None:
    s = stack()
    await join(s)
    events = recorded()
    s.feed(events[0], events[3].replace("NOANSWER", "ANSWER").replace(
        "Timestamp: 1796685950.164818", "Timestamp: 1001.0"))
    assert s.engine.agent_state("1005") == "on_call"
    s.now[0] = 1031.0
    s.adapter.link_lost()
    s.now[0] = 1100.0  # the resync: 69 s later, the call is gone
    with caplog.at_level(logging.INFO, logger="ctiserver.calls"):
        s.adapter.tracker.resync([], [("PJSIP/1005", "NOT_INUSE", None),
                                      ("PJSIP/1001", "NOT_INUSE", None)])
    assert s.pops.ended == [{"call_id": CALLER, "agent": "1005", "call": s.pops.ended[0]["call"],
                             "at": 1031.0, "outcome": "answered, end approximate"}]
    line = next(m for m in caplog.messages if "caller hung up" in m)
    assert line.endswith("answered by agent 1005, waited 1.0 s, talked at least 30.0 s "
                         "(end approximate: the AMI link was down)"), line
    assert s.engine.agent_state("1005") == "ready" and offerable(s.engine, "1005")
    assert all("not_ready" not in state for state in s.states_of("1005"))


async def test_a_caller_who_left_while_ringing_during_an_outage_frees_the_agent() -> None:
    s = stack()
    await join(s)
    s.feed(recorded()[0])
    s.now[0] = 1003.0
    s.adapter.link_lost()
    s.now[0] = 1050.0
    s.adapter.tracker.resync([], [])
    assert not no_answer_told(s)
    assert s.engine.agent_state("1005") == "ready" and offerable(s.engine, "1005")
    assert [(e["at"], e["outcome"]) for e in s.pops.ended] == [
        (1003.0, "abandoned, end approximate")]
    assert s.adapter.tracker.agent_legs == {}


async def test_an_outage_longer_than_the_ring_guard_is_nobodys_no_answer() -> None:
    # the engine's guard (ring timeout + 5 s) fires while the link is down: with the phones
    # unavailable meanwhile, it ends the offer instead of setting the agent not ready
    s = stack()
    await join(s)
    s.feed(recorded()[0])
    s.adapter.link_lost()
    s.now[0] = 1040.0  # 30 s ring + 5 s grace have passed
    s.adapter.tracker.submit(ev.Tick(), None)  # the ACD task's timer
    assert s.engine.agent_state("1005") == "ready" and not offerable(s.engine, "1005")
    assert all("not_ready" not in state for state in s.states_of("1005"))
    s.adapter.tracker.resync([("PJSIP/trunk", CALLER, CALLER, None)],
                             [("PJSIP/1005", "NOT_INUSE", None), ("PJSIP/1001", "NOT_INUSE", None)])
    assert s.engine.agent_state("1005") == "offered"  # the caller, offered again


async def test_a_ring_answered_while_ami_was_down_is_a_call_after_the_resync() -> None:
    # the caller, still in ctiserver-connect, is bridged to 1005's leg, which is up: the
    # DialEnd ANSWER was missed, the resync's list of held callers shows the answer
    s = stack()
    await join(s)
    s.feed(recorded()[0])
    s.adapter.link_lost()
    s.now[0] = 1020.0
    held = HeldChannel(call_id=CALLER, channel=CHANNEL, context="ctiserver-connect",
                       adopt="", legs=(("PJSIP/1005", "1796685949.1", True),))
    s.adapter.tracker.resync([("PJSIP/trunk", CALLER, CALLER, None),
                              ("PJSIP/1005", "1796685949.1", CALLER, None)],
                             [("PJSIP/1005", "INUSE", None), ("PJSIP/1001", "NOT_INUSE", None)],
                             [held])
    assert s.engine.agent_state("1005") == "on_call"
    assert [e for e in s.fed if isinstance(e, ev.RingFailed)] == []
    s.now[0] = 1050.0  # past the ring guard: it no longer applies
    s.feed("Event: Hangup\nChannel: PJSIP/1005-00000001\nUniqueid: 1796685949.1")
    assert isinstance(s.fed[-1], ev.CallEnded)
    assert s.engine.agent_state("1005") == "ready" and offerable(s.engine, "1005")
    assert all("not_ready" not in state for state in s.states_of("1005"))
