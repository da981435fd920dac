"""The pre-decided ring (docs/fast-path.md) on the real sandbox Asterisk: the shipped
dialplan's token protocol, and a caller to a pre-decided number rung without FastAGI,
with the pop and the call's record as for any call."""

from __future__ import annotations

import os
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
    wait_until,
)
from tests.integration.test_acd_asterisk import agents_toml, ami_action, queue_toml, rules_yaml

pytestmark = pytest.mark.integration

ASTERISK_LOG = Path(os.environ.get("CTISERVER_SANDBOX_ROOT", "/var/cache/ctiserver/asterisk-sid"),
                    "var/log/asterisk/messages.log")
K = "PJSIP1005"  # the token part of PJSIP/1005 (the dialplan's FILTER(A-Za-z0-9,...))


def set_global(obs: Observer, name: str, value: str) -> None:
    reply = ami_action(obs, {"Action": "Setvar", "Variable": name, "Value": value})
    assert reply.success, reply


def originate(obs: Observer, exten: str, context: str, variables: str = "") -> Any:
    action = {"Action": "Originate", "Channel": f"Local/{exten}@{context}",
              "Application": "Wait", "Data": "10", "Timeout": "6000", "Async": "true"}
    if variables:
        action["Variable"] = variables
    return ami_action(obs, action)


def test_an_offer_rings_the_agent_only_with_a_token_not_taken(
        asterisk: None, observer: Observer, tmp_path: Path) -> None:
    # where a Redirect to ctiserver-claim,2,1 lands, without ctiserver: a Local channel
    # stands for the caller; 1005 never answers. (That a token is taken once is the race
    # test's below.)
    log = ASTERISK_LOG.read_text(errors="replace") if ASTERISK_LOG.exists() else ""

    def rung() -> list[Any]:
        return [e for e in observer.named("DialBegin") if e.DestChannel.startswith("PJSIP/1005-")]

    with AgentPhones(tmp_path, port=NO_ANSWER_PHONE, answer_ms=3_600_000):
        set_global(observer, f"CTI_FREE_{K}", "")  # no token: nobody rings
        originate(observer, "2", "ctiserver-claim", "CTI_DIAL=PJSIP/1005")
        observer.wait_for(lambda e: e.event == "UserEvent" and e.UserEvent == "CtiClaimLost",
                          10, "the claim lost")
        set_global(observer, f"CTI_FREE_{K}", "7")
        originate(observer, "5", "ctiserver-claim", "CTI_DIAL=PJSIP/1005")  # takes token 7
        taker = observer.wait_for(lambda e: e.event == "DialBegin"
                                  and e.DestChannel.startswith("PJSIP/1005-"), 10,
                                  "1005 rung")[0].Channel
        assert taker.startswith("Local/")
        set_global(observer, f"CTI_FREE_{K}", "8")  # a new token
        originate(observer, "2", "ctiserver-claim", "CTI_DIAL=PJSIP/1005")
        observer.wait_for(lambda e: e.event == "DialBegin"
                          and e.DestChannel.startswith("PJSIP/1005-"), 10, "1005 rung again",
                          count=2)
    # every function the token needs is there (func_groupcount is a module of its own)
    new = ASTERISK_LOG.read_text(errors="replace")[len(log):]
    assert "not registered" not in new and "syntax error" not in new, new[-2000:]


def test_two_callers_racing_for_one_published_agent_never_both_ring_it(
        asterisk: None, observer: Observer, tmp_path: Path) -> None:
    # no ctiserver: a caller who does not take the token asks over FastAGI, fails, and goes
    # to the fallback queue, emptied here (it holds what the last ctiserver left, 1005
    # perhaps). Two callers joining the token's group at the same moment may both see the
    # other and both give way (safe: ctiserver then decides); never may both ring.
    number = "900777001"
    wins: list[int] = []
    set_fallback_members(observer, ())
    try:
        with AgentPhones(tmp_path, port=NO_ANSWER_PHONE, answer_ms=3_600_000):
            set_global(observer, f"CTI_NEXT_{number}", "PJSIP/1005")
            set_global(observer, f"CTI_RT_{number}", "2")
            for round_ in range(20):
                set_global(observer, f"CTI_FREE_{K}", str(100 + round_))
                before = len(rung_1005(observer))
                fallbacks = len(observer.named("UserEvent", UserEvent="CtiFallback"))
                # both in one write: their channels run the first step at the same moment
                ami_action_pair(observer, number)
                observer.wait_for(lambda e: e.event == "UserEvent"
                                  and e.UserEvent == "CtiFallback", 15,
                                  "the loser at the fallback", count=fallbacks + 1)
                wins.append(len(rung_1005(observer)) - before)
                assert wins[-1] <= 1, f"round {round_}: 1005 rung {wins[-1]} times"
                rung = len(rung_1005(observer))
                observer.wait_for(lambda e: e.event == "Hangup"
                                  and e.Channel.startswith("PJSIP/1005-"), 10,
                                  "the ring to end", count=rung)
    finally:
        set_global(observer, f"CTI_NEXT_{number}", "")
        # the losers wait in the fallback queue: end them before the next test's phones
        ami_action(observer, {"Action": "Hangup", "Channel": "/^Local/"})
        wait_until(lambda: not live_channels(observer), 10, "every channel to end")
    assert sum(wins) >= 10, wins  # a token is taken at all, most of the time


def rung_1005(obs: Observer) -> list[Any]:
    return [e for e in obs.events if e.event == "DialBegin"
            and e.DestChannel.startswith("PJSIP/1005-")]


def live_channels(obs: Observer) -> list[Any]:
    reply = ami_action(obs, {"Action": "CoreShowChannels"})
    events = reply if isinstance(reply, list) else []
    return [e for e in events if e.get("Event") == "CoreShowChannel"]


def ami_action_pair(obs: Observer, number: str) -> None:
    async def send() -> None:
        futures = [obs.manager.send_action(
            {"Action": "Originate", "Channel": f"Local/{number}@ctiserver-inbound",
             "Application": "Wait", "Data": "3", "Timeout": "6000", "Async": "true"})
            for _ in range(2)]
        for f in futures:
            await f

    obs.loop.run_until_complete(send())


def test_a_caller_to_a_pre_decided_number_rings_without_asking(
        asterisk: None, observer: Observer, tmp_path: Path) -> None:
    cti = CtiServer(tmp_path / "cti", queues=queue_toml("q", ("1001", "1002"), ring_timeout=9),
                    agents=agents_toml(("1001", "1002")), rules=rules_yaml("q")).start()
    try:
        cti.wait_log("pre-decided ring for 1 number(s): 900100999", 15)
        with AgentPhones(tmp_path, answer_ms=300, talk_ms=(800, 800)):
            result = place_calls(tmp_path, "900100999", calls=2, rate=1.0)
        assert result.failed == 0, result
        rings = observer.wait_for(lambda e: e.event == "DialBegin"
                                  and e.DestChannel.startswith("PJSIP/100"), 10,
                                  "the two agents rung", count=2)
        assert {e.Context for e in rings} == {"ctiserver-inbound"}  # dialled at once
        assert [e.DestChannel.rsplit("-", 1)[0] for e in rings] == ["PJSIP/1001",
                                                                     "PJSIP/1002"]
        callers = {e.Uniqueid for e in rings}
        # nobody asked ctiserver: no AGI step, no answer before the agent's
        assert not [e for e in observer.events if e.event == "Newexten"
                    and e.Uniqueid in callers and e.Application in ("AGI", "Answer")]
        cti.wait_log("caller hung up", 10, count=2)
        ended = [line for line in cti.log().splitlines() if "caller hung up" in line]
        assert len(ended) == 2 and all(
            "(rule test line), pre-decided, answered by agent 100" in line for line in ended)
    finally:
        cti.stop()


def test_a_pre_decided_ring_not_answered_goes_to_the_next_agent(
        asterisk: None, observer: Observer, tmp_path: Path) -> None:
    # 1005 (logged in first: idle longest) never answers; 1001 does
    cti = CtiServer(tmp_path / "cti", queues=queue_toml("q", ("1005", "1001"), ring_timeout=2),
                    agents=agents_toml(("1005", "1001")), rules=rules_yaml("q")).start()
    try:
        cti.wait_log("pre-decided ring for 1 number(s)", 15)
        with AgentPhones(tmp_path, port=NO_ANSWER_PHONE, answer_ms=3_600_000), \
                AgentPhones(tmp_path, answer_ms=200, talk_ms=(500, 500)):
            result = place_calls(tmp_path, "900100999", calls=1, maxwait_ms=20000)
        assert result.successful == 1, result.output
        rings = observer.wait_for(lambda e: e.event == "DialBegin"
                                  and e.DestChannel.startswith("PJSIP/100"), 10,
                                  "both agents rung", count=2)
        assert [(e.Context, e.DestChannel.rsplit("-", 1)[0]) for e in rings][:2] == [
            ("ctiserver-inbound", "PJSIP/1005"), ("ctiserver-connect", "PJSIP/1001")]
        assert observer.named("DialEnd", DialStatus="ANSWER")
        assert not observer.named("UserEvent", UserEvent="CtiFallback")
        cti.wait_log("caller hung up", 10)
        assert "answered by agent 1001" in cti.log()
    finally:
        cti.stop()
