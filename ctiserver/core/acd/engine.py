"""The ACD engine: one synchronous state machine for every agent, queue and caller.

Events in, effects out (``events.py``); no I/O, no asyncio, the clock is the ``now``
given to each call. One owner feeds it and asks ``next_deadline()`` when to send
``Tick()``. Every ``handle()`` first fires the timers due at ``now`` (so a late Tick
loses nothing), then applies the event, then *dispatches*: it offers callers to
agents until no available agent fits any caller it could take.

Policies
--------
- **Order of callers** (one scheduler across all queues): higher effective priority
  first (the call's priority + its queue's priority), then the longest waiting
  (arrival in the first queue), then join order. An agent who frees up takes, among
  all the queues they serve, first a caller reserved for them (see assigned agent),
  then the first caller in that order whose skill requirements they meet. Several
  agents freeing up at once (ring-all losers, reconfiguration) are resolved caller by
  caller in that order, each caller picking its agent by its queue's strategy.
- **Which agent**: the queue's strategy, see ``strategies.py`` (ties: longest idle,
  then the queue's member order).
- **Assigned agent first**: a caller with a ``preferred_agent`` who is logged in is
  reserved for that agent for ``CallerJoined.preferred_timeout`` (the routing rule's
  timeout) or else the queue's ``preferred_agent_timeout`` (with 0: only if
  the agent is available at once); the agent's skills and membership are not checked.
  When the window ends, or the agent fails to answer, the queue's strategy takes over.
- **Skills**: a caller needs, for each skill of its queue and of the call (the higher
  level when both name it), an agent level at least the requirement. After each
  ``skill_relax`` step (wait counted from arrival) every requirement drops to at most
  the step's ``min_level``; 0 means "has the skill at any level".
- **Ring-no-answer**: the agent goes not_ready "no answer" (under ring-all too: every
  agent whose phone rang out); the caller is offered again at once, keeping its place.
  busy / unavailable: the agent stays ready but is not offered until its device
  reports NOT_INUSE (or UNKNOWN), or for ``RING_BLOCK_MAX`` (30 s) at most: then the
  engine counts the device as UNKNOWN (offerable) again, so a missed device event
  cannot strand the agent (a device event meanwhile takes over, with no time limit,
  as any device state does). cancel: the agent is ready again. The engine's own
  guard (ring timeout + ``RING_GUARD_GRACE``) treats a missing RingFailed as noanswer
  and emits ``CancelRing``.
- **Device state**: INUSE, BUSY, UNAVAILABLE, INVALID, RINGING, RINGINUSE, ONHOLD
  block offers to a ready agent (private call, unreachable phone); while the agent is
  offered or on one of our calls they are expected and ignored.
- **Overflow**: at ``max_wait`` in a queue (counted from entering *that* queue) the
  caller goes to the queue's ``overflow`` target (or ``fallback`` if none). If the
  caller is ringing at that moment the overflow happens only if the offer fails.
  ``queue:NAME`` is done inside the engine (``QueueChanged`` effect): the caller keeps
  its arrival time, so its place among equal priorities and its skill relaxation count
  the whole wait; the new queue's max_wait and announcements start at the move. A
  caller never enters the same queue twice: such a target (or an unknown queue)
  becomes ``fallback``. ``when_no_agents="overflow"``: a caller entering a queue where
  no logged-in member could serve them, even at the last relax step, overflows at once;
  so do the callers waiting there when the last member who could serve them logs out
  (reason ``no_agents``; callers ringing or reserved for their preferred agent stay).
- **Estimated wait**: position x mean of the queue's last 20 handle times (talk +
  wrap-up) / staffed members (ready, ringing, on call or in wrap-up); ``None`` with
  fewer than 3 samples or nobody staffed.
- **Agent requests**: pause or logout while on a call take effect when the call ends
  (no wrap-up then); while ringing they withdraw the offer (``CancelRing``); during
  wrap-up they end it. Ready during wrap-up ends it.
- **Errors**: requests naming an unknown agent or queue, a second CallerJoined for a
  live call, or pause/ready of a logged-out agent raise ``AcdError`` and change
  nothing. Telephony events about unknown or finished calls are ignored (stale).
- Time never goes backwards: ``now`` earlier than a previous call counts as that one.
"""

from __future__ import annotations

import random
from typing import Any

from .events import (
    AgentLoggedIn,
    AgentLoggedOut,
    AgentPaused,
    AgentReady,
    Announce,
    CallAbandoned,
    CallEnded,
    CallerJoined,
    CallerLeft,
    CancelRing,
    DeviceStateChanged,
    Effect,
    Event,
    Ring,
    RingAnswered,
    RingFailed,
    RingStarted,
    Tick,
)
from .model import AcdConfig
from .runtime import (
    CONNECTED,
    LOGGED_OUT,
    NOT_READY,
    OFFERED,
    ON_CALL,
    READY,
    RINGING,
    WRAP_UP,
    AgentRt,
    CallerRt,
)
from .scheduler import Scheduler
from .snapshot import build_snapshot
from .timers import WRAPUP_END

__all__ = ["AcdError", "Engine"]


def _ring_wins(out: list[Effect]) -> list[Effect]:
    """An announcement never delays ringing: drop the ones due in the same step as a
    Ring for that caller (the adapter would only have to interrupt them)."""
    rung = {e.call_id for e in out if isinstance(e, Ring)}
    if not rung:
        return out
    return [e for e in out if not (isinstance(e, Announce) and e.call_id in rung)]


class AcdError(Exception):
    """The engine's user asked for something impossible (unknown agent or queue,
    duplicate call, pause of a logged-out agent). Nothing was changed."""


class Engine(Scheduler):
    def __init__(self, config: AcdConfig, *, rng: random.Random | None = None) -> None:
        super().__init__(config, rng or random.Random())

    # ------------------------------------------------------------------ public API

    def handle(self, event: Event, now: float) -> list[Effect]:
        self._validate(event)
        now = self._clock(now)
        out: list[Effect] = []
        self._fire_timers(now, out)
        self._apply(event, now, out)
        self._dispatch(now, out)
        return _ring_wins(out)

    def next_deadline(self) -> float | None:
        self._timers.drop_stale_head(self._timer_live)
        return self._timers.next_due()

    def reconfigure(self, config: AcdConfig, now: float) -> list[Effect]:
        now = self._clock(now)
        out: list[Effect] = []
        self._fire_timers(now, out)
        self._build(config, now, out)
        self._dispatch(now, out)
        return _ring_wins(out)

    def position(self, call_id: str) -> int | None:
        c = self._calls.get(call_id)
        if c is None or c.status == CONNECTED:
            return None
        return self._lines[c.queue].position(c)

    def agent_state(self, agent_id: str) -> str:
        a = self._agents.get(agent_id)
        if a is None:
            raise AcdError(f"unknown agent {agent_id!r}")
        return a.state

    def snapshot(self, now: float) -> dict[str, Any]:
        return build_snapshot(self, max(now, self._now))

    # ------------------------------------------------------------------ events

    def _validate(self, event: Event) -> None:
        if isinstance(event, CallerJoined):
            if event.queue not in self._config.queues:
                raise AcdError(f"call {event.call_id}: unknown queue {event.queue!r}")
            if event.call_id in self._calls:
                raise AcdError(f"call {event.call_id}: already in the ACD")
        elif isinstance(event, AgentLoggedIn | AgentLoggedOut | AgentPaused | AgentReady):
            a = self._agents.get(event.agent_id)
            if a is None:
                raise AcdError(f"unknown agent {event.agent_id!r}")
            if isinstance(event, AgentPaused | AgentReady) and a.state == LOGGED_OUT:
                raise AcdError(f"agent {event.agent_id}: not logged in")

    def _apply(self, event: Event, now: float, out: list[Effect]) -> None:
        if isinstance(event, Tick):
            return
        if isinstance(event, CallerJoined):
            self._seq += 1
            c = CallerRt(
                event.call_id,
                event.queue,
                event.priority,
                dict(event.skills),
                event.preferred_agent,
                now,
                self._seq,
            )
            self._calls[c.call_id] = c
            if event.preferred_timeout is not None:
                self._pref_timeout[c.call_id] = event.preferred_timeout
            self._enter_queue(c, event.queue, now, out)
        elif isinstance(event, CallerLeft | CallEnded):
            self._caller_gone(event.call_id, now, out)
        elif isinstance(event, RingStarted):
            return  # the offer is already counted from the Ring effect
        elif isinstance(event, RingAnswered):
            self._answered(event.call_id, event.agent_id, now, out)
        elif isinstance(event, RingFailed):
            self._ring_failed(event.call_id, event.agent_id, event.reason, now, out)
        elif isinstance(event, DeviceStateChanged):
            for aid in self._device_agents.get(event.device, ()):
                a = self._agents[aid]
                a.device_state = event.state.upper()
                a.block_epoch += 1
                if a.idle_waits_phone and a.available:
                    # ready since its call ended, free only now that the phone is: the idle
                    # period (longest idle's key) starts here, as Asterisk would tell it
                    a.idle_since = max(a.idle_since, now)
                    a.idle_waits_phone = False
                self._sync_index(a)
        else:
            self._agent_request(event, now, out)

    def _agent_request(
        self,
        event: AgentLoggedIn | AgentLoggedOut | AgentPaused | AgentReady,
        now: float,
        out: list[Effect],
    ) -> None:
        a = self._agents[event.agent_id]
        if isinstance(event, AgentLoggedIn):
            if a.state == LOGGED_OUT:
                if event.ready:
                    self._set_state(a, READY, None, None, now, out)
                else:
                    self._set_state(a, NOT_READY, "login", None, now, out)
            return
        if isinstance(event, AgentLoggedOut):
            target: tuple[str, str | None] = (LOGGED_OUT, None)
            withdraw = "agent_logged_out"
        elif isinstance(event, AgentPaused):
            target = (NOT_READY, event.reason)
            withdraw = "agent_paused"
        else:
            target = (READY, None)
            withdraw = ""
        state = a.state
        if state == ON_CALL:
            a.pending = None if target[0] == READY else target
        elif state == OFFERED:
            if withdraw:
                self._withdraw(a, withdraw, now, out)
                self._set_state(a, target[0], target[1], None, now, out)
        elif state == WRAP_UP:
            self._end_wrapup(a, now, out, target)
        elif state == LOGGED_OUT:
            return
        elif (state, a.reason) != target:
            self._set_state(a, target[0], target[1], None, now, out)

    # ------------------------------------------------------------------ calls

    def _caller_gone(self, call_id: str, now: float, out: list[Effect]) -> None:
        c = self._calls.get(call_id)
        if c is None:
            return
        if c.status == CONNECTED:
            self._end_call(c, now, out)
            return
        q = self._config.queues[c.queue]
        st = self._stats[c.queue]
        offered = sorted(c.offered_to) if c.status == RINGING else []
        self._leave_queue(c)
        st.abandoned += 1
        if now - c.entered > q.service_level:
            st.abandoned_after_sl += 1
        out.append(CallAbandoned(c.call_id, c.queue, now - c.arrival))
        self._forget(c)
        for aid in offered:
            a = self._agents[aid]
            if a.state == OFFERED and a.call_id == call_id:
                self._set_state(a, READY, None, None, now, out)

    def _answered(self, call_id: str, agent_id: str, now: float, out: list[Effect]) -> None:
        c = self._calls.get(call_id)
        a = self._agents.get(agent_id)
        if c is None or a is None or c.status == CONNECTED:
            return
        if a.state in (ON_CALL, WRAP_UP) or (a.state == OFFERED and a.call_id != call_id):
            return  # an agent never has two calls: a stale or crossed event
        others = sorted(c.offered_to - {agent_id})
        q = self._config.queues[c.queue]
        st = self._stats[c.queue]
        self._leave_queue(c)
        wait = now - c.entered
        st.answered += 1
        st.wait_sum += wait
        if wait <= q.service_level:
            st.answered_in_sl += 1
        c.status = CONNECTED
        c.agent_id = agent_id
        c.answered_at = now
        if a.state in (READY, OFFERED):
            a.idle_total += now - a.idle_since
            a.idle_periods += 1
        a.answered_at = now
        a.call_queue = c.queue
        self._set_state(a, ON_CALL, None, call_id, now, out)
        for oid in others:  # ring-all: the others are free again
            o = self._agents[oid]
            if o.state == OFFERED and o.call_id == call_id:
                self._set_state(o, READY, None, None, now, out)

    def _ring_failed(
        self, call_id: str, agent_id: str, reason: str, now: float, out: list[Effect]
    ) -> None:
        c = self._calls.get(call_id)
        a = self._agents.get(agent_id)
        if c is None or a is None or c.status != RINGING or agent_id not in c.offered_to:
            return
        c.offered_to.discard(agent_id)
        if a.state == OFFERED and a.call_id == call_id:
            reason = reason.lower()
            if reason == "noanswer":
                self._set_state(a, NOT_READY, "no answer", None, now, out)
            else:
                if reason in ("busy", "unavailable"):
                    self._block_after_ring(a, reason.upper(), now)
                self._set_state(a, READY, None, None, now, out)
        if not c.offered_to:
            self._return_caller(c, now, out)

    def _end_call(self, c: CallerRt, now: float, out: list[Effect]) -> None:
        self._forget(c)
        a = self._agents.get(c.agent_id or "")
        if a is None or a.state != ON_CALL or a.call_id != c.call_id:
            return
        talk = now - a.answered_at
        a.talk_total += talk
        a.calls += 1
        a.last_talk = talk
        a.wrap_started = now
        q = self._config.queues.get(c.queue)
        if a.pending is not None:
            target, a.pending = a.pending, None
            self._end_wrapup(a, now, out, target)
        elif q is not None and q.wrapup > 0:
            self._set_state(a, WRAP_UP, None, c.call_id, now, out)
            self._timers.add(now + q.wrapup, WRAPUP_END, a.id, a.epoch)
        else:
            self._end_wrapup(a, now, out, (READY, None))

    def _withdraw(self, a: AgentRt, reason: str, now: float, out: list[Effect]) -> None:
        """Take a ringing agent off its offer (the agent's own state is set by the caller)."""
        c = self._calls.get(a.call_id or "")
        if c is None or c.status != RINGING or a.id not in c.offered_to:
            return
        out.append(CancelRing(c.call_id, (a.id,), reason))
        c.offered_to.discard(a.id)
        if not c.offered_to:
            self._return_caller(c, now, out)

    def _end_wrapup(
        self, a: AgentRt, now: float, out: list[Effect], target: tuple[str, str | None]
    ) -> None:
        st = self._stats.get(a.call_queue or "")
        if st is not None:
            st.add_handle(a.last_talk + (now - a.wrap_started))
        a.call_queue = None
        self._set_state(a, target[0], target[1], None, now, out)
