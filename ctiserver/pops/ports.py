"""The pop service's ports: what it needs from the CRM store, and what it publishes through.

``ctiserver.store.Store`` offers all of ``PopStore``. The notifier side is
``ctiserver.notify.Publisher`` (one operation, ``publish_nowait``), re-exported here:
the daemon's is a ``FanOut`` of the WebSocket hub and MQTT.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, Protocol

from ctiserver.core.records import Identification, InteractionRecord
from ctiserver.notify import Publisher

__all__ = ["AgentStateStore", "CrmLookup", "InteractionStore", "PopStore", "Publisher"]


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
