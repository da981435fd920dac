"""The WebSocket hub: a ``Notifier`` that delivers events to the agents' pages.

An agent's connections receive only that agent's notifications; supervisors and admins
also receive every ``agent.state`` and the notifications for no agent in particular. Each
connection has its own bounded queue and writer task, so a slow browser never delays the
others. Pops sent and acknowledged are recorded in the ``DeliveryLog`` (the store).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ctiserver.notify import AGENT_STATE, POP_OFFERED, DeliveryLog, Notification
from ctiserver.web.ports import UserRecord

log = logging.getLogger(__name__)

SUPERVISING = ("supervisor", "admin")


@dataclass(eq=False)
class Connection:
    user: UserRecord
    ws: web.WebSocketResponse
    queue: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=200))
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    def wants(self, kind: str, agent_id: str | None) -> bool:
        if agent_id is not None and agent_id == self.user.agent_id:
            return True
        return self.user.role in SUPERVISING and (agent_id is None or kind == AGENT_STATE)


class WebSocketHub:
    def __init__(self, deliveries: DeliveryLog | None = None) -> None:
        self.deliveries = deliveries
        self.connections: set[Connection] = set()
        self._recording: dict[tuple[str, str], asyncio.Task[Any]] = {}

    async def publish(
        self, kind: str, data: Mapping[str, Any], *, agent_id: str | None = None
    ) -> None:
        self.publish_nowait(kind, data, agent_id=agent_id)

    def publish_nowait(
        self, kind: str, data: Mapping[str, Any], *, agent_id: str | None = None
    ) -> None:
        """Queue the message on each page that wants it (each page's writer sends it):
        never waits, so the fan-out calls it directly."""
        message: dict[str, Any] | None = None
        for conn in list(self.connections):
            if conn.wants(kind, agent_id):
                if message is None:
                    message = Notification(kind, dict(data), agent_id).to_json()
                conn.queue.append(message)
                conn.wakeup.set()

    def connected_agents(self) -> set[str]:
        return {c.user.agent_id for c in self.connections if c.user.agent_id}

    async def serve(
        self, request: web.Request, user: UserRecord, hello: dict[str, Any]
    ) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=20)
        await ws.prepare(request)
        conn = Connection(user, ws)
        conn.queue.append({"kind": "hello", "agent_id": user.agent_id, "data": hello})
        self.connections.add(conn)
        writer = asyncio.get_running_loop().create_task(self._writer(conn))
        log.info(
            "ws: %s (agent %s) connected from %s", user.username, user.agent_id, request.remote
        )
        try:
            async for msg in ws:
                if msg.type == web.WSMsgType.TEXT:
                    await self._received(conn, msg.data)
        finally:
            self.connections.discard(conn)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            log.info("ws: %s (agent %s) disconnected", user.username, user.agent_id)
        return ws

    async def close(self) -> None:
        for conn in list(self.connections):
            await conn.ws.close(code=1001, message=b"server shutdown")

    async def _writer(self, conn: Connection) -> None:
        while not conn.ws.closed:
            while conn.queue:
                message = conn.queue.popleft()
                await conn.ws.send_str(json.dumps(message, ensure_ascii=False, default=str))
                if message["kind"] == POP_OFFERED and conn.user.agent_id:
                    self._record_sent(str(message["data"].get("call_id")), conn.user.agent_id)
            conn.wakeup.clear()
            await conn.wakeup.wait()

    async def _received(self, conn: Connection, text: str) -> None:
        try:
            msg = json.loads(text)
        except ValueError:
            return
        if not isinstance(msg, dict):
            return
        if msg.get("type") == "ack" and conn.user.agent_id and msg.get("call_id"):
            call_id, agent_id = str(msg["call_id"])[:64], conn.user.agent_id
            ok = False
            if self.deliveries is not None:
                sending = self._recording.get((call_id, agent_id))
                if sending is not None:  # the "sent" row first, so the ack has one to mark
                    await asyncio.wait({sending}, timeout=5)
                try:
                    ok = await self.deliveries.record_pop_ack(call_id, agent_id)
                except Exception as exc:  # noqa: BLE001
                    log.warning(
                        "ws: ack of call %s by agent %s not recorded: %r", call_id, agent_id, exc
                    )
            conn.queue.append(
                {
                    "kind": "ack.recorded",
                    "agent_id": agent_id,
                    "data": {"call_id": call_id, "recorded": ok},
                }
            )
            conn.wakeup.set()

    def _record_sent(self, call_id: str, agent_id: str) -> None:
        if self.deliveries is None:
            return
        deliveries = self.deliveries

        async def record() -> None:
            try:
                await deliveries.record_pop_sent(call_id, agent_id, "ws")
            except Exception as exc:  # noqa: BLE001
                log.warning(
                    "ws: pop of call %s to agent %s not recorded: %r", call_id, agent_id, exc
                )

        key = (call_id, agent_id)
        task = asyncio.get_running_loop().create_task(record())
        self._recording[key] = task

        def done(_: asyncio.Task[Any]) -> None:
            if self._recording.get(key) is task:
                del self._recording[key]

        task.add_done_callback(done)
