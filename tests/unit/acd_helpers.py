"""Shared builders for the ACD engine tests: real configs, real engine, a fake clock."""

from __future__ import annotations

import random
from collections.abc import Iterable

from ctiserver.core.acd.engine import Engine
from ctiserver.core.acd.events import (
    AgentLoggedIn,
    AgentStateChanged,
    Effect,
    Event,
    Ring,
)
from ctiserver.core.acd.model import AcdConfig, AgentConfig, QueueConfig


def agent(aid: str, *queues: str, skills: dict[str, int] | None = None) -> AgentConfig:
    return AgentConfig(aid, aid.upper(), f"PJSIP/{aid}", dict(skills or {}), tuple(queues))


def config(queues: Iterable[QueueConfig], agents: Iterable[AgentConfig]) -> AcdConfig:
    return AcdConfig({q.name: q for q in queues}, {a.id: a for a in agents})


class Harness:
    """An engine plus the time; every step returns the effects of that step."""

    def __init__(self, cfg: AcdConfig, t: float = 1000.0, seed: int = 1) -> None:
        self.engine = Engine(cfg, rng=random.Random(seed))
        self.t = t
        self.log: list[Effect] = []

    def at(self, t: float, event: Event) -> list[Effect]:
        self.t = t
        out = self.engine.handle(event, t)
        self.log.extend(out)
        return out

    def after(self, dt: float, event: Event) -> list[Effect]:
        return self.at(self.t + dt, event)

    def login(self, *agent_ids: str, dt: float = 1.0) -> None:
        for aid in agent_ids:
            self.after(dt, AgentLoggedIn(aid))

    def state(self, agent_id: str) -> str:
        return self.engine.agent_state(agent_id)


def rings(effects: Iterable[Effect]) -> list[Ring]:
    return [e for e in effects if isinstance(e, Ring)]


def rung(effects: Iterable[Effect]) -> list[tuple[str, tuple[str, ...]]]:
    """(call, agents) of every Ring effect."""
    return [(r.call_id, r.agent_ids) for r in rings(effects)]


def states(effects: Iterable[Effect]) -> list[tuple[str, str, str | None]]:
    return [(e.agent_id, e.state, e.reason) for e in effects if isinstance(e, AgentStateChanged)]


def of(effects: Iterable[Effect], kind: type) -> list[Effect]:
    return [e for e in effects if isinstance(e, kind)]
