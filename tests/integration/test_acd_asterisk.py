"""The ACD on the real sandbox Asterisk: strategies, skills, announcements, ring-no-answer,
abandon and persisted agent state. sipp callers and sipp agent phones; every assertion
comes from Asterisk's own AMI events (observer user) or the daemon's log."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import textwrap
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import (
    NO_ANSWER_PHONE,
    AgentPhones,
    CtiServer,
    Observer,
    place_calls,
    set_fallback_members,
)

pytestmark = pytest.mark.integration

AGENTS_123 = ("1001", "1002", "1003")


def agents_toml(ids: tuple[str, ...], *, skills: dict[str, str] | None = None,
                logged_in: tuple[str, ...] | None = None) -> str:
    skills = skills or {}
    logged_in = ids if logged_in is None else logged_in
    return "".join(textwrap.dedent(f"""
        [[agents]]
        id = "{a}"
        name = "Agent {a}"
        skills = {{ {skills.get(a, "")} }}
        auto_login = {"true" if a in logged_in else "false"}
        """) for a in ids)


def queue_toml(name: str, members: tuple[str, ...], **settings: Any) -> str:
    lines = ["[[queues]]", f'name = "{name}"',
             "members = [" + ", ".join(f'"{m}"' for m in members) + "]"]
    for key, value in settings.items():
        lines.append(f"{key} = {value!r}" if not isinstance(value, str)
                     else f'{key} = "{value}"')
    return "\n" + "\n".join(lines) + "\n"


def rules_yaml(queue: str, extra_rules: str = "") -> str:
    return textwrap.dedent(f"""
        config:
          timezone: Europe/Madrid
          region: ES
          default: {{queue: {queue}}}
        rules:
          - name: test line
            if: dnis == '900100999'
            then: {{queue: {queue}}}
        """) + textwrap.indent(textwrap.dedent(extra_rules), "  ")


def rings(obs: Observer) -> list[tuple[str, str, float]]:
    """(caller Uniqueid, agent id, Asterisk timestamp) of every agent rung, in order."""
    return [(e.get("Uniqueid", ""), e.DestChannel.rsplit("-", 1)[0].split("/", 1)[1],
             float(e.Timestamp)) for e in obs.events if e.event == "DialBegin"]


def rung_agents(obs: Observer) -> list[str]:
    return [agent for _uid, agent, _ts in rings(obs)]


def caller_of(obs: Observer) -> dict[str, str]:
    """caller channel Uniqueid -> CallerIDNum, from DialBegin (caller side fields)."""
    return {e.Uniqueid: e.CallerIDNum for e in obs.events if e.event == "DialBegin"}


def one_call(tmp_path: Path, obs: Observer, dnis: str = "900100999",
             number: str = "+34600000001", maxwait_ms: int = 15000) -> None:
    result = place_calls(tmp_path, dnis, callers=[(number, "Caller")], maxwait_ms=maxwait_ms,
                         timeout=30)
    assert result.successful == 1, result.output
    obs.pump()


def queue_calls(cti: CtiServer, tmp_path: Path, obs: Observer,
                callers: list[tuple[str, str]], talk_ms: tuple[int, int], *, rate: float = 10,
                maxwait_ms: int = 20000, timeout: int = 40, never_answers: bool = False) -> None:
    """Start ``cti``, place ``callers`` on 900100999 to phones answering after 100 ms (and,
    with ``never_answers``, the phone that never does), stop it; every call must complete."""
    cti.start()
    try:
        with contextlib.ExitStack() as phones:
            phones.enter_context(AgentPhones(tmp_path, answer_ms=100, talk_ms=talk_ms))
            if never_answers:
                phones.enter_context(AgentPhones(tmp_path, port=NO_ANSWER_PHONE,
                                                 answer_ms=3_600_000))
            result = place_calls(tmp_path, "900100999", calls=len(callers), rate=rate,
                                 maxwait_ms=maxwait_ms, callers=callers, timeout=timeout)
            assert result.successful == len(callers), result.output
    finally:
        assert cti.stop() == 0
    obs.pump()


def ami_action(obs: Observer, action: dict[str, str]) -> Any:
    """Send an AMI action as the observer and wait for its response."""
    async def send() -> Any:
        return await obs.manager.send_action(action)

    return obs.loop.run_until_complete(send())


def answered(obs: Observer) -> int:
    assert obs.named("UserEvent", UserEvent="CtiFallback") == [], "a call fell back"
    return sum(1 for e in obs.events if e.event == "DialEnd" and e.DialStatus == "ANSWER")


# ---------------------------------------------------------------- distribution


@pytest.mark.parametrize("strategy, expected", [
    ("longest_idle", ["1001", "1002", "1003", "1001"]),
    ("round_robin", ["1001", "1002", "1003", "1001"]),
    ("first_available", ["1001", "1001", "1001", "1001"]),
    ("fewest_calls", ["1001", "1002", "1003", "1001"]),
    ("least_talk_time", None),  # 4th call: the agent with least talk, measured from AMI
])
def test_each_call_rings_the_agent_the_strategy_names(
        strategy: str, expected: list[str] | None, asterisk: None, observer: Observer,
        tmp_path: Path) -> None:
    cti = CtiServer(tmp_path, queues=queue_toml("q", AGENTS_123, strategy=strategy,
                                                ring_timeout=5),
                    agents=agents_toml(AGENTS_123), rules=rules_yaml("q")).start()
    talk = (300, 300) if expected is not None else (200, 1200)
    try:
        with AgentPhones(tmp_path, answer_ms=100, talk_ms=talk):
            for i in range(4):
                one_call(tmp_path, observer, number=f"+3460000000{i}")
                # the agent's leg has hung up before the next caller arrives
                observer.wait_for(lambda e: e.event == "Hangup"
                                  and e.Channel.startswith("PJSIP/10"), 10,
                                  "the agent legs' hangups", count=i + 1)
    finally:
        assert cti.stop() == 0
    got = rung_agents(observer)
    if expected is None:
        assert got[:3] == ["1001", "1002", "1003"]
        # talk time of each agent as Asterisk saw it: answer (DialEnd) -> agent leg hangup
        start = {e.DestUniqueid: float(e.Timestamp) for e in observer.events
                 if e.event == "DialEnd" and e.DialStatus == "ANSWER"}
        talk_of: dict[str, float] = defaultdict(float)
        fourth = rings(observer)[3][2]
        for e in observer.events:  # the talk done before the 4th call was offered
            if e.event == "Hangup" and e.Uniqueid in start and float(e.Timestamp) < fourth:
                talk_of[e.Channel.rsplit("-", 1)[0].split("/")[1]] += (
                    float(e.Timestamp) - start[e.Uniqueid])
        least = min(AGENTS_123, key=lambda a: talk_of[a])
        assert got[3] == least, (got, dict(talk_of))
    else:
        assert got == expected
    assert answered(observer) == 4


def test_ring_all_rings_every_free_agent_and_one_answers(
        asterisk: None, observer: Observer, tmp_path: Path) -> None:
    cti = CtiServer(tmp_path, queues=queue_toml("q", AGENTS_123, strategy="ring_all",
                                                ring_timeout=5),
                    agents=agents_toml(AGENTS_123), rules=rules_yaml("q")).start()
    try:
        with AgentPhones(tmp_path, answer_ms=150, talk_ms=(300, 300)):
            for i in (1, 2):
                one_call(tmp_path, observer, number=f"+3460000001{i}")
                observer.wait_for(lambda e: e.event == "DialEnd" and e.DialStatus == "ANSWER",
                                  10, "an answer", count=i)
                cti.wait_log("caller hung up", 10, count=i)
    finally:
        assert cti.stop() == 0
    by_caller: dict[str, set[str]] = defaultdict(set)
    for uid, agent, _ts in rings(observer):
        by_caller[uid].add(agent)
    assert list(by_caller.values()) == [set(AGENTS_123), set(AGENTS_123)]
    # one winner per call
    assert answered(observer) == 2


# ---------------------------------------------------------------- skills


def test_a_call_needing_a_skill_waits_for_an_agent_who_has_it(
        asterisk: None, observer: Observer, tmp_path: Path) -> None:
    rules = rules_yaml("q", textwrap.dedent("""
          - name: billing line
            if: dnis == '900200300'
            then: {queue: q, skills: {billing: 4}}
        """))
    cti = CtiServer(tmp_path, queues=queue_toml("q", AGENTS_123, ring_timeout=5),
                    agents=agents_toml(AGENTS_123, skills={
                        "1001": "billing = 5", "1002": "technical = 8",
                        "1003": "billing = 3"}),
                    rules=rules).start()
    try:
        with AgentPhones(tmp_path, answer_ms=100, talk_ms=(800, 800)):
            # two billing calls at once: the second waits for 1001 although 1002/1003 are free
            result = place_calls(tmp_path, "900200300", calls=2, rate=10, maxwait_ms=15000,
                                 callers=[("+34600000021", "A"), ("+34600000022", "B")],
                                 timeout=30)
            assert result.successful == 2, result.output
            one_call(tmp_path, observer, dnis="900100999")  # no skill needed
    finally:
        assert cti.stop() == 0
    assert observer.named("UserEvent", UserEvent="CtiFallback") == []
    got = rung_agents(observer)
    assert got[:2] == ["1001", "1001"]
    assert got[2] in ("1002", "1003")  # longest idle among the others
    assert answered(observer) == 3


# ---------------------------------------------------------------- announcements


def test_position_announcements_play_while_waiting_and_stop_for_a_free_agent(
        asterisk: None, observer: Observer, tmp_path: Path) -> None:
    cti = CtiServer(tmp_path, queues=queue_toml("q", ("1001",), ring_timeout=5,
                                                announce_frequency=1.0,
                                                announce_first_after=0.5),
                    agents=agents_toml(("1001",)), rules=rules_yaml("q"))
    queue_calls(cti, tmp_path, observer, [("+34600000031", "A"), ("+34600000032", "B")],
                talk_ms=(3000, 3000))
    first, second = [uid for uid, _a, _t in rings(observer)]
    marks = [e for e in observer.events if e.event == "UserEvent"
             and e.UserEvent == "CtiAnnounce" and e.CallId == second]
    assert marks and marks[0].Position == "1", "the waiting caller heard their position"
    assert not [e for e in observer.events if e.event == "UserEvent"
                and e.UserEvent == "CtiAnnounce" and e.CallId == first]
    # the agent freed up in the middle of an announcement: rung at once, not after it
    ring_ts = next(t for uid, _a, t in rings(observer) if uid == second)
    before = [m for m in marks if float(m.Timestamp) <= ring_ts]
    assert before and before[-1].State == "start", [(m.State, m.Timestamp) for m in marks]
    assert not [m for m in marks if float(m.Timestamp) > ring_ts]
    free_ts = [float(e.Timestamp) for e in observer.events if e.event == "Hangup"
               and e.Channel.startswith("PJSIP/1001")][0]
    assert ring_ts - free_ts < 0.5, "the freed agent was rung at once"


# ---------------------------------------------------------------- ring-no-answer


def test_unanswered_ring_goes_to_the_next_agent_keeping_the_callers_place(
        asterisk: None, observer: Observer, tmp_path: Path) -> None:
    # first_available, members 1001 then 1005 (a phone that never answers)
    cti = CtiServer(tmp_path, queues=queue_toml("q", ("1001", "1005"),
                                                strategy="first_available", ring_timeout=2),
                    agents=agents_toml(("1001", "1005")), rules=rules_yaml("q"))
    # B takes 1001; A is offered to 1005, which rings out; C arrives after A
    queue_calls(cti, tmp_path, observer, [("+34600000041", "B"), ("+34600000042", "A"),
                                          ("+34600000043", "C")],
                talk_ms=(3000, 3000), rate=3, maxwait_ms=30000, timeout=60, never_answers=True)
    who = caller_of(observer)
    seq = [(who[uid], agent, ts) for uid, agent, ts in rings(observer)]
    assert [(c, a) for c, a, _t in seq] == [
        ("+34600000041", "1001"), ("+34600000042", "1005"),
        ("+34600000042", "1001"), ("+34600000043", "1001")]
    noanswer = [e for e in observer.events if e.event == "DialEnd"
                and e.DestChannel.startswith("PJSIP/1005")]
    assert [e.DialStatus for e in noanswer] == ["NOANSWER"]
    assert 1.5 < float(noanswer[0].Timestamp) - seq[1][2] < 3.0  # the 2 s ring timeout
    # A waited ahead of C and got 1001 as soon as B's call ended
    b_end = [float(e.Timestamp) for e in observer.events if e.event == "Hangup"
             and e.Channel.startswith("PJSIP/1001")][0]
    assert seq[2][2] - b_end < 0.5
    assert "agent 1005: not_ready (no answer)" in cti.log()


def test_a_waiting_caller_is_redirected_with_the_ring_timeout_as_the_extension(
        asterisk: None, observer: Observer, tmp_path: Path) -> None:
    # one agent, two callers: A dials the pre-decided agent from the first step of
    # ctiserver-inbound (docs/fast-path.md), B waits and is offered by Setvar CTI_DIAL +
    # Redirect to ctiserver-connect,120,1 (three digits)
    cti = CtiServer(tmp_path, queues=queue_toml("q", ("1001",), ring_timeout=120),
                    agents=agents_toml(("1001",)), rules=rules_yaml("q"))
    queue_calls(cti, tmp_path, observer, [("+34600000051", "A"), ("+34600000052", "B")],
                talk_ms=(1000, 1000))
    first, second = [uid for uid, _a, _t in rings(observer)]

    def connect(uid: str) -> list[tuple[str, str, str]]:
        return [(e.Exten, e.Application, e.AppData) for e in observer.events
                if e.event == "Newexten" and e.Uniqueid == uid
                and e.Context == "ctiserver-connect"]

    inbound = [(e.Priority, e.Application, e.AppData) for e in observer.events
               if e.event == "Newexten" and e.Uniqueid == first
               and e.Context == "ctiserver-inbound"]
    assert inbound[0] == ("1", "ExecIf", "1?Dial(PJSIP/1001,120):Goto(ask)"), inbound
    assert connect(first) == []
    # nothing runs before the Dial: the ring timeout is the extension itself
    assert connect(second) == [("120", "Dial", "PJSIP/1001,120")]
    assert "AMI Setvar on" not in cti.log() and "AMI Redirect on" not in cti.log()


def test_an_offer_by_extension_not_answered_goes_back_on_hold_after_its_ring_timeout(
        asterisk: None, observer: Observer, tmp_path: Path) -> None:
    # where a Redirect to ctiserver-connect,2,1 lands, without ctiserver: a Local channel
    # stands for the caller (CTI_DIAL set as ctiserver's Setvar would), 1005 never answers
    with AgentPhones(tmp_path, port=NO_ANSWER_PHONE, answer_ms=3_600_000):
        ami_action(observer, {"Action": "Originate", "Channel": "Local/2@ctiserver-connect",
                              "Application": "Wait", "Data": "10", "Timeout": "6000",
                              "Async": "true", "Variable": "CTI_DIAL=PJSIP/1005"})
        held = observer.wait_for(lambda e: e.event == "Newexten"
                                 and e.Context == "ctiserver-hold", 10, "the caller on hold")
        caller = held[0].Uniqueid
        observer.wait_for(lambda e: e.event == "Hangup" and e.Uniqueid == caller, 15,
                          "the originate to give up")
    steps = [(e.Context, e.Exten, e.Application, e.AppData) for e in observer.events
             if e.event == "Newexten" and e.Uniqueid == caller]
    assert steps[:5] == [
        ("ctiserver-connect", "2", "Dial", "PJSIP/1005,2"),
        ("ctiserver-connect", "2", "Goto", "s,dialled"),
        ("ctiserver-connect", "s", "ExecIf", "0?Hangup()"),  # DIALSTATUS is not ANSWER
        ("ctiserver-connect", "s", "Goto", "ctiserver-hold,s,1"),
        ("ctiserver-hold", "s", "MusicOnHold", "default,900")], steps
    begin, end = [float(e.Timestamp) for e in observer.events
                  if e.event in ("DialBegin", "DialEnd") and e.Uniqueid == caller]
    assert 1.5 < end - begin < 3.0  # the 2 s of the extension


async def test_fire_and_forget_actions_and_their_responses_on_the_real_ami(
        asterisk: None, caplog: pytest.LogCaptureFixture) -> None:
    # the daemon's own AMI connection: send_nowait's text is accepted, its responses are
    # told apart from panoramisk's (a Ping in between) and an error names the channel
    from ctiserver.asterisk.ami import AmiConnection
    from ctiserver.config import AmiConfig

    conn = AmiConnection(AmiConfig(secret="ctiserver-sandbox-secret"), lambda _e: None)
    await conn.start()
    try:
        await asyncio.wait_for(conn.connected.wait(), 10)
        protocol = conn.manager.protocol
        nobody = "PJSIP/nobody-00000000"
        with caplog.at_level(logging.INFO, logger="ctiserver.ami"):
            assert conn.send_nowait(
                {"Action": "Setvar", "Channel": nobody, "Variable": "CTI_DIAL", "Value": "x"},
                {"Action": "Redirect", "Channel": nobody, "Context": "ctiserver-connect",
                 "Exten": "15", "Priority": "1"})
            pong = await conn.call({"Action": "Ping"})
            assert pong.response == "Success"
            for _ in range(100):
                if not protocol.pending:
                    break
                await asyncio.sleep(0.02)
        assert protocol.pending == {}
        failures = [r.getMessage() for r in caplog.records
                    if r.name == "ctiserver.ami" and " on " in r.getMessage()]
        assert [m.split(":", 1)[0] for m in failures] == [
            f"AMI Setvar on {nobody}", f"AMI Redirect on {nobody}"], failures
    finally:
        conn.close()


async def test_the_shipped_event_filter_gives_ctiserver_only_what_it_acts_on(
        asterisk: None, observer: Observer, tmp_path: Path) -> None:
    # manager_ctiserver.conf as installed: a call (here through the app_queue fallback,
    # ctiserver being down) reaches the ctiserver user as dial and hangup events and the
    # phone's NOT_INUSE, without the RINGING / INUSE the DialBegin already told, nor any
    # Newchannel: not the inbound channel's (ctiserver-inbound), not the agent leg's (made
    # to ring the phone, extension s: its DialBegin says it), nor app_queue's Queue: states
    from ctiserver.asterisk.ami import AmiConnection
    from ctiserver.config import AmiConfig

    await asyncio.to_thread(set_fallback_members, observer,
                            ("PJSIP/1001", "PJSIP/1002", "PJSIP/1003", "PJSIP/1004"))
    seen: list[Any] = []
    conn = AmiConnection(AmiConfig(secret="ctiserver-sandbox-secret"), seen.append)
    await conn.start()
    try:
        await asyncio.wait_for(conn.connected.wait(), 10)

        def one_call() -> None:
            with AgentPhones(tmp_path, talk_ms=(300, 400)):
                result = place_calls(tmp_path, "900100999", maxwait_ms=30000, timeout=40)
            assert result.successful == 1, result.output

        await asyncio.to_thread(one_call)
        for _ in range(250):  # the agent's NOT_INUSE comes a little after its hang-up
            if any(e.event == "DeviceStateChange" and e.State == "NOT_INUSE" for e in seen):
                break
            await asyncio.sleep(0.02)
    finally:
        conn.close()
    names = {e.event for e in seen}
    assert {"DialBegin", "DialEnd", "Hangup", "UserEvent"} <= names, names
    assert names <= {"DialBegin", "DialEnd", "Hangup", "UserEvent", "DeviceStateChange",
                     "FullyBooted"}, names
    agent = next(e.DestChannel for e in seen if e.event == "DialBegin").rsplit("-", 1)[0]
    states = [(e.Device, e.State) for e in seen if e.event == "DeviceStateChange"]
    assert (agent, "NOT_INUSE") in states, states
    assert all(device.startswith("PJSIP/") for device, _state in states), states
    assert any(e.event == "Hangup" and e.Channel.startswith("PJSIP/trunk-") for e in seen)
    states = [e.State for e in seen if e.event == "DeviceStateChange" and e.Device == agent]
    assert states and set(states) == {"NOT_INUSE"}, states


# ---------------------------------------------------------------- abandon


def test_a_caller_hanging_up_while_waiting_is_counted_abandoned(
        asterisk: None, observer: Observer, tmp_path: Path) -> None:
    # the only agent is logged out: the caller waits, then gives up after 1.5 s
    cti = CtiServer(tmp_path, queues=queue_toml("q", ("1001",), ring_timeout=5),
                    agents=agents_toml(("1001",), logged_in=()), rules=rules_yaml("q")).start()
    try:
        result = place_calls(tmp_path, "900100999", callers=[("+34600000051", "Gone")],
                             maxwait_ms=1500, timeout=20)
        assert result.successful == 1, result.output
        cti.wait_log("abandoned in q after", 10)
    finally:
        assert cti.stop() == 0
    assert rung_agents(observer) == []
    assert observer.named("UserEvent", UserEvent="CtiFallback") == []
    line = next(x for x in cti.log().splitlines() if "abandoned in q after" in x)
    waited = float(line.rsplit("after ", 1)[1].split()[0])
    assert 1.0 <= waited <= 3.0, line


# ---------------------------------------------------------------- persisted state


def test_an_agent_paused_from_the_phone_is_still_paused_after_a_restart(
        asterisk: None, observer: Observer, tmp_path: Path) -> None:
    ids = ("1001", "1002")
    cti = CtiServer(tmp_path, queues=queue_toml("q", ids, strategy="first_available",
                                                ring_timeout=5),
                    agents=agents_toml(ids), rules=rules_yaml("q")).start()
    try:
        with AgentPhones(tmp_path, answer_ms=100, talk_ms=(3000, 3000)):
            # 1001 dials *73 (not ready) from their phone
            ami_action(observer, {"Action": "Originate", "Channel": "PJSIP/1001",
                                  "Context": "ctiserver-agents", "Exten": "*73",
                                  "Priority": "1", "Async": "true"})
            cti.wait_log("agent 1001: pause from the phone", 15)
            cti.wait_log("agent 1001: not_ready", 5)
    finally:
        assert cti.stop() == 0
    cti.start()
    try:
        cti.wait_log("agent 1001 restored as not_ready", 10)
        with AgentPhones(tmp_path, answer_ms=100, talk_ms=(300, 300)):
            n = len(rings(observer))
            one_call(tmp_path, observer)
    finally:
        assert cti.stop() == 0
    # first_available would pick 1001 if it were ready
    assert rung_agents(observer)[n:] == ["1002"]


# ---------------------------------------------------------------- the agent's phone


def ring_after(obs: Observer, after: int, what: str) -> Any:
    """The first DialBegin among the events from index ``after`` on."""
    return obs.wait_for(lambda e: e.event == "DialBegin" and obs.events.index(e) >= after,
                        20, what)[0]


def wait_answered(obs: Observer, ring: Any, what: str) -> None:
    obs.wait_for(lambda e: e.event == "DialEnd" and e.DialStatus == "ANSWER"
                 and e.DestUniqueid == ring.DestUniqueid, 15, what)


def test_a_phone_still_busy_after_a_queue_call_is_offered_only_once_free(
        asterisk: None, observer: Observer, tmp_path: Path) -> None:
    """1001 takes a queue call, then a second call on the same phone (a consultation). When
    the queue call ends the phone is still in use, and Asterisk says nothing new about it:
    the next caller must go to 1002 although first_available prefers 1001; once the second
    call is over, 1001 is offered again."""
    ids = ("1001", "1002")
    cti = CtiServer(tmp_path, queues=queue_toml("q", ids, strategy="first_available",
                                                ring_timeout=5),
                    agents=agents_toml(ids), rules=rules_yaml("q")).start()
    calls = ThreadPoolExecutor(3)
    try:
        # the phones keep every call up until Asterisk ends it (AMI Hangup below)
        with AgentPhones(tmp_path, answer_ms=100, talk_ms=(60000, 60000)):
            def answered_by(agent: str, number: str, start: int) -> tuple[Future[Any], Any]:
                """Call ``number``; the first agent rung after event ``start`` is ``agent``,
                who answers. The placed call and its DialBegin."""
                placed = calls.submit(place_calls, tmp_path, "900100999",
                                      callers=[(number, "Caller")], maxwait_ms=20000,
                                      timeout=90)
                ring = ring_after(observer, start, f"{number} ringing an agent")
                assert ring.DestChannel.startswith(f"PJSIP/{agent}-"), ring.DestChannel
                wait_answered(observer, ring, f"{agent} answering")
                return placed, ring

            first, ring_a = answered_by("1001", "+34600000001", len(observer.events))
            ami_action(observer, {"Action": "Originate", "Channel": "PJSIP/1001",
                                  "Application": "Wait", "Data": "60", "Async": "true"})
            private = observer.wait_for(
                lambda e: e.event == "Newstate" and e.ChannelStateDesc == "Up"
                and e.Channel.startswith("PJSIP/1001-") and e.Uniqueid != ring_a.DestUniqueid,
                15, "the second call on 1001's phone answered")[0]
            ami_action(observer, {"Action": "Hangup", "Channel": ring_a.Channel})
            assert first.result().successful == 1
            cti.wait_log(f"[{ring_a.Uniqueid}] caller hung up", 10)

            second, ring_b = answered_by("1002", "+34600000002", len(observer.events))
            ami_action(observer, {"Action": "Hangup", "Channel": ring_b.Channel})
            assert second.result().successful == 1

            start = len(observer.events)
            ami_action(observer, {"Action": "Hangup", "Channel": private.Channel})
            observer.wait_for(lambda e: e.event == "DeviceStateChange"
                              and e.Device == "PJSIP/1001" and e.State == "NOT_INUSE"
                              and observer.events.index(e) >= start, 15, "1001's phone free")
            third, ring_c = answered_by("1001", "+34600000003", start)
            ami_action(observer, {"Action": "Hangup", "Channel": ring_c.Channel})
            assert third.result().successful == 1
    finally:
        calls.shutdown(wait=False, cancel_futures=True)
        assert cti.stop() == 0
