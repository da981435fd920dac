"""An active/standby pair on the real sandbox Asterisk, one PostgreSQL, mosquitto, sipp
callers and agent phones: the leader is killed (kill -9) under load, the standby takes
over, nobody's call is lost, the callers waiting at the kill keep their order, and every
call offered after the failover pops. Also: only the leader acts (the standby's FastAGI
says nothing, so the dialplan asks the other member)."""

from __future__ import annotations

import json
import subprocess
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from ctiserver.calls import adoption
from tests.fixtures_services import MosquittoServer, PostgresServer
from tests.integration.harness import AgentPhones, CtiServer, Observer, place_calls
from tests.integration.test_acd_asterisk import agents_toml, ami_action, queue_toml, rules_yaml

pytestmark = pytest.mark.integration

AGENTS = ("1001", "1002", "1003")
SECOND_AGI = 4574
CALLERS = 40


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.fixture
def second_address(observer: Observer) -> Iterator[None]:
    """The dialplan's CTI_AGI2 global points at the second member for this test only."""
    ami_action(observer, {"Action": "Setvar", "Variable": "CTI_AGI2",
                          "Value": f"agi://127.0.0.1:{SECOND_AGI}"})
    yield
    ami_action(observer, {"Action": "Setvar", "Variable": "CTI_AGI2", "Value": ""})


def member(workdir: Path, name: str, agi_port: int, pg: PostgresServer, mqtt: str) -> CtiServer:
    ha = textwrap.dedent(f"""
        [ha]
        enabled = true
        name = "{name}"
        interval = 0.2
        """)
    return CtiServer(workdir / name, queues=queue_toml("q", AGENTS, ring_timeout=5),
                     agents=agents_toml(AGENTS), rules=rules_yaml("q"), extra=ha,
                     database_url=pg.url, mqtt_url=mqtt, agi_port=agi_port)


def call_ids(payload: Any) -> set[str]:
    if isinstance(payload, dict):
        found = {str(payload["call_id"])} if "call_id" in payload else set()
        for v in payload.values():
            found |= call_ids(v)
        return found
    if isinstance(payload, list):
        return set().union(*(call_ids(v) for v in payload)) if payload else set()
    return set()


def test_a_killed_leader_costs_no_call_and_the_standby_routes_within_seconds(
        asterisk: None, observer: Observer, second_address: None, postgres: PostgresServer,
        tmp_path: Path) -> None:
    with MosquittoServer() as broker:
        pops_file = (tmp_path / "pops.txt").open("w")
        sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port),
                                "-t", "ctiserver/agents/+/pops", "-q", "1"],
                               stdout=pops_file, stderr=subprocess.DEVNULL)
        a = member(tmp_path, "a", 4573, postgres, broker.url).start()
        a.wait_log("leader: took the lock", 10)
        b = member(tmp_path, "b", SECOND_AGI, postgres, broker.url).start()
        b.wait_log("standby b: contending", 10)
        calls = ThreadPoolExecutor(1)
        try:
            with AgentPhones(tmp_path, answer_ms=100, talk_ms=(1500, 2500)):
                # 3 agents, ~2 s a call: at 4 calls/s callers queue up
                placed = calls.submit(
                    place_calls, tmp_path, "900100999", calls=CALLERS, rate=4.0,
                    callers=[(f"+3460001{i:04d}", f"Caller {i}") for i in range(CALLERS)],
                    maxwait_ms=120000, timeout=240)
                observer.wait_for(lambda e: e.event == "Newexten"
                                  and e.Context == "ctiserver-hold", 30,
                                  "callers waiting", count=8)
                assert a.proc is not None
                killed_at = time.time()
                a.proc.kill()
                a.proc.wait(10)
                a.proc = None
                start = len(observer.events)
                b.wait_log("leading (took the lock)", 10)
                led = time.time() - killed_at
                answered = observer.wait_for(
                    lambda e: e.event == "DialEnd" and e.DialStatus == "ANSWER"
                    and e.Uniqueid == e.Linkedid, 150, "every caller answered",
                    count=CALLERS)
                result = placed.result(timeout=200)
        finally:
            calls.shutdown(wait=False, cancel_futures=True)
            for m in (a, b):
                m.stop()
            sub.terminate()
            pops_file.close()
    events = observer.events
    after = events[start:]
    first_ring_after = min(float(e.Timestamp) for e in after if e.event == "DialBegin")
    # 0 lost: every caller answered by an agent, none sent to app_queue
    assert len({e.Uniqueid for e in answered}) == CALLERS
    assert not observer.named("UserEvent", UserEvent="CtiFallback")
    assert (result.successful, result.failed) == (CALLERS, 0), result.output[-2000:]
    # the callers on hold at the kill keep their order: the order they joined, as their
    # CTI_ADOPT says (two callers routed together may reach the hold context either way)
    held = list(dict.fromkeys(
        e.Uniqueid for e in events[:start] if e.event == "Newexten"
        and e.Context == "ctiserver-hold"))
    joined = {e.Uniqueid: adoption.decode(e.Value).joined_at for e in events
              if e.event == "VarSet" and e.Variable == "CTI_ADOPT"}
    rung_before = {e.Uniqueid for e in events[:start] if e.event == "DialBegin"}
    waiting = sorted((u for u in held if u not in rung_before), key=lambda u: joined[u])
    # in the order offered (ctiserver's Setvar of CTI_DIAL, run by Asterisk in the order
    # sent): rings of offers made together start in any order
    offered = [u for u in dict.fromkeys(e.Uniqueid for e in after if e.event == "VarSet"
                                        and e.Variable == "CTI_DIAL") if u in waiting]
    assert offered == waiting, "the waiting callers lost their order"
    # every call offered after the failover popped (MQTT, to the agent's topic)
    offered_after = {e.Uniqueid for e in after if e.event == "DialBegin"}
    popped: set[str] = set()
    for line in (tmp_path / "pops.txt").read_text().splitlines():
        try:
            popped |= call_ids(json.loads(line))
        except ValueError:
            continue
    assert offered_after <= popped, f"no pop for {sorted(offered_after - popped)}"
    print(f"\nfailover: standby leading {led:.2f} s after the kill; first ring "
          f"{first_ring_after - killed_at:.2f} s after it; {len(waiting)} waiting callers "
          f"taken back in order; {len(offered_after)} calls offered after, all popped")
    assert first_ring_after - killed_at < 5.0


def interactions_in(pg: PostgresServer) -> set[str]:
    out = subprocess.run(
        ["runuser", "-u", "postgres", "--", "psql", "-h", "127.0.0.1", "-p", str(pg.port),
         "-U", "postgres", "-At", "-c", "SELECT call_id FROM interactions"],
        capture_output=True, text=True, timeout=30, check=True).stdout
    return set(out.split())


def test_a_database_restart_under_load_changes_no_role_and_loses_no_record(
        asterisk: None, observer: Observer, second_address: None, postgres: PostgresServer,
        tmp_path: Path) -> None:
    with MosquittoServer() as broker:
        a = member(tmp_path, "a", 4573, postgres, broker.url).start()
        a.wait_log("leader: took the lock", 10)
        b = member(tmp_path, "b", SECOND_AGI, postgres, broker.url).start()
        b.wait_log("standby b: contending", 10)
        calls = ThreadPoolExecutor(1)
        n = 30
        try:
            with AgentPhones(tmp_path, answer_ms=100, talk_ms=(300, 600)):
                placed = calls.submit(
                    place_calls, tmp_path, "900100999", calls=n, rate=3.0,
                    callers=[(f"+3460002{i:04d}", f"Caller {i}") for i in range(n)],
                    maxwait_ms=120000, timeout=240)
                observer.wait_for(lambda e: e.event == "DialEnd" and e.DialStatus == "ANSWER",
                                  30, "calls flowing", count=5)
                postgres.stop()
                observer.wait_for(lambda e: e.event == "DialEnd" and e.DialStatus == "ANSWER",
                                  30, "calls answered while PostgreSQL is down", count=12)
                postgres.start()
                answered = observer.wait_for(
                    lambda e: e.event == "DialEnd" and e.DialStatus == "ANSWER"
                    and e.Uniqueid == e.Linkedid, 120, "every caller answered", count=n)
                result = placed.result(timeout=200)
                callers = {e.Uniqueid for e in answered}
                deadline = time.monotonic() + 30
                while not callers <= interactions_in(postgres):
                    assert time.monotonic() < deadline, "records not written after the outage"
                    time.sleep(0.5)
        finally:
            calls.shutdown(wait=False, cancel_futures=True)
            for m in (b, a):  # the standby first: it would lead when the leader stops
                m.stop()
    assert (result.successful, result.failed) == (n, 0), result.output[-2000:]
    assert not observer.named("UserEvent", UserEvent="CtiFallback")
    # no split brain: the leader never stepped down, the standby never led
    assert "no longer leader" not in a.log() and "lost the leadership" not in a.log()
    assert "leading (" not in b.log()
