"""Web sessions: a random token per login, sent as an HttpOnly cookie or a Bearer header;
and the sign-in throttle, against password guessing."""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from ctiserver.store.records import UserRecord

COOKIE = "ctiserver_session"


@dataclass
class Session:
    token: str
    user: UserRecord
    expires: float


class Sessions:
    def __init__(self, ttl: float = 12 * 3600, clock: Callable[[], float] = time.time) -> None:
        self.ttl, self.clock = ttl, clock
        self._by_token: dict[str, Session] = {}

    def open(self, user: UserRecord) -> Session:
        now = self.clock()
        for token, s in list(self._by_token.items()):
            if s.expires <= now:
                del self._by_token[token]
        session = Session(secrets.token_urlsafe(32), user, now + self.ttl)
        self._by_token[session.token] = session
        return session

    def close(self, token: str) -> None:
        self._by_token.pop(token, None)

    def lookup(self, token: str | None) -> Session | None:
        if not token:
            return None
        session = self._by_token.get(token)
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
