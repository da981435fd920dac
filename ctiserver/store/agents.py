"""Inside the store: ``Agents``, the ACD's agents and the last state of each (kept so that
a restart can put agents back as they were). A state save is one upsert run by the
``BatchWriter`` where the dialect has one, else an ORM write."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from ctiserver.core.records import AgentStateRecord, utcnow
from ctiserver.store import models as m
from ctiserver.store.database import Database, Upsert
from ctiserver.store.rows import AGENT_STATES, aware, nothing, nothing_raw, param
from ctiserver.store.writer import Statement


def _state_upsert(insert: Upsert) -> Any:
    t = AGENT_STATES
    values = {name: param(t, name) for name in ("agent_id", "state", "reason", "updated_at")}
    changes = {k: v for k, v in values.items() if k != "agent_id"}
    return insert(t).values(values).on_conflict_do_update(
        index_elements=[t.c.agent_id], set_=changes
    )


class Agents:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._state_upsert: Statement[None] | None = None
        if db.upsert is not None:
            self._state_upsert = db.prepared(
                Statement(_state_upsert(db.upsert), nothing, nothing_raw))

    async def upsert_agent(self, agent_id: str, name: str = "") -> None:
        async with self.db.session.begin() as session:
            row = await session.get(m.Agent, agent_id)
            if row is None:
                session.add(m.Agent(id=agent_id, name=name, created_at=utcnow()))
            elif name:
                row.name = name

    async def list_agents(self) -> list[tuple[str, str]]:
        async with self.db.session() as session:
            result = await session.execute(select(m.Agent.id, m.Agent.name).order_by(m.Agent.id))
            return [(r[0], r[1]) for r in result]

    async def save_agent_state(self, agent_id: str, state: str, reason: str | None = None) -> None:
        if self._state_upsert is None:
            return await self._save_state_orm(agent_id, state, reason)
        params = {"agent_id": agent_id, "state": state, "reason": reason, "updated_at": utcnow()}
        await self.db.writer.write(self._state_upsert, params)

    async def _save_state_orm(self, agent_id: str, state: str, reason: str | None) -> None:
        async with self.db.session.begin() as session:
            row = await session.get(m.AgentState, agent_id)
            if row is None:
                session.add(
                    m.AgentState(agent_id=agent_id, state=state, reason=reason, updated_at=utcnow())
                )
            else:
                row.state, row.reason, row.updated_at = state, reason, utcnow()

    async def load_agent_states(self) -> dict[str, AgentStateRecord]:
        async with self.db.session() as session:
            result = await session.execute(select(m.AgentState))
            return {
                r.agent_id: AgentStateRecord(
                    agent_id=r.agent_id,
                    state=r.state,
                    reason=r.reason,
                    updated_at=aware(r.updated_at) or utcnow(),
                )
                for r in result.scalars()
            }
