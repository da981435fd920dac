"""Inside the store: ``PopDeliveries``, each screen pop sent to an agent's page or MQTT
client and when it was acknowledged. Both writes are single statements run by the
``BatchWriter``, in the order they were made."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, select, update

from ctiserver.core.records import PopDeliveryRecord, utcnow
from ctiserver.store import models as m
from ctiserver.store.database import Database
from ctiserver.store.rows import (
    DELIVERIES,
    any_row,
    any_row_raw,
    aware,
    param,
    scalar_int,
    scalar_int_raw,
)
from ctiserver.store.writer import Statement

_SENT = Statement(
    DELIVERIES.insert()
    .values({n: param(DELIVERIES, n) for n in ("call_id", "agent_id", "channel", "sent_at")})
    .returning(DELIVERIES.c.id),
    scalar_int,
    scalar_int_raw,
)
_ACK = Statement(
    update(DELIVERIES)
    .where(
        DELIVERIES.c.call_id == bindparam("of_call", type_=DELIVERIES.c.call_id.type),
        DELIVERIES.c.agent_id == bindparam("by_agent", type_=DELIVERIES.c.agent_id.type),
        DELIVERIES.c.acknowledged_at.is_(None),
    )
    .values(acknowledged_at=bindparam("acked_at", type_=DELIVERIES.c.acknowledged_at.type)),
    any_row,
    any_row_raw,
)


class PopDeliveries:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._sent = db.prepared(_SENT)
        self._ack = db.prepared(_ACK)

    async def record_pop_sent(
        self, call_id: str, agent_id: str, channel: str, sent_at: datetime | None = None
    ) -> int:
        params = {"call_id": call_id, "agent_id": agent_id, "channel": channel,
                  "sent_at": sent_at or utcnow()}
        return await self.db.writer.write(self._sent, params)

    async def record_pop_ack(
        self, call_id: str, agent_id: str, acked_at: datetime | None = None
    ) -> bool:
        """``Store.record_pop_ack``."""
        params = {"of_call": call_id, "by_agent": agent_id, "acked_at": acked_at or utcnow()}
        return await self.db.writer.write(self._ack, params)

    async def pop_deliveries(self, call_id: str) -> list[PopDeliveryRecord]:
        async with self.db.session() as session:
            result = await session.execute(
                select(m.PopDelivery)
                .where(m.PopDelivery.call_id == call_id)
                .order_by(m.PopDelivery.id)
            )
            return [
                PopDeliveryRecord(
                    id=r.id,
                    call_id=r.call_id,
                    agent_id=r.agent_id,
                    channel=r.channel,
                    sent_at=aware(r.sent_at) or utcnow(),
                    acknowledged_at=aware(r.acknowledged_at),
                )
                for r in result.scalars()
            ]
