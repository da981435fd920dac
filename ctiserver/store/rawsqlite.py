"""The store's per-call statements on a SQLite file, run by the stdlib ``sqlite3`` module:
``Compiled`` (a Core statement compiled once, with SQLAlchemy's type processors, so what
is stored and read back is the ORM's) and ``Worker`` (threads with a connection each).
Why and what it costs: ``docs/store.md``.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from sqlalchemy import Executable
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine import make_url
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

log = logging.getLogger(__name__)

T = TypeVar("T")

# the dialect of a plain sqlite3 connection, with named parameters (":name"): a parameter
# used twice in a statement (the upserts) is passed once
_DIALECT = SQLiteDialect_pysqlite(paramstyle="named")
# sqlite3's busy timeout (sqlite3_busy_timeout): how long a statement waits for another
# connection's lock before "database is locked"; 5 s, pysqlite's default, as the
# SQLAlchemy engines on the same file have it
BUSY_TIMEOUT = 5.0


def sqlite_pragmas(dbapi_connection: Any, _record: Any = None) -> None:
    """Every connection to the store's SQLite file, SQLAlchemy's (a ``connect`` event
    listener) or a raw one."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    # WAL: the caller lookups (readers) do not wait for the interaction writes; commits
    # stay durable (synchronous FULL, the default)
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def file_target(url: str) -> tuple[list[Any], dict[str, Any]] | None:
    """``sqlite3.connect`` arguments for the SQLite file of ``url``, as SQLAlchemy's pysqlite
    dialect makes them (relative path made absolute, ``?uri=true``, ``?timeout=``), or None
    for a memory database (another connection would see another database)."""
    parsed = make_url(url)
    database = parsed.database or ""
    if not database or database == ":memory:" or "mode=memory" in str(parsed):
        return None
    args, kwargs = _DIALECT.create_connect_args(parsed.set(drivername="sqlite+pysqlite"))
    return list(args), dict(kwargs)


def connect(
    args: Sequence[Any], kwargs: Mapping[str, Any], *, echo: bool = False
) -> sqlite3.Connection:
    """A raw connection to the store's file: autocommit mode (``isolation_level=None``:
    every transaction is an explicit BEGIN ... COMMIT / ROLLBACK), the store's pragmas."""
    options = {"timeout": BUSY_TIMEOUT, **kwargs}
    # the connection is used by the one thread that opened it, and closed by it
    options.update(isolation_level=None, check_same_thread=False)
    conn: sqlite3.Connection = sqlite3.connect(*args, **options)
    try:
        sqlite_pragmas(conn)
    except BaseException:
        conn.close()
        raise
    if echo:  # what SQLAlchemy's echo shows for its own statements
        conn.set_trace_callback(logging.getLogger("sqlalchemy.engine.Engine").info)
    return conn


@dataclass(frozen=True, slots=True)
class Compiled:
    """A Core statement compiled once for ``sqlite3``, with SQLAlchemy's type processors."""

    sql: str
    required: tuple[str, ...]  # the parameters the caller gives
    constants: dict[str, Any]  # literals of the statement (coalesce(:x, '')), processed
    bind: tuple[tuple[str, Callable[[Any], Any]], ...]  # parameters with a processor
    result: tuple[tuple[int, Callable[[Any], Any]], ...]  # result columns with a processor

    @classmethod
    def of(cls, stmt: Executable) -> Compiled:
        if not isinstance(stmt, ClauseElement):
            raise TypeError(f"not a Core statement: {stmt!r}")
        compiled = cast(SQLCompiler, stmt.compile(dialect=_DIALECT))
        if compiled.literal_execute_params or compiled.post_compile_params:
            raise ValueError(f"not compiled once: {compiled.string}")  # IN (...) lists
        required: list[str] = []
        constants: dict[str, Any] = {}
        bind: list[tuple[str, Callable[[Any], Any]]] = []
        for name in compiled.params:  # each parameter of the SQL once, by its rendered name
            param = compiled.binds[name]
            process = param.type.dialect_impl(_DIALECT).bind_processor(_DIALECT)
            if param.required:
                required.append(name)
                if process is not None:
                    bind.append((name, process))
            else:
                value = param.effective_value
                constants[name] = process(value) if process is not None else value
        result = []
        for i, column in enumerate(getattr(stmt, "exported_columns", ())):
            process = column.type.dialect_impl(_DIALECT).result_processor(_DIALECT, None)
            if process is not None:
                result.append((i, process))
        return cls(compiled.string, tuple(required), constants, tuple(bind), tuple(result))

    def params(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The ``sqlite3`` parameters for ``values`` (KeyError for a missing one)."""
        params = dict(self.constants)
        for name in self.required:
            params[name] = values[name]
        for name, process in self.bind:
            params[name] = process(params[name])
        return params

    def row(self, row: Sequence[Any]) -> Sequence[Any]:
        """A result row as SQLAlchemy would give it (datetimes parsed, naive)."""
        if not self.result:
            return row
        values = list(row)
        for i, process in self.result:
            values[i] = process(values[i])
        return values


_Job = tuple[asyncio.AbstractEventLoop, asyncio.Future[Any], Callable[..., Any], tuple[Any, ...]]


def _stop(conn: sqlite3.Connection | None) -> None:
    """The last job of a worker thread (its connection is closed on the way out)."""


class Worker:
    """``threads`` threads, one ``sqlite3`` connection each, running ``fn(conn, *args)``."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        *,
        threads: int = 1,
        name: str = "store-sqlite",
    ) -> None:
        self._connect = connect
        self._count = threads
        self._name = name
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._closed = False

    def run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """``fn(connection, *args)`` in one of the threads; its result or error, awaited.
        A caller that stops waiting does not stop it."""
        if self._closed:
            raise RuntimeError(f"{self._name}: closed")
        if not self._threads:
            self._start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((loop, future, fn, args))
        return future

    async def close(self) -> None:
        """Let the threads finish the jobs submitted, close their connections and end."""
        if self._closed:
            return
        self._closed = True
        if not self._threads:
            return
        loop = asyncio.get_running_loop()
        stops = []
        for _ in [t for t in self._threads if t.is_alive()]:  # one stop each takes
            stops.append(loop.create_future())
            self._jobs.put((loop, stops[-1], _stop, ()))
        await asyncio.gather(*stops, return_exceptions=True)
        for thread in self._threads:
            thread.join()  # past its last job: returns at once
        self._threads = []

    def _start(self) -> None:
        for i in range(self._count):
            # daemon: a store never closed must not keep the process alive at exit
            # (SQLite recovers an interrupted transaction on the next open)
            thread = threading.Thread(target=self._serve, name=f"{self._name}-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while True:
                loop, future, fn, args = self._jobs.get()
                if fn is _stop:
                    if conn is not None:
                        _close_quietly(conn)
                        conn = None
                    _answer(loop, future, None, None)
                    return
                try:
                    if conn is None:
                        conn = self._connect()
                    result = fn(conn, *args)
                except BaseException as exc:  # noqa: BLE001 - the caller's error
                    if conn is not None and conn.in_transaction:
                        # the job left a transaction open (its ROLLBACK failed): start over
                        log.warning("%s: connection reset after %r", self._name, exc)
                        _close_quietly(conn)
                        conn = None
                    _answer(loop, future, None, exc)
                else:
                    _answer(loop, future, result, None)
        finally:
            if conn is not None:
                _close_quietly(conn)


def _close_quietly(conn: sqlite3.Connection) -> None:
    try:
        conn.close()
    except sqlite3.Error as exc:
        log.warning("sqlite connection not closed cleanly: %r", exc)


def _answer(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    result: Any,
    exc: BaseException | None,
) -> None:
    try:
        loop.call_soon_threadsafe(_settle, future, result, exc)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        pass


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():  # the caller stopped waiting
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
