"""What agents' pages and supervisors' views may ask of the ACD (``control.EngineControl``
implements it on top of the task that owns the engine)."""

from __future__ import annotations

from typing import Any, Protocol


class AgentControlError(Exception):
    """The ACD refuses the command (unknown agent, not logged in…). Shown to the agent."""


class AgentControl(Protocol):
    async def login(self, agent_id: str) -> None: ...

    async def logout(self, agent_id: str) -> None: ...

    async def pause(self, agent_id: str, reason: str) -> None: ...

    async def ready(self, agent_id: str) -> None: ...

    def snapshot(self) -> dict[str, Any]:
        """The real-time view for supervisors. Expected shape (extra keys welcome)::

        {"agents": {"1001": {"state": "ready", "reason": None, "call_id": None, ...}},
         "queues": {"support": {"waiting": 2, "longest_wait": 31.5, ...}}}
        """
        ...

    def current_call(self, agent_id: str) -> dict[str, Any] | None:
        """The call the agent is offered / on / wrapping up, e.g.
        ``{"call_id": "...", "state": "on_call"}``, or None."""
        ...
