"""Two sandbox Asterisks joined by the inter-server PJSIP trunk (docs/multi-asterisk.md).

Server a is the usual sandbox (AMI 5038, SIP 5060), server b the second instance in the same
chroot (`asterisk_conf/sandbox up b`: AMI 5039, SIP 5062, agents 3001-3006). No ctiserver
runs here: the callers' test contexts ([interserver-test-a] and [interserver-test-b] in the
sandbox's extensions.conf) offer each call as ctiserver would, through the documented
[ctiserver-connect] and [ctiserver-interserver-connect], and these tests check from both
servers' AMI what ctiserver will rely on: the call's id crossing the trunk, the outcome of a
remote ring reaching the caller's server, and each server living through the other's restart.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import (
    AMI_PORT_B,
    ANSWERING_PHONES,
    BUSY_PHONE_B,
    NO_ANSWER_PHONE_B,
    PHONES_B,
    SIP_PORT_B,
    AgentPhones,
    Observer,
    SippResult,
    place_calls,
    sandbox,
    wait_until,
)

pytestmark = pytest.mark.integration

RING_TIMEOUT = 4.0  # the test contexts' ring timeout, seconds
CALLER = "+34600000001"  # place_calls' default caller


def trunk_contact(server: str, aor: str) -> str:
    """The trunk's contact status as ``server``'s qualify sees it: Avail, Unavail..."""
    for line in sandbox("cli", server, f"pjsip show aor {aor}").splitlines():
        words = line.split()
        if words[:1] == ["Contact:"] and words[1].startswith(f"{aor}/"):
            return words[3]
    return ""


@pytest.fixture(scope="module")
def server_b(asterisk: None) -> Iterator[None]:
    sandbox("up", "b")
    # each server rings the other only once its qualify has seen it answer
    wait_until(lambda: trunk_contact("a", "to-b") == "Avail", 10, "server a to reach b")
    wait_until(lambda: trunk_contact("b", "to-a") == "Avail", 10, "server b to reach a")
    yield
    sandbox("down", "b")


@pytest.fixture
def on_a(server_b: None) -> Iterator[Observer]:
    obs = Observer()
    obs.start()
    yield obs
    obs.close()


@pytest.fixture
def on_b(server_b: None) -> Iterator[Observer]:
    obs = Observer(port=AMI_PORT_B)
    obs.start()
    yield obs
    obs.close()


def call(workdir: Path, agent: str, watch: tuple[Observer, ...], sip_port: int = 5060,
         maxwait_ms: int = 15000) -> SippResult:
    """One sipp caller, on the server at ``sip_port``, for ``agent``'s phone; the observers
    keep reading AMI while sipp runs (an AMI client that does not read is dropped)."""
    result: list[SippResult] = []
    runner = threading.Thread(target=lambda: result.append(place_calls(
        workdir, agent, trunk="interserver", sip_port=sip_port, maxwait_ms=maxwait_ms,
        timeout=60)))
    runner.start()
    while runner.is_alive():
        for obs in watch:
            obs.pump(0.02)
    runner.join()
    return result[0]


def one(obs: Observer, name: str, where: Callable[[Any], bool] = lambda _e: True,
        timeout: float = 10, **fields: str) -> Any:
    return obs.wait_for(lambda e: e.event == name and where(e)
                        and all(str(e.get(k, "")) == v for k, v in fields.items()),
                        timeout, f"{name} {fields}")[0]


def caller_channel(obs: Observer, agent: str) -> Any:
    """The Newchannel of the sipp caller who asked for ``agent``."""
    return one(obs, "Newchannel", lambda e: e.Context.startswith("interserver-test-"),
               Exten=agent)


def test_a_caller_on_a_is_answered_by_an_agent_on_b(
        tmp_path: Path, on_a: Observer, on_b: Observer) -> None:
    with AgentPhones(tmp_path, port=PHONES_B):
        result = call(tmp_path, "3001", (on_a, on_b))
    assert result.successful == 1, result.output

    # a: the caller's offer went through the trunk and was answered
    call_id = caller_channel(on_a, "3001").Uniqueid  # = the call's Linkedid
    begin_a = one(on_a, "DialBegin", Uniqueid=call_id)
    assert begin_a.DestChannel.startswith("PJSIP/to-b-")
    assert begin_a.DestLinkedid == call_id
    one(on_a, "DialEnd", DestUniqueid=begin_a.DestUniqueid, DialStatus="ANSWER")

    # b: its leg from the trunk named a's call, then rang its agent's phone, answered
    remote = one(on_b, "UserEvent", UserEvent="CtiRemoteLeg")
    assert remote.CallId == call_id
    assert remote.Channel.startswith("PJSIP/to-a-")
    assert remote.Uniqueid.startswith("b-"), "b's Uniqueids carry its systemname"
    assert not call_id.startswith("b-")
    begin_b = one(on_b, "DialBegin", Uniqueid=remote.Uniqueid)
    assert begin_b.DestChannel.startswith("PJSIP/3001-")
    assert begin_b.CallerIDNum == CALLER  # the agent's phone shows who calls
    one(on_b, "DialEnd", DestUniqueid=begin_b.DestUniqueid, DialStatus="ANSWER")
    # the agent hung up: b's legs end, then a's caller
    one(on_b, "Hangup", Uniqueid=remote.Uniqueid)
    one(on_a, "Hangup", Uniqueid=call_id)


def test_busy_unringable_and_unanswered_phones_on_b_read_as_such_on_a(
        tmp_path: Path, on_a: Observer, on_b: Observer) -> None:
    def dial_end_on_a(agent: str) -> tuple[Any, float]:
        call_id = caller_channel(on_a, agent).Uniqueid
        begin = one(on_a, "DialBegin", Uniqueid=call_id)
        end = one(on_a, "DialEnd", DestUniqueid=begin.DestUniqueid)
        return end, float(end.Timestamp) - float(begin.Timestamp)

    with AgentPhones(tmp_path, port=BUSY_PHONE_B, busy=True):
        call(tmp_path, "3006", (on_a, on_b), maxwait_ms=1000)
    end, took = dial_end_on_a("3006")
    assert end.DialStatus == "BUSY"
    assert took < 1, took

    # no such phone on b: CONGESTION at once (what ctiserver reads as "unavailable")
    call(tmp_path, "3999", (on_a, on_b), maxwait_ms=1000)
    end, took = dial_end_on_a("3999")
    assert end.DialStatus == "CONGESTION"
    assert took < 1, took

    # 3005 rings and never answers: a sees the ringing, then its own timeout, and b the
    # withdrawal
    with AgentPhones(tmp_path, port=NO_ANSWER_PHONE_B, answer_ms=3_600_000):
        call(tmp_path, "3005", (on_a, on_b), maxwait_ms=int(RING_TIMEOUT * 1000) + 1000)
    call_id = caller_channel(on_a, "3005").Uniqueid
    one(on_a, "DialState", Uniqueid=call_id, DialStatus="RINGING")
    end, took = dial_end_on_a("3005")
    assert end.DialStatus == "NOANSWER"
    assert RING_TIMEOUT - 0.1 < took < RING_TIMEOUT + 1, took
    leg = one(on_b, "UserEvent", UserEvent="CtiRemoteLeg", CallId=call_id).Uniqueid
    one(on_b, "DialEnd", Uniqueid=leg, DialStatus="CANCEL")


def test_the_trunk_works_the_other_way(tmp_path: Path, on_a: Observer,
                                       on_b: Observer) -> None:
    with AgentPhones(tmp_path, port=ANSWERING_PHONES):
        result = call(tmp_path, "1001", (on_a, on_b), sip_port=SIP_PORT_B)
    assert result.successful == 1, result.output
    call_id = caller_channel(on_b, "1001").Uniqueid
    assert call_id.startswith("b-")
    remote = one(on_a, "UserEvent", UserEvent="CtiRemoteLeg", CallId=call_id)
    begin = one(on_a, "DialBegin", Uniqueid=remote.Uniqueid)
    assert begin.DestChannel.startswith("PJSIP/1001-")
    one(on_a, "DialEnd", DestUniqueid=begin.DestUniqueid, DialStatus="ANSWER")


def test_server_b_restarted_a_goes_on_and_b_agents_come_back(
        tmp_path: Path, on_a: Observer) -> None:
    with AgentPhones(tmp_path, port=ANSWERING_PHONES), AgentPhones(tmp_path, port=PHONES_B):
        sandbox("down", "b")
        stopped = time.time()
        # a's qualify notices within qualify_frequency + qualify_timeout (2 + 1 s)
        gone = one(on_a, "ContactStatus", AOR="to-b", ContactStatus="Unreachable")
        assert float(gone.Timestamp) - stopped < 5

        # a's own agents answer meanwhile
        assert call(tmp_path, "1001", (on_a,)).successful == 1
        call_id = caller_channel(on_a, "1001").Uniqueid
        begin = one(on_a, "DialBegin", Uniqueid=call_id)
        one(on_a, "DialEnd", DestUniqueid=begin.DestUniqueid, DialStatus="ANSWER")

        # an offer to b's agent rings nothing and says so at once (no DialBegin to wait on)
        call(tmp_path, "3001", (on_a,), maxwait_ms=1000)
        lost = caller_channel(on_a, "3001")
        failed = one(on_a, "UserEvent", UserEvent="CtiDialFailed", CallId=lost.Uniqueid)
        assert failed.Dial == "PJSIP/3001@to-b" and failed.Status == "CHANUNAVAIL"
        assert float(failed.Timestamp) - float(lost.Timestamp) < 1
        assert not on_a.named("DialBegin", Uniqueid=lost.Uniqueid)

        on_a.events.clear()
        sandbox("up", "b")
        wait_until(lambda: trunk_contact("a", "to-b") == "Avail", 5, "server a to reach b again")
        on_b = Observer(port=AMI_PORT_B)
        on_b.start()
        try:
            assert call(tmp_path, "3001", (on_a, on_b)).successful == 1
            call_id = caller_channel(on_a, "3001").Uniqueid
            begin = one(on_a, "DialBegin", Uniqueid=call_id)
            one(on_a, "DialEnd", DestUniqueid=begin.DestUniqueid, DialStatus="ANSWER")
            leg = one(on_b, "UserEvent", UserEvent="CtiRemoteLeg", CallId=call_id).Uniqueid
            one(on_b, "DialEnd", Uniqueid=leg, DialStatus="ANSWER")
        finally:
            on_b.close()
