"""The CRM store: customers, interactions, agents and accounts, pop deliveries.

One ``Store`` per process owns an async SQLAlchemy engine (SQLite through aiosqlite by
default, PostgreSQL through asyncpg). Every method opens its own short session and returns
plain records, so callers never touch ORM objects across awaits.

The per-call methods are the exception, for their cost: ``identify`` is two Core queries
on one connection, and the writes made at call rate (``save_interaction``,
``save_agent_state``, ``record_pop_sent``, ``record_pop_ack``) are single Core statements
(upserts) run by one ``BatchWriter``, many per transaction. On a SQLite file both skip
SQLAlchemy at run time: the statements are compiled once to SQLite SQL and run by the
stdlib ``sqlite3`` module (``rawsqlite``); the batches on the ``store-writer`` thread, with
its own connection, one thread hop per batch (aiosqlite costs several per statement, and
SQLAlchemy Core ~100 us of CPU per statement). PostgreSQL and a memory database run them
on the async engine.

``identify`` on a SQLite file reads on the event loop itself: a few index pages of a local
file, tens of microseconds, cheaper than the thread hop it replaces (a wake-up of a thread
and one of the loop per call, about 7 % of the daemon's CPU at 20 calls/s). Its connection
never waits for a lock (busy timeout 0, read-only): a lookup that finds the file busy or
fails goes to the ``store-reader`` thread instead, and a lookup slower than
``INLINE_SLOW`` (a slow or remote disk) moves every later one there for good, with a
warning. The loop already writes the log and the interaction spool to disk; a disk that
hangs outright stalls it either way.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

from sqlalchemy import (
    DateTime,
    Result,
    Row,
    Table,
    bindparam,
    delete,
    event,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import selectinload

from ctiserver.core.numbers import normalize
from ctiserver.store import models as m
from ctiserver.store.passwords import hash_password, verify_password
from ctiserver.store.rawsqlite import Compiled, Worker, file_target, sqlite_pragmas
from ctiserver.store.rawsqlite import connect as raw_connect
from ctiserver.store.records import (
    AgentStateRecord,
    CustomerRecord,
    Identification,
    InteractionRecord,
    PopDeliveryRecord,
    UserRecord,
)
from ctiserver.store.writer import BatchWriter, Statement

log = logging.getLogger(__name__)

# an identify on the event loop slower than this: later ones go to the reader thread
INLINE_SLOW = 0.02
T = TypeVar("T")

MIGRATIONS = Path(__file__).parent / "migrations"
DEFAULT_URL = "sqlite+aiosqlite:///ctiserver.db"


class StoreError(Exception):
    """The caller asked for something the store refuses (unknown role, duplicate user…)."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def from_epoch(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, UTC) if ts is not None else None


def _aware(value: datetime | None) -> datetime | None:
    """SQLite gives naive datetimes back: they were stored as UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _customer(row: m.Customer) -> CustomerRecord:
    return CustomerRecord(
        id=row.id,
        name=row.name,
        tier=row.tier,
        assigned_agent=row.assigned_agent,
        notes=row.notes,
        email=row.email,
        numbers=tuple(n.e164 for n in row.numbers),
    )


_INTERACTION_FIELDS = (
    "customer_id caller_id dnis queue agent_id digits joined_at answered_at ended_at "
    "wait_seconds talk_seconds outcome disposition notes"
).split()


def _interaction(row: m.Interaction | Row[Any]) -> InteractionRecord:
    values: dict[str, Any] = {f: getattr(row, f) for f in _INTERACTION_FIELDS}
    for key in ("joined_at", "answered_at", "ended_at"):
        values[key] = _aware(values[key])
    return InteractionRecord(call_id=row.call_id, **values)


_CUSTOMERS = cast(Table, m.Customer.__table__)
_NUMBERS = cast(Table, m.CustomerNumber.__table__)
_INTERACTIONS = cast(Table, m.Interaction.__table__)
_AGENT_STATES = cast(Table, m.AgentState.__table__)
_DELIVERIES = cast(Table, m.PopDelivery.__table__)
_INTERACTION_COLUMNS = [_INTERACTIONS.c.call_id, *(_INTERACTIONS.c[f] for f in _INTERACTION_FIELDS)]
# a row of these columns is an InteractionRecord's fields, in order
assert [c.name for c in _INTERACTION_COLUMNS] == [f.name for f in fields(InteractionRecord)]
_INTERACTION_TIMES = tuple(
    i for i, c in enumerate(_INTERACTION_COLUMNS) if isinstance(c.type, DateTime)
)


def _interaction_row(values: Sequence[Any]) -> InteractionRecord:
    """From a ``sqlite3`` row of ``_INTERACTION_COLUMNS``, processed (``Compiled.row``)."""
    values = list(values)
    for i in _INTERACTION_TIMES:
        values[i] = _aware(values[i])
    return InteractionRecord(*values)


# what a new interaction row holds in the columns an update leaves unset
_INTERACTION_BLANK = {
    "caller_id": "", "dnis": "", "queue": "", "digits": "", "outcome": "", "disposition": "",
    "notes": "",
}


_THEIR = _NUMBERS.alias("their")
# every customer owning :e164 with all their numbers, one row per number
_OWNERS_QUERY = (
    select(
        _CUSTOMERS.c.id, _CUSTOMERS.c.name, _CUSTOMERS.c.tier, _CUSTOMERS.c.assigned_agent,
        _CUSTOMERS.c.notes, _CUSTOMERS.c.email, _THEIR.c.e164,
    )
    .join(_THEIR, _THEIR.c.customer_id == _CUSTOMERS.c.id)
    .where(
        _CUSTOMERS.c.id.in_(
            select(_NUMBERS.c.customer_id).where(_NUMBERS.c.e164 == bindparam("e164"))
        )
    )
    .order_by(_CUSTOMERS.c.id, _THEIR.c.id)
)
_HISTORY_QUERY = (
    select(*_INTERACTION_COLUMNS)
    .where(_INTERACTIONS.c.customer_id == bindparam("customer_id"))
    .order_by(_INTERACTIONS.c.joined_at.desc(), _INTERACTIONS.c.id.desc())
    .limit(bindparam("limit"))
)


def _owners(rows: Iterable[Sequence[Any]]) -> list[CustomerRecord]:
    """From the rows of ``_OWNERS_QUERY`` (SQLAlchemy's or ``sqlite3``'s: by position)."""
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


def _param(table: Table, name: str) -> Any:
    return bindparam(name, type_=table.c[name].type)


def _interaction_params(record: InteractionRecord) -> dict[str, Any]:
    params: dict[str, Any] = {"call_id": record.call_id}
    for name in _INTERACTION_FIELDS:
        params[name] = getattr(record, name)
    return params


def _interaction_upsert(insert: Callable[[Table], Any]) -> Any:
    """Insert the interaction :call_id, or update it with the parameters that are not
    NULL (an update leaves the others as they are); built once, compiled once."""
    t = _INTERACTIONS
    values: dict[str, Any] = {"call_id": _param(t, "call_id")}
    changes: dict[str, Any] = {}
    for name in _INTERACTION_FIELDS:
        value = _param(t, name)
        blank = _INTERACTION_BLANK.get(name)
        values[name] = value if blank is None else func.coalesce(value, blank)
        changes[name] = func.coalesce(value, t.c[name])
    stmt = insert(t).values(values)
    return stmt.on_conflict_do_update(index_elements=[t.c.call_id], set_=changes).returning(
        *_INTERACTION_COLUMNS
    )


def _state_upsert(insert: Callable[[Table], Any]) -> Any:
    t = _AGENT_STATES
    values = {name: _param(t, name) for name in ("agent_id", "state", "reason", "updated_at")}
    changes = {k: v for k, v in values.items() if k != "agent_id"}
    return insert(t).values(values).on_conflict_do_update(
        index_elements=[t.c.agent_id], set_=changes
    )


_DELIVERY_INSERT = (
    _DELIVERIES.insert()
    .values({n: _param(_DELIVERIES, n) for n in ("call_id", "agent_id", "channel", "sent_at")})
    .returning(_DELIVERIES.c.id)
)
_DELIVERY_ACK = (
    update(_DELIVERIES)
    .where(
        _DELIVERIES.c.call_id == bindparam("of_call", type_=_DELIVERIES.c.call_id.type),
        _DELIVERIES.c.agent_id == bindparam("by_agent", type_=_DELIVERIES.c.agent_id.type),
        _DELIVERIES.c.acknowledged_at.is_(None),
    )
    .values(acknowledged_at=bindparam("acked_at", type_=_DELIVERIES.c.acknowledged_at.type))
)


# what the writer reads back from each kind of write, from a SQLAlchemy result or from a
# sqlite3 cursor (the same, row for row; ``one`` means exactly one, as Result.one())
def _one_interaction(result: Result[Any]) -> InteractionRecord:
    return _interaction(result.one())


def _one_interaction_raw(cursor: sqlite3.Cursor, raw: Compiled) -> InteractionRecord:
    (row,) = cursor.fetchall()
    return _interaction_row(raw.row(row))


def _nothing(result: Result[Any]) -> None:
    return None


def _nothing_raw(cursor: sqlite3.Cursor, raw: Compiled) -> None:
    return None


def _scalar_int(result: Result[Any]) -> int:
    return int(result.scalar_one())


def _scalar_int_raw(cursor: sqlite3.Cursor, raw: Compiled) -> int:
    (row,) = cursor.fetchall()
    return int(raw.row(row)[0])


def _any_row(result: Result[Any]) -> bool:
    return bool(getattr(result, "rowcount", 0))


def _any_row_raw(cursor: sqlite3.Cursor, raw: Compiled) -> bool:
    return bool(cursor.rowcount)


_POP_SENT = Statement(_DELIVERY_INSERT, _scalar_int, _scalar_int_raw)
_POP_ACK = Statement(_DELIVERY_ACK, _any_row, _any_row_raw)


def _user(row: m.User) -> UserRecord:
    return UserRecord(
        id=row.id, username=row.username, role=row.role, agent_id=row.agent_id, active=row.active
    )


class Store:
    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        region: str = "ES",
        echo: bool = False,
        write_delay: float = 0.0,
    ) -> None:
        """``write_delay``: how long a per-call write may wait to share a transaction."""
        self.url = url
        self.region = region
        kwargs: dict[str, Any] = {"echo": echo}
        if url.startswith("postgresql"):
            # fail fast when the server is down: the pop path bounds its wait anyway
            kwargs["connect_args"] = {"timeout": 3, "command_timeout": 10}
            kwargs["pool_pre_ping"] = True
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        # a SQLite file: the per-call methods on raw sqlite3 connections (rawsqlite)
        self._connect: Callable[[], sqlite3.Connection] | None = None
        self._readers: Worker | None = None
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine.sync_engine, "connect", sqlite_pragmas)
            target = file_target(url)
            if target is not None:
                self._connect = functools.partial(raw_connect, *target, echo=echo)
                # one reader: a lookup takes tens of microseconds, and two threads waiting
                # on one queue both wake for each job (a context switch pair per call)
                self._readers = Worker(self._connect, threads=1, name="store-reader")
                self._inline_target = target  # identify on the loop (module docstring)
                self._inline: sqlite3.Connection | None = None
                self._inline_ok = True
                self._owners_raw = Compiled.of(_OWNERS_QUERY)
                self._history_raw = Compiled.of(_HISTORY_QUERY)
        self._session = async_sessionmaker(self.engine, expire_on_commit=False)
        # INSERT ... ON CONFLICT DO UPDATE, where the dialect has it
        dialects: dict[str, Callable[[Table], Any]] = {
            "sqlite": sqlite.insert, "postgresql": postgresql.insert}
        self._upsert = dialects.get(self.engine.dialect.name)
        # the per-call writes, each built (and for sqlite3 compiled) once
        self._pop_sent = self._write_kind(_POP_SENT)
        self._pop_ack = self._write_kind(_POP_ACK)
        if self._upsert is not None:
            self._interaction_upsert = self._write_kind(Statement(
                _interaction_upsert(self._upsert), _one_interaction, _one_interaction_raw))
            self._state_upsert = self._write_kind(
                Statement(_state_upsert(self._upsert), _nothing, _nothing_raw))
        self.writer = BatchWriter(self.engine, connect=self._connect, delay=write_delay)

    def _write_kind(self, statement: Statement[T]) -> Statement[T]:
        return statement.for_sqlite() if self._connect is not None else statement

    async def close(self) -> None:
        await self.writer.close()
        if self._readers is not None:
            await self._readers.close()
            self._inline_ok = False  # closed: identify raises, as the reader thread does
            if self._inline is not None:
                self._inline.close()
                self._inline = None
        await self.engine.dispose()

    # ------------------------------------------------------------ migrations

    async def migrate(self, revision: str = "head") -> None:
        """Bring the schema up to ``revision`` with the bundled Alembic migrations."""
        async with self.engine.begin() as conn:
            await conn.run_sync(_upgrade, revision)

    async def downgrade(self, revision: str) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(_downgrade, revision)

    async def current_revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        def current(conn: Connection) -> str | None:
            return MigrationContext.configure(conn).get_current_revision()

        async with self.engine.connect() as conn:
            return await conn.run_sync(current)

    # ------------------------------------------------------------- customers

    def normalize(self, number: str) -> str:
        return normalize(number, self.region)

    async def create_customer(
        self,
        name: str,
        numbers: Iterable[str] = (),
        *,
        tier: str = "standard",
        assigned_agent: str | None = None,
        notes: str = "",
        email: str | None = None,
    ) -> CustomerRecord:
        now = utcnow()
        seen: list[str] = []
        for raw in numbers:
            e164 = self.normalize(raw)
            if e164 and e164 not in seen:
                seen.append(e164)
        async with self._session.begin() as session:
            row = m.Customer(
                name=name.strip(),
                tier=tier,
                assigned_agent=assigned_agent or None,
                notes=notes,
                email=email or None,
                created_at=now,
                updated_at=now,
                numbers=[m.CustomerNumber(e164=e) for e in seen],
            )
            session.add(row)
            await session.flush()
            return _customer(row)

    async def add_number(self, customer_id: int, number: str, label: str = "") -> CustomerRecord:
        e164 = self.normalize(number)
        async with self._session.begin() as session:
            row = await self._load_customer(session, customer_id)
            if row is None:
                raise StoreError(f"no customer {customer_id}")
            if e164 and e164 not in {n.e164 for n in row.numbers}:
                row.numbers.append(m.CustomerNumber(e164=e164, label=label))
                row.updated_at = utcnow()
                await session.flush()
            return _customer(row)

    async def get_customer(self, customer_id: int) -> CustomerRecord | None:
        async with self._session() as session:
            row = await self._load_customer(session, customer_id)
            return _customer(row) if row is not None else None

    async def find_customers_by_number(self, number: str) -> list[CustomerRecord]:
        """Every customer owning ``number`` (normalised to E.164 first), oldest first."""
        e164 = self.normalize(number)
        if not e164:
            return []
        async with self._session() as session:
            return await self._by_number(session, e164)

    def identify(self, number: str, history: int = 5) -> asyncio.Future[Identification]:
        """Customers owning the number and the first one's last ``history`` interactions,
        on one connection (the pop path bounds the whole of it by a timeout). Once per
        call: two Core queries, no ORM objects; on a SQLite file, compiled once and run by
        ``sqlite3`` on a reader thread. A future (await it): on SQLite the reader thread's
        own, with no task around it."""
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
        async with self.engine.connect() as conn:
            customers = _owners(await conn.execute(_OWNERS_QUERY, {"e164": e164}))
            past: tuple[InteractionRecord, ...] = ()
            if customers and history > 0:
                params = {"customer_id": customers[0].id, "limit": history}
                past = tuple(map(_interaction, await conn.execute(_HISTORY_QUERY, params)))
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
            past = tuple(_interaction_row(recent.row(row)) for row in rows)
        return Identification(number=e164, customers=tuple(customers), history=past)

    async def recent_interactions(
        self, customer_id: int, limit: int = 5
    ) -> list[InteractionRecord]:
        async with self._session() as session:
            return await self._history(session, customer_id, limit)

    async def _load_customer(self, session: AsyncSession, customer_id: int) -> m.Customer | None:
        result = await session.execute(
            select(m.Customer)
            .where(m.Customer.id == customer_id)
            .options(selectinload(m.Customer.numbers))
        )
        return result.scalar_one_or_none()

    async def _by_number(self, session: AsyncSession, e164: str) -> list[CustomerRecord]:
        owners = select(m.CustomerNumber.customer_id).where(m.CustomerNumber.e164 == e164)
        result = await session.execute(
            select(m.Customer)
            .where(m.Customer.id.in_(owners))
            .options(selectinload(m.Customer.numbers))
            .order_by(m.Customer.id)
        )
        return [_customer(row) for row in result.scalars()]

    async def _history(
        self, session: AsyncSession, customer_id: int, limit: int
    ) -> list[InteractionRecord]:
        result = await session.execute(
            select(m.Interaction)
            .where(m.Interaction.customer_id == customer_id)
            .order_by(m.Interaction.joined_at.desc(), m.Interaction.id.desc())
            .limit(limit)
        )
        return [_interaction(row) for row in result.scalars()]

    # ---------------------------------------------------------- interactions

    async def save_interaction(self, record: InteractionRecord) -> InteractionRecord:
        """Insert or update the interaction ``record.call_id``; ``None`` fields are kept."""
        if self._upsert is None:
            return await self._save_interaction_orm(record)
        return await self.writer.write(self._interaction_upsert, _interaction_params(record))

    def save_interaction_nowait(self, record: InteractionRecord) -> asyncio.Future[Any]:
        """``save_interaction`` for synchronous callers: the future of its outcome (the
        writer's own, on the batched path: no task per record)."""
        if self._upsert is None:
            return asyncio.ensure_future(self._save_interaction_orm(record))
        return self.writer.submit(self._interaction_upsert, _interaction_params(record))

    async def _save_interaction_orm(self, record: InteractionRecord) -> InteractionRecord:
        async with self._session.begin() as session:
            result = await session.execute(
                select(m.Interaction).where(m.Interaction.call_id == record.call_id)
            )
            row = result.scalar_one_or_none()
            if row is None:
                row = m.Interaction(
                    call_id=record.call_id,
                    caller_id="",
                    dnis="",
                    queue="",
                    digits="",
                    outcome="",
                    disposition="",
                    notes="",
                )
                session.add(row)
            for name in _INTERACTION_FIELDS:
                value = getattr(record, name)
                if value is not None:
                    setattr(row, name, value)
            await session.flush()
            return _interaction(row)

    async def get_interaction(self, call_id: str) -> InteractionRecord | None:
        async with self._session() as session:
            result = await session.execute(
                select(m.Interaction).where(m.Interaction.call_id == call_id)
            )
            row = result.scalar_one_or_none()
            return _interaction(row) if row is not None else None

    # ------------------------------------------------------- agents and users

    async def upsert_agent(self, agent_id: str, name: str = "") -> None:
        async with self._session.begin() as session:
            row = await session.get(m.Agent, agent_id)
            if row is None:
                session.add(m.Agent(id=agent_id, name=name, created_at=utcnow()))
            elif name:
                row.name = name

    async def list_agents(self) -> list[tuple[str, str]]:
        async with self._session() as session:
            result = await session.execute(select(m.Agent.id, m.Agent.name).order_by(m.Agent.id))
            return [(r[0], r[1]) for r in result]

    async def create_user(
        self, username: str, password: str, *, role: str = "agent", agent_id: str | None = None
    ) -> UserRecord:
        if role not in m.ROLES:
            raise StoreError(f"unknown role {role!r}; one of {', '.join(m.ROLES)}")
        if not password:
            raise StoreError("empty password")
        hashed = await asyncio.to_thread(hash_password, password)
        async with self._session.begin() as session:
            exists = await session.execute(select(m.User.id).where(m.User.username == username))
            if exists.first() is not None:
                raise StoreError(f"user {username!r} exists")
            row = m.User(
                username=username,
                password_hash=hashed,
                role=role,
                agent_id=agent_id,
                active=True,
                created_at=utcnow(),
            )
            session.add(row)
            await session.flush()
            return _user(row)

    async def set_password(self, username: str, password: str) -> None:
        hashed = await asyncio.to_thread(hash_password, password)
        async with self._session.begin() as session:
            result = await session.execute(select(m.User).where(m.User.username == username))
            row = result.scalar_one_or_none()
            if row is None:
                raise StoreError(f"no user {username!r}")
            row.password_hash = hashed

    async def get_user(self, username: str) -> UserRecord | None:
        async with self._session() as session:
            result = await session.execute(select(m.User).where(m.User.username == username))
            row = result.scalar_one_or_none()
            return _user(row) if row is not None else None

    async def authenticate(self, username: str, password: str) -> UserRecord | None:
        """The active user with this password, or None (unknown users cost the same time)."""
        async with self._session() as session:
            result = await session.execute(select(m.User).where(m.User.username == username))
            row = result.scalar_one_or_none()
        stored = row.password_hash if row is not None else _dummy_hash()
        ok = await asyncio.to_thread(verify_password, password, stored)
        if row is None or not ok or not row.active:
            return None
        return _user(row)

    # ----------------------------------------------------------- web sessions

    async def save_web_session(self, token_hash: str, user_id: int, expires_at: datetime) -> None:
        async with self._session.begin() as session:
            session.add(m.WebSession(token_hash=token_hash, user_id=user_id,
                                     expires_at=expires_at))

    async def delete_web_session(self, token_hash: str) -> None:
        async with self._session.begin() as session:
            await session.execute(delete(m.WebSession).where(m.WebSession.token_hash == token_hash))

    async def live_web_sessions(self, now: datetime) -> list[tuple[str, UserRecord, datetime]]:
        """(token hash, user, expiry) of the sessions not expired, of active users; the
        others are deleted (a user made active again signs in again)."""
        async with self._session.begin() as session:
            inactive = select(m.User.id).where(m.User.active.is_(False))
            await session.execute(delete(m.WebSession).where(
                (m.WebSession.expires_at <= now) | m.WebSession.user_id.in_(inactive)))
            rows = await session.execute(
                select(m.WebSession, m.User)
                .join(m.User, m.User.id == m.WebSession.user_id)
                .where(m.User.active.is_(True))
            )
            return [(ws.token_hash, _user(user), cast(datetime, _aware(ws.expires_at)))
                    for ws, user in rows]

    # ----------------------------------------------------------- agent state

    async def save_agent_state(self, agent_id: str, state: str, reason: str | None = None) -> None:
        if self._upsert is None:
            return await self._save_agent_state_orm(agent_id, state, reason)
        params = {"agent_id": agent_id, "state": state, "reason": reason, "updated_at": utcnow()}
        await self.writer.write(self._state_upsert, params)

    async def _save_agent_state_orm(
        self, agent_id: str, state: str, reason: str | None = None
    ) -> None:
        async with self._session.begin() as session:
            row = await session.get(m.AgentState, agent_id)
            if row is None:
                session.add(
                    m.AgentState(agent_id=agent_id, state=state, reason=reason, updated_at=utcnow())
                )
            else:
                row.state, row.reason, row.updated_at = state, reason, utcnow()

    async def load_agent_states(self) -> dict[str, AgentStateRecord]:
        async with self._session() as session:
            result = await session.execute(select(m.AgentState))
            return {
                r.agent_id: AgentStateRecord(
                    agent_id=r.agent_id,
                    state=r.state,
                    reason=r.reason,
                    updated_at=_aware(r.updated_at) or utcnow(),
                )
                for r in result.scalars()
            }

    # -------------------------------------------------------- pop deliveries

    async def record_pop_sent(
        self, call_id: str, agent_id: str, channel: str, sent_at: datetime | None = None
    ) -> int:
        params = {"call_id": call_id, "agent_id": agent_id, "channel": channel,
                  "sent_at": sent_at or utcnow()}
        return await self.writer.write(self._pop_sent, params)

    async def record_pop_ack(
        self, call_id: str, agent_id: str, acked_at: datetime | None = None
    ) -> bool:
        """Mark this agent's pop deliveries of the call acknowledged. False if none was sent.
        Written after every ``record_pop_sent`` submitted before it (one writer, in order)."""
        params = {"of_call": call_id, "by_agent": agent_id, "acked_at": acked_at or utcnow()}
        return await self.writer.write(self._pop_ack, params)

    async def pop_deliveries(self, call_id: str) -> list[PopDeliveryRecord]:
        async with self._session() as session:
            result = await session.execute(
                select(m.PopDelivery)
                .where(m.PopDelivery.call_id == call_id)
                .order_by(m.PopDelivery.id)
            )
            return [
                PopDeliveryRecord(
                    id=r.id,
                    call_id=r.call_id,
                    agent_id=r.agent_id,
                    channel=r.channel,
                    sent_at=_aware(r.sent_at) or utcnow(),
                    acknowledged_at=_aware(r.acknowledged_at),
                )
                for r in result.scalars()
            ]


@functools.cache
def _dummy_hash() -> str:
    return hash_password("not a password of anyone")


def _alembic_config(connection: Connection) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def _upgrade(connection: Connection, revision: str) -> None:
    from alembic import command

    command.upgrade(_alembic_config(connection), revision)


def _downgrade(connection: Connection, revision: str) -> None:
    from alembic import command

    command.downgrade(_alembic_config(connection), revision)
