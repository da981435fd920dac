"""No caller stranded by a crash: callers waiting when ctiserver is killed (kill -9) are
taken back by the restarted daemon, in the order they joined, and answered. On the real
sandbox Asterisk with sipp callers and sipp agent phones; the order and the answers come
from Asterisk's own AMI events (observer user)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration.harness import AgentPhones, CtiServer, Observer, place_calls
from tests.integration.test_acd_asterisk import agents_toml, queue_toml, rules_yaml

pytestmark = pytest.mark.integration

CALLERS = 20


def test_callers_waiting_at_a_kill_are_taken_back_in_order_and_answered(
        asterisk: None, observer: Observer, tmp_path: Path) -> None:
    ids = ("1001", "1002")
    # nobody logged in: every caller waits on hold
    cti = CtiServer(tmp_path, queues=queue_toml("q", ids, ring_timeout=5),
                    agents=agents_toml(ids, logged_in=()), rules=rules_yaml("q")).start()
    calls = ThreadPoolExecutor(1)
    try:
        placed = calls.submit(
            place_calls, tmp_path, "900100999", calls=CALLERS, rate=10.0,
            callers=[(f"+3460000{i:04d}", f"Caller {i}") for i in range(CALLERS)],
            maxwait_ms=120000, timeout=180)
        held = observer.wait_for(
            lambda e: e.event == "Newexten" and e.Context == "ctiserver-hold"
            and e.Application == "MusicOnHold", 30, "callers on hold", count=CALLERS)
        joined = list(dict.fromkeys(e.Uniqueid for e in held))  # first entry, in order
        assert len(joined) == CALLERS

        assert cti.proc is not None
        cti.proc.kill()  # no clean stop: nothing withdrawn, nothing handed over
        cti.proc.wait(10)
        cti.proc = None
        start = len(observer.events)

        with AgentPhones(tmp_path, answer_ms=100, talk_ms=(200, 300)):
            # one agent back: offers are strictly one after another, so the order shows
            cti.agents = agents_toml(ids, logged_in=("1001",))
            restarted = time.time()
            cti.start()
            cti.wait_log(f"re-adopted {CALLERS} waiting callers", 15)
            answered = observer.wait_for(
                lambda e: e.event == "DialEnd" and e.DialStatus == "ANSWER"
                and observer.events.index(e) >= start, 90, "re-adopted callers answered",
                count=CALLERS)
            result = placed.result(timeout=120)
    finally:
        calls.shutdown(wait=False, cancel_futures=True)
        cti.stop()
    after = observer.events[start:]
    rung = list(dict.fromkeys(e.Uniqueid for e in after if e.event == "DialBegin"))
    assert rung == joined, "taken back out of the order they joined"
    assert {e.Uniqueid for e in answered} == set(joined)
    assert not [e for e in after if e.event == "UserEvent" and e.UserEvent == "CtiFallback"]
    assert (result.successful, result.failed) == (CALLERS, 0), result.output[-2000:]
    first_ring = min(float(e.Timestamp) for e in after if e.event == "DialBegin")
    print(f"\nre-adoption: first caller rung {first_ring - restarted:.2f} s after the "
          f"restart began (process start and AMI login included)")
