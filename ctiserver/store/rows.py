"""Inside the store: its Core tables, and rows turned into records.

Shared by the repositories (``customers``, ``identify``, ``interactions``, ``agents``,
``deliveries``); a row comes from the ORM, from SQLAlchemy Core or from ``sqlite3``
(``rawsqlite``), and makes the same record.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import DateTime, Result, Row, Table, bindparam
from sqlalchemy.sql.elements import BindParameter

from ctiserver.core.records import InteractionRecord
from ctiserver.store import models as m
from ctiserver.store.rawsqlite import Compiled

CUSTOMERS = cast(Table, m.Customer.__table__)
NUMBERS = cast(Table, m.CustomerNumber.__table__)
INTERACTIONS = cast(Table, m.Interaction.__table__)
AGENT_STATES = cast(Table, m.AgentState.__table__)
DELIVERIES = cast(Table, m.PopDelivery.__table__)

# every column of an interaction but its key, in the order of InteractionRecord's fields
INTERACTION_FIELDS = (
    "customer_id caller_id dnis queue agent_id digits joined_at answered_at ended_at "
    "wait_seconds talk_seconds outcome disposition notes"
).split()
INTERACTION_COLUMNS = [INTERACTIONS.c.call_id, *(INTERACTIONS.c[f] for f in INTERACTION_FIELDS)]
# a row of these columns is an InteractionRecord's fields, in order
assert [c.name for c in INTERACTION_COLUMNS] == [f.name for f in fields(InteractionRecord)]
_INTERACTION_TIMES = tuple(
    i for i, c in enumerate(INTERACTION_COLUMNS) if isinstance(c.type, DateTime)
)


def aware(value: datetime | None) -> datetime | None:
    """SQLite gives naive datetimes back: they were stored as UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def interaction(row: m.Interaction | Row[Any]) -> InteractionRecord:
    """From an ORM object or a SQLAlchemy row of ``INTERACTION_COLUMNS``."""
    values: dict[str, Any] = {f: getattr(row, f) for f in INTERACTION_FIELDS}
    for key in ("joined_at", "answered_at", "ended_at"):
        values[key] = aware(values[key])
    return InteractionRecord(call_id=row.call_id, **values)


def interaction_row(values: Sequence[Any]) -> InteractionRecord:
    """From a ``sqlite3`` row of ``INTERACTION_COLUMNS``, processed (``Compiled.row``)."""
    values = list(values)
    for i in _INTERACTION_TIMES:
        values[i] = aware(values[i])
    return InteractionRecord(*values)


def param(table: Table, name: str) -> BindParameter[Any]:
    """A bind parameter named as the column, of its type (processed as the column is)."""
    return bindparam(name, type_=table.c[name].type)


# what the writer reads back from each kind of write, from a SQLAlchemy result or from a
# sqlite3 cursor (the same, row for row; ``one`` means exactly one, as Result.one())
def one_interaction(result: Result[Any]) -> InteractionRecord:
    return interaction(result.one())


def one_interaction_raw(cursor: sqlite3.Cursor, raw: Compiled) -> InteractionRecord:
    (row,) = cursor.fetchall()
    return interaction_row(raw.row(row))


def nothing(result: Result[Any]) -> None:
    return None


def nothing_raw(cursor: sqlite3.Cursor, raw: Compiled) -> None:
    return None


def scalar_int(result: Result[Any]) -> int:
    return int(result.scalar_one())


def scalar_int_raw(cursor: sqlite3.Cursor, raw: Compiled) -> int:
    (row,) = cursor.fetchall()
    return int(raw.row(row)[0])


def any_row(result: Result[Any]) -> bool:
    return bool(getattr(result, "rowcount", 0))


def any_row_raw(cursor: sqlite3.Cursor, raw: Compiled) -> bool:
    return bool(cursor.rowcount)
