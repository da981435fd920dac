"""The engine's real-time view for dashboards: a JSON-able dict.

Times: ``since`` is epoch seconds; durations are seconds (float) except ``idle_ms``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .runtime import READY, RINGING

if TYPE_CHECKING:
    from .scheduler import Scheduler


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(x, nd)


def build_snapshot(eng: Scheduler, now: float) -> dict[str, Any]:
    agents = []
    for a in eng._agents.values():
        idle = (now - a.idle_since) * 1000.0 if a.state == READY else 0.0
        agents.append(
            {
                "id": a.id,
                "name": a.cfg.name,
                "state": a.state,
                "reason": a.reason,
                "since": a.since,
                "call_id": a.call_id,
                "device_state": a.device_state,
                "offerable": a.available,
                "idle_ms": round(idle, 3),
                "calls": a.calls,
                "talk": _r(a.talk_total),
                "avg_talk": _r(a.avg_talk),
                "avg_idle": _r(a.avg_idle),
                "queues": list(a.queues),
            }
        )
    queues = []
    for qname, q in eng._config.queues.items():
        st = eng._stats[qname]
        line = eng._lines[qname]
        waiting = []
        for pos, cid in enumerate(line.call_ids(), start=1):
            c = eng._calls[cid]
            waiting.append(
                {
                    "call_id": cid,
                    "position": pos,
                    "wait": _r(now - c.entered),
                    "total_wait": _r(now - c.arrival),
                    "priority": c.priority,
                    "state": c.status,
                    "offered_to": sorted(c.offered_to) if c.status == RINGING else [],
                    "preferred_agent": c.preferred,
                }
            )
        ready = len(eng._ready[qname])
        queues.append(
            {
                "name": qname,
                "strategy": str(q.strategy),
                "waiting": waiting,
                "joined": st.joined,
                "answered": st.answered,
                "abandoned": st.abandoned,
                "overflowed": st.overflowed,
                "service_level_pct": _r(st.service_level(), 1),
                "service_level_threshold": q.service_level,
                "avg_wait": _r(st.wait_sum / st.answered if st.answered else None),
                "avg_handle": _r(st.handle_sum / st.handle_n if st.handle_n else None),
                "estimated_wait": _r(eng._estimate(qname, len(line) + 1), 1),
                "staffed": eng._staffed[qname],
                "available": ready,
                "logged_in": len(eng._logged_in[qname]),
            }
        )
    return {"now": now, "agents": agents, "queues": queues}
