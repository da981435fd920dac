"""The CRM store: customers, interactions, agents and accounts, pop deliveries.

``Store`` is the facade the rest of ctiserver uses: one per process, its methods return
plain records (``records``). It delegates to one repository per concern, all sharing one
``Database``; how the per-call paths are made cheap is told in ``docs/store.md``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from ctiserver.core.numbers import normalize
from ctiserver.core.records import (
    AgentStateRecord,
    CustomerRecord,
    Identification,
    InteractionRecord,
    PopDeliveryRecord,
    StoreError,
    UserRecord,
    from_epoch,
    utcnow,
)
from ctiserver.store.accounts import Accounts
from ctiserver.store.agents import Agents
from ctiserver.store.customers import Customers
from ctiserver.store.database import DEFAULT_URL, Database
from ctiserver.store.deliveries import PopDeliveries
from ctiserver.store.identify import CallerLookup
from ctiserver.store.interactions import Interactions
from ctiserver.store.writer import BatchWriter

# where these names were defined before the store was split: imported from here still
__all__ = ["DEFAULT_URL", "Store", "StoreError", "from_epoch", "utcnow"]


class Store:
    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        region: str = "ES",
        echo: bool = False,
        write_delay: float = 0.0,
    ) -> None:
        """``write_delay``: how long a per-call write may wait to share a transaction."""
        self.url = url
        self.region = region
        self.db = Database(url, echo=echo, write_delay=write_delay)
        self.engine: AsyncEngine = self.db.engine
        self.writer: BatchWriter = self.db.writer
        self.callers = CallerLookup(self.db, self.normalize)
        self.customers = Customers(self.db, self.normalize)
        self.interactions = Interactions(self.db)
        self.agents = Agents(self.db)
        self.accounts = Accounts(self.db)
        self.deliveries = PopDeliveries(self.db)

    async def close(self) -> None:
        await self.writer.close()
        await self.callers.close()
        await self.db.dispose()

    async def ping(self) -> None:
        """One round trip to the database (the health probe's); raises when unreachable."""
        await self.db.ping()

    # ------------------------------------------------------------ migrations

    async def migrate(self, revision: str = "head") -> None:
        """Bring the schema up to ``revision`` with the bundled Alembic migrations."""
        await self.db.migrate(revision)

    async def downgrade(self, revision: str) -> None:
        await self.db.downgrade(revision)

    async def current_revision(self) -> str | None:
        return await self.db.current_revision()

    # ------------------------------------------------------------- customers

    def normalize(self, number: str) -> str:
        return normalize(number, self.region)

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
        return await self.customers.create_customer(
            name, numbers, tier=tier, assigned_agent=assigned_agent, notes=notes, email=email)

    async def add_number(self, customer_id: int, number: str, label: str = "") -> CustomerRecord:
        return await self.customers.add_number(customer_id, number, label)

    async def get_customer(self, customer_id: int) -> CustomerRecord | None:
        return await self.customers.get_customer(customer_id)

    async def find_customers_by_number(self, number: str) -> list[CustomerRecord]:
        """Every customer owning ``number`` (normalised to E.164 first), oldest first."""
        return await self.customers.find_customers_by_number(number)

    def identify(self, number: str, history: int = 5) -> asyncio.Future[Identification]:
        """Customers owning the number and the first one's last ``history`` interactions,
        on one connection (the pop path bounds the whole of it by a timeout). Once per
        call: two Core queries, no ORM objects; on a SQLite file, compiled once and run by
        ``sqlite3`` on a reader thread. A future (await it): on SQLite the reader thread's
        own, with no task around it."""
        return self.callers.identify(number, history)

    async def recent_interactions(
        self, customer_id: int, limit: int = 5
    ) -> list[InteractionRecord]:
        return await self.interactions.recent_interactions(customer_id, limit)

    # ---------------------------------------------------------- interactions

    async def save_interaction(self, record: InteractionRecord) -> InteractionRecord:
        """Insert or update the interaction ``record.call_id``; ``None`` fields are kept."""
        return await self.interactions.save_interaction(record)

    def save_interaction_nowait(
        self, record: InteractionRecord
    ) -> asyncio.Future[InteractionRecord]:
        """``save_interaction`` for synchronous callers: the future of its outcome (the
        writer's own, on the batched path: no task per record)."""
        return self.interactions.save_interaction_nowait(record)

    async def get_interaction(self, call_id: str) -> InteractionRecord | None:
        return await self.interactions.get_interaction(call_id)

    # ------------------------------------------------------- agents and users

    async def upsert_agent(self, agent_id: str, name: str = "") -> None:
        await self.agents.upsert_agent(agent_id, name)

    async def list_agents(self) -> list[tuple[str, str]]:
        return await self.agents.list_agents()

    async def create_user(
        self, username: str, password: str, *, role: str = "agent", agent_id: str | None = None
    ) -> UserRecord:
        return await self.accounts.create_user(username, password, role=role, agent_id=agent_id)

    async def set_password(self, username: str, password: str) -> None:
        await self.accounts.set_password(username, password)

    async def get_user(self, username: str) -> UserRecord | None:
        return await self.accounts.get_user(username)

    async def authenticate(self, username: str, password: str) -> UserRecord | None:
        """The active user with this password, or None (unknown users cost the same time)."""
        return await self.accounts.authenticate(username, password)

    # ----------------------------------------------------------- web sessions

    async def save_web_session(self, token_hash: str, user_id: int, expires_at: datetime) -> None:
        await self.accounts.save_web_session(token_hash, user_id, expires_at)

    async def delete_web_session(self, token_hash: str) -> None:
        await self.accounts.delete_web_session(token_hash)

    async def live_web_sessions(self, now: datetime) -> list[tuple[str, UserRecord, datetime]]:
        """(token hash, user, expiry) of the sessions not expired, of active users; the
        others are deleted (a user made active again signs in again)."""
        return await self.accounts.live_web_sessions(now)

    # ----------------------------------------------------------- agent state

    async def save_agent_state(self, agent_id: str, state: str, reason: str | None = None) -> None:
        await self.agents.save_agent_state(agent_id, state, reason)

    async def load_agent_states(self) -> dict[str, AgentStateRecord]:
        return await self.agents.load_agent_states()

    # -------------------------------------------------------- pop deliveries

    async def record_pop_sent(
        self, call_id: str, agent_id: str, channel: str, sent_at: datetime | None = None
    ) -> int:
        return await self.deliveries.record_pop_sent(call_id, agent_id, channel, sent_at)

    async def record_pop_ack(
        self, call_id: str, agent_id: str, acked_at: datetime | None = None
    ) -> bool:
        """Mark this agent's pop deliveries of the call acknowledged. False if none was sent.
        Written after every ``record_pop_sent`` submitted before it (one writer, in order)."""
        return await self.deliveries.record_pop_ack(call_id, agent_id, acked_at)

    async def pop_deliveries(self, call_id: str) -> list[PopDeliveryRecord]:
        return await self.deliveries.pop_deliveries(call_id)
