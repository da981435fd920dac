"""Screen-pops on the real call path: a sipp caller, the sandbox Asterisk, the ctiserver
daemon (``python -m ctiserver run``), sipp agent phones, mosquitto with the example ACL,
and clients that sign in through the daemon's web API. The agent must see who is calling
while the phone still rings."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from ctiserver.store import Store
from tests.fixtures_services import MosquittoServer, PostgresServer
from tests.integration.harness import AgentPhones, CtiServer, place_calls
from tests.integration.pop_clients import (
    AmiWatch,
    Inbox,
    cancel_all,
    mqtt_inbox,
    pop_of,
    ws_inbox,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ACL = REPO / "screenpop" / "mosquitto" / "acl"
MQTT_USERS = {"ctiserver": "pub-secret", "1001": "sub-1001", "1002": "sub-1002"}
ANA = ("+34915551234", "Ana Lopez")  # demo customer Ana López, gold
DNIS = "900100999"

AGENTS = textwrap.dedent("""
    [[agents]]
    id = "1001"
    name = "Lucia Martin"
    queues = ["support"]
    auto_login = true

    [[agents]]
    id = "1002"
    name = "Javier Ruiz"
    queues = ["support"]
    auto_login = true
""")
QUEUES = textwrap.dedent("""
    [[queues]]
    name = "support"
    strategy = "longest_idle"
    ring_timeout = 10
""")


@pytest.fixture(scope="module")
def mosquitto():
    with MosquittoServer(acl_file=ACL, passwords=MQTT_USERS) as server:
        yield server


def load_demo(url: str) -> None:
    """What an operator runs once: migrations and the demo accounts and customers."""
    subprocess.run([sys.executable, "-m", "ctiserver.store", "--url", url, "demo"],
                   check=True, capture_output=True, timeout=60, cwd=REPO)


def daemon(tmp_path: Path, db_url: str, broker: MosquittoServer) -> CtiServer:
    return CtiServer(tmp_path, queues=QUEUES, agents=AGENTS, database_url=db_url,
                     mqtt_url=f"mqtt://ctiserver:pub-secret@127.0.0.1:{broker.port}")


class Clients:
    """Agents 1001 and 1002 signed in on the web (WebSocket) and on MQTT."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[Any]] = []
        self.sessions: list[Any] = []
        self.ws: dict[str, Inbox] = {}
        self.mqtt: dict[str, Inbox] = {}

    async def open(self, base: str, broker: MosquittoServer) -> Clients:
        for agent in ("1001", "1002"):
            session, self.ws[agent] = await ws_inbox(base, agent, f"demo-{agent}", self.tasks)
            self.sessions.append(session)
            # each agent subscribes to every agent's topics: the ACL narrows it to its own
            self.mqtt[agent] = await mqtt_inbox(broker.port, agent, MQTT_USERS[agent],
                                                "ctiserver/agents/#", self.tasks)
        return self

    async def close(self) -> None:
        await cancel_all(self.tasks)
        for session in self.sessions:
            await session.close()


async def call_in(tmp_path: Path, caller: tuple[str, str]) -> asyncio.Task[Any]:
    return asyncio.create_task(asyncio.to_thread(
        place_calls, tmp_path, DNIS, callers=[caller], maxwait_ms=20000, timeout=40))


async def test_known_caller_pops_on_the_rung_agent_before_they_answer(
        asterisk: None, mosquitto: MosquittoServer, tmp_path: Path) -> None:
    db_url = f"sqlite+aiosqlite:///{tmp_path}/crm.db"
    load_demo(db_url)
    cti = daemon(tmp_path, db_url, mosquitto).start()
    clients = Clients()
    try:
        await clients.open(f"http://127.0.0.1:{cti.web_port}", mosquitto)
        async with AmiWatch() as ami:
            with AgentPhones(tmp_path, answer_ms=1500, talk_ms=(300, 500)):
                sipp = await call_in(tmp_path, ANA)
                begin = (await ami.wait_for(lambda e: e.event == "DialBegin", 15,
                                            "the agent's phone ringing"))[0]
                call_id = begin.Uniqueid
                agent = begin.DestChannel.split("/")[1].rsplit("-", 1)[0]
                other = "1002" if agent == "1001" else "1001"
                ws_pop = await clients.ws[agent].wait(pop_of(call_id), 5)
                mqtt_pop = await clients.mqtt[agent].wait(pop_of(call_id), 5)
                answer = (await ami.wait_for(
                    lambda e: e.event == "DialEnd" and e.DialStatus == "ANSWER", 15,
                    "the agent answering"))[0]
                result = await sipp
        assert result.successful == 1, result.output

        rung_at, answered_at = float(begin.Timestamp), float(answer.Timestamp)
        for pop in (ws_pop, mqtt_pop):
            assert rung_at <= pop["_received"] < answered_at, "the pop came after the answer"
            assert pop["_received"] - rung_at < 0.3
            assert pop["agent_id"] == agent
            data = pop["data"]
            assert data["customer"]["name"] == "Ana López"
            assert data["customer"]["tier"] == "gold"
            assert data["known"] is True and data["partial"] is False
            assert (data["call_id"], data["dnis"], data["queue"]) == (call_id, DNIS, "support")
            assert data["caller_id"] == "+34915551234"
            assert isinstance(data["waited"], float) and 0 <= data["waited"] < 5
            assert [h["call_id"] for h in data["history"]][:2] == ["demo-ana-2", "demo-ana-1"]
        assert mqtt_pop["_topic"] == f"ctiserver/agents/{agent}/pops"

        store = Store(db_url)
        try:
            deadline = time.monotonic() + 10
            while (rec := await store.get_interaction(call_id)) is None or rec.ended_at is None:
                assert time.monotonic() < deadline, "the interaction was not stored"
                await asyncio.sleep(0.1)  # poll interval, bounded by the deadline
        finally:
            await store.close()
        assert (rec.agent_id, rec.queue, rec.dnis, rec.outcome) == (
            agent, "support", DNIS, "answered")
        assert rec.caller_id == "+34915551234" and rec.customer_id is not None
        assert rec.wait_seconds is not None and rec.talk_seconds is not None
        # the other agent, signed in the same way, saw nothing of this call
        for inbox in (clients.ws[other], clients.mqtt[other]):
            assert inbox.matching(lambda m: m.get("data", {}).get("call_id") == call_id) == []
    finally:
        await clients.close()
        rc = cti.stop()
    assert rc == 0


async def test_pop_still_arrives_partial_when_the_database_is_down(
        asterisk: None, mosquitto: MosquittoServer, tmp_path: Path) -> None:
    with PostgresServer() as pg:
        load_demo(pg.url)
        cti = daemon(tmp_path, pg.url, mosquitto).start()
        clients = Clients()
        try:
            # signing in needs the database; the call does not
            await clients.open(f"http://127.0.0.1:{cti.web_port}", mosquitto)
            pg.stop()
            async with AmiWatch() as ami:
                with AgentPhones(tmp_path, answer_ms=1000, talk_ms=(300, 500)):
                    sipp = await call_in(tmp_path, ANA)
                    begin = (await ami.wait_for(lambda e: e.event == "DialBegin", 15,
                                                "the agent's phone ringing"))[0]
                    call_id = begin.Uniqueid
                    agent = begin.DestChannel.split("/")[1].rsplit("-", 1)[0]
                    ws_pop = await clients.ws[agent].wait(pop_of(call_id), 5)
                    mqtt_pop = await clients.mqtt[agent].wait(pop_of(call_id), 5)
                    await ami.wait_for(
                        lambda e: e.event == "DialEnd" and e.DialStatus == "ANSWER", 15,
                        "the agent answering")
                    result = await sipp
            assert result.successful == 1, result.output
            rung_at = float(begin.Timestamp)
            for pop in (ws_pop, mqtt_pop):
                assert pop["_received"] - rung_at < 0.3, "pop later than 300 ms after ringing"
                data = pop["data"]
                assert data["partial"] is True and data["known"] is False
                assert (data["call_id"], data["queue"], data["dnis"]) == (
                    call_id, "support", DNIS)
                assert data["caller_id"] == "+34915551234"
                assert data["caller_name"] == "Ana Lopez"

            # the record waits in the spool and reaches the database once it is back
            pg.start()
            store = Store(pg.url)
            try:
                deadline = time.monotonic() + 20
                while (rec := await _interaction(store, call_id)) is None:
                    assert time.monotonic() < deadline, "the spooled interaction never arrived"
                    await asyncio.sleep(0.2)  # poll interval, bounded by the deadline
            finally:
                await store.close()
            assert (rec.agent_id, rec.outcome) == (agent, "answered")
        finally:
            await clients.close()
            rc = cti.stop()
        assert rc == 0


async def _interaction(store: Store, call_id: str) -> Any:
    try:
        return await store.get_interaction(call_id)
    except Exception:  # noqa: BLE001 - the server is still starting
        return None
