"""The pop service's ports: what it needs from the CRM store, and what it publishes through.

``ctiserver.store.Store`` offers all of ``PopStore``. The notifier side is
``ctiserver.notify.Publisher`` (one operation, ``publish_nowait``), re-exported here:
the daemon's is a ``FanOut`` of the WebSocket hub and MQTT.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from typing import Any, Protocol

from ctiserver.core.records import Identification, InteractionRecord
from ctiserver.notify import Publisher

__all__ = [
    "AgentStateStore", "CrmLookup", "InteractionStore", "PopStore", "Publisher", "Screens",
]


class CrmLookup(Protocol):
    """Who owns a number, with the first owner's last ``history`` interactions."""

    def identify(self, number: str, history: int = 5) -> Awaitable[Identification]: ...


class InteractionStore(Protocol):
    """Where interaction records go. Either way of saving merges a record into the one of
    its call (``None`` fields are kept)."""

    async def save_interaction(self, record: InteractionRecord) -> Any: ...

    def save_interaction_nowait(self, record: InteractionRecord) -> asyncio.Future[Any]:
        """The same, from synchronous code: the future of its outcome."""
        ...


class AgentStateStore(Protocol):
    """Where the agents' states that survive a restart are kept."""

    async def save_agent_state(
        self, agent_id: str, state: str, reason: str | None = None
    ) -> None: ...


class PopStore(CrmLookup, InteractionStore, AgentStateStore, Protocol):
    """Everything the pop service needs from the CRM store."""


class Screens(Protocol):
    """What the agent's page asks of the pops (``PopService`` offers it)."""

    def current(self, agent_id: str) -> dict[str, Any] | None:
        """The pop on this agent's screen (for a page reload), or None."""

    def shown_to(self, agent_id: str, call_id: str) -> bool: ...

    async def dispose(self, call_id: str, agent_id: str, disposition: str, notes: str) -> bool:
        """Record the agent's disposition and notes. True when already in the database."""

    async def link_customer(self, call_id: str, customer: Mapping[str, Any]) -> None:
        """The agent created the caller's record: the pop and interaction point to it."""
