"""``lookup(table, key)`` for routing rules, against the SQL database.

``SqlLookup`` is called from the rule evaluator's worker thread and runs the query on the
event loop, waiting at most ``timeout``; only the ``[crm] lookup_tables`` can be read, by
their one-column primary key. See ``docs/store.md``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import MetaData, Table, select
from sqlalchemy.ext.asyncio import AsyncEngine


class LookupRefused(Exception):
    """The table is not in the whitelist or cannot be looked up by a single key."""


class SqlLookup:
    def __init__(self, engine: AsyncEngine, tables: Iterable[str], timeout: float) -> None:
        self.engine = engine
        self.tables = frozenset(tables)
        self.timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._reflected: dict[str, Table] = {}

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop that owns the engine (call from the daemon's start)."""
        self._loop = loop
        self._loop_thread = threading.get_ident()

    async def fetch(self, table: str, key: str) -> dict[str, Any] | None:
        if table not in self.tables:
            allowed = ", ".join(sorted(self.tables)) or "none"
            raise LookupRefused(f"table {table!r} is not in [crm] lookup_tables ({allowed})")
        t = await self._table(table)
        (pk,) = t.primary_key.columns
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(t).where(pk == key).limit(1))).mappings().first()
        return dict(row) if row is not None else None

    async def _table(self, name: str) -> Table:
        table = self._reflected.get(name)
        if table is None:
            def reflect(sync_conn: Any) -> Table:
                return Table(name, MetaData(), autoload_with=sync_conn)

            async with self.engine.connect() as conn:
                table = await conn.run_sync(reflect)
            if len(table.primary_key.columns) != 1:
                raise LookupRefused(f"table {name!r} needs a one-column primary key")
            self._reflected[name] = table
        return table

    def __call__(self, table: str, key: str) -> Mapping[str, Any] | None:
        """Blocking lookup for the rule evaluator's worker thread, bounded by ``timeout``."""
        loop = self._loop
        if loop is None or loop.is_closed():
            raise RuntimeError("lookup used before the daemon started")
        if threading.get_ident() == self._loop_thread:
            raise RuntimeError("lookup called on the event loop: evaluate rules in a thread")
        future = asyncio.run_coroutine_threadsafe(
            asyncio.wait_for(self.fetch(table, key), self.timeout), loop)
        try:
            return future.result(self.timeout + 0.05)
        except (TimeoutError, concurrent.futures.TimeoutError):
            future.cancel()
            raise TimeoutError(f"slower than {self.timeout * 1000:.0f} ms") from None
