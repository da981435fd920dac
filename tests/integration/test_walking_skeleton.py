"""The walking skeleton on a real Asterisk: sipp callers, ctiserver routing, sipp agents."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.harness import (
    AgentPhones,
    CtiServer,
    Observer,
    dialed_agents,
    fallback_members,
    place_calls,
    sandbox,
    set_fallback_members,
)

pytestmark = pytest.mark.integration


def test_calls_reach_the_longest_idle_agents_and_end_normally(
        asterisk: None, observer: Observer, tmp_path: Path) -> None:
    cti = CtiServer(tmp_path).start()
    try:
        with AgentPhones(tmp_path, answer_ms=200, talk_ms=(300, 400)):
            # one after the other: each call ends before the next starts
            for number in ("+34915551234", "+34600111222", "+34933334444"):
                result = place_calls(tmp_path, "900100999", callers=[(number, "Caller")],
                                     maxwait_ms=20000, timeout=30)
                assert result.successful == 1, result.output
                observer.pump()
    finally:
        rc = cti.stop()
    observer.wait_for(lambda e: e.event == "Hangup" and e.Channel.startswith("PJSIP/trunk"),
                      10, "the callers' hangups", count=3)
    # all three agents idle since login: ties go by member order, then the one idle longest
    assert dialed_agents(observer) == ["PJSIP/1001", "PJSIP/1002", "PJSIP/1003"]
    answered = [e for e in observer.named("DialEnd") if e.DialStatus == "ANSWER"]
    assert len(answered) == 3
    caller_hangups = [e for e in observer.named("Hangup") if e.Channel.startswith("PJSIP/trunk")]
    assert {e.Cause for e in caller_hangups} == {"16"}  # normal clearing
    assert observer.named("UserEvent", UserEvent="CtiFallback") == []
    log = cti.log()
    assert log.count("answered by agent") == 3
    assert "+34915551234" in log  # every call event line carries the call's Uniqueid
    assert rc == 0, "ctiserver must exit cleanly on SIGTERM"


def test_ctiserver_waits_for_asterisk_and_reconnects_after_a_restart(
        asterisk: None, tmp_path: Path) -> None:
    sandbox("down")
    cti = CtiServer(tmp_path).start(wait=False)
    try:
        # Asterisk absent at start: ctiserver keeps retrying and says so, it does not crash
        cti.wait_log("not reachable", 20, count=2)
        sandbox("up")
        cti.wait_log("AMI logged in", 30)
        sandbox("restart")
        cti.wait_log("AMI logged in", 30, count=2)
        obs = Observer()
        obs.start()
        try:
            with AgentPhones(tmp_path, talk_ms=(300, 400)):
                result = place_calls(tmp_path, "900100999", maxwait_ms=20000, timeout=30)
            assert result.successful == 1, result.output
            obs.wait_for(lambda e: e.event == "DialEnd" and e.DialStatus == "ANSWER", 10,
                         "the agent answering")
            assert obs.named("UserEvent", UserEvent="CtiFallback") == []
        finally:
            obs.close()
        assert "AMI connection to 127.0.0.1:5038 lost" in cti.log()
        assert cti.log().count("answered by agent") == 1
    finally:
        assert cti.stop() == 0


def test_calls_still_reach_agents_when_ctiserver_is_down(
        asterisk: None, observer: Observer, tmp_path: Path) -> None:
    # the fallback queue rings the agents ctiserver left in it: its three, logged in
    set_fallback_members(observer, ("PJSIP/1004",))
    cti = CtiServer(tmp_path).start()
    assert cti.stop() == 0
    assert sorted(fallback_members(observer)) == ["PJSIP/1001", "PJSIP/1002", "PJSIP/1003"]
    with AgentPhones(tmp_path, talk_ms=(300, 400)):
        result = place_calls(tmp_path, "900100999", maxwait_ms=30000, timeout=40)
    assert result.successful == 1, result.output
    fallback = observer.wait_for(
        lambda e: e.event == "UserEvent" and e.UserEvent == "CtiFallback", 10,
        "the dialplan's fallback marker")
    assert fallback[0].AgiStatus == "FAILURE"
    observer.wait_for(lambda e: e.event == "DialEnd" and e.DialStatus == "ANSWER", 10,
                      "an agent answering through app_queue")
    assert dialed_agents(observer)[0] in {"PJSIP/1001", "PJSIP/1002", "PJSIP/1003"}
