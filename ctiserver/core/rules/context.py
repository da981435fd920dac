"""What the rules can see about a call."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ctiserver.core.numbers import normalize

Lookup = Callable[[str, str], "Mapping[str, Any] | None"]


def no_lookup(table: str, key: str) -> Mapping[str, Any] | None:
    """The default ``lookup``: nothing is found."""
    return None


@dataclass(frozen=True)
class CallContext:
    """One call, as the rules see it.

    Numbers must already be E.164-normalised; :meth:`create` does that. ``now``
    must be timezone-aware. ``customer`` is the CRM record the adapter fetched
    (``tier``, ``assigned_agent``, ``name`` …) or ``None``. ``lookup`` is a
    synchronous ``(table, key) -> dict | None`` that the adapter bounds with a
    timeout; table names are checked against ``config.lookup_tables``.
    """

    caller_id: str
    dnis: str
    now: datetime
    caller_name: str = ""
    digits: str = ""
    answers: Mapping[str, str] = field(default_factory=dict)
    customer: Mapping[str, Any] | None = None
    lookup: Lookup = no_lookup

    def __post_init__(self) -> None:
        if self.now.tzinfo is None or self.now.utcoffset() is None:
            raise ValueError("CallContext.now must be timezone-aware")

    @classmethod
    def create(
        cls,
        *,
        caller_id: str | None,
        dnis: str | None,
        now: datetime,
        region: str = "ES",
        caller_name: str | None = None,
        digits: str | None = None,
        answers: Mapping[str, str] | None = None,
        customer: Mapping[str, Any] | None = None,
        lookup: Lookup = no_lookup,
    ) -> CallContext:
        """Build a context from raw channel data, normalising both numbers."""
        return cls(
            caller_id=normalize(caller_id, region),
            dnis=normalize(dnis, region),
            now=now,
            caller_name=(caller_name or "")[:128],
            digits=(digits or "")[:64],
            answers=dict(answers or {}),
            customer=customer,
            lookup=lookup,
        )
