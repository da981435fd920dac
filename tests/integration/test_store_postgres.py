"""The CRM store on a real PostgreSQL 15 (started for this module)."""

from __future__ import annotations

import pytest

from ctiserver.core.records import InteractionRecord
from ctiserver.store import Store
from ctiserver.store.demo import load_demo
from tests.fixtures_services import PostgresServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def postgres():
    with PostgresServer() as server:
        yield server


@pytest.fixture
async def store(postgres: PostgresServer):
    s = Store(postgres.url)
    await s.migrate()
    yield s
    await s.downgrade("base")  # every test starts from an empty schema
    await s.close()


async def test_migrations_apply_and_revert(store: Store) -> None:
    assert await store.current_revision() == "0002"
    await store.downgrade("base")
    assert await store.current_revision() is None
    await store.migrate()
    assert await store.current_revision() == "0002"


async def test_demo_and_caller_lookup(store: Store) -> None:
    await load_demo(store)
    await load_demo(store)
    found = await store.find_customers_by_number("0034 915 551 234")
    assert [(c.name, c.tier, c.assigned_agent) for c in found] == [("Ana López", "gold", "1002")]
    ident = await store.identify("915551234")
    assert len(ident.history) == 2 and ident.history[0].joined_at > ident.history[1].joined_at
    user = await store.authenticate("1001", "demo-1001")
    assert user is not None and user.role == "agent"
    assert await store.authenticate("1001", "demo-1002") is None


async def test_interaction_upsert_states_and_pop_acks(store: Store) -> None:
    ana = await store.create_customer("Ana", ["+34915551234"])
    await store.save_interaction(InteractionRecord(call_id="c1", disposition="sale"))
    await store.save_interaction(
        InteractionRecord(call_id="c1", customer_id=ana.id, queue="sales", wait_seconds=4.5)
    )
    rec = await store.get_interaction("c1")
    assert rec is not None and (rec.disposition, rec.queue, rec.wait_seconds) == (
        "sale",
        "sales",
        4.5,
    )
    await store.save_agent_state("1001", "not_ready", "training")
    assert (await store.load_agent_states())["1001"].reason == "training"
    await store.record_pop_sent("c1", "1001", "ws")
    assert await store.record_pop_ack("c1", "1001")
    [row] = await store.pop_deliveries("c1")
    assert row.acknowledged_at is not None and row.acknowledged_at >= row.sent_at
    assert row.sent_at.tzinfo is not None


async def test_a_missing_database_is_an_error_not_a_hang(postgres: PostgresServer) -> None:
    # what the pop path relies on: a refused connection fails quickly
    import time

    s = Store(f"postgresql+asyncpg://postgres@127.0.0.1:{postgres.port}/nodb_here")
    started = time.monotonic()
    with pytest.raises(Exception):  # noqa: B017 - database "nodb_here" does not exist
        await s.find_customers_by_number("+34915551234")
    assert time.monotonic() - started < 3
    await s.close()
