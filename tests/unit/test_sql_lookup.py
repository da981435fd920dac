"""lookup(table, key) for rules against a real SQLite database (aiosqlite)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from ctiserver.store.lookup import LookupRefused, SqlLookup


async def make_lookup(tmp_path: Path, timeout: float = 0.5) -> SqlLookup:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/crm.db")
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE blocked_numbers (number TEXT PRIMARY KEY, "
                                "reason TEXT)"))
        await conn.execute(text("CREATE TABLE secrets (id TEXT PRIMARY KEY, pw TEXT)"))
        await conn.execute(text("INSERT INTO blocked_numbers VALUES ('+34600111222', 'spam')"))
    lookup = SqlLookup(engine, ["blocked_numbers"], timeout)
    lookup.bind(asyncio.get_running_loop())
    return lookup


async def test_finds_a_row_by_primary_key_from_a_worker_thread(tmp_path: Path) -> None:
    lookup = await make_lookup(tmp_path)
    try:
        row = await asyncio.to_thread(lookup, "blocked_numbers", "+34600111222")
        assert row == {"number": "+34600111222", "reason": "spam"}
        assert await asyncio.to_thread(lookup, "blocked_numbers", "+34911111111") is None
    finally:
        await lookup.engine.dispose()


async def test_only_whitelisted_tables(tmp_path: Path) -> None:
    lookup = await make_lookup(tmp_path)
    try:
        with pytest.raises(LookupRefused, match="lookup_tables"):
            await asyncio.to_thread(lookup, "secrets", "x")
    finally:
        await lookup.engine.dispose()


async def test_refuses_to_block_the_event_loop(tmp_path: Path) -> None:
    lookup = await make_lookup(tmp_path)
    try:
        with pytest.raises(RuntimeError, match="event loop"):
            lookup("blocked_numbers", "x")
    finally:
        await lookup.engine.dispose()


async def test_bounded_by_the_timeout_when_the_answer_is_late(tmp_path: Path) -> None:
    lookup = await make_lookup(tmp_path, timeout=0.1)
    try:
        await asyncio.to_thread(lookup, "blocked_numbers", "warm-up")  # reflect the table
        def timed() -> float:
            started = time.monotonic()
            with pytest.raises(TimeoutError, match="slower than 100 ms"):
                lookup("blocked_numbers", "+34600111222")
            return time.monotonic() - started

        worker = asyncio.get_running_loop().run_in_executor(None, timed)
        # the loop is stuck elsewhere (this is what is tested, not a synchronisation)
        time.sleep(0.5)  # noqa: ASYNC251
        assert await worker < 0.3
    finally:
        await lookup.engine.dispose()
