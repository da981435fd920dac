"""An Asterisk restart is not the agents' fault: on the real sandbox Asterisk, an agent whose
phone rings at `core restart now` is ready once ctiserver is back, and is offered the next
caller. sipp callers and agent phones; assertions from the observer's AMI events and the
daemon's log."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration.harness import AgentPhones, CtiServer, Observer, place_calls, sandbox
from tests.integration.test_acd_asterisk import agents_toml, queue_toml, rules_yaml

pytestmark = pytest.mark.integration


def rang_1001(e: object) -> bool:
    return getattr(e, "event", "") == "DialBegin" and \
        str(getattr(e, "DestChannel", "")).startswith("PJSIP/1001-")


def test_an_agent_rung_when_asterisk_restarts_is_offered_the_next_caller(
        asterisk: None, tmp_path: Path) -> None:
    cti = CtiServer(tmp_path, queues=queue_toml("q", ("1001",), ring_timeout=30),
                    agents=agents_toml(("1001",)), rules=rules_yaml("q")).start()
    before, after = Observer(), Observer()
    pool = ThreadPoolExecutor(1)
    try:
        before.start()
        # 1001's phone rings and nobody answers: the restart comes while it rings
        with AgentPhones(tmp_path, answer_ms=3_600_000):
            first = pool.submit(place_calls, tmp_path, "900100999",
                                callers=[("+34600000071", "First")], maxwait_ms=40000,
                                timeout=60)
            before.wait_for(rang_1001, 15, "1001's phone ringing")
            sandbox("cli", "core restart now")
            before.wait_for(lambda e: e.event == "Shutdown", 10, "Asterisk stopping")
            cti.wait_log("AMI logged in", 30, count=2)
            first.result(60)  # Asterisk hung the first caller up as it stopped
        stopping = [e for e in before.events if e.event == "SoftHangupRequest"]
        assert stopping and {e.Cause for e in stopping} >= {"4"}, "no shutdown hang-ups seen"
        sandbox("cli", "core waitfullybooted")
        after.start()
        with AgentPhones(tmp_path, answer_ms=200, talk_ms=(300, 300)):
            result = place_calls(tmp_path, "900100999", callers=[("+34600000072", "Second")],
                                 maxwait_ms=20000, timeout=30)
            assert result.successful == 1, result.output
            after.wait_for(lambda e: e.event == "DialEnd" and e.DialStatus == "ANSWER", 10,
                           "1001 answering the second caller")
        cti.wait_log("answered by agent 1001", 10)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        before.close()
        after.close()
        assert cti.stop() == 0
    assert [e.DestChannel.rsplit("-", 1)[0] for e in after.events if rang_1001(e)] == \
        ["PJSIP/1001"]
    assert after.named("UserEvent", UserEvent="CtiFallback") == []
    log = cti.log()
    assert "ring of agent 1001 withdrawn: Asterisk is stopping (NOANSWER)" in log
    assert "caller hung up (Asterisk stopping): +34600000071" in log
    assert "agent 1001: not_ready" not in log, log
