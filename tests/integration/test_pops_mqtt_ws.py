"""Screen-pops end to end: real aiohttp server on loopback, real mosquitto with the
example ACL, real store (SQLite; PostgreSQL for the "database down" case)."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest

from ctiserver.calls.model import CallInfo
from tests.fixtures_services import MosquittoServer, PostgresServer, WebStack

pytestmark = pytest.mark.integration

ACL = Path(__file__).resolve().parents[2] / "screenpop" / "mosquitto" / "acl"
MQTT_USERS = {"ctiserver": "pub-secret", "1001": "sub-1001", "1002": "sub-1002"}


@pytest.fixture(scope="module")
def mosquitto():
    with MosquittoServer(acl_file=ACL, passwords=MQTT_USERS) as server:
        yield server


def publisher_url(broker: MosquittoServer) -> str:
    return f"mqtt://ctiserver:pub-secret@127.0.0.1:{broker.port}"


def ana(call_id: str) -> CallInfo:
    return CallInfo(
        call_id=call_id,
        caller_id="+34915551234",
        dnis="+34910000000",
        queue="support",
        digits="2",
        answers={"reason": "billing"},
        joined_at=time.time() - 20,
    )


class Inbox:
    """Messages a client received, with a deadline-bound wait."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.changed = asyncio.Event()

    def add(self, item: dict[str, Any]) -> None:
        item["_received"] = time.monotonic()
        self.items.append(item)
        self.changed.set()

    async def wait(self, predicate, within: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(within):
            while True:
                for item in self.items:
                    if predicate(item):
                        return item
                self.changed.clear()
                await self.changed.wait()


def is_pop(call_id: str):
    return lambda m: m.get("kind") == "pop.offered" and m["data"].get("call_id") == call_id


async def sign_in(base: str, username: str, password: str) -> tuple[aiohttp.ClientSession, str]:
    session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with session.post(
        f"{base}/api/session", json={"username": username, "password": password}
    ) as r:
        assert r.status == 200, await r.text()
        token = (await r.json())["token"]
    return session, token


async def websocket_inbox(session: aiohttp.ClientSession, base: str, stack: list) -> tuple:
    ws = await session.ws_connect(f"{base}/ws")
    inbox = Inbox()

    async def read() -> None:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                inbox.add(json.loads(msg.data))

    task = asyncio.create_task(read())
    stack.append(task)
    await inbox.wait(lambda m: m["kind"] == "hello")
    return ws, inbox


async def mqtt_inbox(broker: MosquittoServer, user: str, stack: list) -> Inbox:
    inbox = Inbox()
    subscribed = asyncio.Event()

    async def run() -> None:
        async with aiomqtt.Client(
            "127.0.0.1",
            broker.port,
            username=user,
            password=MQTT_USERS[user],
            identifier=f"sub-{user}",
        ) as client:
            await client.subscribe("ctiserver/agents/#", qos=1)  # the ACL narrows it
            subscribed.set()
            async for message in client.messages:
                item = json.loads(message.payload)
                item["_topic"] = str(message.topic)
                inbox.add(item)

    stack.append(asyncio.create_task(run()))
    async with asyncio.timeout(5):
        await subscribed.wait()
    return inbox


@pytest.fixture
async def tasks():
    running: list[asyncio.Task] = []
    yield running
    for task in running:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)


async def test_pop_reaches_only_its_agent_on_ws_and_mqtt(
    mosquitto: MosquittoServer, tmp_path: Path, tasks: list
) -> None:
    async with WebStack(
        f"sqlite+aiosqlite:///{tmp_path / 'crm.db'}", mqtt_url=publisher_url(mosquitto)
    ) as stack:
        s1, _ = await sign_in(stack.base, "1001", "demo-1001")
        s2, _ = await sign_in(stack.base, "1002", "demo-1002")
        async with s1, s2:
            _, ws1 = await websocket_inbox(s1, stack.base, tasks)
            _, ws2 = await websocket_inbox(s2, stack.base, tasks)
            mq1 = await mqtt_inbox(mosquitto, "1001", tasks)
            mq2 = await mqtt_inbox(mosquitto, "1002", tasks)

            await stack.control.offer(ana("call-A"), "1001")
            await stack.control.offer(ana("call-B"), "1002")  # a marker for 1002's channels

            for inbox in (ws1, mq1):
                pop = (await inbox.wait(is_pop("call-A")))["data"]
                assert pop["customer"]["name"] == "Ana López" and not pop["partial"]
                assert pop["crm_url"] == "https://crm.example/search?phone=%2B34915551234"
                assert (pop["queue"], pop["digits"], pop["dnis"]) == (
                    "support",
                    "2",
                    "+34910000000",
                )
            mqtt_pop = await mq1.wait(is_pop("call-A"))
            assert mqtt_pop["_topic"] == "ctiserver/agents/1001/pops"
            await ws2.wait(is_pop("call-B"))
            await mq2.wait(is_pop("call-B"))
            assert not [m for m in ws2.items + mq2.items if m.get("agent_id") == "1001"]
            assert not [m for m in ws1.items + mq1.items if m.get("agent_id") == "1002"]
            # 1001's page and desktop also hear about 1001's state, on the state topic
            await mq1.wait(
                lambda m: (
                    m["kind"] == "agent.state" and m["_topic"] == "ctiserver/agents/1001/state"
                )
            )
            await ws1.wait(lambda m: m["kind"] == "agent.state" and m["data"]["state"] == "offered")


async def test_websocket_refuses_the_unauthenticated_and_cross_site(tmp_path: Path) -> None:
    async with WebStack(f"sqlite+aiosqlite:///{tmp_path / 'crm.db'}") as stack:
        async with aiohttp.ClientSession() as anon:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await anon.ws_connect(f"{stack.base}/ws")
            assert refused.value.status == 401
            with pytest.raises(aiohttp.WSServerHandshakeError) as forged:
                await anon.ws_connect(
                    f"{stack.base}/ws", headers={"Authorization": "Bearer not-a-token"}
                )
            assert forged.value.status == 401
            async with anon.post(
                f"{stack.base}/api/session", json={"username": "1001", "password": "wrong"}
            ) as r:
                assert r.status == 401
            async with anon.get(f"{stack.base}/api/agent/current") as r:
                assert r.status == 401
        session, token = await sign_in(stack.base, "1001", "demo-1001")
        async with session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as cross:
                await session.ws_connect(
                    f"{stack.base}/ws", headers={"Origin": "https://evil.example"}
                )
            assert cross.value.status == 403
            async with session.get(f"{stack.base}/api/supervisor/snapshot") as r:
                assert r.status == 403  # agents are not supervisors
        # a token works without the cookie (desktop applications)
        async with aiohttp.ClientSession() as bearer:
            ws = await bearer.ws_connect(
                f"{stack.base}/ws", headers={"Authorization": f"Bearer {token}"}
            )
            hello = await ws.receive_json(timeout=5)
            assert hello["kind"] == "hello" and hello["data"]["user"]["agent_id"] == "1001"
            await ws.close()


async def test_ack_recorded_and_disposition_from_the_api(tmp_path: Path, tasks: list) -> None:
    async with WebStack(f"sqlite+aiosqlite:///{tmp_path / 'crm.db'}") as stack:
        session, _ = await sign_in(stack.base, "1001", "demo-1001")
        async with session:
            ws, inbox = await websocket_inbox(session, stack.base, tasks)
            await stack.control.offer(ana("call-ack"), "1001")
            await inbox.wait(is_pop("call-ack"))
            await ws.send_json({"type": "ack", "call_id": "call-ack"})
            recorded = await inbox.wait(lambda m: m["kind"] == "ack.recorded")
            assert recorded["data"] == {"call_id": "call-ack", "recorded": True}
            [row] = await stack.store.pop_deliveries("call-ack")
            assert (row.agent_id, row.channel) == ("1001", "ws")
            assert row.acknowledged_at is not None and row.acknowledged_at >= row.sent_at

            # reload: the current call is there
            async with session.get(f"{stack.base}/api/agent/current") as r:
                view = await r.json()
            assert view["pop"]["call_id"] == "call-ack" and view["state"] == "offered"

            await stack.control.answer("call-ack", "1001")
            await stack.control.hang_up("call-ack", "1001")
            await inbox.wait(lambda m: m["kind"] == "call.ended")
            url = f"{stack.base}/api/interactions/call-ack/disposition"
            async with session.post(url, json={"disposition": "resolved", "notes": "ok"}) as r:
                assert r.status == 200 and (await r.json())["stored"] is True
            rec = await stack.store.get_interaction("call-ack")
            assert rec is not None and (rec.disposition, rec.notes, rec.agent_id) == (
                "resolved",
                "ok",
                "1001",
            )
        # another agent may not dispose of 1001's call
        other, _ = await sign_in(stack.base, "1002", "demo-1002")
        async with other, other.post(url, json={"disposition": "sale"}) as r:
            assert r.status == 403


async def test_database_down_pop_arrives_partial_within_300ms(
    mosquitto: MosquittoServer, tasks: list
) -> None:
    with PostgresServer() as pg:
        async with WebStack(pg.url, mqtt_url=publisher_url(mosquitto)) as stack:
            assert stack.mqtt is not None
            async with asyncio.timeout(5):
                await stack.mqtt.connected.wait()
            session, _ = await sign_in(stack.base, "1001", "demo-1001")
            async with session:
                _, ws = await websocket_inbox(session, stack.base, tasks)
                mq = await mqtt_inbox(mosquitto, "1001", tasks)
                # warm path first: the same pop with the database up is complete
                await stack.control.offer(ana("call-up"), "1001")
                assert not (await ws.wait(is_pop("call-up")))["data"]["partial"]

                pg.stop()
                started = time.monotonic()
                await stack.control.offer(ana("call-down"), "1001")
                for inbox in (ws, mq):
                    got = await inbox.wait(is_pop("call-down"), within=2)
                    assert got["_received"] - started < 0.3, got["_received"] - started
                    pop = got["data"]
                    assert pop["partial"] is True and pop["customer"] is None
                    assert (pop["caller_id"], pop["queue"], pop["digits"]) == (
                        "+34915551234",
                        "support",
                        "2",
                    )

                # the interaction is kept while the database is down, stored once it is back
                await stack.control.answer("call-down", "1001")
                await stack.control.hang_up("call-down", "1001")
                assert "call-down" in stack.pops.pending
                pg.start()
                assert await stack.pops.flush() == 0
                rec = await stack.store.get_interaction("call-down")
                assert rec is not None and rec.outcome == "answered" and rec.agent_id == "1001"


class _Seen(logging.Handler):
    """Sets ``event`` when a log record contains ``text``."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text, self.event = text, asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.event.set()


async def test_pops_over_tls_reach_the_broker_and_an_unknown_certificate_is_refused() -> None:
    from ctiserver.mqtt.publisher import MqttNotifier

    with MosquittoServer(tls=True) as broker:
        tls = ssl.create_default_context(cafile=str(broker.ca_file))
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="tls-sub",
                                  tls_context=tls, timeout=5) as sub:
            await sub.subscribe("ctiserver/#", qos=1)
            pub = MqttNotifier(broker.url, ca_file=str(broker.ca_file), client_id="tls-pub")
            assert broker.url.startswith("mqtts://")
            await pub.publish("pop.offered", {"call_id": "tls-1"}, agent_id="1001")
            async with asyncio.timeout(5):
                message = await anext(aiter(sub.messages))
            await pub.close()
        assert str(message.topic) == "ctiserver/agents/1001/pops"
        assert json.loads(message.payload)["data"]["call_id"] == "tls-1"

        # the system's CAs do not know this broker's: no connection, a warning, retries
        refused = _Seen("certificate verify failed")
        logging.getLogger("ctiserver.mqtt.publisher").addHandler(refused)
        try:
            doubtful = MqttNotifier(broker.url, client_id="tls-doubtful", backoff=(0.1, 0.2))
            await doubtful.publish("pop.offered", {"call_id": "tls-2"}, agent_id="1001")
            await asyncio.wait_for(refused.event.wait(), 5)
        finally:
            logging.getLogger("ctiserver.mqtt.publisher").removeHandler(refused)
        assert not doubtful.connected.is_set() and doubtful.published == 0
        assert doubtful._task is not None and not doubtful._task.done()  # still retrying
        await doubtful.close()
