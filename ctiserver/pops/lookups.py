"""The CRM lookup of each call, started once and shared by routing, the queue join and the
rings (ring-all: every agent's pop). A lookup that failed is started again when asked for
(the database may be back); lookups of calls that never got further are dropped after a
time to live.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Container
from typing import Any

from ctiserver.core.records import Identification
from ctiserver.pops.ports import CrmLookup

log = logging.getLogger(__name__)


class LookupCache:
    def __init__(self, crm: CrmLookup, *, history: int = 5, ttl: float = 3600.0) -> None:
        self.crm = crm
        self.history = history
        self.ttl = ttl
        self._lookups: dict[str, asyncio.Future[Identification]] = {}  # call id -> lookup
        self._started: dict[str, float] = {}  # call id -> time.monotonic() of its start

    def get(self, call_id: str, number: str) -> asyncio.Future[Identification]:
        """The lookup of this call: under way, done, or started now (none yet, or the last
        one failed). The store's own future when it gives one (SQLite: the reader
        thread's), else a task."""
        lookup = self._lookups.get(call_id)
        if lookup is None or (
            lookup.done() and (lookup.cancelled() or lookup.exception() is not None)
        ):
            try:
                lookup = asyncio.ensure_future(self.crm.identify(number, self.history))
            except Exception as exc:  # noqa: BLE001 - e.g. a store closed: as a failed lookup
                lookup = asyncio.get_running_loop().create_future()
                lookup.set_exception(exc)
            # a failure is reported by whoever waits; a caller who leaves first never asks
            lookup.add_done_callback(retrieve)
            self._lookups[call_id] = lookup
            self._started[call_id] = time.monotonic()
        return lookup

    def drop(self, call_id: str) -> None:
        """The call is over (or will not be queued): its lookup is not needed any more."""
        self._lookups.pop(call_id, None)
        self._started.pop(call_id, None)

    def prune(self, keep: Container[str]) -> None:
        """Drop the lookups older than ``ttl`` of calls not in ``keep`` (a caller gone
        before the queue); a later ring would simply ask again."""
        horizon = time.monotonic() - self.ttl
        for call_id, started in list(self._started.items()):
            if started < horizon and call_id not in keep:
                del self._started[call_id]
                self._lookups.pop(call_id, None)

    def close(self) -> None:
        for lookup in self._lookups.values():
            lookup.cancel()
        self._lookups.clear()


def answer(lookup: asyncio.Future[Identification], call_id: str) -> Identification | None:
    """The done ``lookup``'s answer; None (logged) if it failed."""
    exc = lookup.exception()
    if exc is not None:
        log.warning("call=%s CRM lookup failed: %r", call_id, exc)
        return None
    return lookup.result()


def retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a background future's error as seen: whoever needs it reports it."""
    if not task.cancelled():
        task.exception()
