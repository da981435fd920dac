"""The agents' side of the engine: their records, their state changes, their availability.

``AgentMachine.apply`` is the one place an agent's state changes; it follows the
transition table in states.py (an input the table has no row for raises ``AcdError``
and changes nothing). It keeps the per-queue counts (staffed, logged in) and the ready
indexes in step with every change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .events import AgentStateChanged, Effect
from .states import (
    AGENT_TRANSITIONS,
    BLOCKING_DEVICE_STATES,
    LOGGED_OUT,
    OFFERED,
    READY,
    STAFFED,
    Act,
    AgentInput,
    AgentState,
    agent_step,
)
from .timers import RING_BLOCK_END, Timers

if TYPE_CHECKING:
    from .callers import CallerBook
    from .queues import QueueRt
    from .runtime import AgentRt

# a busy/unavailable ring blocks the agent until their device reports NOT_INUSE, but
# no longer than this (a missed device event must not strand them)
RING_BLOCK_MAX = 30.0

_SET, _DEFER, _WITHDRAW, _END_WORK = Act.SET, Act.DEFER, Act.WITHDRAW, Act.END_WORK
_TABLE = AGENT_TRANSITIONS
_WITHDRAW_REASON = {AgentInput.LOG_OUT: "agent_logged_out", AgentInput.PAUSE: "agent_paused"}


class AgentMachine:
    def __init__(
        self,
        agents: dict[str, AgentRt],
        queues: dict[str, QueueRt],
        timers: Timers,
        callers: CallerBook,
    ) -> None:
        self.agents = agents  # shared with the engine's other parts, changed in place
        self.queues = queues
        self.timers = timers
        self.callers = callers
        self.devices: dict[str, list[str]] = {}  # device -> agents on it
        # available agents not in the ready indexes yet: an agent who frees up is only
        # inserted if no caller takes them in the same step (the end of dispatch)
        self.unindexed: dict[str, AgentRt] = {}
        self.dirty: set[str] = set()  # agents who became available in this step

    # ------------------------------------------------------------------ transitions

    def apply(
        self,
        a: AgentRt,
        inp: AgentInput,
        now: float,
        out: list[Effect],
        reason: str | None = None,
        call_id: str | None = None,
    ) -> None:
        """Take ``a`` through the table's row for its state and ``inp``: the one place
        an agent's state changes (the counts and the ready indexes follow)."""
        was = a.state
        step = _TABLE.get((was, inp))
        target, act = step if step is not None else agent_step(a.id, was, inp)
        if act is not _SET:
            if act is _END_WORK:
                if target is None:
                    target, reason = a.pending or (READY, None)
                    a.pending = None
                q = self.queues.get(a.call_queue or "")
                if q is not None:
                    q.stats.add_handle(a.last_talk + (now - a.wrap_started))
                a.call_queue = None
            elif act is _WITHDRAW:
                self.callers.withdraw(a, _WITHDRAW_REASON[inp], now, out)
            elif act is _DEFER:
                a.pending = None if target is READY or target is None else (target, reason)
                return
            else:  # ignored
                return
        if target is None or (target is was and reason == a.reason):
            return
        state: AgentState = target
        if state is READY and was is not READY and was is not OFFERED:
            a.idle_since = now
            a.idle_waits_phone = a.device_state in BLOCKING_DEVICE_STATES
        elif state is not READY:
            a.idle_waits_phone = False
        if (was in STAFFED) != (state in STAFFED):
            queues = self.queues
            d = 1 if state in STAFFED else -1
            for qname in a.queues:
                queues[qname].staffed += d
        if (was is LOGGED_OUT) != (state is LOGGED_OUT):
            queues = self.queues
            for qname in a.queues:
                if state is LOGGED_OUT:
                    queues[qname].logged_in.discard(a.id)
                else:
                    queues[qname].logged_in.add(a.id)
        a.state, a.reason, a.call_id, a.since = state, reason, call_id, now
        a.epoch += 1
        out.append(AgentStateChanged(a.id, state, reason, call_id))
        self.sync_index(a)
        if state is LOGGED_OUT:
            a.pending = None
            self.callers.agent_logged_out(a, was is not LOGGED_OUT, now, out)

    # ------------------------------------------------------------------ the phone

    def device_changed(self, device: str, state: str, now: float) -> None:
        for aid in self.devices.get(device, ()):
            a = self.agents[aid]
            a.device_state = state.upper()
            a.block_epoch += 1
            if a.idle_waits_phone and a.available:
                # ready since its call ended, free only now that the phone is: the idle
                # period (longest idle's key) starts here, as Asterisk would tell it
                a.idle_since = max(a.idle_since, now)
                a.idle_waits_phone = False
            self.sync_index(a)

    def block_after_ring(self, a: AgentRt, device_state: str, now: float) -> None:
        """A busy/unavailable ring: not offered until the device says otherwise, or
        ``RING_BLOCK_MAX`` seconds at most."""
        a.device_state = device_state
        a.block_epoch += 1
        self.timers.add(now + RING_BLOCK_MAX, RING_BLOCK_END, a.id, a.block_epoch)

    def unblock(self, a: AgentRt) -> None:
        """``RING_BLOCK_MAX`` passed with no device event: offerable again."""
        a.device_state = "UNKNOWN"
        a.block_epoch += 1
        self.sync_index(a)

    # ------------------------------------------------------------------ ready indexes

    def sync_index(self, a: AgentRt) -> None:
        """``a.in_index``: available and known as such, in the ready indexes or (until
        the end of the step) in ``unindexed``."""
        avail = a.state is READY and a.device_state not in BLOCKING_DEVICE_STATES  # a.available
        if avail and not a.in_index:
            self.unindexed[a.id] = a
            a.in_index = True
            self.dirty.add(a.id)
        elif not avail and a.in_index:
            if self.unindexed.pop(a.id, None) is None:
                queues = self.queues
                for q in a.queues:
                    queues[q].ready.remove(a)
            a.in_index = False

    def flush_unindexed(self) -> None:
        if not self.unindexed:
            return
        queues = self.queues
        for a in self.unindexed.values():
            for q in a.queues:
                queues[q].ready.add(a)
        self.unindexed.clear()
