"""Re-adoption: what a queued caller carries on its channel (CTI_ADOPT), and a restarted
ctiserver taking the callers back from what its AMI login finds. The engine and the
tracker are the real ones; the AMI side answers CoreShowChannels, DeviceStateList and
Getvar with messages as Asterisk 22 writes them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ctiserver.asterisk.agi_calls import _PLAIN
from ctiserver.asterisk.ami_calls import AmiCallEvents
from ctiserver.calls import adoption
from ctiserver.calls.adoption import Adoption
from ctiserver.calls.model import Call, CallInfo
from ctiserver.core.acd import events as ev
from ctiserver.core.acd.engine import Engine
from ctiserver.core.acd.model import AcdConfig, AgentConfig, QueueConfig

from .test_calls_tracker import Actions, adapter_for, ami

# ---------------------------------------------------------------- the value itself


def test_what_a_caller_carries_survives_any_name_and_stays_plain() -> None:
    a = Adoption(queue="sales-es", joined_at=1733612345.125, priority=3,
                 skills={"billing": 5, "es": 2}, preferred_agent="1001",
                 preferred_timeout=20.0, caller_id="+34915551234",
                 caller_name='Ana "la jefa" / 50% ñ,=&', dnis="900100999",
                 route="queue sales-es (rule vip, 24/7)")
    value = a.encode()
    # the AGI answer sends it in its one MSet only when it needs no quoting
    assert _PLAIN.fullmatch(value)
    assert adoption.decode(value) == a


@pytest.mark.parametrize(("value", "reason"), [
    ("", "no CTI_ADOPT"),
    ("2/sales/1.0/0//////////", "version"),
    ("1/sales/1.0/0", "fields"),
    ("1//1.0/0///////", "no queue"),
    ("1/sales/yesterday/0///////", "join time"),
    ("1/sales/-5/0///////", "out of range"),
    ("1/sales/nan/0///////", "out of range"),
    ("1/sales/1.0/high///////", "priority"),
    ("1/sales/1.0/0/billing//////", "name:level"),
    ("1/sales/1.0/0/billing%3Ax//////", "name:level"),
    ("1/" + "x" * 2000, "longer"),
])
def test_a_value_that_is_not_one_says_what_is_wrong(value: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        adoption.decode(value)


def test_an_overlong_route_text_is_dropped_not_the_caller() -> None:
    a = Adoption(queue="sales", joined_at=1.0, route="r" * 5000)
    back = adoption.decode(a.encode())
    assert (back.queue, back.route) == ("sales", "")


# ---------------------------------------------------------------- taking callers back


class Asterisk:
    """The AMI link's ``call`` for the three actions a login's resync sends, answered
    from channels as CoreShowChannel lists them; ``send_nowait`` recorded."""

    def __init__(self, channels: list[dict[str, str]], variables: dict[str, str]) -> None:
        self.channels = channels
        self.variables = variables  # channel name -> CTI_ADOPT
        self.actions = Actions()
        self.getvars = 0

    def send_nowait(self, *actions: dict[str, str]) -> bool:
        return self.actions.send_nowait(*actions)

    async def call(self, action: dict[str, str], timeout: float = 5.0) -> Any:
        if action["Action"] == "CoreShowChannels":
            listed: list[Any] = [ami("Event: CoreShowChannel\n" + "\n".join(
                f"{k}: {v}" for k, v in c.items())) for c in self.channels]
            return [*listed, ami("Event: CoreShowChannelsComplete\nListItems: 0")]
        if action["Action"] == "DeviceStateList":
            return [ami("Event: DeviceStateListComplete")]
        assert action["Action"] == "Getvar" and action["Variable"] == "CTI_ADOPT"
        self.getvars += 1
        await asyncio.sleep(0)  # in flight together, as over the socket
        return {"Response": "Success", "Variable": "CTI_ADOPT",
                "Value": self.variables.get(action["Channel"], "")}


def caller(uid: str, context: str = "ctiserver-hold", app: str = "MusicOnHold") -> dict[str, str]:
    return {"Channel": f"PJSIP/trunk-{uid}", "Uniqueid": uid, "Linkedid": uid,
            "Context": context, "Exten": "s", "Priority": "1", "ChannelState": "6",
            "ChannelStateDesc": "Up", "CallerIDNum": "915551234", "Application": app}


def leg(uid: str, of: str, device: str, state: str) -> dict[str, str]:
    return {"Channel": f"{device}-{uid}", "Uniqueid": uid, "Linkedid": of,
            "Context": "ctiserver-agents", "Exten": "s", "ChannelStateDesc": state,
            "Application": "AppDial"}


def held(queue: str, joined: float, **kw: Any) -> str:
    return Adoption(queue=queue, joined_at=joined, caller_id="+34915551234", **kw).encode()


class Restarted:
    """A ctiserver just started: its engine and tracker, agents logged in per ``ready``,
    and the AMI login's resync against ``asterisk``."""

    def __init__(self, asterisk: Asterisk, ready: tuple[str, ...] = ()) -> None:
        agents = ("1001", "1002")
        cfg = AcdConfig({"support": QueueConfig("support", ring_timeout=12)},
                        {a: AgentConfig(a, a, f"PJSIP/{a}", queues=("support",))
                         for a in agents})
        self.engine = Engine(cfg)
        self.asterisk = asterisk
        self.t = 5000.0
        self.adapter: AmiCallEvents = adapter_for(asterisk.actions, self.submit, None, cfg)
        self.tracker = self.adapter.tracker
        self.tracker.queue_known = lambda q: q in cfg.queues
        self.adapter.ami = asterisk  # type: ignore[assignment]
        for a in ready:
            self.submit(ev.AgentLoggedIn(a), None)

    def submit(self, event: ev.Event, at: float | None) -> None:
        self.t += 0.001
        self.tracker.carry_out(event, self.engine.handle(event, at or self.t))

    async def login(self) -> None:
        await asyncio.wait_for(self.adapter.resync(), 2)

    def offers(self) -> list[tuple[str, str]]:
        """(channel, CTI_DIAL) of each offer sent as Setvar + Redirect, in order."""
        out, dial = [], ""
        for a in self.asterisk.actions.sent:
            if a["Action"] == "Setvar" and a.get("Variable") == "CTI_DIAL":
                dial = a["Value"]
            elif a["Action"] == "Redirect" and a["Context"] == "ctiserver-connect":
                out.append((a["Channel"], dial))
        return out


async def test_waiting_callers_are_taken_back_in_the_order_they_first_joined() -> None:
    # listed by Asterisk in channel order; they joined in another order (IVR lengths)
    asterisk = Asterisk(
        [caller("10.1"), caller("10.2", "ctiserver-announce", "Playback"), caller("10.3")],
        {"PJSIP/trunk-10.1": held("support", 4990.0),
         "PJSIP/trunk-10.2": held("support", 4950.0),
         "PJSIP/trunk-10.3": held("support", 4970.0)})
    r = Restarted(asterisk)
    await r.login()
    assert asterisk.getvars == 3
    assert [c.call_id for c in sorted(r.engine.calls.values(), key=lambda c: c.arrival)] \
        == ["10.2", "10.3", "10.1"]
    assert r.offers() == []  # nobody free yet
    r.submit(ev.AgentLoggedIn("1001"), None)
    r.submit(ev.AgentLoggedIn("1002"), None)
    assert r.offers() == [("PJSIP/trunk-10.2", "PJSIP/1001"),
                          ("PJSIP/trunk-10.3", "PJSIP/1002")]
    # its wait counts from its first join, not from the restart
    assert r.engine.calls["10.2"].arrival == 4950.0


async def test_a_caller_ringing_an_agent_keeps_the_ring() -> None:
    asterisk = Asterisk([caller("20.1", "ctiserver-connect", "Dial"),
                         leg("20.2", "20.1", "PJSIP/1001", "Ringing")],
                        {"PJSIP/trunk-20.1": held("support", 4900.0)})
    r = Restarted(asterisk, ready=("1001", "1002"))
    await r.login()
    # no Redirect: that would end the ring the caller hears
    assert r.offers() == []
    assert r.engine.calls["20.1"].offered_to == {"1001"}
    r.adapter.on_ami_event(ami("""
        Event: DialEnd
        Timestamp: 5001.0
        Uniqueid: 20.1
        DestChannel: PJSIP/1001-20.2
        DestUniqueid: 20.2
        DialStatus: NOANSWER"""))
    assert r.offers() == [("PJSIP/trunk-20.1", "PJSIP/1002")]  # the next agent, at once


async def test_an_answered_call_is_left_to_finish_and_its_agent_not_offered() -> None:
    asterisk = Asterisk([caller("30.1", "ctiserver-connect", "Dial"),
                         leg("30.2", "30.1", "PJSIP/1001", "Up"), caller("31.1")],
                        {"PJSIP/trunk-30.1": held("support", 4900.0),
                         "PJSIP/trunk-31.1": held("support", 4950.0)})
    r = Restarted(asterisk, ready=("1001",))
    await r.login()
    assert "30.1" not in r.tracker.calls and "30.1" not in r.engine.calls
    assert r.offers() == []  # 1001 talks (its phone is in use): 31.1 waits
    assert "31.1" in r.engine.calls


async def test_a_caller_that_cannot_be_taken_back_is_left_or_sent_to_the_fallback() -> None:
    asterisk = Asterisk([caller("40.1"), caller("41.1"), caller("42.1")],
                        {"PJSIP/trunk-40.1": "garbage",
                         "PJSIP/trunk-41.1": held("closed-queue", 4900.0),
                         "PJSIP/trunk-42.1": held("support", 4950.0)})
    r = Restarted(asterisk, ready=("1001",))
    await r.login()
    assert set(r.engine.calls) == {"42.1"}
    sent = [(a["Action"], a.get("Channel"), a.get("Context")) for a in asterisk.actions.sent]
    # its queue unknown either way: app_queue's fallback now, not music until CTI_MAXHOLD
    assert ("Redirect", "PJSIP/trunk-41.1", "ctiserver-fallback") in sent
    assert ("Redirect", "PJSIP/trunk-40.1", "ctiserver-fallback") in sent
    assert r.offers() == [("PJSIP/trunk-42.1", "PJSIP/1001")]


async def test_a_reconnect_does_not_take_back_a_caller_twice() -> None:
    asterisk = Asterisk([caller("50.1")], {})
    r = Restarted(asterisk)
    call = Call("50.1", "PJSIP/trunk-50.1", CallInfo("50.1", "+34915551234"))
    reply = await asyncio.wait_for(
        r.tracker.join(call, ev.CallerJoined("50.1", "support"), timeout=0.5), 1)
    asterisk.variables["PJSIP/trunk-50.1"] = reply[1]["CTI_ADOPT"]
    joined = r.engine.calls["50.1"].seq
    await r.login()  # the AMI link dropped and came back: the caller is ours already
    assert r.engine.calls["50.1"].seq == joined


async def test_a_caller_moved_to_another_queue_carries_the_new_one() -> None:
    cfg_queue = QueueConfig("support", ring_timeout=12, max_wait=10, overflow="queue:spill")
    asterisk = Asterisk([], {})
    r = Restarted(asterisk)
    r.engine.reconfigure(AcdConfig(
        {"support": cfg_queue, "spill": QueueConfig("spill")},
        {"1001": AgentConfig("1001", "1001", "PJSIP/1001", queues=("spill",))}), r.t)
    call = Call("60.1", "PJSIP/trunk-60.1", CallInfo("60.1", "+34915551234"))
    await asyncio.wait_for(r.tracker.join(call, ev.CallerJoined("60.1", "support"),
                                          timeout=0.5), 1)
    r.tracker.carry_out(ev.Tick(), r.engine.handle(ev.Tick(), r.t + 11))
    setvars = [a for a in asterisk.actions.sent if a.get("Variable") == "CTI_ADOPT"]
    assert [adoption.decode(a["Value"]).queue for a in setvars] == ["spill"]
