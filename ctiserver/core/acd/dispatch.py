"""The matching loop: offer callers to agents until no available agent fits any caller.

``Dispatcher.dispatch`` runs at the end of every engine step. It looks only at what
changed in the step: the agents who became available (``AgentMachine.dirty``) and the
callers who (re)joined a line (``CallerBook.dirty``), and resolves them in service
order (docs/acd.md, "Order of callers").
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Mapping
from typing import TYPE_CHECKING

from .events import Effect, Ring
from .model import Strategy
from .runtime import NO_SKILLS, CallerRt
from .skills import caller_req, fits, needs_at
from .states import BLOCKING_DEVICE_STATES, READY, RESERVED, RINGING, WAITING, AgentInput
from .timers import RING_GUARD, Timers

if TYPE_CHECKING:
    from .agents import AgentMachine
    from .callers import CallerBook
    from .queues import QueueRt
    from .runtime import AgentRt

RING_GUARD_GRACE = 5.0  # seconds after the ring timeout before the engine gives up itself
# more agents than this freed in one step: put them all in the indexes before picking
MAX_PENDING = 8

_OFFER = AgentInput.OFFER
# a caller of these queues may ring several agents, or one not known beforehand
_NOT_PRE_DECIDED = frozenset({Strategy.RING_ALL, Strategy.RANDOM})


class Dispatcher:
    def __init__(
        self,
        machine: AgentMachine,
        callers: CallerBook,
        queues: dict[str, QueueRt],
        timers: Timers,
        rng: random.Random,
    ) -> None:
        self.machine = machine
        self.callers = callers
        self.queues = queues
        self.timers = timers
        self.rng = rng

    def dispatch(self, now: float, out: list[Effect]) -> None:
        machine = self.machine
        callers = self.callers
        agents = machine.agents
        dirty = machine.dirty
        heap = callers.dirty
        calls = callers.calls
        reserved = callers.reserved
        while dirty or heap:
            # 1. an agent who frees up takes the callers reserved for them first, else
            # 2. the first caller in service order that some freed agent could take
            # (one pass: offering a reserved caller changes no agent's best caller)
            best: CallerRt | None = None
            for aid in list(dirty):
                a = agents.get(aid)
                if a is None or a.state is not READY or a.device_state in BLOCKING_DEVICE_STATES:
                    dirty.discard(aid)  # not available (AgentRt.available, inlined)
                    continue
                mine = reserved.get(aid)
                if mine:
                    c = min(mine.values(), key=lambda c: c.order_key)
                    self.offer(c, [aid], now, out)
                    continue
                cand = self.best_caller_for(a, now)
                if cand is None:
                    dirty.discard(aid)
                elif best is None or cand.order_key < best.order_key:
                    best = cand
            # 3. ... or a caller who (re)joined the line, if it goes first
            while heap:
                prio, arrival, seq, cid = heap[0]
                hc = calls.get(cid)
                if (
                    hc is None
                    or (hc.status is not WAITING and hc.status is not RESERVED)
                    or hc.priority != -prio
                ):
                    heapq.heappop(heap)
                    continue
                if best is None or (prio, arrival, seq) < best.order_key:
                    heapq.heappop(heap)
                    best = hc
                break
            if best is None:
                break
            picked = self.pick_agents(best, now)
            if picked:
                self.offer(best, picked, now, out)
            else:
                for aid in list(dirty):  # cannot happen; never loop forever on it
                    if self.best_caller_for(agents[aid], now) is best:
                        dirty.discard(aid)
        machine.flush_unindexed()
        callers.list_placed()
        if callers.untimed:
            callers.time_placed(now)

    def best_caller_for(self, a: AgentRt, now: float) -> CallerRt | None:
        """The first caller, in service order, among ``a``'s queues that ``a`` fits.
        Only class heads are looked at (see waiting.py), in order, so the walk stops
        at the first fit in each queue."""
        best: CallerRt | None = None
        best_key: tuple[int, float, int, str] | None = None
        calls = self.callers.calls
        queues = self.queues
        skills = a.cfg.skills
        tags = a.tags
        for qname in a.queues:
            q = queues[qname]
            heads = q.line.heads
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
                    # needs_at(), its cached case inlined
                    if c.needs_req is c.req and now - c.arrival < c.needs_until:
                        needs = c.needs
                    else:
                        needs = needs_at(c, q.relax, now, q.needs_memo)
                    for name, need in needs:  # fits(), inlined
                        if skills.get(name, 0) < need:
                            break
                    else:
                        best, best_key = c, key
                        break
        return best

    def peek(self, queue: str, priority: int, skills: Mapping[str, int], now: float,
             seq: int) -> str | None:
        """The one agent a caller joining ``queue`` at ``now`` would be rung at once,
        changing nothing; None when the caller would wait (someone already waits in the
        queue, no available agent fits) or ring several agents (ring-all, random)."""
        q = self.queues.get(queue)
        if q is None or q.cfg.strategy in _NOT_PRE_DECIDED or any(q.line.heads.values()):
            return None
        c = CallerRt("", queue, priority, dict(skills) if skills else NO_SKILLS, None, now, seq)
        c.priority = c.base_priority + q.cfg.priority
        c.req = caller_req(q.cfg.required_skills, c.skills) if c.skills else q.req
        c.entered = now
        picked = self.pick_agents(c, now)
        return picked[0] if len(picked) == 1 else None

    def pick_agents(self, c: CallerRt, now: float) -> list[str]:
        machine = self.machine
        if c.status is RESERVED:
            p = machine.agents.get(c.preferred or "")
            return [p.id] if p is not None and p.available else []
        q = self.queues[c.queue]
        idx = q.ready
        pending: list[AgentRt] = []
        unindexed = machine.unindexed
        if unindexed:
            if len(unindexed) > MAX_PENDING:
                machine.flush_unindexed()
            else:
                mp = idx.member_pos
                for aid, a in unindexed.items():  # usually the one agent who freed up
                    if aid in mp:
                        pending.append(a)
        needs = needs_at(c, q.relax, now, q.needs_memo)

        def eligible(a: AgentRt) -> bool:
            return fits(a.cfg.skills, needs)

        return idx.pick(c, machine.agents, eligible, self.rng, needs, pending)

    def offer(self, c: CallerRt, agent_ids: list[str], now: float, out: list[Effect]) -> None:
        callers = self.callers
        qrt = self.queues[c.queue]
        q = qrt.cfg
        if c.status is WAITING:
            callers.unpick(c)
        elif c.status is RESERVED:
            callers.reserved.get(c.preferred or "", {}).pop(c.call_id, None)
        c.status = RINGING
        c.offered_to = frozenset(agent_ids)
        c.ring_epoch += 1
        idx = qrt.ready
        if len(agent_ids) == 1 and agent_ids[0] in idx.member_pos:
            idx.last_rung = idx.member_pos[agent_ids[0]]
        machine = self.machine
        agents = machine.agents
        if len(agent_ids) == 1:  # all strategies but ring-all
            ids: tuple[str, ...] = (agent_ids[0],)
            devices: tuple[str, ...] = (agents[agent_ids[0]].cfg.device,)
        else:
            ids = tuple(agent_ids)
            devices = tuple([agents[aid].cfg.device for aid in agent_ids])
        out.append(Ring(c.call_id, ids, devices, q.ring_timeout))
        for aid in agent_ids:
            machine.apply(agents[aid], _OFFER, now, out, call_id=c.call_id)
            machine.dirty.discard(aid)
        self.timers.add(
            now + q.ring_timeout + RING_GUARD_GRACE, RING_GUARD, c.call_id, c.ring_epoch
        )
