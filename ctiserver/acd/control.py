"""Agents' and supervisors' controls on the ACD, for the web layer: requests go through
the task that owns the engine, reads are the engine's snapshot in the web's shape."""

from __future__ import annotations

import time
from typing import Any

from ctiserver.acd.ports import AgentControlError
from ctiserver.acd.runner import AcdRunner
from ctiserver.core.acd import events as ev
from ctiserver.core.acd.engine import AcdError


class EngineControl:
    """AgentControl for the web layer, on top of the task that owns the engine."""

    def __init__(self, runner: AcdRunner) -> None:
        self.runner = runner

    async def _do(self, event: ev.Event) -> None:
        try:
            await self.runner.request(event)
        except AcdError as exc:
            raise AgentControlError(str(exc)) from None

    async def login(self, agent_id: str) -> None:
        # from the page, an agent signs in not ready ("login") and presses Ready when set
        await self._do(ev.AgentLoggedIn(agent_id, ready=False))

    async def logout(self, agent_id: str) -> None:
        await self._do(ev.AgentLoggedOut(agent_id))

    async def pause(self, agent_id: str, reason: str) -> None:
        await self._do(ev.AgentPaused(agent_id, reason or "pause"))

    async def ready(self, agent_id: str) -> None:
        await self._do(ev.AgentReady(agent_id))

    def snapshot(self) -> dict[str, Any]:
        """The engine's snapshot in the web port's shape: agents and queues keyed by id."""
        snap = self.runner.engine.snapshot(time.time())
        agents = {a["id"]: a for a in snap.get("agents", [])}
        queues = {}
        for q in snap.get("queues", []):
            waiting = q.get("waiting") or []
            queues[q["name"]] = {
                **{k: v for k, v in q.items() if k not in ("name", "waiting")},
                "waiting": len(waiting),
                "longest_wait": max((w["total_wait"] or 0 for w in waiting), default=0),
            }
        return {**snap, "agents": agents, "queues": queues}

    def current_call(self, agent_id: str) -> dict[str, Any] | None:
        for agent in self.runner.engine.snapshot(time.time()).get("agents", []):
            if agent["id"] == agent_id and agent.get("call_id"):
                return {"call_id": agent["call_id"], "state": agent["state"]}
        return None
