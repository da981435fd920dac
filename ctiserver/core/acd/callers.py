"""The callers' side of the engine: their records, their queue stays, overflow.

``CallerBook`` puts callers in and takes them out of their queues' lines, reserves them
for a preferred agent, schedules their queue timers and overflows them. It never
changes an agent's state (agents.py does); the dispatcher (dispatch.py) takes the
callers it marks. The policies are in docs/acd.md.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

from .events import CancelRing, Effect, Overflow, QueueChanged
from .runtime import NOBODY
from .skills import Needs, caller_req, capped, fits, needs_at
from .states import LOGGED_OUT, RESERVED, RINGING, WAITING, CallerState
from .timers import ANNOUNCE, MAX_WAIT, PREFERRED_END, RELAX, Timers

if TYPE_CHECKING:
    from .queues import QueueRt
    from .runtime import AgentRt, CallerRt

DirtyEntry = tuple[int, float, int, str]  # (-priority, arrival, seq, call id)


class CallerBook:
    def __init__(
        self, agents: dict[str, AgentRt], queues: dict[str, QueueRt], timers: Timers
    ) -> None:
        self.agents = agents  # shared with the engine's other parts, changed in place
        self.queues = queues
        self.timers = timers
        self.calls: dict[str, CallerRt] = {}  # every caller until answered-and-ended or gone
        self.pref_timeout: dict[str, float] = {}  # per-call preferred-agent wait (rules)
        self.reserved: dict[str, dict[str, CallerRt]] = {}  # preferred agent -> callers
        # callers (re)joining a line in this step, in service order: dispatch's input
        self.dirty: list[DirtyEntry] = []
        # callers placed waiting in this step, not yet filed in their line's classes
        # (waiting.py): a caller served at once never is (the end of dispatch); until
        # then they are in ``dirty``, which is how dispatch sees them
        self.unlisted: dict[str, CallerRt] = {}
        # callers who started a queue stay in this step, their relax timers not set yet:
        # set at the end of the step (``time_placed``) unless they are ringing by then,
        # else when their offer fails (``return_caller``). A RELAX timer only ever marks
        # a caller who is waiting when it fires, and a caller back in line is marked
        # anyway: a caller served at once needs none (no heap entry, no tuple kept).
        self.untimed: dict[str, CallerRt] = {}

    def needs(self, c: CallerRt, now: float) -> Needs:
        q = self.queues.get(c.queue)
        if q is None:
            return needs_at(c, (), now)
        return needs_at(c, q.relax, now, q.needs_memo)

    # ------------------------------------------------------------------ queue stays

    def enter_queue(self, c: CallerRt, qname: str, now: float, out: list[Effect],
                    entered: float | None = None) -> None:
        """``entered``: when the caller entered the queue, if before ``now`` (a caller taken
        back after a restart); its timers then count from there, those past due at once."""
        q = self.queues[qname]
        first = not c.came_from
        c.queue = qname
        q.stats.joined += 1
        self.place(c, q, now, WAITING)
        if entered is not None:
            c.entered = entered
        if q.cfg.when_no_agents == "overflow" and not self._could_ever_serve(c):
            self.overflow(c, "no_agents", now, out)
            return
        p = self.agents.get(c.preferred or "") if first else None
        if p is not None and p.state != LOGGED_OUT:
            wait = self.pref_timeout.get(c.call_id, q.cfg.preferred_agent_timeout)
            if wait > 0 or p.available:
                self.unpick(c)
                c.status = RESERVED
                self.reserved.setdefault(p.id, {})[c.call_id] = c
        self.schedule_queue_timers(c, now)

    def place(self, c: CallerRt, q: QueueRt, now: float, status: CallerState) -> None:
        """Put ``c`` in ``q``'s structures with ``status`` (fresh queue stay)."""
        c.entered = now
        c.q_epoch += 1
        c.overdue = False
        c.priority = c.base_priority + q.cfg.priority
        # made once per queue (a new tuple at each reconfiguration: see skills.needs_at)
        c.req = caller_req(q.cfg.required_skills, c.skills) if c.skills else q.req
        c.status = status
        q.line.join(c)
        if status is WAITING:
            self.unlisted[c.call_id] = c
        elif status is RESERVED:
            self.reserved.setdefault(c.preferred or "", {})[c.call_id] = c
        if status is WAITING or status is RESERVED:
            self.mark(c)

    def schedule_queue_timers(self, c: CallerRt, now: float) -> None:
        qrt = self.queues[c.queue]
        q = qrt.cfg
        e = c.q_epoch
        timers = self.timers
        if q.max_wait is not None:
            timers.add(max(now, c.entered + q.max_wait), MAX_WAIT, c.call_id, e)
        if q.announce_frequency > 0:
            due = c.entered + q.announce_first_after
            if due < now:
                due += -(-(now - due) // q.announce_frequency) * q.announce_frequency
            timers.add(due, ANNOUNCE, c.call_id, e)
        if qrt.relax:
            self.untimed[c.call_id] = c
        if c.status is RESERVED:
            wait = self.pref_timeout.get(c.call_id, q.preferred_agent_timeout)
            timers.add(max(now, c.entered + wait), PREFERRED_END, c.call_id, e)

    def relax_timers(self, c: CallerRt, now: float) -> None:
        """The RELAX timers of ``c``'s queue stay still ahead, once per stay."""
        e = c.q_epoch
        if c.relax_epoch == e:
            return
        c.relax_epoch = e
        timers = self.timers
        for after, _low in self.queues[c.queue].relax:
            if c.arrival + after > now:
                timers.add(c.arrival + after, RELAX, c.call_id, e)

    def time_placed(self, now: float) -> None:
        """The end of a step: relax timers for the callers who started a queue stay in it
        and are in line (not ringing, not gone)."""
        calls = self.calls
        for cid, c in self.untimed.items():
            if (c.status is WAITING or c.status is RESERVED) and calls.get(cid) is c:
                self.relax_timers(c, now)
        self.untimed.clear()

    def mark(self, c: CallerRt) -> None:
        """Dispatch looks at ``c`` in this step."""
        heapq.heappush(self.dirty, (-c.priority, c.arrival, c.seq, c.call_id))

    def unreserve(self, c: CallerRt) -> None:
        if c.status is not RESERVED:
            return
        self.reserved.get(c.preferred or "", {}).pop(c.call_id, None)
        c.status = WAITING
        self.queues[c.queue].line.add_pickable(c)
        self.mark(c)

    def leave_queue(self, c: CallerRt) -> None:
        q = self.queues.get(c.queue)
        if q is None:
            return
        q.line.leave(c)
        if c.status is WAITING:
            self.unpick(c)
        elif c.status is RESERVED:
            self.reserved.get(c.preferred or "", {}).pop(c.call_id, None)
        c.q_epoch += 1

    def unpick(self, c: CallerRt) -> None:
        """A waiting caller stops being one an agent may pick (offered, reserved, gone)."""
        if self.unlisted.pop(c.call_id, None) is None:
            self.queues[c.queue].line.remove_pickable(c)

    def list_placed(self) -> None:
        """File the callers placed in this step and still waiting in their classes."""
        queues = self.queues
        for c in self.unlisted.values():
            queues[c.queue].line.add_pickable(c)
        self.unlisted.clear()

    def forget(self, c: CallerRt) -> None:
        self.calls.pop(c.call_id, None)
        self.unlisted.pop(c.call_id, None)  # placed in this step by a timer, then removed
        self.pref_timeout.pop(c.call_id, None)
        c.q_epoch += 1
        c.ring_epoch += 1

    def return_caller(self, c: CallerRt, now: float, out: list[Effect]) -> None:
        """An offer ended without an answer: back in line at the same place."""
        c.offered_to = NOBODY
        c.status = WAITING
        if c.overdue:
            self.overflow(c, "max_wait", now, out)
            return
        self.queues[c.queue].line.add_pickable(c)
        self.mark(c)
        self.relax_timers(c, now)  # rung at once when it joined: not set yet

    def withdraw(self, a: AgentRt, reason: str, now: float, out: list[Effect]) -> None:
        """Take a ringing agent off its offer (the agent's own state is set by the caller)."""
        c = self.calls.get(a.call_id or "")
        if c is None or c.status is not RINGING or a.id not in c.offered_to:
            return
        out.append(CancelRing(c.call_id, (a.id,), reason))
        c.offered_to = c.offered_to - {a.id}
        if not c.offered_to:
            self.return_caller(c, now, out)

    def overflow(self, c: CallerRt, reason: str, now: float, out: list[Effect]) -> None:
        q = self.queues[c.queue]
        target = q.cfg.overflow or "fallback"
        self.leave_queue(c)
        q.stats.overflowed += 1
        if target.startswith("queue:"):
            name = target[6:]
            if name in self.queues and name != c.queue and name not in c.came_from:
                out.append(QueueChanged(c.call_id, c.queue, name, reason))
                c.came_from = (*c.came_from, c.queue)
                self.enter_queue(c, name, now, out)
                return
            target = "fallback"
        out.append(Overflow(c.call_id, c.queue, target, reason))
        self.forget(c)

    # ------------------------------------------------------------------ nobody to serve

    def _could_serve_ever(self, a: AgentRt, c: CallerRt) -> bool:
        """Whether ``a`` fits ``c`` at the queue's last relax step."""
        return fits(a.cfg.skills, capped(c.req, self.queues[c.queue].last_relax))

    def _could_ever_serve(self, c: CallerRt) -> bool:
        agents = self.agents
        return any(
            self._could_serve_ever(agents[aid], c) for aid in self.queues[c.queue].logged_in
        )

    def agent_logged_out(self, a: AgentRt, was_in: bool, now: float, out: list[Effect]) -> None:
        """``a`` logged out: the callers reserved for them wait for anyone now; if ``a``
        was logged in (``was_in``), in its queues with ``when_no_agents="overflow"``,
        the waiting callers nobody logged in could serve any more overflow."""
        for c in list(self.reserved.get(a.id, {}).values()):
            self.unreserve(c)
        if not was_in:
            return
        for qname in a.queues:
            q = self.queues[qname]
            if q.cfg.when_no_agents != "overflow":
                continue
            verdict: dict[Needs, bool] = {}
            for cid in list(q.line.call_ids()):
                w = self.calls.get(cid)
                if w is None or w.queue != qname or w.status is not WAITING:
                    continue
                keep = verdict.get(w.req)
                if keep is None:
                    keep = not self._could_serve_ever(a, w) or self._could_ever_serve(w)
                    verdict[w.req] = keep
                if not keep:
                    self.overflow(w, "no_agents", now, out)
