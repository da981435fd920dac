"""Plain, immutable records the store hands out (never live ORM objects)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any


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
        data = asdict(self)
        data["numbers"] = list(self.numbers)
        return data


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
        data = asdict(self)
        data.update({k: v for k, v in asdict(newer).items() if v is not None})
        return InteractionRecord(**data)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
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


@dataclass(frozen=True)
class UserRecord:
    id: int
    username: str
    role: str
    agent_id: str | None
    active: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
