"""Inside the store: ``CallerLookup``, who is calling, once per call.

Two Core queries on one connection (the owners of the number, the first one's history).
On a SQLite file they run on ``sqlite3``: on the event loop's own read-only connection,
or on the ``store-reader`` thread when that one is busy, fails or proved slow; elsewhere
on the async engine. Why: ``docs/store.md``.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import bindparam, select

from ctiserver.core.records import CustomerRecord, Identification, InteractionRecord
from ctiserver.store.database import Database
from ctiserver.store.rawsqlite import Compiled, Worker
from ctiserver.store.rawsqlite import connect as raw_connect
from ctiserver.store.rows import (
    CUSTOMERS,
    INTERACTION_COLUMNS,
    INTERACTIONS,
    NUMBERS,
    interaction,
    interaction_row,
)

log = logging.getLogger(__name__)

# an identify on the event loop slower than this: later ones go to the reader thread
INLINE_SLOW = 0.02

_THEIR = NUMBERS.alias("their")
# every customer owning :e164 with all their numbers, one row per number
OWNERS_QUERY = (
    select(
        CUSTOMERS.c.id, CUSTOMERS.c.name, CUSTOMERS.c.tier, CUSTOMERS.c.assigned_agent,
        CUSTOMERS.c.notes, CUSTOMERS.c.email, _THEIR.c.e164,
    )
    .join(_THEIR, _THEIR.c.customer_id == CUSTOMERS.c.id)
    .where(
        CUSTOMERS.c.id.in_(
            select(NUMBERS.c.customer_id).where(NUMBERS.c.e164 == bindparam("e164"))
        )
    )
    .order_by(CUSTOMERS.c.id, _THEIR.c.id)
)
HISTORY_QUERY = (
    select(*INTERACTION_COLUMNS)
    .where(INTERACTIONS.c.customer_id == bindparam("customer_id"))
    .order_by(INTERACTIONS.c.joined_at.desc(), INTERACTIONS.c.id.desc())
    .limit(bindparam("limit"))
)


def _owners(rows: Iterable[Sequence[Any]]) -> list[CustomerRecord]:
    """From the rows of ``OWNERS_QUERY`` (SQLAlchemy's or ``sqlite3``'s: by position)."""
    customers: list[CustomerRecord] = []
    numbers: list[str] = []
    last: Sequence[Any] | None = None
    for row in rows:
        if last is not None and row[0] != last[0]:
            customers.append(_owner(last, numbers))
            numbers = []
        numbers.append(row[6])
        last = row
    if last is not None:
        customers.append(_owner(last, numbers))
    return customers


def _owner(row: Sequence[Any], numbers: list[str]) -> CustomerRecord:
    return CustomerRecord(
        id=row[0], name=row[1], tier=row[2], assigned_agent=row[3], notes=row[4],
        email=row[5], numbers=tuple(numbers),
    )


class CallerLookup:
    def __init__(self, db: Database, normalize: Callable[[str], str]) -> None:
        self.db = db
        self.normalize = normalize
        self._readers: Worker | None = None
        self._inline: sqlite3.Connection | None = None
        self._inline_ok = False
        if db.connect is not None and db.file is not None:
            # one reader: a lookup takes tens of microseconds, and two threads waiting
            # on one queue both wake for each job (a context switch pair per call)
            self._readers = Worker(db.connect, threads=1, name="store-reader")
            self._inline_target = db.file  # identify on the loop (docs/store.md)
            self._inline_ok = True
            self._owners_raw = Compiled.of(OWNERS_QUERY)
            self._history_raw = Compiled.of(HISTORY_QUERY)

    async def close(self) -> None:
        if self._readers is not None:
            await self._readers.close()
            self._inline_ok = False  # closed: identify raises, as the reader thread does
            if self._inline is not None:
                self._inline.close()
                self._inline = None

    def identify(self, number: str, history: int = 5) -> asyncio.Future[Identification]:
        """``Store.identify``."""
        e164 = self.normalize(number)
        if not e164:
            done: asyncio.Future[Identification] = asyncio.get_running_loop().create_future()
            done.set_result(Identification(number=e164))
            return done
        if self._readers is not None:
            if self._inline_ok:
                ident = self._identify_inline(e164, history)
                if ident is not None:
                    done = asyncio.get_running_loop().create_future()
                    done.set_result(ident)
                    return done
            return self._readers.run(self._identify_raw, e164, history)
        return asyncio.ensure_future(self._identify_core(e164, history))

    def _identify_inline(self, e164: str, history: int) -> Identification | None:
        """``identify`` on the loop's own connection; None when the reader thread must
        answer instead (the file busy, an error: the thread gives the real outcome)."""
        started = time.perf_counter()
        try:
            if self._inline is None:
                args, kwargs = self._inline_target
                # never wait for another connection's lock on the loop; never write
                self._inline = raw_connect(args, {**kwargs, "timeout": 0.0})
                self._inline.execute("PRAGMA query_only=ON")
            ident = self._identify_raw(self._inline, e164, history)
        except sqlite3.Error as exc:
            log.debug("CRM lookup on the loop failed (%r): the reader thread answers", exc)
            return None
        took = time.perf_counter() - started
        if took > INLINE_SLOW:
            self._inline_ok = False
            log.warning("CRM lookup took %.0f ms on the event loop (slow disk?): lookups "
                        "move to the reader thread", took * 1000)
        return ident

    async def _identify_core(self, e164: str, history: int) -> Identification:
        async with self.db.engine.connect() as conn:
            customers = _owners(await conn.execute(OWNERS_QUERY, {"e164": e164}))
            past: tuple[InteractionRecord, ...] = ()
            if customers and history > 0:
                params = {"customer_id": customers[0].id, "limit": history}
                past = tuple(map(interaction, await conn.execute(HISTORY_QUERY, params)))
        return Identification(number=e164, customers=tuple(customers), history=past)

    def _identify_raw(self, conn: sqlite3.Connection, e164: str, history: int) -> Identification:
        """``identify`` on a reader thread's connection (no transaction: each query reads
        the last commit, as the SQLAlchemy path does)."""
        owners, recent = self._owners_raw, self._history_raw
        rows = conn.execute(owners.sql, owners.params({"e164": e164})).fetchall()
        customers = _owners(map(owners.row, rows))
        past: tuple[InteractionRecord, ...] = ()
        if customers and history > 0:
            params = recent.params({"customer_id": customers[0].id, "limit": history})
            rows = conn.execute(recent.sql, params).fetchall()
            past = tuple(interaction_row(recent.row(row)) for row in rows)
        return Identification(number=e164, customers=tuple(customers), history=past)
