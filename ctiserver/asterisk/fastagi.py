"""FastAGI server: Asterisk connects here for every ``AGI(agi://HOST:PORT/ROUTE,...)``.

Uses panoramisk's ``Request`` (commands and reply parsing) but reads the AGI
environment itself: panoramisk 1.4's ``Application.handler`` spins forever on a
connection closed before the blank line, has no size limit and no timeout. Here a
garbage or silent client is dropped after ``HEADER_TIMEOUT`` / ``MAX_HEADER_BYTES``
and logged with its peer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from panoramisk.fast_agi import Request

log = logging.getLogger("ctiserver.agi")

HEADER_TIMEOUT = 5.0
MAX_HEADER_BYTES = 16 * 1024
Route = Callable[[Request], Awaitable[None]]


class FastAgiServer:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.routes: dict[str, Route] = {}
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def add_route(self, name: str, route: Route) -> None:
        self.routes[name] = route

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port,
                                                  reuse_address=True)
        log.info("FastAGI listening on %s:%d", self.host, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        peer = writer.get_extra_info("peername")
        try:
            async with asyncio.timeout(HEADER_TIMEOUT):  # a timer, not a task (per call)
                headers = await read_environment(reader)
        except (TimeoutError, ValueError, ConnectionError) as exc:
            log.warning("FastAGI from %s dropped: %s", peer, exc or type(exc).__name__)
            writer.close()
            self._discard(task)
            return
        script = headers.get("agi_network_script", "").split("?", 1)[0].strip("/")
        route = self.routes.get(script)
        uid = headers.get("agi_uniqueid", "?")
        try:
            if route is None:
                log.error("[%s] FastAGI: no route %r (from %s)", uid, script, peer)
            else:
                await route(Request(app=None, headers=headers, reader=reader, writer=writer))
        except (ConnectionError, asyncio.IncompleteReadError):
            log.info("[%s] FastAGI connection closed by Asterisk", uid)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("[%s] FastAGI route %r failed; the dialplan falls back", uid, script)
        finally:
            writer.close()
            self._discard(task)

    def _discard(self, task: asyncio.Task[Any] | None) -> None:
        if task is not None:
            self._tasks.discard(task)


async def read_environment(reader: asyncio.StreamReader) -> dict[str, str]:
    """Read ``agi_x: value`` lines up to the blank line. ValueError on garbage."""
    headers: dict[str, str] = {}
    total = 0
    while True:
        line = await reader.readline()
        if not line:
            raise ValueError("connection closed before the AGI environment ended")
        total += len(line)
        if total > MAX_HEADER_BYTES:
            raise ValueError("AGI environment too large")
        text = line.decode("utf-8", errors="replace").rstrip("\r\n")
        if not text:
            return headers
        key, sep, value = text.partition(": ")
        if not sep or not key.startswith("agi_"):
            raise ValueError(f"not an AGI environment line: {text[:60]!r}")
        headers[key] = value


def agi_quote(value: str) -> str:
    """A value safe inside an AGI command argument: no quotes, backslashes or newlines."""
    cleaned = "".join(ch for ch in str(value) if ch >= " " and ch not in '"\\')
    return f'"{cleaned}"'


def agi_ok(reply: Any) -> bool:
    """True when an AGI reply is ``200 result=N`` with N >= 0 (panoramisk's dict)."""
    if not isinstance(reply, dict) or "error" in reply:
        return False
    result = reply.get("result")
    if isinstance(result, tuple | list):
        result = result[0] if result else None
    try:
        return int(str(result)) >= 0
    except (TypeError, ValueError):
        return False
