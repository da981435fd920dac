"""Write-behind for the store's hot writes: many small writes, one transaction.

``BatchWriter`` runs every ``Statement`` submitted while the previous transaction ran in
the next one (on a SQLite file on its own ``sqlite3`` thread); each caller still gets its
own result or error. A failed batch is replayed one write at a time. See ``docs/store.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

from sqlalchemy import Executable, Result
from sqlalchemy.ext.asyncio import AsyncEngine

from ctiserver.store.rawsqlite import Compiled, Worker

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Statement(Generic[T]):
    """One kind of per-call write: a Core statement with bind parameters and how to read
    its (buffered) result; for a SQLite file also ``raw``, the statement compiled for
    ``sqlite3``, and ``read_raw(cursor, raw)``, the same reading of a ``sqlite3`` cursor."""

    core: Executable
    read: Callable[[Result[Any]], T]
    read_raw: Callable[[sqlite3.Cursor, Compiled], T]
    raw: Compiled | None = None

    def for_sqlite(self) -> Statement[T]:
        return replace(self, raw=Compiled.of(self.core))


Write = tuple[Statement[Any], dict[str, Any]]


class BatchWriter:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        connect: Callable[[], sqlite3.Connection] | None = None,
        max_batch: int = 200,
        delay: float = 0.0,
    ) -> None:
        """``connect``: run the batches on a raw ``sqlite3`` connection it opens, in a
        thread of the writer's own (every statement written must then be ``for_sqlite``).
        ``delay``: how long a write waits for others to share its transaction (a commit
        costs far more than a statement; the daemon sets it, tests keep 0)."""
        self.engine = engine
        self.delay = delay
        self.max_batch = max_batch
        self._thread = Worker(connect, name="store-writer") if connect is not None else None
        self._queue: deque[tuple[Write, asyncio.Future[Any]]] = deque()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.writes = 0

    async def write(self, statement: Statement[T], params: dict[str, Any]) -> T:
        """Execute ``statement`` with ``params`` in the next transaction; what it reads
        from the result, or the error."""
        # shielded: a caller that stops waiting (timeout) does not undo a write under way
        return await asyncio.shield(self.submit(statement, params))

    def submit(self, statement: Statement[T], params: dict[str, Any]) -> asyncio.Future[T]:
        """``write`` for synchronous callers: the future of its outcome (a caller that
        stops waiting does not undo the write)."""
        if self._thread is not None and statement.raw is None:
            raise ValueError("a statement for the SQLite writer thread must be for_sqlite()")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        future.add_done_callback(_retrieve)  # a caller gone (timeout) leaves no stray error
        self._queue.append(((statement, params), future))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name="store-writer")
        return future

    async def close(self) -> None:
        """Finish what was submitted, then stop (the writer thread closes its connection)."""
        task = self._task
        if task is not None and not task.done():
            with contextlib.suppress(Exception):
                await task
        if self._thread is not None:
            await self._thread.close()

    async def _run(self) -> None:
        while self._queue:
            if self.delay:
                await asyncio.sleep(self.delay)  # gathering a batch, not synchronisation
            batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
            try:
                results = await self._transaction([w for w, _ in batch])
            except asyncio.CancelledError:
                for _, future in batch:
                    future.cancel()
                raise
            except Exception as exc:  # noqa: BLE001 - replayed one by one below
                if len(batch) == 1:
                    _settle(batch[0][1], exc=exc)
                    continue
                log.debug("store batch of %d failed (%r): one write at a time", len(batch), exc)
                for w, future in batch:
                    try:
                        (result,) = await self._transaction([w])
                    except asyncio.CancelledError:
                        future.cancel()
                        raise
                    except Exception as one:  # noqa: BLE001 - that write's caller decides
                        _settle(future, exc=one)
                    else:
                        _settle(future, result=result)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                _settle(future, result=result)

    def _transaction(self, writes: list[Write]) -> Awaitable[list[Any]]:
        if self._thread is not None:
            return self._thread.run(self._raw_transaction, writes)
        return self._async_transaction(writes)

    def _raw_transaction(self, conn: sqlite3.Connection, writes: list[Write]) -> list[Any]:
        """On the writer thread: one transaction, taking the write lock at once."""
        cursor = conn.cursor()
        try:
            cursor.execute("BEGIN IMMEDIATE")
            results = []
            for statement, params in writes:
                raw = statement.raw
                assert raw is not None
                cursor.execute(raw.sql, raw.params(params))
                results.append(statement.read_raw(cursor, raw))  # reads every row it returns
            cursor.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):  # the error that matters is raised
                    conn.execute("ROLLBACK")
            raise
        finally:
            cursor.close()
        self.batches += 1
        self.writes += len(writes)
        return results

    async def _async_transaction(self, writes: list[Write]) -> list[Any]:
        async with self.engine.begin() as conn:
            results = [
                statement.read(await conn.execute(statement.core, params))
                for statement, params in writes
            ]
        self.batches += 1
        self.writes += len(writes)
        return results


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _settle(
    future: asyncio.Future[Any], *, result: Any = None, exc: Exception | None = None
) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
