"""Web sessions: a random token per login, sent as an HttpOnly cookie or a Bearer header;
and the sign-in throttle, against password guessing."""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from aiohttp import web

from ctiserver.web.ports import SessionStore, UserRecord

COOKIE = "ctiserver_session"
log = logging.getLogger(__name__)


@dataclass
class Session:
    key: str  # the token's SHA-256: what is kept, in memory and in the database
    user: UserRecord
    expires: float
    token: str = ""  # the token itself: only known to the sign-in that made it


def token_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Sessions:
    """Signed-in pages, looked up in memory on every request; with a ``store``, also kept in
    the database (hashed), so that a restart of ctiserver signs nobody out. A database that
    is down costs that: sessions then live in memory only, with a warning."""

    def __init__(self, ttl: float = 12 * 3600, clock: Callable[[], float] = time.time,
                 store: SessionStore | None = None) -> None:
        self.ttl, self.clock, self.store = ttl, clock, store
        self._by_key: dict[str, Session] = {}

    async def open(self, user: UserRecord) -> Session:
        now = self.clock()
        for key, s in list(self._by_key.items()):
            if s.expires <= now:
                del self._by_key[key]
        token = secrets.token_urlsafe(32)
        session = Session(token_key(token), user, now + self.ttl, token)
        self._by_key[session.key] = session
        if self.store is not None:
            try:
                await self.store.save_web_session(
                    session.key, user.id, datetime.fromtimestamp(session.expires, UTC))
            except Exception as exc:  # noqa: BLE001 - the page works; only a restart forgets it
                log.warning("web: session of %s not saved (%r): a restart will sign it out",
                            user.username, exc)
        return session

    async def close(self, session: Session) -> None:
        self._by_key.pop(session.key, None)
        if self.store is not None:
            try:
                await self.store.delete_web_session(session.key)
            except Exception as exc:  # noqa: BLE001 - gone from memory: refused from now on
                log.warning("web: session of %s not deleted from the database (%r): it "
                            "would come back after a restart until it expires",
                            session.user.username, exc)

    async def restore(self) -> int:
        """Load the sessions that are still valid (at start); how many."""
        if self.store is None:
            return 0
        try:
            live = await self.store.live_web_sessions(datetime.fromtimestamp(self.clock(), UTC))
        except Exception as exc:  # noqa: BLE001
            log.warning("web: sessions not restored (%r): pages must sign in again", exc)
            return 0
        for key, user, expires in live:
            self._by_key[key] = Session(key, user, expires.timestamp())
        return len(live)

    def lookup(self, token: str | None) -> Session | None:
        if not token:
            return None
        session = self._by_key.get(token_key(token))
        if session is None or session.expires <= self.clock():
            return None
        return session

    def from_request(self, request: web.Request) -> Session | None:
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            return self.lookup(header[7:].strip())
        return self.lookup(request.cookies.get(COOKIE))


class SignInThrottle:
    """Failed sign-ins counted per key (a username, a client address). A key with ``limit``
    failures within ``window`` seconds is refused for ``lockout`` seconds: no password is
    checked meanwhile (a check costs a deliberately slow hash, so guessing also costs the
    server). A success clears its own key. At most ``max_keys`` keys are remembered (the
    least recently failed are forgotten first), so a flood of names cannot grow memory."""

    def __init__(self, limit: int, window: float = 300.0, lockout: float = 60.0, *,
                 max_keys: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window, self.lockout = limit, window, lockout
        self.max_keys, self.clock = max_keys, clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._locked_until: dict[str, float] = {}

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` may try again; 0 when it may now."""
        until = self._locked_until.get(key)
        if until is None:
            return 0.0
        left = until - self.clock()
        if left <= 0:
            del self._locked_until[key]
            return 0.0
        return left

    def failed(self, key: str) -> bool:
        """Count a failure; True when it locks the key."""
        now = self.clock()
        times = self._failures.pop(key, None) or deque()
        times.append(now)
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) >= self.limit:
            self._locked_until[key] = now + self.lockout
            times.clear()
        else:
            self._failures[key] = times  # most recent last
            while len(self._failures) > self.max_keys:
                self._failures.popitem(last=False)
        return key in self._locked_until

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)
