"""Inside the store: ``Interactions``, one row per call, written as the call goes on.

Each save is an update: the fields a record leaves ``None`` are kept. Where the dialect
has an upsert (SQLite, PostgreSQL) a save is one statement run by the ``BatchWriter``;
otherwise it goes through the ORM.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ctiserver.core.records import InteractionRecord
from ctiserver.store import models as m
from ctiserver.store.database import Database, Upsert
from ctiserver.store.rows import (
    INTERACTION_COLUMNS,
    INTERACTION_FIELDS,
    INTERACTIONS,
    interaction,
    one_interaction,
    one_interaction_raw,
    param,
)
from ctiserver.store.writer import Statement

# what a new interaction row holds in the columns an update leaves unset
_BLANK = {
    "caller_id": "", "dnis": "", "queue": "", "digits": "", "outcome": "", "disposition": "",
    "notes": "",
}


def _params(record: InteractionRecord) -> dict[str, Any]:
    params: dict[str, Any] = {"call_id": record.call_id}
    for name in INTERACTION_FIELDS:
        params[name] = getattr(record, name)
    return params


def _upsert(insert: Upsert) -> Any:
    """Insert the interaction :call_id, or update it with the parameters that are not
    NULL (an update leaves the others as they are); built once, compiled once."""
    t = INTERACTIONS
    values: dict[str, Any] = {"call_id": param(t, "call_id")}
    changes: dict[str, Any] = {}
    for name in INTERACTION_FIELDS:
        value = param(t, name)
        blank = _BLANK.get(name)
        values[name] = value if blank is None else func.coalesce(value, blank)
        changes[name] = func.coalesce(value, t.c[name])
    stmt = insert(t).values(values)
    return stmt.on_conflict_do_update(index_elements=[t.c.call_id], set_=changes).returning(
        *INTERACTION_COLUMNS
    )


class Interactions:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._upsert: Statement[InteractionRecord] | None = None
        if db.upsert is not None:
            self._upsert = db.prepared(
                Statement(_upsert(db.upsert), one_interaction, one_interaction_raw))

    async def save_interaction(self, record: InteractionRecord) -> InteractionRecord:
        """``Store.save_interaction``."""
        if self._upsert is None:
            return await self._save_orm(record)
        return await self.db.writer.write(self._upsert, _params(record))

    def save_interaction_nowait(
        self, record: InteractionRecord
    ) -> asyncio.Future[InteractionRecord]:
        """``Store.save_interaction_nowait``."""
        if self._upsert is None:
            return asyncio.ensure_future(self._save_orm(record))
        return self.db.writer.submit(self._upsert, _params(record))

    async def _save_orm(self, record: InteractionRecord) -> InteractionRecord:
        async with self.db.session.begin() as session:
            result = await session.execute(
                select(m.Interaction).where(m.Interaction.call_id == record.call_id)
            )
            row = result.scalar_one_or_none()
            if row is None:
                row = m.Interaction(call_id=record.call_id, **_BLANK)
                session.add(row)
            for name in INTERACTION_FIELDS:
                value = getattr(record, name)
                if value is not None:
                    setattr(row, name, value)
            await session.flush()
            return interaction(row)

    async def get_interaction(self, call_id: str) -> InteractionRecord | None:
        async with self.db.session() as session:
            result = await session.execute(
                select(m.Interaction).where(m.Interaction.call_id == call_id)
            )
            row = result.scalar_one_or_none()
            return interaction(row) if row is not None else None

    async def recent_interactions(
        self, customer_id: int, limit: int = 5
    ) -> list[InteractionRecord]:
        async with self.db.session() as session:
            return await self._history(session, customer_id, limit)

    async def _history(
        self, session: AsyncSession, customer_id: int, limit: int
    ) -> list[InteractionRecord]:
        result = await session.execute(
            select(m.Interaction)
            .where(m.Interaction.customer_id == customer_id)
            .order_by(m.Interaction.joined_at.desc(), m.Interaction.id.desc())
            .limit(limit)
        )
        return [interaction(row) for row in result.scalars()]
