"""The pop service: what the daemon calls at each moment of a queued call, and the screens.

It keeps which call each agent's screen shows and hands the work to its parts: the CRM
lookups (``lookups``), the payloads (``payload``, pure), the interaction log
(``interactions``) and the agents' persisted states (``agent_states``). Rules and moments
are in docs/pops.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ctiserver.calls.model import CallInfo
from ctiserver.core.records import Identification, InteractionRecord
from ctiserver.notify import AGENT_STATE, CALL_ENDED, POP_ANSWERED, POP_OFFERED, Publisher
from ctiserver.pops import payload
from ctiserver.pops.agent_states import PERSISTED_STATES, AgentStateKeeper
from ctiserver.pops.interactions import InteractionLog
from ctiserver.pops.lookups import LookupCache, answer
from ctiserver.pops.ports import PopStore

log = logging.getLogger(__name__)

@dataclass
class _Active:
    """A call offered to an agent, until it ends."""

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
        notifier: Publisher,
        *,
        crm_url_template: str | None = None,
        lookup_timeout: float = 0.2,
        late_lookup_timeout: float = 10.0,
        save_timeout: float = 5.0,
        history: int = 5,
        lookup_ttl: float = 3600.0,
        spool_path: str | os.PathLike[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.notifier = notifier
        self.crm_url_template = crm_url_template
        self.lookup_timeout = lookup_timeout
        self.late_lookup_timeout = late_lookup_timeout
        self.clock = clock
        self.lookups = LookupCache(store, history=history, ttl=lookup_ttl)
        self.interactions = InteractionLog(store, save_timeout=save_timeout,
                                           spool_path=spool_path)
        self.states = AgentStateKeeper(store, save_timeout=save_timeout)
        self._calls: dict[str, _Active] = {}
        self._current: dict[str, _Active] = {}  # agent -> the call on their screen
        self._tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------ the call

    def lookup(self, call_id: str, number: str) -> Awaitable[Identification]:
        """The CRM lookup of this call, started now or already under way. Routing asks
        first; the pop uses the same answer. Shielded: a caller that stops waiting (its
        own timeout) leaves the lookup running for the pop; a lookup already done (the
        usual case on SQLite) is returned as it is."""
        return asyncio.shield(self.lookups.get(call_id, number))

    def forget(self, call_id: str) -> None:
        """The call will not be queued (routed elsewhere, caller gone): drop its lookup."""
        if call_id not in self._calls:
            self.lookups.drop(call_id)

    def prefetch(self, call: CallInfo) -> None:
        """The caller joined a queue: make sure the CRM lookup is under way (routing has
        usually started it), so that when an agent's phone rings the pop needs no
        database round trip."""
        if call.caller_id:
            self.lookups.get(call.call_id, call.caller_id)

    def offered_nowait(self, call: CallInfo, agent_id: str) -> None:
        """The agent's phone rings: the pop goes out at once when the CRM lookup is done
        (the usual case: routing asked when the call came in), else from a task that waits
        for it up to ``lookup_timeout``."""
        active, lookup = self._offer(call, agent_id)
        if lookup.done():
            self._pop_out(active, agent_id, lookup)
        else:
            self._spawn(self._pop_when_known(active, agent_id, lookup))

    async def offered(self, call: CallInfo, agent_id: str) -> None:
        """``offered_nowait``, returning once the pop is out."""
        active, lookup = self._offer(call, agent_id)
        await self._pop_when_known(active, agent_id, lookup)

    def answered_nowait(self, call_id: str, agent_id: str) -> None:
        """The agent picked up."""
        active = self._calls.get(call_id)
        if active is None:
            log.warning("answered call=%s agent=%s: no pop for this call", call_id, agent_id)
            return
        active.answered_at = self.clock()
        active.agent_id = agent_id
        active.pop["stage"] = "answered"
        active.pop["answered_at"] = active.answered_at
        self._current[agent_id] = active
        # the other agents rung for the same call (ring-all) no longer show it
        for other, shown in list(self._current.items()):
            if shown is active and other != agent_id:
                del self._current[other]
        note = payload.answered_note(call_id, active.answered_at, active.info.joined_at)
        self.notifier.publish_nowait(POP_ANSWERED, note, agent_id=agent_id)

    def ended_nowait(
        self,
        call_id: str,
        agent_id: str | None = None,
        *,
        call: CallInfo | None = None,
        at: float | None = None,
        outcome: str | None = None,
    ) -> None:
        """The call is over: the ``call.ended`` note goes out at once and the record to
        the store, whose answer is taken by a callback (no task per call). ``call``
        describes calls that were never offered (abandoned in the queue); ``outcome``
        defaults to answered / abandoned."""
        self.interactions.save_nowait(self._end(call_id, agent_id, call, at, outcome))

    async def ended(
        self,
        call_id: str,
        agent_id: str | None = None,
        *,
        call: CallInfo | None = None,
        at: float | None = None,
        outcome: str | None = None,
    ) -> None:
        """``ended_nowait``, returning once the store has the record (or it is kept)."""
        await self.interactions.save(self._end(call_id, agent_id, call, at, outcome))

    # ------------------------------------------------------- from the page

    async def dispose(self, call_id: str, agent_id: str, disposition: str, notes: str) -> bool:
        """Record the agent's disposition and notes. True when already in the database."""
        shown = self._current.get(agent_id)
        if shown is not None and shown.info.call_id == call_id and shown.ended_at is not None:
            del self._current[agent_id]
        elif shown is not None and shown.info.call_id == call_id:
            shown.pop["disposition"] = disposition
        return await self.interactions.save(
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
        await self.interactions.save(
            InteractionRecord(call_id=call_id, customer_id=int(customer["id"]))
        )

    def current(self, agent_id: str) -> dict[str, Any] | None:
        """The pop on this agent's screen (for a page reload), or None."""
        active = self._current.get(agent_id)
        return dict(active.pop) if active is not None else None

    def shown_to(self, agent_id: str, call_id: str) -> bool:
        active = self._current.get(agent_id)
        return active is not None and active.info.call_id == call_id

    # ------------------------------------------------------- agents' states

    def agent_state_changed(
        self, agent_id: str, state: str, reason: str | None = None, call_id: str | None = None
    ) -> None:
        """Tell the agent's page (and dashboards) about a state change, at once; a state
        that must survive a restart is saved unless the database has it (an agent ready
        again after each call), by the agent's writer task."""
        if state == "logged_out":
            self._current.pop(agent_id, None)
        self.notifier.publish_nowait(
            AGENT_STATE, payload.state_note(agent_id, state, reason, call_id), agent_id=agent_id
        )
        if state in PERSISTED_STATES:
            self.states.want(agent_id, state, reason)

    async def agent_state(
        self,
        agent_id: str,
        state: str,
        reason: str | None = None,
        call_id: str | None = None,
    ) -> None:
        """``agent_state_changed``, returning once the state is saved (or the save has
        taken ``save_timeout``)."""
        self.agent_state_changed(agent_id, state, reason, call_id)
        if state in PERSISTED_STATES:
            await self.states.settled(agent_id)

    # ---------------------------------------------------- upkeep

    @property
    def pending(self) -> dict[str, InteractionRecord]:
        """The interactions not stored yet, by call id."""
        return self.interactions.pending

    async def flush(self) -> int:
        """Try to store every pending interaction (and agent state not saved yet); returns
        how many interactions are still pending. A save the store has not answered yet is
        left to its answer (the retry is for refused and late ones)."""
        left, _ = await asyncio.gather(self.interactions.flush(), self.states.flush())
        return left

    async def run_retry(self, interval: float = 5.0) -> None:
        while True:
            await asyncio.sleep(interval)  # a timer, not synchronisation
            self.lookups.prune(self._calls)
            spooled = bool(self.interactions.at_risk())
            if spooled or self.states.unsaved():
                left = await self.flush()
                if spooled and not left:
                    log.info("interaction spool flushed")

    async def close(self) -> None:
        self.lookups.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.states.close()
        self.interactions.close()

    # ------------------------------------------------------------- the pop

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
        return active, self.lookups.get(call.call_id, call.caller_id)

    async def _pop_when_known(self, active: _Active, agent_id: str,
                              lookup: asyncio.Future[Identification]) -> None:
        if not lookup.done():  # usually done: routing asked the CRM when the call came in
            await asyncio.wait({lookup}, timeout=self.lookup_timeout)
        self._pop_out(active, agent_id, lookup)

    def _pop_out(self, active: _Active, agent_id: str,
                 lookup: asyncio.Future[Identification]) -> None:
        """The pop on this agent's screen, published: full when the CRM has answered, else
        partial (and the full one follows when it does)."""
        ident: Identification | None = None
        if lookup.done():
            ident = answer(lookup, active.info.call_id)
        else:
            self._spawn(self._late_pop(lookup, active, agent_id))
        active.pop = payload.offered_pop(active.info, ident,
                                         crm_url_template=self.crm_url_template)
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
        self.notifier.publish_nowait(POP_OFFERED, active.pop, agent_id=agent_id)

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
        active.pop = {**payload.offered_pop(active.info, ident,
                                            crm_url_template=self.crm_url_template),
                      "stage": stage}
        if ident.customers:
            active.customer_id = ident.customers[0].id
            if active.ended_at is not None:
                await self.interactions.save(
                    InteractionRecord(call_id=active.info.call_id, customer_id=active.customer_id)
                )
        self.notifier.publish_nowait(POP_OFFERED, active.pop, agent_id=agent_id)

    def _end(
        self,
        call_id: str,
        agent_id: str | None,
        call: CallInfo | None,
        at: float | None,
        outcome: str | None,
    ) -> InteractionRecord:
        """The call is over: off the screens of the agents only rung (the one who talked
        keeps it for wrap-up, told by ``call.ended``); its record is returned."""
        ended_at = at if at is not None else self.clock()
        self.lookups.drop(call_id)
        active = self._calls.pop(call_id, None)
        if active is None:
            if call is None:
                log.warning("ended call=%s agent=%s: unknown call", call_id, agent_id)
                call = CallInfo(call_id=call_id, caller_id="")
            active = _Active(info=call, agent_id=agent_id)
        agent_id = agent_id or active.agent_id
        answered_at = active.answered_at
        active.ended_at = ended_at
        record, note = payload.ended(
            call_id, active.info, customer_id=active.customer_id, agent_id=agent_id,
            answered_at=answered_at, ended_at=ended_at, outcome=outcome,
        )
        for other, shown in list(self._current.items()):
            if shown is active and (answered_at is None or other != agent_id):
                del self._current[other]
        if note is not None:
            active.pop["stage"] = "ended"
            active.pop["ended_at"] = ended_at
            active.pop["talk"] = note["talk"]
            self.notifier.publish_nowait(CALL_ENDED, note, agent_id=record.agent_id)
        return record

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("pop task failed: %r", task.exception())
