"""Inside the store: the database itself, shared by its repositories.

``Database`` owns the async engine (SQLite through aiosqlite, PostgreSQL through asyncpg),
the session factory, on a SQLite file the raw ``sqlite3`` connection arguments
(``rawsqlite``), the ``BatchWriter`` of the per-call writes, and the Alembic migrations.
See ``docs/store.md``.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Table, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from ctiserver.store.rawsqlite import connect as raw_connect
from ctiserver.store.rawsqlite import file_target, sqlite_pragmas
from ctiserver.store.writer import BatchWriter, Statement

T = TypeVar("T")

MIGRATIONS = Path(__file__).parent / "migrations"
DEFAULT_URL = "sqlite+aiosqlite:///ctiserver.db"

# INSERT ... ON CONFLICT DO UPDATE, for the dialects that have it
Upsert = Callable[[Table], Any]
_UPSERTS: dict[str, Upsert] = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}


class Database:
    def __init__(self, url: str, *, echo: bool = False, write_delay: float = 0.0) -> None:
        """``write_delay``: how long a per-call write may wait to share a transaction."""
        self.url = url
        self.echo = echo
        kwargs: dict[str, Any] = {"echo": echo}
        if url.startswith("postgresql"):
            # fail fast when the server is down: the pop path bounds its wait anyway
            kwargs["connect_args"] = {"timeout": 3, "command_timeout": 10}
            kwargs["pool_pre_ping"] = True
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        # a SQLite file: sqlite3.connect's arguments, and a raw connection opener (the
        # per-call statements run on raw sqlite3 connections: rawsqlite)
        self.file: tuple[list[Any], dict[str, Any]] | None = None
        self.connect: Callable[[], sqlite3.Connection] | None = None
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine.sync_engine, "connect", sqlite_pragmas)
            self.file = file_target(url)
            if self.file is not None:
                self.connect = functools.partial(raw_connect, *self.file, echo=echo)
        self.session: async_sessionmaker[AsyncSession] = async_sessionmaker(
            self.engine, expire_on_commit=False)
        # None: no upsert in this dialect, the repositories write through the ORM instead
        self.upsert: Upsert | None = _UPSERTS.get(self.engine.dialect.name)
        self.writer = BatchWriter(self.engine, connect=self.connect, delay=write_delay)

    def prepared(self, statement: Statement[T]) -> Statement[T]:
        """A per-call write as the writer runs it here (compiled for sqlite3 on a file)."""
        return statement.for_sqlite() if self.connect is not None else statement

    async def dispose(self) -> None:
        await self.engine.dispose()

    async def ping(self) -> None:
        """One round trip to the database; raises when it cannot be reached."""
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

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
