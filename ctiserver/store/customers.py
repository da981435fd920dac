"""Inside the store: ``Customers``, the CRM's customers and their phone numbers (ORM).

Numbers are kept in E.164, normalised in the store's region; the per-call lookup of a
caller is ``identify.CallerLookup``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from ctiserver.core.records import CustomerRecord, StoreError, utcnow
from ctiserver.store import models as m
from ctiserver.store.database import Database


def _customer(row: m.Customer) -> CustomerRecord:
    return CustomerRecord(
        id=row.id,
        name=row.name,
        tier=row.tier,
        assigned_agent=row.assigned_agent,
        notes=row.notes,
        email=row.email,
        numbers=tuple(n.e164 for n in row.numbers),
    )


class Customers:
    def __init__(self, db: Database, normalize: Callable[[str], str]) -> None:
        self.db = db
        self.normalize = normalize

    async def create_customer(
        self,
        name: str,
        numbers: Iterable[str] = (),
        *,
        tier: str = "standard",
        assigned_agent: str | None = None,
        notes: str = "",
        email: str | None = None,
    ) -> CustomerRecord:
        now = utcnow()
        seen: list[str] = []
        for raw in numbers:
            e164 = self.normalize(raw)
            if e164 and e164 not in seen:
                seen.append(e164)
        async with self.db.session.begin() as session:
            row = m.Customer(
                name=name.strip(),
                tier=tier,
                assigned_agent=assigned_agent or None,
                notes=notes,
                email=email or None,
                created_at=now,
                updated_at=now,
                numbers=[m.CustomerNumber(e164=e) for e in seen],
            )
            session.add(row)
            await session.flush()
            return _customer(row)

    async def add_number(self, customer_id: int, number: str, label: str = "") -> CustomerRecord:
        e164 = self.normalize(number)
        async with self.db.session.begin() as session:
            row = await self._load_customer(session, customer_id)
            if row is None:
                raise StoreError(f"no customer {customer_id}")
            if e164 and e164 not in {n.e164 for n in row.numbers}:
                row.numbers.append(m.CustomerNumber(e164=e164, label=label))
                row.updated_at = utcnow()
                await session.flush()
            return _customer(row)

    async def get_customer(self, customer_id: int) -> CustomerRecord | None:
        async with self.db.session() as session:
            row = await self._load_customer(session, customer_id)
            return _customer(row) if row is not None else None

    async def find_customers_by_number(self, number: str) -> list[CustomerRecord]:
        """Every customer owning ``number`` (normalised to E.164 first), oldest first."""
        e164 = self.normalize(number)
        if not e164:
            return []
        async with self.db.session() as session:
            return await self._by_number(session, e164)

    async def _load_customer(self, session: AsyncSession, customer_id: int) -> m.Customer | None:
        result = await session.execute(
            select(m.Customer)
            .where(m.Customer.id == customer_id)
            .options(selectinload(m.Customer.numbers))
        )
        return result.scalar_one_or_none()

    async def _by_number(self, session: AsyncSession, e164: str) -> list[CustomerRecord]:
        owners = select(m.CustomerNumber.customer_id).where(m.CustomerNumber.e164 == e164)
        result = await session.execute(
            select(m.Customer)
            .where(m.Customer.id.in_(owners))
            .options(selectinload(m.Customer.numbers))
            .order_by(m.Customer.id)
        )
        return [_customer(row) for row in result.scalars()]
