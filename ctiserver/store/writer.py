"""Write-behind for the store's hot writes: many small writes, one transaction.

Interactions, agent states and pop delivery records are written at call rate. Each one
in its own session costs a connection checkout, an ORM flush and a commit (an fsync on
SQLite). ``BatchWriter`` runs them from one task instead: whatever was submitted while
the previous transaction ran goes into the next one. Callers still await their own
write and get its result or its error, so nothing changes for them but the cost.

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
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger(__name__)

T = TypeVar("T")
Write = Callable[[AsyncConnection], Awaitable[Any]]


class BatchWriter:
    def __init__(self, engine: AsyncEngine, *, max_batch: int = 200) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self._queue: deque[tuple[Write, asyncio.Future[Any]]] = deque()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.writes = 0

    async def write(self, op: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run ``op(connection)`` in the next transaction; its result or its error."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        future.add_done_callback(_retrieve)  # a caller gone (timeout) leaves no stray error
        self._queue.append((op, future))
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

    async def _run(self) -> None:
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
            try:
                results = await self._transaction([op for op, _ in batch])
            except asyncio.CancelledError:
                for _, future in batch:
                    future.cancel()
                raise
            except Exception as exc:  # noqa: BLE001 - replayed one by one below
                if len(batch) == 1:
                    _settle(batch[0][1], exc=exc)
                    continue
                log.debug("store batch of %d failed (%r): one write at a time", len(batch), exc)
                for op, future in batch:
                    try:
                        (result,) = await self._transaction([op])
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

    async def _transaction(self, ops: list[Write]) -> list[Any]:
        async with self.engine.begin() as conn:
            results = [await op(conn) for op in ops]
        self.batches += 1
        self.writes += len(ops)
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
