"""The engine's read model for dashboards (``AcdView``) and its JSON-able dict.

Built from the engine's public, read-only records (``Engine.agents``, ``queues``,
``calls``, ``config``). Times: ``since`` is epoch seconds; durations are seconds
(float) except ``idle_ms``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .model import AcdConfig
from .queues import QueueRt
from .runtime import AgentRt, CallerRt
from .states import READY, RINGING, AgentState, CallerState

# the snapshot's word for a caller's state: a ringing caller has always been "offered"
# there (the caller's and the agent's words for a ring were the same until they
# became two enums)
_CALLER_STATE_WORD = {s: s.value for s in CallerState} | {RINGING: "offered"}


@dataclass(frozen=True, slots=True)
class AgentView:
    id: str
    name: str
    state: AgentState
    reason: str | None
    since: float
    call_id: str | None
    device_state: str
    offerable: bool  # ready and the phone free: may be offered a call now
    idle_ms: float  # in the current ready period; 0 when not ready
    calls: int
    talk: float
    avg_talk: float
    avg_idle: float | None
    queues: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CallerView:
    call_id: str
    position: int
    wait: float  # in this queue
    total_wait: float  # since arrival in the first queue
    priority: int
    state: CallerState
    offered_to: tuple[str, ...]
    preferred_agent: str | None


@dataclass(frozen=True, slots=True)
class QueueView:
    name: str
    strategy: str
    waiting: tuple[CallerView, ...]  # every caller not answered yet, in service order
    joined: int
    answered: int
    abandoned: int
    overflowed: int
    service_level_pct: float | None
    service_level_threshold: float
    avg_wait: float | None
    avg_handle: float | None
    estimated_wait: float | None  # for a caller joining now
    staffed: int
    available: int
    logged_in: int


@dataclass(frozen=True, slots=True)
class AcdView:
    now: float
    agents: tuple[AgentView, ...]
    queues: tuple[QueueView, ...]


class EngineState(Protocol):
    """The engine's public, read-only records (``Engine`` offers them)."""

    @property
    def config(self) -> AcdConfig: ...
    @property
    def agents(self) -> Mapping[str, AgentRt]: ...
    @property
    def queues(self) -> Mapping[str, QueueRt]: ...
    @property
    def calls(self) -> Mapping[str, CallerRt]: ...


def read_model(eng: EngineState, now: float) -> AcdView:
    agents = tuple(
        AgentView(
            id=a.id,
            name=a.cfg.name,
            state=a.state,
            reason=a.reason,
            since=a.since,
            call_id=a.call_id,
            device_state=a.device_state,
            offerable=a.available,
            idle_ms=(now - a.idle_since) * 1000.0 if a.state is READY else 0.0,
            calls=a.calls,
            talk=a.talk_total,
            avg_talk=a.avg_talk,
            avg_idle=a.avg_idle,
            queues=a.queues,
        )
        for a in eng.agents.values()
    )
    calls = eng.calls
    queues = []
    for qname, qcfg in eng.config.queues.items():
        q = eng.queues[qname]
        st = q.stats
        waiting = []
        for pos, cid in enumerate(q.line.call_ids(), start=1):
            c = calls[cid]
            waiting.append(
                CallerView(
                    call_id=cid,
                    position=pos,
                    wait=now - c.entered,
                    total_wait=now - c.arrival,
                    priority=c.priority,
                    state=c.status,
                    offered_to=tuple(sorted(c.offered_to)) if c.status is RINGING else (),
                    preferred_agent=c.preferred,
                )
            )
        queues.append(
            QueueView(
                name=qname,
                strategy=str(qcfg.strategy),
                waiting=tuple(waiting),
                joined=st.joined,
                answered=st.answered,
                abandoned=st.abandoned,
                overflowed=st.overflowed,
                service_level_pct=st.service_level(),
                service_level_threshold=qcfg.service_level,
                avg_wait=st.wait_sum / st.answered if st.answered else None,
                avg_handle=st.handle_sum / st.handle_n if st.handle_n else None,
                estimated_wait=q.estimate(len(q.line) + 1),
                staffed=q.staffed,
                available=len(q.ready),
                logged_in=len(q.logged_in),
            )
        )
    return AcdView(now, agents, tuple(queues))


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(x, nd)


def build_snapshot(view: AcdView) -> dict[str, Any]:
    agents = [
        {
            "id": a.id,
            "name": a.name,
            "state": a.state.value,
            "reason": a.reason,
            "since": a.since,
            "call_id": a.call_id,
            "device_state": a.device_state,
            "offerable": a.offerable,
            "idle_ms": round(a.idle_ms, 3),
            "calls": a.calls,
            "talk": _r(a.talk),
            "avg_talk": _r(a.avg_talk),
            "avg_idle": _r(a.avg_idle),
            "queues": list(a.queues),
        }
        for a in view.agents
    ]
    queues = [
        {
            "name": q.name,
            "strategy": q.strategy,
            "waiting": [
                {
                    "call_id": w.call_id,
                    "position": w.position,
                    "wait": _r(w.wait),
                    "total_wait": _r(w.total_wait),
                    "priority": w.priority,
                    "state": _CALLER_STATE_WORD[w.state],
                    "offered_to": list(w.offered_to),
                    "preferred_agent": w.preferred_agent,
                }
                for w in q.waiting
            ],
            "joined": q.joined,
            "answered": q.answered,
            "abandoned": q.abandoned,
            "overflowed": q.overflowed,
            "service_level_pct": _r(q.service_level_pct, 1),
            "service_level_threshold": q.service_level_threshold,
            "avg_wait": _r(q.avg_wait),
            "avg_handle": _r(q.avg_handle),
            "estimated_wait": _r(q.estimated_wait, 1),
            "staffed": q.staffed,
            "available": q.available,
            "logged_in": q.logged_in,
        }
        for q in view.queues
    ]
    return {"now": view.now, "agents": agents, "queues": queues}
