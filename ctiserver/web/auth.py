"""Web sessions: a random token per login, sent as an HttpOnly cookie or a Bearer header."""

from __future__ import annotations

import secrets
import time
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
