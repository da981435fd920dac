"""The CRM's and the call history's plain, immutable records (never live ORM objects),
``StoreError`` (the store refused or did not answer) and the UTC time helpers: the values
the store hands to the features and the web, with no database layer behind them."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any


class StoreError(Exception):
    """The caller asked for something the store refuses (unknown role, duplicate user…)."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def from_epoch(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, UTC) if ts is not None else None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass(frozen=True)
class CustomerRecord:
    id: int
    name: str
    tier: str
    assigned_agent: str | None
    notes: str
    email: str | None
    numbers: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        # by hand: dataclasses.asdict deep-copies every value, and this is on the pop path
        return {
            "id": self.id,
            "name": self.name,
            "tier": self.tier,
            "assigned_agent": self.assigned_agent,
            "notes": self.notes,
            "email": self.email,
            "numbers": list(self.numbers),
        }


@dataclass(frozen=True)
class InteractionRecord:
    """An interaction, or an update to one: fields left ``None`` are not changed."""

    call_id: str
    customer_id: int | None = None
    caller_id: str | None = None
    dnis: str | None = None
    queue: str | None = None
    agent_id: str | None = None
    digits: str | None = None
    joined_at: datetime | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    wait_seconds: float | None = None
    talk_seconds: float | None = None
    outcome: str | None = None
    disposition: str | None = None
    notes: str | None = None

    def merged(self, newer: InteractionRecord) -> InteractionRecord:
        """This update with ``newer``'s set fields on top."""
        changes: dict[str, Any] = {}
        for name in _INTERACTION_NAMES:
            value = getattr(newer, name)
            if value is not None:
                changes[name] = value
        return replace(self, **changes)

    def set_fields(self) -> dict[str, Any]:
        """The fields this update sets (not ``None``), ``call_id`` included."""
        data: dict[str, Any] = {"call_id": self.call_id}
        for name in _INTERACTION_NAMES:
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        return data

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"call_id": self.call_id}
        for name in _INTERACTION_NAMES:
            data[name] = getattr(self, name)
        for key in ("joined_at", "answered_at", "ended_at"):
            data[key] = _iso(data[key])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InteractionRecord:
        values = dict(data)
        for key in ("joined_at", "answered_at", "ended_at"):
            if values.get(key):
                values[key] = datetime.fromisoformat(values[key])
        return cls(**values)


# every field of an interaction but its key
_INTERACTION_NAMES = tuple(f.name for f in fields(InteractionRecord) if f.name != "call_id")


@dataclass(frozen=True)
class UserRecord:
    id: int
    username: str
    role: str
    agent_id: str | None
    active: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "username": self.username,
            "role": self.role,
            "agent_id": self.agent_id,
            "active": self.active,
        }


@dataclass(frozen=True)
class AgentStateRecord:
    agent_id: str
    state: str
    reason: str | None
    updated_at: datetime


@dataclass(frozen=True)
class PopDeliveryRecord:
    id: int
    call_id: str
    agent_id: str
    channel: str
    sent_at: datetime
    acknowledged_at: datetime | None


@dataclass(frozen=True)
class Identification:
    """Who is calling: every customer owning the number, and the first one's history."""

    number: str
    customers: tuple[CustomerRecord, ...] = ()
    history: tuple[InteractionRecord, ...] = field(default=())
