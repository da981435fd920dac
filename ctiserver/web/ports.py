"""What the web layer needs from the rest of ctiserver, as ports.

``AgentControl`` is implemented by the daemon on top of the task that owns the ACD engine;
the storage ports (``WebStore`` and its parts) by ``ctiserver.store.Store``. The web layer
only translates HTTP requests into these calls. The record types and ``StoreError`` are
the store's plain value types, named here so that the rest of ``ctiserver.web`` imports
nothing from the store.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol

from ctiserver.core.records import CustomerRecord, InteractionRecord, StoreError, UserRecord

__all__ = [
    "Accounts",
    "AgentControl",
    "AgentControlError",
    "CustomerRecord",
    "Customers",
    "InteractionRecord",
    "Interactions",
    "SessionStore",
    "StoreError",
    "UserRecord",
    "WebStore",
]


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


# ------------------------------------------------------------------ storage


class Accounts(Protocol):
    """Sign-in."""

    async def authenticate(self, username: str, password: str) -> UserRecord | None:
        """The active user with this password, or None."""
        ...


class SessionStore(Protocol):
    """Where web sessions outlive the process (by the SHA-256 of their token)."""

    async def save_web_session(self, token_hash: str, user_id: int,
                               expires_at: datetime) -> None: ...

    async def delete_web_session(self, token_hash: str) -> None: ...

    async def live_web_sessions(self, now: datetime) -> list[tuple[str, UserRecord, datetime]]:
        """(token hash, user, expiry) of the sessions still valid at ``now``."""
        ...


class Customers(Protocol):
    """The "unknown caller" form."""

    async def create_customer(
        self,
        name: str,
        numbers: Iterable[str] = (),
        *,
        tier: str = "standard",
        notes: str = "",
        email: str | None = None,
    ) -> CustomerRecord:
        """A new customer; ``StoreError`` when the store refuses it."""
        ...


class Interactions(Protocol):
    """Whose call it was, for a disposition the agent's page no longer proves."""

    async def get_interaction(self, call_id: str) -> InteractionRecord | None: ...


class WebStore(Accounts, SessionStore, Customers, Interactions, Protocol):
    """Everything the web application needs from storage."""
