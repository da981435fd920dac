"""Publish screen-pops and agent events to an MQTT broker (aiomqtt).

Topics (``prefix`` defaults to ``ctiserver``):

- ``{prefix}/agents/{agent_id}/pops``   pop.offered, pop.answered, call.ended (QoS 1, JSON)
- ``{prefix}/agents/{agent_id}/state``  agent.state
- ``{prefix}/events``                   notifications that concern no agent in particular

The broker's ACL gives each agent's client read access to its own ``agents/{id}/#`` only
(``screenpop/mosquitto/``). ``publish`` never waits for the broker: messages go into a
bounded queue (oldest dropped when full) that one task sends, reconnecting with backoff.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections import deque
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomqtt

from ctiserver.notify import AGENT_STATE, POP_OFFERED, DeliveryLog, Notification

log = logging.getLogger(__name__)


def topic_for(kind: str, agent_id: str | None, prefix: str = "ctiserver") -> str:
    if agent_id is None:
        return f"{prefix}/events"
    if kind == AGENT_STATE:
        return f"{prefix}/agents/{agent_id}/state"
    return f"{prefix}/agents/{agent_id}/pops"


class MqttNotifier:
    def __init__(
        self,
        url: str = "mqtt://127.0.0.1:1883",
        *,
        prefix: str = "ctiserver",
        client_id: str = "ctiserver",
        queue_size: int = 1000,
        deliveries: DeliveryLog | None = None,
        backoff: tuple[float, float] = (0.2, 30.0),
        ca_file: str | None = None,
    ) -> None:
        """``mqtts://`` connects over TLS (port 8883 by default), checking the broker's
        certificate and host name against the system's CAs, or ``ca_file`` when given."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts", "tcp", ""):
            raise ValueError(f"unsupported MQTT URL scheme {parts.scheme!r} (mqtt://, mqtts://)")
        self.tls: ssl.SSLContext | None = None
        if parts.scheme == "mqtts":
            self.tls = ssl.create_default_context(cafile=ca_file)
        elif ca_file:
            raise ValueError("an MQTT CA file needs an mqtts:// URL")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (8883 if self.tls else 1883)
        self.username = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        self.prefix = prefix
        self.client_id = client_id
        self.deliveries = deliveries
        self.backoff = backoff
        self._queue: deque[Notification] = deque(maxlen=queue_size)
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self.dropped = 0
        self.published = 0
        self._background: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:  # never the password
        tls = ", TLS" if self.tls else ""
        return f"MqttNotifier({self.host}:{self.port}{tls}, user={self.username!r})"

    async def publish(
        self, kind: str, data: Mapping[str, Any], *, agent_id: str | None = None
    ) -> None:
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
            log.warning(
                "mqtt: queue full, dropping %s for agent %s",
                self._queue[0].kind,
                self._queue[0].agent_id,
            )
        self._queue.append(Notification(kind, dict(data), agent_id))
        self._wakeup.set()
        self.start()

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="mqtt-publisher")

    async def close(self, within: float = 5.0) -> None:
        """Stop sending; bounded (a broker that never acknowledges the disconnect must not
        hold up the daemon's shutdown)."""
        task = self._task
        if task is None or task.done():
            return
        task.cancel()
        await asyncio.wait({task}, timeout=within)
        if not task.done():
            log.warning("mqtt: publisher did not stop within %.0f s; left behind", within)
        elif not task.cancelled():
            task.exception()  # retrieved: the reason is in the log already

    async def _run(self) -> None:
        delay = self.backoff[0]
        while True:
            try:
                async with aiomqtt.Client(
                    self.host,
                    self.port,
                    username=self.username,
                    password=self._password,
                    identifier=self.client_id,
                    timeout=5,
                    tls_context=self.tls,
                ) as client:
                    log.info("mqtt: connected to %s:%s", self.host, self.port)
                    self.connected.set()
                    delay = self.backoff[0]
                    await self._send_all(client)
            except aiomqtt.MqttError as exc:
                self.connected.clear()
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    # closing: aiomqtt reports a cancelled connect or disconnect as an error
                    raise asyncio.CancelledError from exc
                log.warning(
                    "mqtt: %s:%s unavailable (%s); retry in %.1fs", self.host, self.port, exc, delay
                )
                await asyncio.sleep(delay)  # reconnect backoff
                delay = min(delay * 2, self.backoff[1])

    async def _send_all(self, client: aiomqtt.Client) -> None:
        while True:
            while self._queue:
                note = self._queue[0]
                topic = topic_for(note.kind, note.agent_id, self.prefix)
                payload = json.dumps(note.to_json(), ensure_ascii=False, default=str)
                await client.publish(topic, payload, qos=1, timeout=10)
                self._queue.popleft()  # only once the broker has it
                self.published += 1
                if note.kind == POP_OFFERED and note.agent_id and self.deliveries is not None:
                    task = asyncio.get_running_loop().create_task(self._record(note))
                    self._background.add(task)
                    task.add_done_callback(self._background.discard)
            self._wakeup.clear()
            await self._wakeup.wait()

    async def _record(self, note: Notification) -> None:
        assert self.deliveries is not None and note.agent_id is not None
        try:
            await self.deliveries.record_pop_sent(
                str(note.data.get("call_id")), note.agent_id, "mqtt"
            )
        except Exception as exc:  # noqa: BLE001 - the pop went out; the log entry is best effort
            log.warning(
                "mqtt: pop delivery of call %s not recorded: %r", note.data.get("call_id"), exc
            )
