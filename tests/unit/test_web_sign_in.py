"""Sign-in throttling: password guessing is cut short per username and per address, on the
real web application (aiohttp on loopback, SQLite store with the demo accounts)."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from ctiserver.web.app import ADDRESS_FAILURES, THROTTLE, USER_FAILURES
from ctiserver.web.auth import SignInThrottle, token_key
from tests.fixtures_services import WebStack


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_key_is_locked_after_its_failures_within_the_window_and_freed_after() -> None:
    clock = Clock()
    t = SignInThrottle(3, window=60, lockout=30, clock=clock)
    assert not t.failed("ana") and not t.failed("ana")
    clock.now += 61  # those two are out of the window
    assert not t.failed("ana") and not t.failed("ana")
    assert t.retry_after("ana") == 0
    assert t.failed("ana")  # the third within 60 s
    assert t.retry_after("ana") == 30 and t.retry_after("luis") == 0
    clock.now += 29.5
    assert 0 < t.retry_after("ana") <= 0.5
    clock.now += 1
    assert t.retry_after("ana") == 0
    assert not t.failed("ana")  # counting starts again after a lockout


def test_a_success_clears_the_count_and_memory_is_bounded() -> None:
    t = SignInThrottle(2, max_keys=100, clock=Clock())
    t.failed("ana")
    t.succeeded("ana")
    assert not t.failed("ana")
    for i in range(1000):
        t.failed(f"guess-{i}")
    assert len(t._failures) <= 100


async def sign_in(http: aiohttp.ClientSession, base: str, username: str,
                  password: str) -> tuple[int, str | None]:
    async with http.post(f"{base}/api/session",
                         json={"username": username, "password": password}) as r:
        return r.status, r.headers.get("Retry-After")


async def test_guessing_a_password_gets_429_even_with_the_right_one_then_works_later(
        tmp_path: Path) -> None:
    async with WebStack(f"sqlite+aiosqlite:///{tmp_path / 'crm.db'}") as stack, \
            aiohttp.ClientSession() as http:
        assert await sign_in(http, stack.base, "supervisor", "demo-super") == (200, None)
        for _ in range(USER_FAILURES):
            assert (await sign_in(http, stack.base, "Supervisor", "guess"))[0] == 401
        status, retry = await sign_in(http, stack.base, "supervisor", "demo-super")
        assert status == 429 and retry is not None and int(retry) > 0
        # another account from the same address is not locked by these failures
        assert (await sign_in(http, stack.base, "admin", "demo-admin"))[0] == 200
        # the lockout over (moved forward, not waited for): the right password works
        by_user, _ = stack.app[THROTTLE]
        by_user.clock = lambda: 1e12
        assert (await sign_in(http, stack.base, "supervisor", "demo-super"))[0] == 200



async def test_spraying_many_usernames_from_one_address_gets_that_address_locked(
        tmp_path: Path) -> None:
    async with WebStack(f"sqlite+aiosqlite:///{tmp_path / 'crm.db'}") as stack, \
            aiohttp.ClientSession() as http:
        for i in range(ADDRESS_FAILURES):
            assert (await sign_in(http, stack.base, f"user{i}", "guess"))[0] == 401
        assert (await sign_in(http, stack.base, "admin", "demo-admin"))[0] == 429


async def whoami(http: aiohttp.ClientSession, base: str, token: str) -> int:
    async with http.get(f"{base}/api/session",
                        headers={"Authorization": f"Bearer {token}"}) as r:
        return r.status


async def signed_in(http: aiohttp.ClientSession, base: str, username: str,
                    password: str) -> str:
    async with http.post(f"{base}/api/session",
                         json={"username": username, "password": password}) as r:
        assert r.status == 200
        return str((await r.json())["token"])


async def test_signed_in_pages_survive_a_restart_but_not_a_sign_out(tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'crm.db'}"
    async with WebStack(db) as stack, aiohttp.ClientSession() as http:
        kept = await signed_in(http, stack.base, "supervisor", "demo-super")
        gone = await signed_in(http, stack.base, "admin", "demo-admin")
        async with http.delete(f"{stack.base}/api/session",
                               headers={"Authorization": f"Bearer {gone}"}) as r:
            assert r.status == 200
        assert await whoami(http, stack.base, gone) == 401
        # no token in the database, only its hash
        async with stack.store.engine.connect() as conn:
            stored = [row[0] for row in await conn.exec_driver_sql(
                "SELECT token_hash FROM web_sessions")]
        assert stored == [token_key(kept)]
    # ctiserver restarted on the same database
    async with WebStack(db, demo=False) as stack, aiohttp.ClientSession() as http:
        assert await whoami(http, stack.base, kept) == 200
        assert await whoami(http, stack.base, gone) == 401


async def test_expired_sessions_and_deactivated_users_are_not_restored(tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'crm.db'}"
    async with WebStack(db) as stack, aiohttp.ClientSession() as http:
        expired = await signed_in(http, stack.base, "supervisor", "demo-super")
        blocked = await signed_in(http, stack.base, "admin", "demo-admin")
        async with stack.store.engine.begin() as conn:
            await conn.exec_driver_sql(
                "UPDATE web_sessions SET expires_at = '2000-01-01 00:00:00.000000' "
                "WHERE token_hash = ?", (token_key(expired),))
            await conn.exec_driver_sql("UPDATE users SET active = 0 WHERE username = 'admin'")
    async with WebStack(db, demo=False) as stack, aiohttp.ClientSession() as http:
        assert await whoami(http, stack.base, expired) == 401
        assert await whoami(http, stack.base, blocked) == 401
        async with stack.store.engine.connect() as conn:
            left = [row[0] for row in await conn.exec_driver_sql(
                "SELECT token_hash FROM web_sessions")]
        assert left == []  # both deleted at the start
