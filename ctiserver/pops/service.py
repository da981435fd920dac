"""Screen-pops: who is calling, shown to the agent while the phone rings.

The daemon calls ``PopService`` at three moments of a queued call:

- ``offered(call, agent_id)`` when the agent's phone starts ringing (AMI DialBegin):
  the caller is identified in the CRM store and the pop is published at once;
- ``answered(call_id, agent_id)`` when the agent picks up;
- ``ended(call_id, agent_id)`` when the call is over: the interaction is recorded.

Rules this module keeps:

- The pop never waits for the CRM longer than ``lookup_timeout``: past it the pop goes out
  with ``partial: true`` and what is known (number, queue, digits); if the lookup completes
  later the full pop is sent again (``pop.offered`` with ``partial: false``).
- One CRM lookup per call: routing (``lookup``, from the FastAGI route), the queue join
  (``prefetch``) and the ring (``offered``) share it, keyed by call id. A lookup that
  failed is started again at the join and at the ring (the database may be back).
- Interaction records are never lost: a record the database refuses stays in memory and in
  a spool file (JSON lines, fsync'd) and is retried by ``flush()`` (the daemon runs
  ``run_retry``). Records the database takes at once never touch the spool.
- Agent states that must survive a restart are saved when they change (an agent back to
  ``ready`` after each call is not a change); a state the database refused is saved again
  by ``flush()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from ctiserver.core.numbers import normalize
from ctiserver.notify import AGENT_STATE, CALL_ENDED, POP_ANSWERED, POP_OFFERED, Notifier
from ctiserver.store.records import Identification, InteractionRecord
from ctiserver.store.store import from_epoch

log = logging.getLogger(__name__)

PERSISTED_STATES = ("ready", "not_ready", "logged_out")
# the same few numbers are normalised at each step of a call (phonenumbers is not cheap)


@dataclass
class CallInfo:
    call_id: str  # stable: the caller channel's Linkedid
    caller_id: str  # E.164 when it could be normalised
    caller_name: str = ""
    dnis: str = ""
    queue: str = ""
    digits: str = ""
    answers: dict[str, Any] = field(default_factory=dict)
    joined_at: float = 0.0
    offered_at: float | None = None


class PopStore(Protocol):
    """What the pop service needs from the CRM store (``ctiserver.store.Store``)."""

    def identify(self, number: str, history: int = 5) -> Awaitable[Identification]: ...

    async def save_interaction(self, record: InteractionRecord) -> Any: ...

    async def save_agent_state(
        self, agent_id: str, state: str, reason: str | None = None
    ) -> None: ...


@dataclass
class _Active:
    info: CallInfo
    agent_id: str | None = None
    customer_id: int | None = None
    answered_at: float | None = None
    ended_at: float | None = None
    pop: dict[str, Any] = field(default_factory=dict)


class PopService:
    def __init__(
        self,
        store: PopStore,
        notifier: Notifier,
        *,
        crm_url_template: str | None = None,
        lookup_timeout: float = 0.2,
        late_lookup_timeout: float = 10.0,
        save_timeout: float = 5.0,
        history: int = 5,
        lookup_ttl: float = 3600.0,
        spool_path: str | os.PathLike[str] | None = None,
        region: str = "ES",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.notifier = notifier
        self.crm_url_template = crm_url_template
        self.lookup_timeout = lookup_timeout
        self.late_lookup_timeout = late_lookup_timeout
        self.save_timeout = save_timeout
        self.history = history
        self.region = region
        self.clock = clock
        self.spool_path = Path(spool_path) if spool_path else None
        self._calls: dict[str, _Active] = {}
        self._current: dict[str, _Active] = {}  # agent -> the call on their screen
        self._pending: dict[str, InteractionRecord] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._lookups: dict[str, asyncio.Future[Identification]] = {}  # call id -> CRM lookup
        self._lookup_started: dict[str, float] = {}
        self.lookup_ttl = lookup_ttl
        self._spooled: set[str] = set()  # the call ids the spool file holds
        self._overdue: set[str] = set()  # saves reported late (ended_nowait), still running
        # saves handed to the store and not answered yet (per call: an update can follow)
        self._in_flight: dict[str, int] = {}
        # agent states: the last one asked for, the last one the database took, the writer
        self._state_wanted: dict[str, tuple[str, str | None]] = {}
        self._state_saved: dict[str, tuple[str, str | None]] = {}
        self._state_writers: dict[str, asyncio.Task[None]] = {}
        self._load_spool()

    # ------------------------------------------------------------ the call

    def lookup(self, call_id: str, number: str) -> Awaitable[Identification]:
        """The CRM lookup of this call, started now or already under way. Routing asks
        first; the pop uses the same answer. Shielded: a caller that stops waiting (its
        own timeout) leaves the lookup running for the pop; a lookup already done (the
        usual case on SQLite) is returned as it is."""
        return asyncio.shield(self._lookup(call_id, number))

    def forget(self, call_id: str) -> None:
        """The call will not be queued (routed elsewhere, caller gone): drop its lookup."""
        if call_id not in self._calls:
            self._lookups.pop(call_id, None)
            self._lookup_started.pop(call_id, None)

    def prefetch(self, call: CallInfo) -> None:
        """The caller joined a queue: make sure the CRM lookup is under way (routing has
        usually started it), so that when an agent's phone rings the pop needs no
        database round trip (a ring is not the moment to queue behind other work)."""
        if call.caller_id:
            self._lookup(call.call_id, call.caller_id)

    def _lookup(self, call_id: str, number: str) -> asyncio.Future[Identification]:
        lookup = self._lookups.get(call_id)
        if lookup is None or (
            lookup.done() and (lookup.cancelled() or lookup.exception() is not None)
        ):
            # none started, or it failed earlier: the database may be back, ask again. The
            # store's own future when it gives one (SQLite: the reader thread's), else a task
            try:
                lookup = asyncio.ensure_future(self.store.identify(number, self.history))
            except Exception as exc:  # noqa: BLE001 - e.g. a store closed: as a failed lookup
                lookup = asyncio.get_running_loop().create_future()
                lookup.set_exception(exc)
            # a failure is reported by whoever waits; a caller who leaves first never asks
            lookup.add_done_callback(_retrieve)
            self._lookups[call_id] = lookup
            self._lookup_started[call_id] = time.monotonic()
        return lookup

    async def offered(self, call: CallInfo, agent_id: str) -> None:
        active, lookup = self._offer(call, agent_id)
        await self._offer_when_known(active, agent_id, lookup)

    def offered_nowait(self, call: CallInfo, agent_id: str) -> None:
        """``offered`` for synchronous callers (the call adapter, at the ring): the pop goes
        out at once when the CRM lookup is done (the usual case: routing asked when the
        call came in) and the notifier takes notes without waiting; else as a task."""
        active, lookup = self._offer(call, agent_id)
        publish_nowait = getattr(self.notifier, "publish_nowait", None)
        if publish_nowait is None or not lookup.done():
            self._spawn(self._offer_when_known(active, agent_id, lookup))
            return
        self._show(active, agent_id, lookup)
        publish_nowait(POP_OFFERED, active.pop, agent_id=agent_id)

    def _offer(self, call: CallInfo,
               agent_id: str) -> tuple[_Active, asyncio.Future[Identification]]:
        if call.offered_at is None:
            call = replace(call, offered_at=self.clock())
        active = self._calls.get(call.call_id)
        if active is None:
            active = self._calls[call.call_id] = _Active(info=call)
        else:
            active.info = call
        active.agent_id = agent_id
        return active, self._lookup(call.call_id, call.caller_id)

    async def _offer_when_known(self, active: _Active, agent_id: str,
                                lookup: asyncio.Future[Identification]) -> None:
        if not lookup.done():  # usually done: routing asked the CRM when the call came in
            await asyncio.wait({lookup}, timeout=self.lookup_timeout)
        self._show(active, agent_id, lookup)
        await self.notifier.publish(POP_OFFERED, active.pop, agent_id=agent_id)

    def _show(self, active: _Active, agent_id: str,
              lookup: asyncio.Future[Identification]) -> None:
        """The pop on this agent's screen: full when the CRM has answered, else partial
        (and the full one follows when it does)."""
        ident: Identification | None = None
        if lookup.done():
            ident = self._result(lookup, active.info)
        else:
            self._spawn(self._late_pop(lookup, active, agent_id))
        active.pop = self._pop(active, ident)
        if ident is not None and ident.customers:
            active.customer_id = ident.customers[0].id
        self._current[agent_id] = active
        log.log(
            logging.INFO if active.pop["partial"] else logging.DEBUG,
            "pop call=%s agent=%s known=%s partial=%s",
            active.info.call_id,
            agent_id,
            active.pop["known"],
            active.pop["partial"],
        )

    async def answered(self, call_id: str, agent_id: str) -> None:
        note = self._answer(call_id, agent_id)
        if note is not None:
            await self.notifier.publish(POP_ANSWERED, note, agent_id=agent_id)

    def answered_nowait(self, call_id: str, agent_id: str) -> None:
        """``answered`` for synchronous callers (the call adapter)."""
        publish_nowait = getattr(self.notifier, "publish_nowait", None)
        if publish_nowait is None:
            self._spawn(self.answered(call_id, agent_id))
            return
        note = self._answer(call_id, agent_id)
        if note is not None:
            publish_nowait(POP_ANSWERED, note, agent_id=agent_id)

    def _answer(self, call_id: str, agent_id: str) -> dict[str, Any] | None:
        active = self._calls.get(call_id)
        if active is None:
            log.warning("answered call=%s agent=%s: no pop for this call", call_id, agent_id)
            return None
        active.answered_at = self.clock()
        active.agent_id = agent_id
        active.pop["stage"] = "answered"
        active.pop["answered_at"] = active.answered_at
        self._current[agent_id] = active
        # the other agents rung for the same call (ring-all) no longer show it
        for other, shown in list(self._current.items()):
            if shown is active and other != agent_id:
                del self._current[other]
        waited = active.answered_at - active.info.joined_at if active.info.joined_at else None
        return {"call_id": call_id, "answered_at": active.answered_at, "waited": _round(waited)}

    async def ended(
        self,
        call_id: str,
        agent_id: str | None = None,
        *,
        call: CallInfo | None = None,
        at: float | None = None,
        outcome: str | None = None,
    ) -> None:
        """The call is over. ``call`` describes calls that were never offered (abandoned in
        the queue); ``outcome`` defaults to answered / abandoned."""
        record, note = self._end(call_id, agent_id, call, at, outcome)
        if note is not None:
            await self.notifier.publish(CALL_ENDED, note, agent_id=record.agent_id)
        await self._save(record)

    def ended_nowait(
        self,
        call_id: str,
        agent_id: str | None = None,
        *,
        call: CallInfo | None = None,
        at: float | None = None,
        outcome: str | None = None,
    ) -> None:
        """``ended`` for synchronous callers (the call adapter, at the caller's hang-up):
        the note goes out at once and the record to the store's writer, whose answer is
        taken by a callback (no task per call) when the notifier and the store allow."""
        publish_nowait = getattr(self.notifier, "publish_nowait", None)
        save_nowait = getattr(self.store, "save_interaction_nowait", None)
        if publish_nowait is None or save_nowait is None:
            self._spawn(self.ended(call_id, agent_id, call=call, at=at, outcome=outcome))
            return
        record, note = self._end(call_id, agent_id, call, at, outcome)
        if note is not None:
            publish_nowait(CALL_ENDED, note, agent_id=record.agent_id)
        self._save_nowait(record, save_nowait)

    def _end(
        self,
        call_id: str,
        agent_id: str | None,
        call: CallInfo | None,
        at: float | None,
        outcome: str | None,
    ) -> tuple[InteractionRecord, dict[str, Any] | None]:
        """The record of the ended call, and the ``call.ended`` note for the agent who
        talked (None if nobody did)."""
        ended_at = at if at is not None else self.clock()
        self._lookups.pop(call_id, None)
        self._lookup_started.pop(call_id, None)
        active = self._calls.pop(call_id, None)
        if active is None:
            if call is None:
                log.warning("ended call=%s agent=%s: unknown call", call_id, agent_id)
                call = CallInfo(call_id=call_id, caller_id="")
            active = _Active(info=call, agent_id=agent_id)
        agent_id = agent_id or active.agent_id
        info = active.info
        answered_at = active.answered_at
        active.ended_at = ended_at
        wait = (answered_at or ended_at) - info.joined_at if info.joined_at else None
        talk = ended_at - answered_at if answered_at is not None else None
        record = InteractionRecord(
            call_id=call_id,
            customer_id=active.customer_id,
            caller_id=info.caller_id,
            dnis=info.dnis,
            queue=info.queue,
            agent_id=agent_id if answered_at is not None else None,
            digits=info.digits,
            joined_at=from_epoch(info.joined_at) if info.joined_at else None,
            answered_at=from_epoch(answered_at),
            ended_at=from_epoch(ended_at),
            wait_seconds=_round(wait),
            talk_seconds=_round(talk),
            outcome=outcome or ("answered" if answered_at is not None else "abandoned"),
        )
        # agents who were only rung lose the pop; the one who talked keeps it for wrap-up
        for other, shown in list(self._current.items()):
            if shown is active and (answered_at is None or other != agent_id):
                del self._current[other]
        if answered_at is None or not agent_id:
            return record, None
        active.pop["stage"] = "ended"
        active.pop["ended_at"] = ended_at
        active.pop["talk"] = _round(talk)
        return record, {
            "call_id": call_id,
            "ended_at": ended_at,
            "talk": _round(talk),
            "waited": _round(wait),
        }

    # ------------------------------------------------------- from the page

    async def dispose(self, call_id: str, agent_id: str, disposition: str, notes: str) -> bool:
        """Record the agent's disposition and notes. True when already in the database."""
        shown = self._current.get(agent_id)
        if shown is not None and shown.info.call_id == call_id and shown.ended_at is not None:
            del self._current[agent_id]
        elif shown is not None and shown.info.call_id == call_id:
            shown.pop["disposition"] = disposition
        return await self._save(
            InteractionRecord(call_id=call_id, disposition=disposition, notes=notes)
        )

    async def link_customer(self, call_id: str, customer: Mapping[str, Any]) -> None:
        """The agent created the caller's record during the call: the pop and the
        interaction now point to it."""
        active = self._calls.get(call_id) or next(
            (a for a in self._current.values() if a.info.call_id == call_id), None
        )
        if active is not None:
            active.customer_id = int(customer["id"])
            active.pop.update(known=True, customer=dict(customer), partial=False)
        await self._save(InteractionRecord(call_id=call_id, customer_id=int(customer["id"])))

    def current(self, agent_id: str) -> dict[str, Any] | None:
        """The pop on this agent's screen (for a page reload), or None."""
        active = self._current.get(agent_id)
        return dict(active.pop) if active is not None else None

    def shown_to(self, agent_id: str, call_id: str) -> bool:
        active = self._current.get(agent_id)
        return active is not None and active.info.call_id == call_id

    def agent_state_changed(
        self, agent_id: str, state: str, reason: str | None = None, call_id: str | None = None
    ) -> None:
        """``agent_state`` for synchronous callers (the call adapter, for every engine
        effect): the transient states (offered, on call, wrap-up), and a persisted state
        the database already has (ready again after each call), are only published, at
        once when the notifier can take them without waiting; the rest runs as a task."""
        publish_nowait = getattr(self.notifier, "publish_nowait", None)
        if publish_nowait is None or state in PERSISTED_STATES and (
                self._state_saved.get(agent_id) != (state, reason)
                or state == "logged_out"):
            self._spawn(self.agent_state(agent_id, state, reason, call_id))
            return
        if state in PERSISTED_STATES:  # the database has it (ready again after a call)
            self._state_wanted[agent_id] = (state, reason)  # a writer under way rechecks
        publish_nowait(AGENT_STATE, _state_note(agent_id, state, reason, call_id),
                       agent_id=agent_id)

    async def agent_state(
        self,
        agent_id: str,
        state: str,
        reason: str | None = None,
        call_id: str | None = None,
    ) -> None:
        """Tell the agent's page (and dashboards) about a state change; remember the
        states that must survive a restart. The daemon calls it for AgentStateChanged."""
        if state == "logged_out":
            self._current.pop(agent_id, None)
        await self.notifier.publish(
            AGENT_STATE, _state_note(agent_id, state, reason, call_id), agent_id=agent_id
        )
        if state in PERSISTED_STATES:
            self._state_wanted[agent_id] = (state, reason)
            writer = self._state_writer(agent_id)
            if writer is None:
                return  # the database has it already
            try:
                await asyncio.wait_for(asyncio.shield(writer), self.save_timeout)
            except Exception as exc:  # noqa: BLE001 - saved again by flush()
                log.warning("agent=%s state %s not persisted yet: %r", agent_id, state, exc)

    def _state_writer(self, agent_id: str) -> asyncio.Task[None] | None:
        """The task saving this agent's wanted state (one per agent: states that change
        while it writes are coalesced into its next write); None if nothing to save."""
        writer = self._state_writers.get(agent_id)
        if writer is None or writer.done():
            if self._state_saved.get(agent_id) == self._state_wanted.get(agent_id):
                return None
            writer = asyncio.get_running_loop().create_task(
                self._save_states(agent_id), name=f"agent-state-{agent_id}"
            )
            writer.add_done_callback(_retrieve)
            self._state_writers[agent_id] = writer
        return writer

    async def _save_states(self, agent_id: str) -> None:
        while (wanted := self._state_wanted[agent_id]) != self._state_saved.get(agent_id):
            await asyncio.wait_for(
                self.store.save_agent_state(agent_id, *wanted), self.save_timeout
            )
            self._state_saved[agent_id] = wanted

    # ---------------------------------------------------- interaction log

    @property
    def pending(self) -> dict[str, InteractionRecord]:
        return dict(self._pending)

    async def flush(self) -> int:
        """Try to store every pending interaction (and agent state not saved yet); returns
        how many interactions are still pending. A save the store has not answered yet is
        left to its answer (the retry is for refused and late ones)."""
        writers = [w for w in map(self._state_writer, list(self._state_wanted)) if w]
        await asyncio.gather(
            *(self._store_one(call_id) for call_id in self._at_risk()),
            *(asyncio.shield(w) for w in writers),
            return_exceptions=True,
        )
        if self._pending or self._spooled:
            self._write_spool()
        return len(self._pending)

    async def run_retry(self, interval: float = 5.0) -> None:
        while True:
            await asyncio.sleep(interval)  # a timer, not synchronisation
            self._prune_lookups()
            spooled = bool(self._at_risk())
            if spooled or self._state_wanted.items() - self._state_saved.items():
                left = await self.flush()
                if spooled and not left:
                    log.info("interaction spool flushed")

    def _prune_lookups(self) -> None:
        """Lookups of calls that never reached a ring nor an end (a caller gone before the
        queue) are dropped after ``lookup_ttl``; a later ring would simply ask again."""
        horizon = time.monotonic() - self.lookup_ttl
        for call_id, started in list(self._lookup_started.items()):
            if started < horizon and call_id not in self._calls:
                del self._lookup_started[call_id]
                self._lookups.pop(call_id, None)

    async def close(self) -> None:
        for task in self._lookups.values():
            task.cancel()
        self._lookups.clear()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for writer in list(self._state_writers.values()):  # the last states, if they can be
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(writer, self.save_timeout)
        if self._pending or self._spooled:
            self._write_spool(everything=True)  # unanswered saves too: the store is closing

    def _at_risk(self) -> list[str]:
        """The pending interactions the store refused, or has not answered in time: the
        ones a retry stores and the spool keeps. A save under way is not one of them (under
        steady traffic there is always one: spooling those would fsync after every call)."""
        return [call_id for call_id in self._pending
                if call_id not in self._in_flight or call_id in self._overdue]

    def _pend(self, record: InteractionRecord) -> InteractionRecord:
        """Add ``record`` to the pending one of its call (merged), which is returned."""
        previous = self._pending.get(record.call_id)
        pending = self._pending[record.call_id] = previous.merged(record) if previous else record
        return pending

    async def _save(self, record: InteractionRecord) -> bool:
        self._pend(record)
        ok = await self._store_one(record.call_id)
        # the spool (an fsync) only when the database refused, or when the spool holds an
        # older version of this record, which must not come back after a restart
        if not ok or record.call_id in self._spooled:
            self._write_spool()
        return ok

    def _save_nowait(
        self,
        record: InteractionRecord,
        save: Callable[[InteractionRecord], asyncio.Future[Any]],
    ) -> None:
        """``_save`` with callbacks: the pending record is handed to the store; an error or
        no answer within ``save_timeout`` keeps it for retry and spools it, as ``_save``."""
        call_id = record.call_id
        pending = self._pend(record)
        try:
            future = save(pending)
        except Exception as exc:  # noqa: BLE001 - e.g. a store closed: kept for retry
            self._not_saved(call_id, exc)
            return
        self._in_flight[call_id] = self._in_flight.get(call_id, 0) + 1
        timer = asyncio.get_running_loop().call_later(
            self.save_timeout, self._save_overdue, call_id, future)
        future.add_done_callback(lambda f: self._saved(call_id, pending, f, timer))

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

    def _write_spool(self, everything: bool = False) -> None:
        """The spool holds the interactions at risk (``_at_risk``), or all pending ones
        when ``everything`` (at close); none: no file."""
        if self.spool_path is None:
            return
        keep = list(self._pending) if everything else self._at_risk()
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

    # ------------------------------------------------------------- the pop

    def _result(
        self, lookup: asyncio.Future[Identification], call: CallInfo
    ) -> Identification | None:
        exc = lookup.exception()
        if exc is not None:
            log.warning("call=%s CRM lookup failed: %r", call.call_id, exc)
            return None
        return lookup.result()

    async def _late_pop(
        self, lookup: asyncio.Future[Identification], active: _Active, agent_id: str
    ) -> None:
        """The CRM answered after the pop went out partial: send the full pop, if the
        call is still on that agent's screen."""
        try:
            # shielded: another agent's pop (ring-all) may be waiting on the same lookup
            ident = await asyncio.wait_for(asyncio.shield(lookup), self.late_lookup_timeout)
        except Exception as exc:  # noqa: BLE001
            log.warning("call=%s late CRM lookup failed: %r", active.info.call_id, exc)
            return
        if self._current.get(agent_id) is not active:
            return
        stage = active.pop.get("stage", "offered")
        active.pop = {**self._pop(active, ident), "stage": stage}
        if ident.customers:
            active.customer_id = ident.customers[0].id
            if active.ended_at is not None:
                await self._save(
                    InteractionRecord(call_id=active.info.call_id, customer_id=active.customer_id)
                )
        await self.notifier.publish(POP_OFFERED, active.pop, agent_id=agent_id)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("pop task failed: %r", task.exception())

    def _pop(self, active: _Active, ident: Identification | None) -> dict[str, Any]:
        info = active.info
        e164 = normalize(info.caller_id, self.region)
        customers = ident.customers if ident is not None else ()
        waited = (info.offered_at or 0) - info.joined_at if info.joined_at else None
        return {
            "call_id": info.call_id,
            "stage": "offered",
            "caller_id": e164 or info.caller_id,
            "caller_name": info.caller_name,
            "dnis": info.dnis,
            "queue": info.queue,
            "digits": info.digits,
            "answers": dict(info.answers),
            "joined_at": info.joined_at,
            "offered_at": info.offered_at,
            "waited": _round(waited),
            "partial": ident is None,
            "known": bool(customers),
            "customer": customers[0].to_dict() if customers else None,
            "other_matches": [{"id": c.id, "name": c.name} for c in customers[1:]],
            "history": [_history_item(h) for h in ident.history] if ident is not None else [],
            "crm_url": self._crm_url(e164 or info.caller_id),
        }

    def _crm_url(self, e164: str) -> str | None:
        if not self.crm_url_template or not e164:
            return None
        return self.crm_url_template.format(e164=quote(e164, safe=""), number=quote(e164, safe=""))


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a background task's error as seen: whoever needs it reports it."""
    if not task.cancelled():
        task.exception()


def _history_item(rec: InteractionRecord) -> dict[str, Any]:
    return {
        "call_id": rec.call_id,
        "at": rec.joined_at.isoformat() if rec.joined_at else None,
        "queue": rec.queue,
        "agent_id": rec.agent_id,
        "wait": rec.wait_seconds,
        "talk": rec.talk_seconds,
        "outcome": rec.outcome,
        "disposition": rec.disposition,
        "notes": rec.notes,
    }


def _state_note(
    agent_id: str, state: str, reason: str | None, call_id: str | None
) -> dict[str, Any]:
    """What an ``agent.state`` notification carries."""
    return {"agent_id": agent_id, "state": state, "reason": reason, "call_id": call_id}


def _round(value: float | None) -> float | None:
    return round(value, 1) if value is not None else None
