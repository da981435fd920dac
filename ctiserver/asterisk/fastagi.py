"""FastAGI server: Asterisk connects here for every ``AGI(agi://HOST:PORT/ROUTE,...)``.

One ``asyncio.Protocol`` per connection reads the AGI environment and the replies to
commands straight from the transport: no StreamReader, no per-line ``readline`` (about
25 environment lines per call), no per-connection timeout context. A route gets an
``AgiRequest`` with panoramisk's ``Request`` interface (``headers``, ``send_command``
returning panoramisk's reply dicts, parsed by its ``parse_agi_result``).

panoramisk 1.4's own ``Application.handler`` spins forever on a connection closed
before the blank line, has no size limit and no timeout. Here a garbage or silent
client is dropped after ``HEADER_TIMEOUT`` / ``MAX_HEADER_BYTES`` and logged with its
peer.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, cast

from panoramisk.utils import parse_agi_result

log = logging.getLogger("ctiserver.agi")

HEADER_TIMEOUT = 5.0
MAX_HEADER_BYTES = 16 * 1024
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")


class AgiRequest:
    """One call's FastAGI connection, as a route sees it."""

    def __init__(self, headers: dict[str, str], protocol: _AgiProtocol) -> None:
        self.headers = headers
        self._protocol = protocol

    async def send_command(self, command: str) -> dict[str, Any]:
        """Send one AGI command; its reply as panoramisk parses it (``100 Trying``
        skipped, a usage error's second line appended). ConnectionError once Asterisk
        has closed the connection."""
        p = self._protocol
        p.write(command + "\n")
        result: dict[str, Any] = parse_agi_result(await p.read_line())
        while result.get("status_code") == 100:
            result = parse_agi_result(await p.read_line())
        if result.get("error") == "AGIUsageError":
            result["msg"] += await p.read_line()
        return result

    def send_last(self, command: str) -> None:
        """Send the conversation's last command and close the connection: Asterisk reads
        the command before the end of the stream, runs it, and ends the AGI (its reply,
        unread, has nowhere to go). One wake-up and one round trip less than
        ``send_command`` per call; for a command whose outcome nothing depends on (the
        dialplan's answer: if the channel is gone, its Hangup says so). ConnectionError
        when Asterisk has closed the connection already."""
        self._protocol.write(command + "\n")
        self._protocol.close()


Route = Callable[[AgiRequest], Awaitable[None]]


class FastAgiServer:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.routes: dict[str, Route] = {}
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def add_route(self, name: str, route: Route) -> None:
        self.routes[name] = route

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _AgiProtocol(self, loop), self.host,
                                                self.port, reuse_address=True)
        log.info("FastAGI listening on %s:%d", self.host, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _start(self, protocol: _AgiProtocol, headers: dict[str, str]) -> None:
        task = protocol.loop.create_task(self._serve(protocol, headers))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, protocol: _AgiProtocol, headers: dict[str, str]) -> None:
        script = headers.get("agi_network_script", "").split("?", 1)[0].strip("/")
        route = self.routes.get(script)
        uid = headers.get("agi_uniqueid", "?")
        try:
            if route is None:
                log.error("[%s] FastAGI: no route %r (from %s)", uid, script, protocol.peer)
            else:
                await route(AgiRequest(headers, protocol))
        except ConnectionError:
            log.info("[%s] FastAGI connection closed by Asterisk", uid)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("[%s] FastAGI route %r failed; the dialplan falls back", uid, script)
        finally:
            protocol.close()


class _AgiProtocol(asyncio.Protocol):
    def __init__(self, server: FastAgiServer, loop: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.started = False  # the environment was read and the route started
        self.lines: deque[str] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.timer = self.loop.call_later(HEADER_TIMEOUT, self._drop, "timed out")

    @property
    def peer(self) -> Any:
        """Who connected (for the log only: asked when needed, not per connection)."""
        return self.transport.get_extra_info("peername") if self.transport else None

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        if not self.started:
            end = _BLANK_LINE.search(buffer)
            if end is None:
                if len(buffer) > MAX_HEADER_BYTES:
                    self._drop("AGI environment too large")
                else:
                    self.buffer = buffer
                return
            try:
                headers = parse_environment(buffer[:end.start()])
            except ValueError as exc:
                self._drop(str(exc))
                return
            self.started = True
            if self.timer is not None:
                self.timer.cancel()
            buffer = buffer[end.end():]
            self.server._start(self, headers)
        *lines, self.buffer = buffer.split(b"\n")
        if lines:
            self.lines.extend(line.decode("utf-8", "replace").rstrip("\r") for line in lines)
            self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.started and not self.closed:
            log.warning("FastAGI from %s dropped: %s", self.peer,
                        "connection closed before the AGI environment ended")
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
        self._wake()

    def write(self, text: str) -> None:
        if self.closed or self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("AGI connection closed")
        self.transport.write(text.encode())

    async def read_line(self) -> str:
        while not self.lines:
            if self.closed:
                raise ConnectionResetError("AGI connection closed")
            self.waiter = self.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        return self.lines.popleft()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _drop(self, reason: str) -> None:
        log.warning("FastAGI from %s dropped: %s", self.peer, reason)
        self.close()


def parse_environment(block: bytes) -> dict[str, str]:
    """``agi_x: value`` lines (the part before the blank line). ValueError on garbage."""
    headers: dict[str, str] = {}
    for line in block.decode("utf-8", errors="replace").split("\n"):
        text = line.rstrip("\r")
        key, sep, value = text.partition(": ")
        if not sep or not key.startswith("agi_"):
            raise ValueError(f"not an AGI environment line: {text[:60]!r}")
        headers[key] = value
    return headers


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
