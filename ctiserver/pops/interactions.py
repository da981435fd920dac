"""The interaction log: every call's record reaches the database, even through an outage.

A record waits in ``pending`` (merged with later updates of its call) until the store takes
it; one the store refuses, or does not answer in time, is also written to a spool file
(JSON lines, fsync'd) and stored again by ``flush()``. At close everything unsaved goes to
the spool, which the next start reads back. See docs/pops.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any

from ctiserver.core.records import InteractionRecord
from ctiserver.pops.ports import InteractionStore

log = logging.getLogger(__name__)


class InteractionLog:
    def __init__(
        self,
        store: InteractionStore,
        *,
        save_timeout: float = 5.0,
        spool_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.store = store
        self.save_timeout = save_timeout
        self.spool_path = Path(spool_path) if spool_path else None
        self._pending: dict[str, InteractionRecord] = {}
        self._spooled: set[str] = set()  # the call ids the spool file holds
        self._overdue: set[str] = set()  # saves reported late (save_nowait), still running
        # saves handed to the store and not answered yet (per call: an update can follow)
        self._in_flight: dict[str, int] = {}
        self._load_spool()

    @property
    def pending(self) -> dict[str, InteractionRecord]:
        """The records not stored yet, by call id (a copy)."""
        return dict(self._pending)

    async def save(self, record: InteractionRecord) -> bool:
        """Store ``record`` (merged into the pending one of its call); True if the store
        took it, else it is kept, spooled, and stored again by ``flush()``."""
        self._pend(record)
        ok = await self._store_one(record.call_id)
        # the spool (an fsync) only when the database refused, or when the spool holds an
        # older version of this record, which must not come back after a restart
        if not ok or record.call_id in self._spooled:
            self._write_spool()
        return ok

    def save_nowait(self, record: InteractionRecord) -> None:
        """``save`` from synchronous code, without a task: the store's future is answered
        by a callback; an error or no answer within ``save_timeout`` keeps the record for
        retry and spools it, as ``save``."""
        call_id = record.call_id
        pending = self._pend(record)
        try:
            future = self.store.save_interaction_nowait(pending)
        except Exception as exc:  # noqa: BLE001 - e.g. a store closed: kept for retry
            self._not_saved(call_id, exc)
            return
        self._in_flight[call_id] = self._in_flight.get(call_id, 0) + 1
        timer = asyncio.get_running_loop().call_later(
            self.save_timeout, self._save_overdue, call_id, future)
        future.add_done_callback(lambda f: self._saved(call_id, pending, f, timer))

    def at_risk(self) -> list[str]:
        """The pending interactions the store refused, or has not answered in time: the
        ones a retry stores and the spool keeps. A save under way is not one of them (under
        steady traffic there is always one: spooling those would fsync after every call)."""
        return [call_id for call_id in self._pending
                if call_id not in self._in_flight or call_id in self._overdue]

    async def flush(self) -> int:
        """Store again the interactions at risk; returns how many are still pending. A save
        the store has not answered yet is left to its answer."""
        await asyncio.gather(*(self._store_one(call_id) for call_id in self.at_risk()),
                             return_exceptions=True)
        if self._pending or self._spooled:
            self._write_spool()
        return len(self._pending)

    def close(self) -> None:
        """The store is closing: every pending record goes to the spool, answered or not."""
        if self._pending or self._spooled:
            self._write_spool(everything=True)

    # ------------------------------------------------------------------ inside

    def _pend(self, record: InteractionRecord) -> InteractionRecord:
        """Add ``record`` to the pending one of its call (merged), which is returned."""
        previous = self._pending.get(record.call_id)
        pending = self._pending[record.call_id] = previous.merged(record) if previous else record
        return pending

    async def _store_one(self, call_id: str) -> bool:
        record = self._pending.get(call_id)
        if record is None:
            return True
        self._in_flight[call_id] = self._in_flight.get(call_id, 0) + 1
        try:
            async with asyncio.timeout(self.save_timeout):  # a timer, not a task
                await self.store.save_interaction(record)
        except Exception as exc:  # noqa: BLE001 - keep it, retry later
            log.warning("call=%s interaction kept for retry: %r", call_id, exc)
            return False
        finally:
            self._landed(call_id)
        if self._pending.get(call_id) is record:
            del self._pending[call_id]
        return True

    def _saved(self, call_id: str, record: InteractionRecord, future: asyncio.Future[Any],
               timer: asyncio.TimerHandle) -> None:
        timer.cancel()
        self._landed(call_id)
        overdue = call_id in self._overdue  # reported already
        self._overdue.discard(call_id)
        if future.cancelled() or future.exception() is not None:
            if not overdue:
                self._not_saved(call_id, None if future.cancelled() else future.exception())
            return
        if self._pending.get(call_id) is record:
            del self._pending[call_id]
        if call_id in self._spooled:  # an older version there must not come back
            self._write_spool()

    def _landed(self, call_id: str) -> None:
        left = self._in_flight.get(call_id, 0) - 1
        if left > 0:
            self._in_flight[call_id] = left
        else:
            self._in_flight.pop(call_id, None)

    def _save_overdue(self, call_id: str, future: asyncio.Future[Any]) -> None:
        if not future.done():
            self._overdue.add(call_id)
            self._not_saved(call_id, TimeoutError())

    def _not_saved(self, call_id: str, exc: BaseException | None) -> None:
        log.warning("call=%s interaction kept for retry: %r", call_id, exc)
        self._write_spool()

    def _write_spool(self, everything: bool = False) -> None:
        """The spool holds the interactions at risk, or all pending ones when
        ``everything`` (at close); none: no file."""
        if self.spool_path is None:
            return
        keep = list(self._pending) if everything else self.at_risk()
        try:
            if not keep:
                self.spool_path.unlink(missing_ok=True)
                self._spooled = set()
                return
            tmp = self.spool_path.with_suffix(".tmp")
            with tmp.open("w", encoding="utf-8") as fh:
                for call_id in keep:
                    fh.write(json.dumps(self._pending[call_id].to_dict(),
                                        ensure_ascii=False) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            tmp.replace(self.spool_path)
            self._spooled = set(keep)
        except OSError as exc:
            log.error("interaction spool %s not written: %r", self.spool_path, exc)

    def _load_spool(self) -> None:
        if self.spool_path is None or not self.spool_path.exists():
            return
        for line in self.spool_path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                self._pend(InteractionRecord.from_dict(json.loads(line)))
        self._spooled = set(self._pending)
        log.info("interaction spool: %d records to store", len(self._pending))
