"""What the web layer needs from the rest of ctiserver, as ports.

``AgentControl`` (the ACD feature's port, ``ctiserver.acd.ports``) and ``Screens`` (the
pops feature's, ``ctiserver.pops.ports``) are named here with the storage ports
(``WebStore`` and its parts, which ``ctiserver.store.Store`` offers). The web layer
only translates HTTP requests into these calls. The record types and ``StoreError`` are
the store's plain value types, named here so that the rest of ``ctiserver.web`` imports
nothing from the store.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from ctiserver.acd.ports import AgentControl, AgentControlError
from ctiserver.core.records import CustomerRecord, InteractionRecord, StoreError, UserRecord
from ctiserver.pops.ports import Screens

__all__ = [
    "Accounts",
    "AgentControl",
    "AgentControlError",
    "CustomerRecord",
    "Customers",
    "Health",
    "HealthReport",
    "InteractionRecord",
    "Interactions",
    "Screens",
    "SessionStore",
    "StoreError",
    "UserRecord",
    "WebStore",
]


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


# ------------------------------------------------------------------ health


@dataclass(frozen=True)
class HealthReport:
    """What ``GET /healthz`` answers: for an admin's monitor, so no host, URL or secret."""

    status: str  # "ok" | "degraded" ("standby": reserved for an active/standby pair)
    role: str  # "leader" (a standby will say "standby")
    routing: bool  # new calls are routed by ctiserver: HTTP 200; else 503
    checks: Mapping[str, str] = field(default_factory=dict)  # part -> "up", "down", "off"...
    reasons: tuple[str, ...] = ()  # why it is not "ok", for a person
    agents_logged_in: int = 0
    loop_lag_ms: float = 0.0  # the event loop's worst lateness over the last window

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "role": self.role, "routing": self.routing,
                "checks": dict(self.checks), "reasons": list(self.reasons),
                "agents_logged_in": self.agents_logged_in, "loop_lag_ms": self.loop_lag_ms}


class Health(Protocol):
    """How the daemon is, asked without signing in (monitors, load balancers)."""

    def health(self) -> HealthReport: ...
