"""The ACD engine: one synchronous state machine for every agent, queue and caller.

Events in, effects out (events.py); no I/O, no asyncio, the clock is the ``now`` given
to each call. ``Engine`` is the public face and the event handlers; it is made of an
``AgentMachine`` (agents.py: the agents' states, by the table in states.py), a
``CallerBook`` (callers.py: the callers' queue stays) and a ``Dispatcher``
(dispatch.py: who gets whom). The policies it follows are specified in docs/acd.md.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from .agents import RING_BLOCK_MAX, AgentMachine
from .callers import CallerBook
from .dispatch import RING_GUARD_GRACE, Dispatcher
from .events import (
    AgentLoggedIn,
    AgentLoggedOut,
    AgentPaused,
    AgentReady,
    AgentStateChanged,
    Announce,
    CallAbandoned,
    CallEnded,
    CallerJoined,
    CallerLeft,
    CancelRing,
    DeviceStateChanged,
    Effect,
    Event,
    Overflow,
    Ring,
    RingAnswered,
    RingFailed,
    RingStarted,
    Tick,
)
from .model import AcdConfig
from .queues import QueueRt, QueueStats
from .ready_index import ReadyIndex
from .runtime import NO_SKILLS, NOBODY, AgentRt, CallerRt
from .snapshot import AcdView, build_snapshot, read_model
from .states import (
    CONNECTED,
    LOGGED_OUT,
    OFFERED,
    ON_CALL,
    READY,
    RESERVED,
    RINGING,
    STAFFED,
    WAITING,
    WRAP_UP,
    AcdError,
    AgentInput,
    agent_step,
)
from .timers import (
    ANNOUNCE,
    MAX_WAIT,
    PREFERRED_END,
    RELAX,
    RING_BLOCK_END,
    RING_GUARD,
    WRAPUP_END,
    Timer,
    Timers,
)

__all__ = ["RING_BLOCK_MAX", "RING_GUARD_GRACE", "AcdError", "Engine"]

_In = AgentInput
AgentRequest = AgentLoggedIn | AgentLoggedOut | AgentPaused | AgentReady
# isinstance() with a tuple: ``A | B`` in the call would build the union at every event
_AGENT_REQUESTS = (AgentLoggedIn, AgentLoggedOut, AgentPaused, AgentReady)
_CALLER_GONE = (CallerLeft, CallEnded)


def _ring_wins(out: list[Effect]) -> list[Effect]:
    """An announcement never delays ringing: drop the ones due in the same step as a
    Ring for that caller (the adapter would only have to interrupt them). Only timers
    announce: a step that fired none has nothing to drop."""
    rung = {e.call_id for e in out if isinstance(e, Ring)}
    if not rung:
        return out
    return [e for e in out if not (isinstance(e, Announce) and e.call_id in rung)]


def _request_input(event: AgentRequest) -> tuple[AgentInput, str | None]:
    if isinstance(event, AgentLoggedIn):
        return (_In.LOG_IN, None) if event.ready else (_In.LOG_IN_PAUSED, "login")
    if isinstance(event, AgentLoggedOut):
        return _In.LOG_OUT, None
    if isinstance(event, AgentPaused):
        return _In.PAUSE, event.reason
    return _In.GO_READY, None


class Engine:
    def __init__(self, config: AcdConfig, *, rng: random.Random | None = None) -> None:
        self._config = config
        self._timers = Timers()
        self._agents: dict[str, AgentRt] = {}  # shared by the parts, changed in place
        self._queues: dict[str, QueueRt] = {}
        self._callers = CallerBook(self._agents, self._queues, self._timers)
        self._machine = AgentMachine(self._agents, self._queues, self._timers, self._callers)
        self._dispatcher = Dispatcher(
            self._machine, self._callers, self._queues, self._timers, rng or random.Random()
        )
        self._calls = self._callers.calls  # the same dict, one attribute less to read
        self._dispatch = self._dispatcher.dispatch
        self._seq = 0
        self._now = float("-inf")
        self._build(config, None, [])

    # ------------------------------------------------------------------ public API

    def handle(self, event: Event, now: float) -> list[Effect]:
        self._validate(event)
        now = self._clock(now)
        out: list[Effect] = []
        announced = False
        heap = self._timers.heap
        if heap and heap[0][0] <= now:  # most events come with no timer due
            announced = self._fire_timers(now, out)
        self._apply(event, now, out)
        self._dispatch(now, out)
        return _ring_wins(out) if announced else out

    def next_deadline(self) -> float | None:
        self._timers.drop_stale_head(self._timer_live)
        return self._timers.next_due()

    def reconfigure(self, config: AcdConfig, now: float) -> list[Effect]:
        now = self._clock(now)
        out: list[Effect] = []
        announced = self._fire_timers(now, out)
        self._build(config, now, out)
        self._dispatch(now, out)
        return _ring_wins(out) if announced else out

    def position(self, call_id: str) -> int | None:
        c = self._calls.get(call_id)
        if c is None or c.status is CONNECTED:
            return None
        return self._queues[c.queue].line.position(c)

    def agent_state(self, agent_id: str) -> str:
        a = self._agents.get(agent_id)
        if a is None:
            raise AcdError(f"unknown agent {agent_id!r}")
        return a.state

    def view(self, now: float) -> AcdView:
        """The read model of agents, queues and waiting callers (snapshot.py)."""
        return read_model(self, max(now, self._now))

    def snapshot(self, now: float) -> dict[str, Any]:
        return build_snapshot(self.view(now))

    # the parts' records, read-only (for the read model and tests; never mutate them)

    @property
    def config(self) -> AcdConfig:
        return self._config

    @property
    def agents(self) -> Mapping[str, AgentRt]:
        return MappingProxyType(self._agents)

    @property
    def queues(self) -> Mapping[str, QueueRt]:
        return MappingProxyType(self._queues)

    @property
    def calls(self) -> Mapping[str, CallerRt]:
        return MappingProxyType(self._calls)

    # ------------------------------------------------------------------ events

    def _clock(self, now: float) -> float:
        if now > self._now:
            self._now = now
        return self._now

    def _validate(self, event: Event) -> None:
        if isinstance(event, CallerJoined):
            if event.queue not in self._queues:
                raise AcdError(f"call {event.call_id}: unknown queue {event.queue!r}")
            if event.call_id in self._calls:
                raise AcdError(f"call {event.call_id}: already in the ACD")
        elif isinstance(event, _AGENT_REQUESTS):
            a = self._agents.get(event.agent_id)
            if a is None:
                raise AcdError(f"unknown agent {event.agent_id!r}")
            agent_step(a.id, a.state, _request_input(event)[0])  # AcdError if illegal

    def _apply(self, event: Event, now: float, out: list[Effect]) -> None:
        if isinstance(event, Tick):
            return
        if isinstance(event, CallerJoined):
            self._seq += 1
            arrival = now if event.arrival is None else min(event.arrival, now)
            c = CallerRt(
                event.call_id,
                event.queue,
                event.priority,
                dict(event.skills) if event.skills else NO_SKILLS,
                event.preferred_agent,
                arrival,
                self._seq,
            )
            self._calls[c.call_id] = c
            if event.preferred_timeout is not None:
                self._callers.pref_timeout[c.call_id] = event.preferred_timeout
            self._callers.enter_queue(c, event.queue, now, out, entered=arrival)
            if event.claimed is not None:
                self._claimed(c, event.claimed, now, out)
        elif isinstance(event, _CALLER_GONE):
            self._caller_gone(event.call_id, now, out)
        elif isinstance(event, RingStarted):
            return  # the offer is already counted from the Ring effect
        elif isinstance(event, RingAnswered):
            self._answered(event.call_id, event.agent_id, now, out)
        elif isinstance(event, RingFailed):
            self._ring_failed(event.call_id, event.agent_id, event.reason, now, out)
        elif isinstance(event, DeviceStateChanged):
            self._machine.device_changed(event.device, event.state, now)
        else:
            inp, reason = _request_input(event)
            self._machine.apply(self._agents[event.agent_id], inp, now, out, reason)

    # ------------------------------------------------------------------ calls

    def _caller_gone(self, call_id: str, now: float, out: list[Effect]) -> None:
        callers = self._callers
        c = callers.calls.get(call_id)
        if c is None:
            return
        if c.status is CONNECTED:
            self._end_call(c, now, out)
            return
        q = self._queues[c.queue]
        offered = sorted(c.offered_to) if c.status is RINGING else []
        callers.leave_queue(c)
        q.stats.abandoned += 1
        if now - c.entered > q.cfg.service_level:
            q.stats.abandoned_after_sl += 1
        out.append(CallAbandoned(c.call_id, c.queue, now - c.arrival))
        callers.forget(c)
        for aid in offered:
            a = self._agents[aid]
            if a.state is OFFERED and a.call_id == call_id:
                self._machine.apply(a, _In.OFFER_ENDED, now, out)

    def _claimed(self, c: CallerRt, agent_id: str, now: float, out: list[Effect]) -> None:
        """``c`` joined already ringing ``agent_id``, the agent ``peek`` gave for its number.
        The phone rings for ``c`` whatever the engine thinks: an offer of the same agent to
        another caller, not yet rung, is taken back (CancelRing; that caller goes first
        again). An agent no longer available (paused, logged out meanwhile) is not
        offered: ``c`` waits like any caller and the ring is the adapter's to stop."""
        a = self._agents.get(agent_id)
        if a is None or c.status is not WAITING or c.queue not in a.queues:
            return
        if a.state is OFFERED and a.call_id != c.call_id:
            self._callers.withdraw(a, "claimed", now, out)
            self._machine.apply(a, _In.OFFER_ENDED, now, out)
        if a.available:
            self._dispatcher.offer(c, [agent_id], now, out)

    def peek(self, queue: str, priority: int, skills: Mapping[str, int],
             now: float) -> str | None:
        """The one agent a caller joining ``queue`` now would be rung at once, changing
        nothing (``Dispatcher.peek``); None when it would wait or ring several agents."""
        return self._dispatcher.peek(queue, priority, skills, max(now, self._now), self._seq + 1)

    def _answered(self, call_id: str, agent_id: str, now: float, out: list[Effect]) -> None:
        c = self._calls.get(call_id)
        a = self._agents.get(agent_id)
        if c is None or a is None or c.status is CONNECTED:
            return
        if a.state in (ON_CALL, WRAP_UP) or (a.state is OFFERED and a.call_id != call_id):
            return  # an agent never has two calls: a stale or crossed event
        offered = c.offered_to
        # ring-all: the others rung (one agent, the one answering: none, no set made)
        others = [] if len(offered) == 1 and agent_id in offered else sorted(offered - {agent_id})
        q = self._queues[c.queue]
        st = q.stats
        self._callers.leave_queue(c)
        wait = now - c.entered
        st.answered += 1
        st.wait_sum += wait
        if wait <= q.cfg.service_level:
            st.answered_in_sl += 1
        c.status = CONNECTED
        c.agent_id = agent_id
        c.answered_at = now
        if a.state is READY or a.state is OFFERED:
            a.idle_total += now - a.idle_since
            a.idle_periods += 1
        a.answered_at = now
        a.call_queue = c.queue
        self._machine.apply(a, _In.ANSWER, now, out, call_id=call_id)
        for oid in others:  # ring-all: the others are free again
            o = self._agents[oid]
            if o.state is OFFERED and o.call_id == call_id:
                self._machine.apply(o, _In.OFFER_ENDED, now, out)

    def _ring_failed(
        self, call_id: str, agent_id: str, reason: str, now: float, out: list[Effect]
    ) -> None:
        c = self._calls.get(call_id)
        a = self._agents.get(agent_id)
        if c is None or a is None or c.status is not RINGING or agent_id not in c.offered_to:
            return
        c.offered_to = c.offered_to - {agent_id}
        if a.state is OFFERED and a.call_id == call_id:
            reason = reason.lower()
            if reason == "noanswer":
                self._machine.apply(a, _In.NO_ANSWER, now, out, "no answer")
            else:
                if reason in ("busy", "unavailable"):
                    self._machine.block_after_ring(a, reason.upper(), now)
                self._machine.apply(a, _In.OFFER_ENDED, now, out)
        if not c.offered_to:
            self._callers.return_caller(c, now, out)

    def _end_call(self, c: CallerRt, now: float, out: list[Effect]) -> None:
        self._callers.forget(c)
        a = self._agents.get(c.agent_id or "")
        if a is None or a.state is not ON_CALL or a.call_id != c.call_id:
            return
        talk = now - a.answered_at
        a.talk_total += talk
        a.calls += 1
        a.last_talk = talk
        a.wrap_started = now
        q = self._queues.get(c.queue)
        if a.pending is None and q is not None and q.cfg.wrapup > 0:
            self._machine.apply(a, _In.CALL_ENDED, now, out, call_id=c.call_id)
            self._timers.add(now + q.cfg.wrapup, WRAPUP_END, a.id, a.epoch)
        else:  # to the state asked for during the call, else ready
            self._machine.apply(a, _In.WORK_DONE, now, out)

    # ------------------------------------------------------------------ timers

    def _timer_live(self, t: Timer) -> bool:
        _due, _seq, kind, target, epoch = t
        if kind == RING_BLOCK_END:
            a = self._agents.get(target)
            return a is not None and a.block_epoch == epoch
        if kind == WRAPUP_END:
            a = self._agents.get(target)
            return a is not None and a.epoch == epoch and a.state is WRAP_UP
        c = self._calls.get(target)
        if c is None:
            return False
        if kind == RING_GUARD:
            return c.status is RINGING and c.ring_epoch == epoch
        if c.q_epoch != epoch:
            return False
        if kind == RELAX:
            return c.status is WAITING
        if kind == PREFERRED_END:
            return c.status is RESERVED
        return c.status is not CONNECTED

    def _fire_timers(self, now: float, out: list[Effect]) -> bool:
        """Fire the timers due at ``now``; whether one of them announced."""
        callers = self._callers
        announced = False
        for t in self._timers.pop_due(now):
            if not self._timer_live(t):
                continue
            kind, target = t[2], t[3]
            if kind == RING_BLOCK_END:
                self._machine.unblock(self._agents[target])
                continue
            if kind == WRAPUP_END:
                self._machine.apply(self._agents[target], _In.WORK_DONE, now, out)
                continue
            c = self._calls[target]
            if kind == RING_GUARD:
                agents = sorted(c.offered_to)
                out.append(CancelRing(c.call_id, tuple(agents), "guard_timeout"))
                c.offered_to = NOBODY
                for aid in agents:
                    a = self._agents[aid]
                    if a.state is OFFERED and a.call_id == c.call_id:
                        # a phone unavailable meanwhile (its PBX out of sight): the ring's
                        # end was lost, not unanswered
                        if a.device_state == "UNAVAILABLE":
                            self._machine.apply(a, _In.OFFER_ENDED, now, out)
                        else:
                            self._machine.apply(a, _In.NO_ANSWER, now, out, "no answer")
                callers.return_caller(c, now, out)
            elif kind == MAX_WAIT:
                if c.status is RINGING:
                    c.overdue = True
                else:
                    callers.overflow(c, "max_wait", now, out)
            elif kind == ANNOUNCE:
                q = self._queues[c.queue]
                if c.status is not RINGING:
                    pos = q.line.position(c)
                    out.append(Announce(c.call_id, pos, q.estimate(pos)))
                    announced = True
                self._timers.add(now + q.cfg.announce_frequency, ANNOUNCE, c.call_id, c.q_epoch)
            elif kind == RELAX:
                callers.mark(c)
            elif kind == PREFERRED_END:
                callers.unreserve(c)
        return announced

    # ------------------------------------------------------------------ configuration

    def _build(self, config: AcdConfig, now: float | None, out: list[Effect]) -> None:
        old = dict(self._agents)
        calls = self._calls
        agents: dict[str, AgentRt] = {}
        for order, (aid, acfg) in enumerate(config.agents.items()):
            a = old.get(aid) or AgentRt(acfg, order)
            a.cfg, a.order, a.in_index, a.queues = acfg, order, False, ()
            a.tags = (None, *acfg.skills)
            agents[aid] = a
        t = now if now is not None else 0.0
        for aid, a in old.items():
            if aid in agents:
                continue
            if a.state is OFFERED:
                c = calls.get(a.call_id or "")
                if c is not None and aid in c.offered_to:
                    c.offered_to = c.offered_to - {aid}
                    out.append(CancelRing(c.call_id, (aid,), "reconfigured"))
            elif a.call_id in calls and calls[a.call_id or ""].status is CONNECTED:
                del calls[a.call_id or ""]
                self._callers.pref_timeout.pop(a.call_id or "", None)
            if a.state is not LOGGED_OUT:
                out.append(AgentStateChanged(aid, LOGGED_OUT, "removed"))
        self._agents.clear()
        self._agents.update(agents)
        self._config = config
        old_queues = dict(self._queues)
        self._queues.clear()
        machine = self._machine
        machine.unindexed.clear()
        machine.devices.clear()
        self._callers.reserved.clear()
        served: dict[str, list[str]] = {aid: [] for aid in agents}
        for qname, qcfg in config.queues.items():
            members = tuple(m for m in config.queue_members(qname) if m in agents)
            pos = {m: i for i, m in enumerate(members)}
            idx = ReadyIndex(qcfg, pos, {m: agents[m].cfg.skills for m in members})
            was = old_queues.get(qname)
            if was is not None:
                idx.last_rung = was.ready.last_rung
            q = QueueRt(qcfg, members, idx, was.stats if was is not None else QueueStats())
            for m in members:
                served[m].append(qname)
            q.staffed = sum(1 for m in members if agents[m].state in STAFFED)
            q.logged_in = {m for m in members if agents[m].state is not LOGGED_OUT}
            self._queues[qname] = q
        for aid, a in agents.items():
            a.queues = tuple(served[aid])
            machine.devices.setdefault(a.cfg.device, []).append(aid)
            machine.sync_index(a)
        machine.flush_unindexed()
        machine.dirty.clear()
        self._callers.dirty.clear()
        for c in sorted(calls.values(), key=lambda c: c.seq):
            self._rebuild_caller(c, t, out)

    def _rebuild_caller(self, c: CallerRt, now: float, out: list[Effect]) -> None:
        if c.status is CONNECTED:
            return
        callers = self._callers
        q = self._queues.get(c.queue)
        if q is None:
            for aid in sorted(c.offered_to):
                a = self._agents[aid]
                out.append(CancelRing(c.call_id, (aid,), "reconfigured"))
                if a.state is OFFERED and a.call_id == c.call_id:
                    self._machine.apply(a, _In.OFFER_ENDED, now, out)
            out.append(Overflow(c.call_id, c.queue, "fallback", "queue_removed"))
            callers.forget(c)
            return
        status = c.status
        if status is RINGING and not c.offered_to:
            status = WAITING
        if status is RESERVED:
            p = self._agents.get(c.preferred or "")
            status = RESERVED if p is not None and p.state is not LOGGED_OUT else WAITING
        entered = c.entered
        callers.place(c, q, now, status)
        c.entered = entered
        callers.schedule_queue_timers(c, now)

