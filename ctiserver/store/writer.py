"""Write-behind for the store's hot writes: many small writes, one transaction.

Interactions, agent states and pop delivery records are written at call rate. Each one
in its own session costs a connection checkout, an ORM flush and a commit (an fsync on
SQLite). ``BatchWriter`` runs them from one task instead: whatever was submitted while
the previous transaction ran goes into the next one. Callers still await their own
write and get its result or its error, so nothing changes for them but the cost.

A write is a Core statement and a function that reads its (buffered) result, so the same
write runs on the async engine or, for SQLite, on a plain ``sqlite3`` connection in the
writer's own thread: one thread hop per batch instead of several per statement.

A batch that fails is replayed one write per transaction, so one bad write (a constraint)
fails alone; when the database is down each write fails on its own, and its caller keeps
it for retry as before (``PopService`` spools interactions).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Engine, Executable, Result
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)

T = TypeVar("T")
Write = tuple[Executable, dict[str, Any] | None, Callable[[Result[Any]], Any]]


class BatchWriter:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        sync_engine: Engine | None = None,
        max_batch: int = 200,
        delay: float = 0.0,
    ) -> None:
        """``sync_engine``: run the batches on it, in a thread of the writer's own.
        ``delay``: how long a write waits for others to share its transaction (a commit
        costs far more than a statement; the daemon sets it, tests keep 0)."""
        self.engine = engine
        self.delay = delay
        self.sync_engine = sync_engine
        self.max_batch = max_batch
        self._thread = (
            ThreadPoolExecutor(1, thread_name_prefix="store-writer") if sync_engine else None
        )
        self._queue: deque[tuple[Write, asyncio.Future[Any]]] = deque()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.writes = 0

    async def write(
        self,
        stmt: Executable,
        params: dict[str, Any] | None,
        read: Callable[[Result[Any]], T],
    ) -> T:
        """Execute ``stmt`` with ``params`` in the next transaction; ``read(result)`` or the
        error. A statement built once with bind parameters is compiled once."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        future.add_done_callback(_retrieve)  # a caller gone (timeout) leaves no stray error
        self._queue.append(((stmt, params, read), future))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name="store-writer")
        # shielded: a caller that stops waiting (timeout) does not undo a write under way
        return await asyncio.shield(future)

    async def close(self) -> None:
        """Finish what was submitted, then stop."""
        task = self._task
        if task is not None and not task.done():
            with contextlib.suppress(Exception):
                await task
        if self._thread is not None:
            self._thread.shutdown(wait=True)

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
        if self.sync_engine is not None:
            loop = asyncio.get_running_loop()
            return loop.run_in_executor(self._thread, self._sync_transaction, writes)
        return self._async_transaction(writes)

    def _sync_transaction(self, writes: list[Write]) -> list[Any]:
        assert self.sync_engine is not None
        with self.sync_engine.begin() as conn:
            results = [read(conn.execute(stmt, params)) for stmt, params, read in writes]
        self.batches += 1
        self.writes += len(writes)
        return results

    async def _async_transaction(self, writes: list[Write]) -> list[Any]:
        async with self.engine.begin() as conn:
            results = [read(await conn.execute(stmt, params)) for stmt, params, read in writes]
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
