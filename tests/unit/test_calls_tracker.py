"""The calls feature's tracker behind the AMI adapter's translation table, fed with AMI
messages as Asterisk 22 writes them (parsed as the daemon parses them:
``ctiserver.asterisk.ami.parse_event``), and its effects turned into AMI actions. The AMI
side is a recorder of the actions that would be sent; the engine is the real one."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ctiserver.asterisk.ami import AmiEvent, parse_event
from ctiserver.asterisk.ami_calls import AmiCallEvents, AmiTelephony, device_of
from ctiserver.calls import adoption
from ctiserver.calls.model import Call, CallInfo
from ctiserver.calls.tracker import CallTracker
from ctiserver.core.acd import events as ev
from ctiserver.core.acd.engine import Engine
from ctiserver.core.acd.model import AcdConfig, AgentConfig, QueueConfig

EOL = "\r\n"


def ami(text: str) -> AmiEvent:
    return parse_event(EOL.join(line.strip() for line in text.strip().splitlines()))


class Actions:
    """Records the AMI actions the adapter sends, by either way of AmiConnection's."""

    def __init__(self) -> None:
        self.sent: list[dict[str, str]] = []
        self.writes = 0  # send_nowait: each call is one write to the socket

    def send(self, action: dict[str, str]) -> None:
        self.sent.append(action)

    def send_nowait(self, *actions: dict[str, str]) -> bool:
        self.sent.extend(actions)
        self.writes += 1
        return True


def adapter_for(actions: Actions, submit: Callable[[ev.Event, float | None], None],
                pops: object, cfg: AcdConfig, poke: object = None) -> AmiCallEvents:
    """The tracker and its AMI adapter, wired as the daemon wires them."""
    devices = {a.device: a.id for a in cfg.agents.values()}
    tracker = CallTracker(AmiTelephony(actions), submit, pops, devices,  # type: ignore[arg-type]
                          poke=poke)  # type: ignore[arg-type]
    return AmiCallEvents(tracker, actions)  # type: ignore[arg-type]


def setup() -> tuple[AmiCallEvents, Engine, Actions, list[ev.Event]]:
    cfg = AcdConfig({"support": QueueConfig("support", ring_timeout=12)},
                    {a: AgentConfig(a, a, f"PJSIP/{a}", queues=("support",))
                     for a in ("1001", "1002")})
    engine = Engine(cfg)
    actions = Actions()
    fed: list[ev.Event] = []
    adapter: AmiCallEvents

    def submit(event: ev.Event, at: float | None) -> None:
        fed.append(event)
        adapter.tracker.carry_out(event, engine.handle(event, at or 1000.0))

    adapter = adapter_for(actions, submit, None, cfg)
    for a in ("1001", "1002"):
        submit(ev.AgentLoggedIn(a), 999.0)
    return adapter, engine, actions, fed


def test_device_names() -> None:
    assert device_of("PJSIP/1001-0000000a") == "PJSIP/1001"
    assert device_of("Local/100@ctx-00000001;2") == "Local/100@ctx"
    assert device_of("PJSIP/trunk") == "PJSIP/trunk"


async def test_a_call_from_join_to_hangup() -> None:
    adapter, engine, actions, fed = setup()
    call = Call("1795.1", "PJSIP/trunk-00000001", CallInfo("1795.1", "+34915551234"))
    action, variables = await asyncio.wait_for(
        adapter.tracker.join(call, ev.CallerJoined("1795.1", "support")), 1)
    # an agent is free: the dialplan dials at once, no Redirect needed
    assert action == "connect"
    adopt = adoption.decode(variables.pop("CTI_ADOPT"))  # for a restart while it rings
    assert (adopt.queue, adopt.caller_id) == ("support", "+34915551234")
    assert variables == {"CTI_DIAL": "PJSIP/1001", "CTI_RINGTIMEOUT": "12"}
    assert actions.sent == []
    adapter.on_ami_event(ami("""
        Event: DialBegin
        Timestamp: 1000.5
        Channel: PJSIP/trunk-00000001
        Uniqueid: 1795.1
        Linkedid: 1795.1
        DestChannel: PJSIP/1001-00000002
        DestUniqueid: 1795.2
        DialString: PJSIP/1001"""))
    adapter.on_ami_event(ami("""
        Event: DialEnd
        Timestamp: 1001.0
        Uniqueid: 1795.1
        DestChannel: PJSIP/1001-00000002
        DestUniqueid: 1795.2
        DialStatus: ANSWER"""))
    assert engine.agent_state("1001") == "on_call"
    adapter.on_ami_event(ami("""
        Event: Hangup
        Timestamp: 1030.0
        Channel: PJSIP/1001-00000002
        Uniqueid: 1795.2
        Cause: 16"""))
    assert isinstance(fed[-1], ev.CallEnded)
    assert engine.agent_state("1001") == "ready"  # no wrap-up configured


async def test_an_unanswered_offer_goes_to_the_next_agent_by_redirect() -> None:
    adapter, engine, actions, fed = setup()
    call = Call("1795.1", "PJSIP/trunk-00000001", CallInfo("1795.1", "+34915551234"))
    await adapter.tracker.join(call, ev.CallerJoined("1795.1", "support"))
    adapter.on_ami_event(ami("""
        Event: DialBegin
        Uniqueid: 1795.1
        DestChannel: PJSIP/1001-00000002
        DestUniqueid: 1795.2"""))
    adapter.on_ami_event(ami("""
        Event: DialEnd
        Uniqueid: 1795.1
        DestChannel: PJSIP/1001-00000002
        DestUniqueid: 1795.2
        DialStatus: NOANSWER"""))
    assert engine.agent_state("1001") == "not_ready"
    # the caller keeps their place and is offered to 1002 at once: Setvar CTI_DIAL, then a
    # Redirect whose extension is the ring timeout (no Setvar of CTI_RINGTIMEOUT), one write
    assert actions.sent == [
        {"Action": "Setvar", "Channel": "PJSIP/trunk-00000001", "Variable": "CTI_DIAL",
         "Value": "PJSIP/1002"},
        {"Action": "Redirect", "Channel": "PJSIP/trunk-00000001",
         "Context": "ctiserver-connect", "Exten": "12", "Priority": "1"}]
    assert actions.writes == 1


async def test_a_caller_who_waited_is_offered_to_the_agent_who_frees_up() -> None:
    adapter, engine, actions, fed = setup()
    for a in ("1001", "1002"):
        adapter.tracker.submit(ev.AgentPaused(a, "lunch"), None)
    call = Call("1795.9", "PJSIP/trunk-00000009", CallInfo("1795.9", "+34600111222"))
    assert (await adapter.tracker.join(call, ev.CallerJoined("1795.9", "support")))[0] == "hold"
    assert actions.sent == []
    adapter.tracker.submit(ev.AgentReady("1002"), None)
    assert actions.sent == [
        {"Action": "Setvar", "Channel": "PJSIP/trunk-00000009", "Variable": "CTI_DIAL",
         "Value": "PJSIP/1002"},
        {"Action": "Redirect", "Channel": "PJSIP/trunk-00000009",
         "Context": "ctiserver-connect", "Exten": "12", "Priority": "1"}]
    assert actions.writes == 1


async def test_caller_hangup_while_waiting_is_an_abandon() -> None:
    adapter, engine, actions, fed = setup()
    for a in ("1001", "1002"):
        adapter.tracker.submit(ev.AgentPaused(a, "lunch"), None)
    call = Call("1795.9", "PJSIP/trunk-00000009", CallInfo("1795.9", "+34600111222"))
    assert (await adapter.tracker.join(call, ev.CallerJoined("1795.9", "support")))[0] == "hold"
    adapter.on_ami_event(ami("""
        Event: Hangup
        Uniqueid: 1795.9
        Channel: PJSIP/trunk-00000009
        Cause: 16"""))
    assert isinstance(fed[-1], ev.CallerLeft)
    queues = {q["name"]: q for q in engine.snapshot(1010.0)["queues"]}
    assert queues["support"]["abandoned"] == 1


def test_garbage_and_foreign_events_change_nothing() -> None:
    adapter, engine, actions, fed = setup()
    before = list(fed)
    for text in ("Event: DialBegin", "Event: Hangup\r\nUniqueid: \x00\x01",
                 "Event: DialEnd\r\nUniqueid: 999.9\r\nDestChannel: PJSIP/1001-1\r\n"
                 "DialStatus: ANSWER",  # a call that is not ours (e.g. the fallback queue)
                 "Event: DeviceStateChange\r\nDevice: PJSIP/9999\r\nState: INUSE",
                 "Response: Success", "Event: \r\nFoo: bar", "garbage without colon"):
        adapter.on_ami_event(parse_event(text))
    assert fed == before and actions.sent == []
    assert engine.agent_state("1001") == "ready"


def test_device_state_of_an_agent_phone_reaches_the_engine() -> None:
    adapter, engine, actions, fed = setup()
    adapter.on_ami_event(ami("""
        Event: DeviceStateChange
        Device: PJSIP/1002
        State: INUSE"""))
    assert fed[-1] == ev.DeviceStateChanged("PJSIP/1002", "INUSE")
    assert offerable(engine, "1002") is False  # a private call: not offered


def offerable(engine: Engine, agent: str) -> bool:
    return {a["id"]: a for a in engine.snapshot(1100.0)["agents"]}[agent]["offerable"]


async def answered_call(adapter: AmiCallEvents, private: bool = False,
                        agent_hangs_up: bool = True, device_events: bool = True) -> None:
    """1001 takes a call; its phone reports ringing and in use (with, optionally, a second
    call of its own on the phone meanwhile: a consultation); the agent hangs up (or, with
    ``agent_hangs_up=False``, nobody yet). ``device_events=False``: Asterisk's RINGING /
    INUSE are filtered out, as manager_ctiserver.conf does."""
    call = Call("1795.1", "PJSIP/trunk-00000001", CallInfo("1795.1", "+34915551234"))
    await adapter.tracker.join(call, ev.CallerJoined("1795.1", "support"))
    for text in ("Event: Newchannel\nChannel: PJSIP/1001-00000002\nUniqueid: 1795.2\n"
                 "Linkedid: 1795.1",
                 "Event: DialBegin\nUniqueid: 1795.1\nDestChannel: PJSIP/1001-00000002\n"
                 "DestUniqueid: 1795.2",
                 "Event: DeviceStateChange\nDevice: PJSIP/1001\nState: RINGING",
                 "Event: DialEnd\nUniqueid: 1795.1\nDestChannel: PJSIP/1001-00000002\n"
                 "DestUniqueid: 1795.2\nDialStatus: ANSWER",
                 "Event: DeviceStateChange\nDevice: PJSIP/1001\nState: INUSE"):
        if device_events or "DeviceStateChange" not in text:
            adapter.on_ami_event(ami(text))
    if private:
        adapter.on_ami_event(ami("Event: Newchannel\nChannel: PJSIP/1001-00000007\n"
                                 "Uniqueid: 1795.7\nLinkedid: 1795.7"))
    if agent_hangs_up:
        adapter.on_ami_event(ami("Event: Hangup\nChannel: PJSIP/1001-00000002\n"
                                 "Uniqueid: 1795.2"))


async def test_an_agent_is_offerable_the_moment_its_call_hangs_up() -> None:
    # Asterisk reports NOT_INUSE a few ms later (device states are computed apart): the
    # agent who has been free longest must not wait for it, nor lose its place meanwhile
    adapter, engine, _actions, _fed = setup()
    await answered_call(adapter)
    assert engine.agent_state("1001") == "ready" and offerable(engine, "1001")
    adapter.on_ami_event(ami("Event: DeviceStateChange\nDevice: PJSIP/1001\nState: NOT_INUSE"))
    assert offerable(engine, "1001")


async def test_a_phone_still_busy_with_another_call_after_ours_is_not_offered() -> None:
    adapter, engine, _actions, _fed = setup()
    await answered_call(adapter, private=True)
    assert engine.agent_state("1001") == "ready" and not offerable(engine, "1001")
    adapter.on_ami_event(ami("Event: Hangup\nChannel: PJSIP/1001-00000007\nUniqueid: 1795.7"))
    adapter.on_ami_event(ami("Event: DeviceStateChange\nDevice: PJSIP/1001\nState: NOT_INUSE"))
    assert offerable(engine, "1001")


async def test_without_ringing_and_in_use_events_our_leg_does_not_block_and_a_private_call_does(
        ) -> None:
    # manager_ctiserver.conf filters RINGING / INUSE out: the Newchannel of a channel that
    # is no call of ours is what makes the phone busy
    adapter, engine, _actions, fed = setup()
    await answered_call(adapter, device_events=False)
    assert ev.DeviceStateChanged("PJSIP/1001", "INUSE") not in fed
    assert engine.agent_state("1001") == "ready" and offerable(engine, "1001")
    adapter.on_ami_event(ami("Event: Newchannel\nChannel: PJSIP/1001-00000009\n"
                             "Uniqueid: 1795.9\nLinkedid: 1795.9"))  # the agent dials out
    assert fed[-1] == ev.DeviceStateChanged("PJSIP/1001", "INUSE")
    assert not offerable(engine, "1001")
    adapter.on_ami_event(ami("Event: Hangup\nChannel: PJSIP/1001-00000009\nUniqueid: 1795.9"))
    adapter.on_ami_event(ami("Event: DeviceStateChange\nDevice: PJSIP/1001\nState: NOT_INUSE"))
    assert offerable(engine, "1001")


async def test_a_phone_rung_by_another_call_is_busy_from_its_dial_begin_and_counted_once(
) -> None:
    # manager_ctiserver.conf leaves out the Newchannel of channels made to ring a phone
    # (extension s): an Originate to the agent's phone (no caller channel) or another
    # phone's Dial is first heard of by its DialBegin. Ours hears no Newchannel either.
    adapter, engine, _actions, fed = setup()
    call = Call("1795.1", "PJSIP/trunk-00000001", CallInfo("1795.1", "+34915551234"))
    await adapter.tracker.join(call, ev.CallerJoined("1795.1", "support"))
    adapter.on_ami_event(ami("Event: DialBegin\nUniqueid: 1795.1\n"
                             "DestChannel: PJSIP/1001-00000002\nDestUniqueid: 1795.2"))
    adapter.on_ami_event(ami("Event: DialEnd\nUniqueid: 1795.1\n"
                             "DestChannel: PJSIP/1001-00000002\nDestUniqueid: 1795.2\n"
                             "DialStatus: ANSWER"))
    assert ev.DeviceStateChanged("PJSIP/1001", "INUSE") not in fed  # our own ring
    # an Originate to the phone while it is on our call (a consultation)
    adapter.on_ami_event(ami("Event: DialBegin\nDestChannel: PJSIP/1001-00000007\n"
                             "DestUniqueid: 1795.7"))
    assert fed[-1] == ev.DeviceStateChanged("PJSIP/1001", "INUSE")
    before = len(fed)
    # an older Asterisk still sends its Newchannel: the same channel, told once
    adapter.on_ami_event(ami("Event: Newchannel\nChannel: PJSIP/1001-00000007\n"
                             "Uniqueid: 1795.7\nLinkedid: 1795.7\nExten: s"))
    assert len(fed) == before
    adapter.on_ami_event(ami("Event: Hangup\nChannel: PJSIP/1001-00000002\nUniqueid: 1795.2"))
    assert engine.agent_state("1001") == "ready" and not offerable(engine, "1001")
    # another phone's Dial to 1002 while 1002 is free: busy at once
    adapter.on_ami_event(ami("Event: DialBegin\nChannel: PJSIP/1001-00000007\n"
                             "Uniqueid: 1795.7\nDestChannel: PJSIP/1002-00000008\n"
                             "DestUniqueid: 1795.8"))
    assert not offerable(engine, "1002")
    for uid, chan in (("1795.7", "PJSIP/1001-00000007"), ("1795.8", "PJSIP/1002-00000008")):
        adapter.on_ami_event(ami(f"Event: Hangup\nChannel: {chan}\nUniqueid: {uid}"))
    for dev in ("PJSIP/1001", "PJSIP/1002"):
        adapter.on_ami_event(ami(f"Event: DeviceStateChange\nDevice: {dev}\nState: NOT_INUSE"))
    assert offerable(engine, "1001") and offerable(engine, "1002")


async def test_when_the_caller_hangs_up_first_the_agent_waits_for_its_own_leg_to_end() -> None:
    # Asterisk hangs up the agent's leg a few ms after the caller's: offering the agent the
    # next caller before that would ring a phone still tearing down this call
    adapter, engine, _actions, _fed = setup()
    await answered_call(adapter, agent_hangs_up=False)
    adapter.on_ami_event(ami("Event: Hangup\nChannel: PJSIP/trunk-00000001\nUniqueid: 1795.1"))
    assert engine.agent_state("1001") == "ready" and not offerable(engine, "1001")
    adapter.on_ami_event(ami("Event: Hangup\nChannel: PJSIP/1001-00000002\nUniqueid: 1795.2"))
    assert offerable(engine, "1001")


async def test_a_caller_gone_while_the_phone_rings_frees_the_agent_when_the_ring_ends() -> None:
    adapter, engine, _actions, _fed = setup()
    call = Call("1795.1", "PJSIP/trunk-00000001", CallInfo("1795.1", "+34915551234"))
    await adapter.tracker.join(call, ev.CallerJoined("1795.1", "support"))
    for text in ("Event: Newchannel\nChannel: PJSIP/1001-00000002\nUniqueid: 1795.2\n"
                 "Linkedid: 1795.1",
                 "Event: DialBegin\nUniqueid: 1795.1\nDestChannel: PJSIP/1001-00000002\n"
                 "DestUniqueid: 1795.2",
                 "Event: Hangup\nChannel: PJSIP/trunk-00000001\nUniqueid: 1795.1"):
        adapter.on_ami_event(ami(text))
    assert not offerable(engine, "1001")  # its phone is still ringing for this call
    adapter.on_ami_event(ami("Event: Hangup\nChannel: PJSIP/1001-00000002\nUniqueid: 1795.2"))
    assert offerable(engine, "1001")


async def test_a_ringing_state_seen_before_the_dial_does_not_block_the_agent_later() -> None:
    # Asterisk may report the phone ringing before DialBegin reaches us: the engine then
    # hears it, and the end of our call must clear it
    adapter, engine, _actions, _fed = setup()
    adapter.on_ami_event(ami("Event: DeviceStateChange\nDevice: PJSIP/1001\nState: RINGING"))
    await answered_call(adapter)
    assert engine.agent_state("1001") == "ready" and offerable(engine, "1001")


def test_an_unreachable_phone_stays_blocked_after_its_leg_hangs_up() -> None:
    adapter, engine, _actions, _fed = setup()
    for text in ("Event: Newchannel\nChannel: PJSIP/1002-00000003\nUniqueid: 1795.3",
                 "Event: DeviceStateChange\nDevice: PJSIP/1002\nState: UNAVAILABLE",
                 "Event: Hangup\nChannel: PJSIP/1002-00000003\nUniqueid: 1795.3"):
        adapter.on_ami_event(ami(text))
    assert not offerable(engine, "1002")


async def test_an_engine_that_does_not_answer_the_join_leaves_the_caller_holding() -> None:
    # the engine's answer comes too late (here: only when the test hands it over): the
    # dialplan is told to hold after the timeout, and the late offer is then a Redirect
    adapter, engine, actions, _fed = setup()
    held: list[ev.Event] = []
    adapter.tracker.submit = lambda event, at: held.append(event)  # type: ignore[method-assign]
    call = Call("1795.1", "PJSIP/trunk-00000001", CallInfo("1795.1", "+34915551234"))
    reply = await asyncio.wait_for(
        adapter.tracker.join(call, ev.CallerJoined("1795.1", "support"), timeout=0.05), 2)
    assert reply[0] == "hold" and set(reply[1]) == {"CTI_ADOPT"}
    adapter.tracker.carry_out(held[0], engine.handle(held[0], 1000.0))
    assert [(a["Action"], a.get("Context")) for a in actions.sent] == [
        ("Setvar", None), ("Redirect", "ctiserver-connect")]


async def test_the_not_inuse_after_our_call_is_not_told_twice_but_after_a_busy_ring_it_is(
        ) -> None:
    adapter, engine, _actions, fed = setup()
    not_inuse = "Event: DeviceStateChange\nDevice: PJSIP/1001\nState: NOT_INUSE"
    await answered_call(adapter, device_events=False)
    adapter.on_ami_event(ami(not_inuse))  # the first one the engine hears
    told = [e for e in fed if isinstance(e, ev.DeviceStateChanged)]
    assert told == [ev.DeviceStateChanged("PJSIP/1001", "NOT_INUSE")]
    adapter.on_ami_event(ami(not_inuse))  # after the next call: nothing new
    assert [e for e in fed if isinstance(e, ev.DeviceStateChanged)] == told
    # a ring that fails busy: the engine blocks the phone on its own, so Asterisk's next
    # NOT_INUSE (the same state as the engine was last told) must reach it
    adapter.on_ami_event(ami(not_inuse.replace("1001", "1002")))
    call = Call("1795.5", "PJSIP/trunk-00000005", CallInfo("1795.5", "+34915550000"))
    await adapter.tracker.join(call, ev.CallerJoined("1795.5", "support"))
    ringing = next(e for e in reversed(fed) if isinstance(e, ev.CallerJoined))
    assert ringing.call_id == "1795.5"
    agent = call.ringing[0]
    for text in (f"Event: DialBegin\nUniqueid: 1795.5\nDestChannel: PJSIP/{agent}-00000006\n"
                 "DestUniqueid: 1795.6",
                 f"Event: DialEnd\nUniqueid: 1795.5\nDestChannel: PJSIP/{agent}-00000006\n"
                 "DestUniqueid: 1795.6\nDialStatus: BUSY"):
        adapter.on_ami_event(ami(text))
    assert not offerable(engine, agent)
    adapter.on_ami_event(ami(f"Event: DeviceStateChange\nDevice: PJSIP/{agent}\n"
                             "State: NOT_INUSE"))
    assert offerable(engine, agent)


async def test_each_call_costs_the_engine_only_the_steps_that_change_it() -> None:
    # joined, answered, ended: the ring (DialBegin) and the caller's hang-up after the
    # agent's are no-ops for the engine and are not handed to it
    adapter, engine, _actions, fed = setup()
    before = len(fed)
    await answered_call(adapter, device_events=False)
    adapter.on_ami_event(ami("Event: Hangup\nChannel: PJSIP/trunk-00000001\nUniqueid: 1795.1"))
    assert [type(e).__name__ for e in fed[before:]] == [
        "CallerJoined", "RingAnswered", "CallEnded"]
    assert engine.agent_state("1001") == "ready" and offerable(engine, "1001")
    assert engine.snapshot(1100.0)["queues"][0]["abandoned"] == 0


async def test_the_hang_up_line_tells_the_whole_call(caplog) -> None:  # type: ignore[no-untyped-def]
    import logging

    adapter, _engine, _actions, _fed = setup()
    call = Call("1795.1", "PJSIP/trunk-00000001",
                CallInfo("1795.1", "+34915551234", "Ana", "900100200", joined_at=1000.0),
                route="queue support (rule vip line)")
    await adapter.tracker.join(call, ev.CallerJoined("1795.1", "support"))
    with caplog.at_level(logging.INFO, logger="ctiserver.calls"):
        for text in ("Event: DialBegin\nUniqueid: 1795.1\nDestChannel: PJSIP/1001-00000002\n"
                     "DestUniqueid: 1795.2\nTimestamp: 1001.0",
                     "Event: DialEnd\nUniqueid: 1795.1\nDestChannel: PJSIP/1001-00000002\n"
                     "DestUniqueid: 1795.2\nDialStatus: ANSWER\nTimestamp: 1002.5",
                     "Event: Hangup\nChannel: PJSIP/trunk-00000001\nUniqueid: 1795.1\n"
                     "Cause-txt: Normal Clearing\nTimestamp: 1062.5"):
            adapter.on_ami_event(ami(text))
    lines = [r.getMessage() for r in caplog.records if r.name == "ctiserver.calls"]
    assert lines == ["[1795.1] caller hung up (Normal Clearing): +34915551234 (Ana) -> 900100200, "
                     "queue support (rule vip line), answered by agent 1001, waited 2.5 s, "
                     "talked 60.0 s"]


class PopLog:
    """The screen-pop side as the adapter calls it, writing into the log the AMI actions
    go to, so that the order of the two can be checked."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.changed = asyncio.Event()

    def note(self, text: str) -> None:
        self.log.append(text)
        self.changed.set()

    async def until(self, text: str) -> None:
        async with asyncio.timeout(2):
            while text not in self.log:
                self.changed.clear()
                await self.changed.wait()

    def prefetch(self, info: CallInfo) -> None:
        pass

    def offered_nowait(self, info: CallInfo, agent: str) -> None:
        self.note(f"pop offered {info.call_id} {agent}")

    def answered_nowait(self, call_id: str, agent: str) -> None:
        self.note(f"pop answered {call_id} {agent}")

    def ended_nowait(self, call_id: str, agent: str | None, **_: object) -> None:
        if call_id == "boom":
            raise RuntimeError("a broken note")
        self.note(f"pop ended {call_id}")

    def agent_state_changed(self, agent: str, state: str, *_: object) -> None:
        self.note(f"state {agent} {state}")


async def test_in_one_ami_read_the_freed_agent_is_offered_before_the_pop_notes_are_written(
) -> None:
    # One read from AMI often carries an agent's hang-up with other calls' hang-ups and
    # answers: the ACD task offers the freed agent the waiting caller first; the notes
    # (call ended, agents' states) follow, all of them, in order, even after one that fails.
    from ctiserver.acd.runner import AcdRunner

    cfg = AcdConfig({"support": QueueConfig("support", ring_timeout=12)},
                    {"1001": AgentConfig("1001", "1001", "PJSIP/1001", queues=("support",))})
    log: list[str] = []

    class Sent(Actions):
        def send_nowait(self, *actions: dict[str, str]) -> bool:
            log.extend(f"{a['Action']} {a['Channel']}" for a in actions)
            return super().send_nowait(*actions)

    adapter: AmiCallEvents
    runner = AcdRunner(Engine(cfg), lambda e, fx: adapter.tracker.carry_out(e, fx),
                       freeze_at_start=False)
    pops = PopLog(log)
    adapter = adapter_for(Sent(), runner.submit, pops, cfg, poke=runner.poke)
    tracker = adapter.tracker
    runner.after_steps(tracker.run_deferred)  # as the daemon wires them
    task = asyncio.create_task(runner.run())
    try:
        runner.submit(ev.AgentLoggedIn("1001"))
        first = Call("1795.1", "PJSIP/trunk-00000001", CallInfo("1795.1", "+34915551234"))
        assert (await tracker.join(first, ev.CallerJoined("1795.1", "support")))[0] == "connect"
        adapter.on_ami_event(ami("Event: DialBegin\nUniqueid: 1795.1\n"
                                 "DestChannel: PJSIP/1001-00000002\nDestUniqueid: 1795.2"))
        adapter.on_ami_event(ami("Event: DialEnd\nUniqueid: 1795.1\n"
                                 "DestChannel: PJSIP/1001-00000002\nDestUniqueid: 1795.2\n"
                                 "DialStatus: ANSWER"))
        second = Call("1795.3", "PJSIP/trunk-00000003", CallInfo("1795.3", "+34600111222"))
        assert (await tracker.join(second, ev.CallerJoined("1795.3", "support")))[0] == "hold"
        third = Call("boom", "PJSIP/trunk-00000009", CallInfo("boom", "+34600999999"))
        assert (await tracker.join(third, ev.CallerJoined("boom", "support")))[0] == "hold"
        await pops.until("pop answered 1795.1 1001")  # the notes so far are written
        log.clear()
        # one read: the agent hangs up, its caller goes, the third caller gives up
        for text in ("Event: Hangup\nChannel: PJSIP/1001-00000002\nUniqueid: 1795.2",
                     "Event: Hangup\nChannel: PJSIP/trunk-00000001\nUniqueid: 1795.1",
                     "Event: Hangup\nChannel: PJSIP/trunk-00000009\nUniqueid: boom"):
            adapter.on_ami_event(ami(text))
        await pops.until("state 1001 offered")
        assert log == ["Setvar PJSIP/trunk-00000003", "Redirect PJSIP/trunk-00000003",
                       "pop ended 1795.1", "state 1001 ready", "state 1001 offered"]
    finally:
        task.cancel()
