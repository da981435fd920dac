"""The engine's machinery: indexes, timers, queue entry/exit and the dispatch loop.

``Engine`` (engine.py) adds the event handlers and the public API on top; the
policies are written down in engine.py's docstring.
"""

from __future__ import annotations

import heapq
import random

from .events import (
    AgentStateChanged,
    Announce,
    CancelRing,
    Effect,
    Overflow,
    QueueChanged,
    Ring,
)
from .model import AcdConfig
from .runtime import (
    BLOCKING_DEVICE_STATES,
    CONNECTED,
    LOGGED_OUT,
    NOT_READY,
    OFFERED,
    READY,
    RESERVED,
    RINGING,
    STAFFED,
    WAITING,
    WRAP_UP,
    AgentRt,
    CallerRt,
    Needs,
    QueueStats,
)
from .strategies import ReadyIndex
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
from .waiting import QueueLine

RING_GUARD_GRACE = 5.0  # seconds after the ring timeout before the engine gives up itself
# a busy/unavailable ring blocks the agent until their device reports NOT_INUSE, but
# no longer than this (a missed device event must not strand them)
RING_BLOCK_MAX = 30.0
# more agents than this freed in one step: put them all in the indexes before picking
MAX_PENDING = 8

DirtyEntry = tuple[int, float, int, str]


class Scheduler:
    def __init__(self, config: AcdConfig, rng: random.Random) -> None:
        self._rng = rng
        self._config = config
        self._agents: dict[str, AgentRt] = {}
        self._calls: dict[str, CallerRt] = {}
        self._pref_timeout: dict[str, float] = {}  # per-call preferred-agent wait (rules)
        self._lines: dict[str, QueueLine] = {}
        self._ready: dict[str, ReadyIndex] = {}
        self._stats: dict[str, QueueStats] = {}
        self._relax: dict[str, tuple[tuple[float, int], ...]] = {}
        self._queue_req: dict[str, tuple[tuple[str, int], ...]] = {}  # sorted items
        self._last_relax: dict[str, int | None] = {}
        self._staffed: dict[str, int] = {}
        self._logged_in: dict[str, set[str]] = {}
        self._reserved: dict[str, dict[str, CallerRt]] = {}  # preferred agent -> callers
        self._device_agents: dict[str, list[str]] = {}
        self._timers = Timers()
        self._dirty_agents: set[str] = set()
        # available agents not in the ready indexes yet: an agent who frees up is only
        # inserted if no caller takes them in the same step (the end of _dispatch)
        self._unindexed: dict[str, AgentRt] = {}
        self._dirty_callers: list[DirtyEntry] = []
        # callers placed waiting in this step, not yet filed in their line's classes
        # (waiting.py): a caller served at once never is (the end of _dispatch); until
        # then they are in _dirty_callers, which is how dispatch sees them
        self._unlisted: dict[str, CallerRt] = {}
        self._seq = 0
        self._now = float("-inf")
        self._build(config, None, [])

    def _clock(self, now: float) -> float:
        if now > self._now:
            self._now = now
        return self._now

    # --------------------------------------------------------------- configuration

    def _build(self, config: AcdConfig, now: float | None, out: list[Effect]) -> None:
        old = self._agents
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
            if a.state == OFFERED:
                c = self._calls.get(a.call_id or "")
                if c is not None and aid in c.offered_to:
                    c.offered_to.discard(aid)
                    out.append(CancelRing(c.call_id, (aid,), "reconfigured"))
            elif a.call_id in self._calls and self._calls[a.call_id or ""].status == CONNECTED:
                del self._calls[a.call_id or ""]
                self._pref_timeout.pop(a.call_id or "", None)
            if a.state != LOGGED_OUT:
                out.append(AgentStateChanged(aid, LOGGED_OUT, "removed"))
        self._agents = agents
        self._config = config
        old_ready = self._ready
        self._unindexed = {}
        self._ready, self._lines, self._relax, self._last_relax = {}, {}, {}, {}
        self._queue_req = {}
        self._staffed, self._logged_in, self._reserved = {}, {}, {}
        self._device_agents = {}
        self._stats = {q: self._stats.get(q) or QueueStats() for q in config.queues}
        served: dict[str, list[str]] = {aid: [] for aid in agents}
        for qname, q in config.queues.items():
            members = [m for m in config.queue_members(qname) if m in agents]
            pos = {m: i for i, m in enumerate(members)}
            idx = ReadyIndex(q, pos, {m: agents[m].cfg.skills for m in members})
            if qname in old_ready:
                idx.last_rung = old_ready[qname].last_rung
            self._ready[qname] = idx
            self._lines[qname] = QueueLine(q.required_skills)
            for m in members:
                served[m].append(qname)
            steps = sorted(q.skill_relax, key=lambda s: s.after)
            cum: list[tuple[float, int]] = []
            low: int | None = None
            for s in steps:
                low = s.min_level if low is None else min(low, s.min_level)
                cum.append((s.after, low))
            self._relax[qname] = tuple(cum)
            self._queue_req[qname] = tuple(sorted(q.required_skills.items()))
            self._last_relax[qname] = low
            self._staffed[qname] = sum(1 for m in members if agents[m].state in STAFFED)
            self._logged_in[qname] = {m for m in members if agents[m].state != LOGGED_OUT}
        for aid, a in agents.items():
            a.queues = tuple(served[aid])
            self._device_agents.setdefault(a.cfg.device, []).append(aid)
            self._sync_index(a)
        self._flush_unindexed()
        self._dirty_agents.clear()
        self._dirty_callers.clear()
        for c in sorted(self._calls.values(), key=lambda c: c.seq):
            self._rebuild_caller(c, t, out)

    def _rebuild_caller(self, c: CallerRt, now: float, out: list[Effect]) -> None:
        if c.status == CONNECTED:
            return
        if c.queue not in self._config.queues:
            for aid in sorted(c.offered_to):
                a = self._agents[aid]
                out.append(CancelRing(c.call_id, (aid,), "reconfigured"))
                self._set_state(a, READY, None, None, now, out)
            out.append(Overflow(c.call_id, c.queue, "fallback", "queue_removed"))
            self._forget(c)
            return
        status = c.status
        if status == RINGING and not c.offered_to:
            status = WAITING
        if status == RESERVED:
            p = self._agents.get(c.preferred or "")
            status = RESERVED if p is not None and p.state != LOGGED_OUT else WAITING
        entered = c.entered
        self._place(c, c.queue, now, status)
        c.entered = entered
        self._schedule_queue_timers(c, now)

    # --------------------------------------------------------------- agents

    def _set_state(
        self,
        a: AgentRt,
        state: str,
        reason: str | None,
        call_id: str | None,
        now: float,
        out: list[Effect],
    ) -> None:
        was = a.state
        if state == READY and was not in (READY, OFFERED):
            a.idle_since = now
            a.idle_waits_phone = a.device_state in BLOCKING_DEVICE_STATES
        elif state != READY:
            a.idle_waits_phone = False
        if (was in STAFFED) != (state in STAFFED):
            d = 1 if state in STAFFED else -1
            for q in a.queues:
                self._staffed[q] += d
        if (was == LOGGED_OUT) != (state == LOGGED_OUT):
            for q in a.queues:
                if state == LOGGED_OUT:
                    self._logged_in[q].discard(a.id)
                else:
                    self._logged_in[q].add(a.id)
        a.state, a.reason, a.call_id, a.since = state, reason, call_id, now
        a.epoch += 1
        out.append(AgentStateChanged(a.id, state, reason, call_id))
        if state == LOGGED_OUT:
            a.pending = None
            for c in list(self._reserved.get(a.id, {}).values()):
                self._unreserve(c)
        self._sync_index(a)
        if state == LOGGED_OUT and was != LOGGED_OUT:
            self._overflow_unservable(a, now, out)

    def _block_after_ring(self, a: AgentRt, device_state: str, now: float) -> None:
        """A busy/unavailable ring: not offered until the device says otherwise, or
        ``RING_BLOCK_MAX`` seconds at most."""
        a.device_state = device_state
        a.block_epoch += 1
        self._timers.add(now + RING_BLOCK_MAX, RING_BLOCK_END, a.id, a.block_epoch)

    def _sync_index(self, a: AgentRt) -> None:
        """``a.in_index``: available and known as such, in the ready indexes or (until
        the end of the step) in ``_unindexed``."""
        avail = a.available
        if avail and not a.in_index:
            self._unindexed[a.id] = a
            a.in_index = True
            self._dirty_agents.add(a.id)
        elif not avail and a.in_index:
            if self._unindexed.pop(a.id, None) is None:
                for q in a.queues:
                    self._ready[q].remove(a)
            a.in_index = False

    def _flush_unindexed(self) -> None:
        if not self._unindexed:
            return
        for a in self._unindexed.values():
            for q in a.queues:
                self._ready[q].add(a)
        self._unindexed.clear()

    def _needs(self, c: CallerRt, now: float) -> Needs:
        """The caller's requirements after the relax steps reached at ``now``.

        Cached in ``c.needs`` with the wait up to which they hold (the next step); a
        queue change or a reconfiguration gives ``c.req`` a new tuple, so ``is`` tells
        (but for ``()``, a singleton: no requirement, nothing to relax)."""
        waited = now - c.arrival
        cache = c.needs
        if cache is not None and cache[1] is c.req and waited < cache[3]:
            return cache[2]
        cap: int | None = None
        until = float("inf")
        for after, low in self._relax.get(c.queue, ()):
            if waited < after:
                until = after
                break
            cap = low
        if cache is not None and cache[0] == cap and cache[1] is c.req:
            needs = cache[2]
        else:
            needs = tuple(
                (name, max(1, level if cap is None or cap > level else cap))
                for name, level in c.req
            )
        c.needs = (cap, c.req, needs, until)
        return needs

    def _fits(self, a: AgentRt, c: CallerRt, now: float) -> bool:
        skills = a.cfg.skills
        for name, need in self._needs(c, now):
            if skills.get(name, 0) < need:
                return False
        return True

    def _could_serve_ever(self, a: AgentRt, c: CallerRt) -> bool:
        """Whether ``a`` fits ``c`` at the queue's last relax step."""
        cap = self._last_relax[c.queue]
        skills = a.cfg.skills
        for name, level in c.req:
            need = level if cap is None or cap > level else cap
            if skills.get(name, 0) < max(need, 1):
                return False
        return True

    def _could_ever_serve(self, c: CallerRt) -> bool:
        agents = self._agents
        return any(self._could_serve_ever(agents[aid], c) for aid in self._logged_in[c.queue])

    def _overflow_unservable(self, a: AgentRt, now: float, out: list[Effect]) -> None:
        """``a`` logged out: in its queues with ``when_no_agents="overflow"``, the
        waiting callers nobody logged in could serve any more overflow now."""
        for qname in a.queues:
            if self._config.queues[qname].when_no_agents != "overflow":
                continue
            verdict: dict[tuple[tuple[str, int], ...], bool] = {}
            for cid in list(self._lines[qname].call_ids()):
                c = self._calls.get(cid)
                if c is None or c.queue != qname or c.status != WAITING:
                    continue
                keep = verdict.get(c.req)
                if keep is None:
                    keep = not self._could_serve_ever(a, c) or self._could_ever_serve(c)
                    verdict[c.req] = keep
                if not keep:
                    self._overflow(c, "no_agents", now, out)

    # --------------------------------------------------------------- callers

    def _enter_queue(self, c: CallerRt, qname: str, now: float, out: list[Effect]) -> None:
        q = self._config.queues[qname]
        first = not c.visited
        c.visited.add(qname)
        c.queue = qname
        self._stats[qname].joined += 1
        self._place(c, qname, now, WAITING)
        if q.when_no_agents == "overflow" and not self._could_ever_serve(c):
            self._overflow(c, "no_agents", now, out)
            return
        p = self._agents.get(c.preferred or "") if first else None
        if p is not None and p.state != LOGGED_OUT:
            if self._pref_timeout.get(c.call_id, q.preferred_agent_timeout) > 0 or p.available:
                self._unpick(c)
                c.status = RESERVED
                self._reserved.setdefault(p.id, {})[c.call_id] = c
        self._schedule_queue_timers(c, now)

    def _place(self, c: CallerRt, qname: str, now: float, status: str) -> None:
        """Put ``c`` in ``qname``'s structures with ``status`` (fresh queue stay)."""
        q = self._config.queues[qname]
        c.entered = now
        c.q_epoch += 1
        c.overdue = False
        c.priority = c.base_priority + q.priority
        if c.skills:
            req = dict(q.required_skills)
            for name, level in c.skills.items():
                req[name] = max(req.get(name, 0), level)
            c.req = tuple(sorted(req.items()))
        else:  # made once per queue (a new tuple at each reconfiguration: see _needs)
            c.req = self._queue_req[qname]
        c.status = status
        line = self._lines[qname]
        line.join(c)
        if status == WAITING:
            self._unlisted[c.call_id] = c
        elif status == RESERVED:
            self._reserved.setdefault(c.preferred or "", {})[c.call_id] = c
        if status in (WAITING, RESERVED):
            self._mark_caller(c)

    def _schedule_queue_timers(self, c: CallerRt, now: float) -> None:
        q = self._config.queues[c.queue]
        e = c.q_epoch
        if q.max_wait is not None:
            self._timers.add(max(now, c.entered + q.max_wait), MAX_WAIT, c.call_id, e)
        if q.announce_frequency > 0:
            due = c.entered + q.announce_first_after
            if due < now:
                due += -(-(now - due) // q.announce_frequency) * q.announce_frequency
            self._timers.add(due, ANNOUNCE, c.call_id, e)
        for after, _low in self._relax[c.queue]:
            if c.arrival + after > now:
                self._timers.add(c.arrival + after, RELAX, c.call_id, e)
        if c.status == RESERVED:
            self._timers.add(
                max(now, c.entered + self._pref_timeout.get(c.call_id, q.preferred_agent_timeout)),
                PREFERRED_END,
                c.call_id,
                e,
            )

    def _mark_caller(self, c: CallerRt) -> None:
        heapq.heappush(self._dirty_callers, (-c.priority, c.arrival, c.seq, c.call_id))

    def _unreserve(self, c: CallerRt) -> None:
        if c.status != RESERVED:
            return
        self._reserved.get(c.preferred or "", {}).pop(c.call_id, None)
        c.status = WAITING
        self._lines[c.queue].add_pickable(c)
        self._mark_caller(c)

    def _leave_queue(self, c: CallerRt) -> None:
        line = self._lines.get(c.queue)
        if line is None:
            return
        line.leave(c)
        if c.status == WAITING:
            self._unpick(c)
        elif c.status == RESERVED:
            self._reserved.get(c.preferred or "", {}).pop(c.call_id, None)
        c.q_epoch += 1

    def _unpick(self, c: CallerRt) -> None:
        """A waiting caller stops being one an agent may pick (offered, reserved, gone)."""
        if self._unlisted.pop(c.call_id, None) is None:
            self._lines[c.queue].remove_pickable(c)

    def _list_placed(self) -> None:
        """File the callers placed in this step and still waiting in their classes."""
        for c in self._unlisted.values():
            self._lines[c.queue].add_pickable(c)
        self._unlisted.clear()

    def _forget(self, c: CallerRt) -> None:
        self._calls.pop(c.call_id, None)
        self._pref_timeout.pop(c.call_id, None)
        c.q_epoch += 1
        c.ring_epoch += 1

    def _return_caller(self, c: CallerRt, now: float, out: list[Effect]) -> None:
        """An offer ended without an answer: back in line at the same place."""
        c.offered_to.clear()
        c.status = WAITING
        if c.overdue:
            self._overflow(c, "max_wait", now, out)
            return
        self._lines[c.queue].add_pickable(c)
        self._mark_caller(c)

    def _overflow(self, c: CallerRt, reason: str, now: float, out: list[Effect]) -> None:
        q = self._config.queues[c.queue]
        target = q.overflow or "fallback"
        self._leave_queue(c)
        self._stats[c.queue].overflowed += 1
        if target.startswith("queue:"):
            name = target[6:]
            if name in self._config.queues and name not in c.visited:
                out.append(QueueChanged(c.call_id, c.queue, name, reason))
                self._enter_queue(c, name, now, out)
                return
            target = "fallback"
        out.append(Overflow(c.call_id, c.queue, target, reason))
        self._forget(c)

    def _estimate(self, queue: str, position: int) -> float | None:
        aht = self._stats[queue].recent_aht()
        staffed = self._staffed[queue]
        if aht is None or staffed <= 0:
            return None
        return position * aht / staffed

    # --------------------------------------------------------------- timers

    def _timer_live(self, t: Timer) -> bool:
        _due, _seq, kind, target, epoch = t
        if kind == RING_BLOCK_END:
            a = self._agents.get(target)
            return a is not None and a.block_epoch == epoch
        if kind == WRAPUP_END:
            a = self._agents.get(target)
            return a is not None and a.epoch == epoch and a.state == WRAP_UP
        c = self._calls.get(target)
        if c is None:
            return False
        if kind == RING_GUARD:
            return c.status == RINGING and c.ring_epoch == epoch
        if c.q_epoch != epoch:
            return False
        if kind == RELAX:
            return c.status == WAITING
        if kind == PREFERRED_END:
            return c.status == RESERVED
        return c.status != CONNECTED

    def _fire_timers(self, now: float, out: list[Effect]) -> None:
        for t in self._timers.pop_due(now):
            if not self._timer_live(t):
                continue
            kind, target = t[2], t[3]
            if kind == RING_BLOCK_END:
                a = self._agents[target]
                a.device_state = "UNKNOWN"
                a.block_epoch += 1
                self._sync_index(a)
                continue
            if kind == WRAPUP_END:
                a = self._agents[target]
                self._end_wrapup(a, now, out, (a.pending or (READY, None)))
                continue
            c = self._calls[target]
            if kind == RING_GUARD:
                agents = sorted(c.offered_to)
                out.append(CancelRing(c.call_id, tuple(agents), "guard_timeout"))
                c.offered_to.clear()
                for aid in agents:
                    a = self._agents[aid]
                    if a.state == OFFERED and a.call_id == c.call_id:
                        self._set_state(a, NOT_READY, "no answer", None, now, out)
                self._return_caller(c, now, out)
            elif kind == MAX_WAIT:
                if c.status == RINGING:
                    c.overdue = True
                else:
                    self._overflow(c, "max_wait", now, out)
            elif kind == ANNOUNCE:
                q = self._config.queues[c.queue]
                if c.status != RINGING:
                    pos = self._lines[c.queue].position(c)
                    out.append(Announce(c.call_id, pos, self._estimate(c.queue, pos)))
                self._timers.add(now + q.announce_frequency, ANNOUNCE, c.call_id, c.q_epoch)
            elif kind == RELAX:
                self._mark_caller(c)
            elif kind == PREFERRED_END:
                self._unreserve(c)

    def _end_wrapup(
        self, a: AgentRt, now: float, out: list[Effect], target: tuple[str, str | None]
    ) -> None:
        raise NotImplementedError

    # --------------------------------------------------------------- dispatch

    def _best_caller_for(self, a: AgentRt, now: float) -> CallerRt | None:
        """The first caller, in service order, among ``a``'s queues that ``a`` fits.
        Only class heads are looked at (see waiting.py), in order, so the walk stops
        at the first fit in each queue."""
        best: CallerRt | None = None
        best_key: tuple[int, float, int, str] | None = None
        calls = self._calls
        needs_of = self._needs
        skills = a.cfg.skills
        tags = a.tags
        for qname in a.queues:
            heads = self._lines[qname].heads
            if not heads:
                continue
            for tag in tags if len(heads) > 1 else heads:
                lst = heads.get(tag)
                if lst is None:
                    continue
                for key in lst:
                    if best_key is not None and key >= best_key:
                        break
                    c = calls[key[3]]
                    cache = c.needs  # _needs(), its cached case inlined
                    if cache is not None and cache[1] is c.req and now - c.arrival < cache[3]:
                        needs = cache[2]
                    else:
                        needs = needs_of(c, now)
                    for name, need in needs:
                        if skills.get(name, 0) < need:
                            break
                    else:
                        best, best_key = c, key
                        break
        return best

    def _dispatch(self, now: float, out: list[Effect]) -> None:
        dirty = self._dirty_agents
        heap = self._dirty_callers
        calls = self._calls
        while dirty or heap:
            # 1. an agent who frees up takes the callers reserved for them first
            for aid in list(dirty):
                a = self._agents.get(aid)
                if a is None or not a.available:
                    dirty.discard(aid)
                    continue
                mine = self._reserved.get(aid)
                if mine:
                    c = min(mine.values(), key=lambda c: c.order_key)
                    self._offer(c, [aid], now, out)
            # 2. the first caller in service order that some freed agent could take
            best: CallerRt | None = None
            for aid in list(dirty):
                cand = self._best_caller_for(self._agents[aid], now)
                if cand is None:
                    dirty.discard(aid)
                elif best is None or cand.order_key < best.order_key:
                    best = cand
            # 3. ... or a caller who (re)joined the line, if it goes first
            while heap:
                prio, arrival, seq, cid = heap[0]
                hc = calls.get(cid)
                if hc is None or hc.status not in (WAITING, RESERVED) or hc.priority != -prio:
                    heapq.heappop(heap)
                    continue
                if best is None or (prio, arrival, seq) < best.order_key:
                    heapq.heappop(heap)
                    best = hc
                break
            if best is None:
                self._flush_unindexed()
                self._list_placed()
                return
            picked = self._pick_agents(best, now)
            if picked:
                self._offer(best, picked, now, out)
            else:
                for aid in list(dirty):  # cannot happen; never loop forever on it
                    if self._best_caller_for(self._agents[aid], now) is best:
                        dirty.discard(aid)
        self._flush_unindexed()
        self._list_placed()

    def _pick_agents(self, c: CallerRt, now: float) -> list[str]:
        if c.status == RESERVED:
            p = self._agents.get(c.preferred or "")
            return [p.id] if p is not None and p.available else []
        idx = self._ready[c.queue]
        pending: list[AgentRt] = []
        if self._unindexed:
            if len(self._unindexed) > MAX_PENDING:
                self._flush_unindexed()
            else:
                mp = idx.member_pos
                pending = [a for aid, a in self._unindexed.items() if aid in mp]
        needs = self._needs(c, now)

        def eligible(a: AgentRt) -> bool:
            skills = a.cfg.skills
            for name, need in needs:
                if skills.get(name, 0) < need:
                    return False
            return True

        return idx.pick(c, self._agents, eligible, self._rng, needs, pending)

    def _offer(self, c: CallerRt, agent_ids: list[str], now: float, out: list[Effect]) -> None:
        q = self._config.queues[c.queue]
        if c.status == WAITING:
            self._unpick(c)
        elif c.status == RESERVED:
            self._reserved.get(c.preferred or "", {}).pop(c.call_id, None)
        c.status = RINGING
        c.offered_to = set(agent_ids)
        c.ring_epoch += 1
        idx = self._ready[c.queue]
        if len(agent_ids) == 1 and agent_ids[0] in idx.member_pos:
            idx.last_rung = idx.member_pos[agent_ids[0]]
        devices = tuple([self._agents[aid].cfg.device for aid in agent_ids])
        out.append(Ring(c.call_id, tuple(agent_ids), devices, q.ring_timeout))
        for aid in agent_ids:
            self._set_state(self._agents[aid], OFFERED, None, c.call_id, now, out)
            self._dirty_agents.discard(aid)
        self._timers.add(
            now + q.ring_timeout + RING_GUARD_GRACE, RING_GUARD, c.call_id, c.ring_epoch
        )
