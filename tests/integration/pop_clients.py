"""Receivers of screen-pops on the real call path, all in the caller's asyncio loop:

- ``AmiWatch``: the AMI ``observer`` user (panoramisk), every event kept with its Asterisk
  ``Timestamp``; ``wait_for`` waits on arrival (no polling of a sleeping loop);
- ``Inbox``: what one client received, each message stamped with ``time.time()`` on arrival;
- ``ws_inbox``: sign in through the real web API and open the agent's WebSocket;
- ``mqtt_inbox``: subscribe as an MQTT user of the broker (the ACL decides what arrives).

Used by the integration tests and by ``bench/pop_latency.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import aiomqtt
from panoramisk import Manager


class Inbox:
    def __init__(self, name: str = "") -> None:
        self.name = name
        self.items: list[dict[str, Any]] = []
        self.changed = asyncio.Event()

    def add(self, item: dict[str, Any]) -> None:
        item["_received"] = time.time()
        self.items.append(item)
        self.changed.set()

    def matching(self, predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        return [m for m in self.items if predicate(m)]

    async def wait(self, predicate: Callable[[dict[str, Any]], bool],
                   within: float = 10.0) -> dict[str, Any]:
        async with asyncio.timeout(within):
            while True:
                for item in self.items:
                    if predicate(item):
                        return item
                self.changed.clear()
                await self.changed.wait()


def pop_of(call_id: str | None = None, kind: str = "pop.offered",
           ) -> Callable[[dict[str, Any]], bool]:
    return lambda m: m.get("kind") == kind and (
        call_id is None or m.get("data", {}).get("call_id") == call_id)


class AmiWatch:
    """Every AMI event seen by the sandbox's read-only ``observer`` user."""

    def __init__(self, only: tuple[str, ...] = ()) -> None:
        self.only = only  # event names kept by Asterisk for this session (AMI Filter)
        self.events: list[Any] = []
        self.changed = asyncio.Event()
        self.manager = Manager(host="127.0.0.1", port=5038, username="observer",
                               secret="observer-sandbox-secret",
                               loop=asyncio.get_running_loop(), ping_delay=30,
                               reconnect_timeout=1)
        self.manager.register_event("*", self._on_event)

    def _on_event(self, _manager: Any, event: Any) -> None:
        self.events.append(event)
        self.changed.set()

    async def __aenter__(self) -> AmiWatch:
        self.manager.connect()
        async with asyncio.timeout(15):
            while not self.manager.authenticated:
                self.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), 0.1)
        for name in self.only:  # fewer events to parse here: receivers' clocks stay honest
            reply = await self.manager.send_action(
                {"Action": "Filter", "Operation": "Add", "Filter": f"Event: {name}"})
            if getattr(reply, "Response", "") != "Success":
                raise AssertionError(f"AMI Filter refused: {reply!r}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.manager.close()

    async def wait_for(self, predicate: Callable[[Any], bool], within: float, what: str,
                       count: int = 1) -> list[Any]:
        try:
            async with asyncio.timeout(within):
                while True:
                    found = [e for e in self.events if predicate(e)]
                    if len(found) >= count:
                        return found
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            raise AssertionError(f"timed out after {within:.0f} s waiting for {count} x {what}; "
                                 f"saw {len([e for e in self.events if predicate(e)])}") from None

    def named(self, name: str) -> list[Any]:
        return [e for e in self.events if e.event == name]


async def ws_inbox(base: str, username: str, password: str,
                   tasks: list[asyncio.Task[Any]]) -> tuple[aiohttp.ClientSession, Inbox]:
    """Sign in at ``POST /api/session`` and open ``/ws`` with the session cookie; returns
    once the server's ``hello`` arrived. The reader task is appended to ``tasks``."""
    session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with session.post(f"{base}/api/session",
                            json={"username": username, "password": password}) as r:
        if r.status != 200:
            await session.close()
            raise AssertionError(f"sign-in of {username}: {r.status} {await r.text()}")
    ws = await session.ws_connect(f"{base}/ws", heartbeat=None)
    inbox = Inbox(f"ws:{username}")

    async def read() -> None:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                inbox.add(json.loads(msg.data))

    tasks.append(asyncio.get_running_loop().create_task(read()))
    await inbox.wait(lambda m: m.get("kind") == "hello", 10)
    return session, inbox


async def mqtt_inbox(port: int, username: str, password: str, topic: str,
                     tasks: list[asyncio.Task[Any]]) -> Inbox:
    """Subscribe as ``username``; returns once the broker acknowledged the subscription."""
    inbox = Inbox(f"mqtt:{username}")
    subscribed = asyncio.Event()

    async def run() -> None:
        async with aiomqtt.Client("127.0.0.1", port, username=username, password=password,
                                  identifier=f"pop-test-{username}-{time.monotonic_ns()}",
                                  ) as client:
            await client.subscribe(topic, qos=1)
            subscribed.set()
            async for message in client.messages:
                item = json.loads(message.payload)
                item["_topic"] = str(message.topic)
                inbox.add(item)

    task = asyncio.get_running_loop().create_task(run())
    tasks.append(task)
    async with asyncio.timeout(10):
        waiter = asyncio.ensure_future(subscribed.wait())
        await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
        if not subscribed.is_set():
            waiter.cancel()
            task.result()  # raises the client's error
    return inbox


async def cancel_all(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(BaseException):
            await task
