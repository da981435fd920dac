"""Who leads an active/standby pair: a PostgreSQL session-level advisory lock.

The leader is the member whose own connection holds ``pg_advisory_lock(key)``. The lock
belongs to the session, so a leader that dies (kill -9, a lost box) loses it as soon as
PostgreSQL sees the connection go: a `kill -9` closes the socket at once, and a box that
vanishes is dropped by the session's TCP keepalives (set below to about 9 s). The standby
asks for the lock every ``interval`` and is promoted when it gets it.

PostgreSQL unreachable is not the same as lost: while nobody can reach the database
nobody else can take the lock either, so the leader goes on routing from memory. It tries
to take the lock again on every reconnect; if someone else holds it, it steps down at once.
It also steps down once it has not reached PostgreSQL for ``fence_after`` seconds: by
then the database may have dropped its session, and the standby may lead. A standby that
sees the database come back waits a few intervals before asking, so that the leader of
before the outage takes it back first. See docs/failover.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

log = logging.getLogger("ctiserver.ha")

# the server side of the lock's connection notices a vanished peer in ~5 + 2 x 2 s
_SESSION = ("SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; "
            "SET tcp_keepalives_count = 2")


def asyncpg_dsn(url: str) -> str:
    """``postgresql+asyncpg://…`` (SQLAlchemy's form) -> the DSN asyncpg takes."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Leadership:
    def __init__(self, url: str, key: int, *, name: str, interval: float = 0.5,
                 fence_after: float = 8.0,
                 on_change: Callable[[bool, str], None] = lambda _leader, _why: None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.dsn = asyncpg_dsn(url)
        self.key = key
        self.name = name
        self.interval = interval
        self.fence_after = fence_after
        self.on_change = on_change
        self.clock = clock
        self.leader = False
        self.since = clock()  # of the current role
        self.reachable = False  # PostgreSQL answered the last check
        self._conn: Any = None
        self._relock = False  # a leader reconnected: take the lock on the new session
        self._last_ok = clock()
        self._hold_off_until = 0.0
        self._outage_logged = False

    async def run(self) -> None:
        """Contend for (or keep) the lock until cancelled; the lock is released by the
        session's end when the process stops."""
        try:
            while True:
                await self.step()
                await asyncio.sleep(self.interval)
        finally:
            await self._close()

    async def step(self) -> None:
        timeout = max(1.0, 2 * self.interval)
        try:
            if self._conn is None or self._conn.is_closed():
                self._conn = await asyncpg.connect(self.dsn, timeout=timeout,
                                                   server_settings={
                                                       "application_name":
                                                           f"ctiserver {self.name}"[:63]})
                await self._conn.execute(_SESSION, timeout=timeout)
                if self._outage_logged:
                    log.warning("PostgreSQL reachable again")
                    self._outage_logged = False
                    if not self.leader:  # the leader of before the outage asks first
                        self._hold_off_until = self.clock() + 3 * self.interval
            if self.leader:
                if self._relock:
                    got = await self._try_lock(timeout)
                    self._relock = False
                    if not got:
                        self._set(False, "another ctiserver took the lock while PostgreSQL "
                                  "was unreachable from here")
                        return
                else:
                    await self._conn.fetchval("SELECT 1", timeout=timeout)
            elif self.clock() >= self._hold_off_until and await self._try_lock(timeout):
                self._set(True, "took the lock")
            self._last_ok = self.clock()
            self.reachable = True
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            await self._lost(exc)
        except Exception as exc:  # never let the contest itself die: count it as lost
            log.exception("leadership check failed")
            await self._lost(exc)

    async def _try_lock(self, timeout: float) -> bool:
        return bool(await self._conn.fetchval("SELECT pg_try_advisory_lock($1)", self.key,
                                              timeout=timeout))

    async def _lost(self, exc: BaseException) -> None:
        self.reachable = False
        await self._close()
        if not self._outage_logged:
            log.warning("PostgreSQL unreachable for the leadership lock (%s)%s",
                        type(exc).__name__ if not str(exc) else exc,
                        ": leading on from memory" if self.leader else "")
            self._outage_logged = True
        if self.leader:
            self._relock = True
            down = self.clock() - self._last_ok
            if down >= self.fence_after:
                self._set(False, f"PostgreSQL unreachable for {down:.0f} s: the standby "
                          "may lead now")

    def _set(self, leader: bool, why: str) -> None:
        self.leader, self.since = leader, self.clock()
        log.warning("%s: %s", "leader" if leader else "no longer leader", why)
        self.on_change(leader, why)

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()  # no goodbye to a server that may not answer
