"""The notifier port: every outbound domain event leaves ctiserver through ``publish``.

Kinds published today (``data`` is a JSON-able mapping):

- ``pop.offered``   the agent's phone rings: the screen-pop (customer, queue, digits, waited)
- ``pop.answered``  the agent answered the call
- ``call.ended``    the call is over (the agent goes to wrap-up; disposition expected)
- ``agent.state``   ready / not_ready / offered / on_call / wrap_up / logged_out

Two ports: a ``Notifier`` publishes and may wait (the MQTT publisher, ``ctiserver.mqtt``);
a ``Publisher`` takes a notification without waiting, from synchronous code (the WebSocket
hub, ``ctiserver.web.hub``; ``FanOut``; ``RecordingNotifier`` for tests). The pop service
needs a ``Publisher``: the daemon gives it a ``FanOut`` of the channels, which calls each
``Publisher`` at once and feeds every other channel from its own bounded queue and task, so
a slow or broken channel never delays another one and never blocks the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

log = logging.getLogger(__name__)

POP_OFFERED = "pop.offered"
POP_ANSWERED = "pop.answered"
CALL_ENDED = "call.ended"
AGENT_STATE = "agent.state"


@dataclass(frozen=True)
class Notification:
    kind: str
    data: Mapping[str, Any]
    agent_id: str | None = None
    at: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "agent_id": self.agent_id,
            "at": self.at,
            "data": dict(self.data),
        }


class Notifier(Protocol):
    """A channel that publishes and may wait doing so (network I/O)."""

    async def publish(
        self, kind: str, data: Mapping[str, Any], *, agent_id: str | None = None
    ) -> None: ...


@runtime_checkable
class Publisher(Protocol):
    """Takes a notification without waiting (it queues; its own writers send it), from
    synchronous code: what the pop service publishes through."""

    def publish_nowait(
        self, kind: str, data: Mapping[str, Any], *, agent_id: str | None = None
    ) -> None: ...


class DeliveryLog(Protocol):
    """Where channels record that a pop went out and that the agent's page acknowledged it
    (``ctiserver.store.Store`` is one)."""

    async def record_pop_sent(
        self, call_id: str, agent_id: str, channel: str, sent_at: datetime | None = None
    ) -> int: ...

    async def record_pop_ack(
        self, call_id: str, agent_id: str, acked_at: datetime | None = None
    ) -> bool: ...


class RecordingNotifier:
    """A ``Publisher`` (and ``Notifier``) that keeps every notification; tests wait for the
    one they expect."""

    def __init__(self) -> None:
        self.sent: list[Notification] = []
        self._changed = asyncio.Event()

    def publish_nowait(
        self, kind: str, data: Mapping[str, Any], *, agent_id: str | None = None
    ) -> None:
        self.sent.append(Notification(kind, dict(data), agent_id))
        self._changed.set()

    async def publish(
        self, kind: str, data: Mapping[str, Any], *, agent_id: str | None = None
    ) -> None:
        self.publish_nowait(kind, data, agent_id=agent_id)

    def of_kind(self, kind: str, agent_id: str | None = None) -> list[Notification]:
        return [
            n for n in self.sent if n.kind == kind and (agent_id is None or n.agent_id == agent_id)
        ]

    async def wait_for(
        self, predicate: Callable[[Notification], bool], within: float = 2.0
    ) -> Notification:
        deadline = asyncio.get_running_loop().time() + within
        seen = 0
        while True:
            for n in self.sent[seen:]:
                if predicate(n):
                    return n
            seen = len(self.sent)
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError(f"no matching notification in {self.sent!r}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)


class _Channel:
    def __init__(self, name: str, target: Notifier, size: int, timeout: float) -> None:
        self.name, self.target, self.timeout = name, target, timeout
        self.queue: deque[Notification] = deque(maxlen=size)
        self.wakeup = asyncio.Event()
        self.dropped = 0
        self.task: asyncio.Task[None] | None = None
        self.idle = asyncio.Event()
        self.idle.set()

    def put(self, note: Notification) -> None:
        if len(self.queue) == self.queue.maxlen:
            self.dropped += 1
            log.warning(
                "notifier %s: queue full, dropping oldest %s", self.name, self.queue[0].kind
            )
        self.queue.append(note)
        self.idle.clear()
        self.wakeup.set()
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(
                self._run(), name=f"fanout-{self.name}"
            )

    async def _run(self) -> None:
        while True:
            while self.queue:
                note = self.queue.popleft()
                try:
                    async with asyncio.timeout(self.timeout):  # a timer, not a task per note
                        await self.target.publish(note.kind, note.data, agent_id=note.agent_id)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - one channel's failure stays its own
                    log.warning(
                        "notifier %s: %s for agent %s failed: %r",
                        self.name,
                        note.kind,
                        note.agent_id,
                        exc,
                    )
            self.idle.set()
            self.wakeup.clear()
            await self.wakeup.wait()


class FanOut:
    """A ``Publisher`` (and ``Notifier``) that hands each notification to several channels,
    independently: a ``Publisher`` at once, any other ``Notifier`` from its own queue."""

    def __init__(
        self,
        channels: Mapping[str, Notifier | Publisher] | Sequence[Notifier | Publisher],
        *,
        queue_size: int = 1000,
        timeout: float = 5.0,
    ) -> None:
        named = (
            dict(channels)
            if isinstance(channels, Mapping)
            else {f"{type(c).__name__}#{i}": c for i, c in enumerate(channels)}
        )
        # a Publisher only queues (the WebSocket hub: each page has its own writer): called
        # at once; the others (MQTT: network I/O) get a queue and a task
        self._immediate: list[tuple[str, Callable[..., None]]] = []
        self._channels: list[_Channel] = []
        for n, c in named.items():
            if isinstance(c, Publisher):
                self._immediate.append((n, c.publish_nowait))  # bound once, not per note
            else:
                self._channels.append(_Channel(n, c, queue_size, timeout))

    async def publish(
        self, kind: str, data: Mapping[str, Any], *, agent_id: str | None = None
    ) -> None:
        self.publish_nowait(kind, data, agent_id=agent_id)

    def publish_nowait(
        self, kind: str, data: Mapping[str, Any], *, agent_id: str | None = None
    ) -> None:
        """The same, from synchronous code: each channel queues it and sends it on its own."""
        for name, nowait in self._immediate:
            try:
                nowait(kind, data, agent_id=agent_id)
            except Exception as exc:  # noqa: BLE001 - one channel's failure stays its own
                log.warning("notifier %s: %s for agent %s failed: %r", name, kind, agent_id, exc)
        if self._channels:
            note = Notification(kind, dict(data), agent_id)
            for channel in self._channels:
                channel.put(note)

    async def drain(self, within: float = 5.0) -> None:
        """Wait until every channel has handed over what it was given (tests, shutdown)."""
        await asyncio.wait_for(asyncio.gather(*(c.idle.wait() for c in self._channels)), within)

    async def close(self) -> None:
        for channel in self._channels:
            if channel.task is not None:
                channel.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await channel.task
