"""The CRM store on SQLite: migrations, caller lookup, interactions, accounts, state."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import inspect

from ctiserver.store import InteractionRecord, Store, StoreError, utcnow
from ctiserver.store.demo import agent_password, load_demo
from ctiserver.store.models import Base
from ctiserver.store.passwords import hash_password, verify_password


@pytest.fixture
async def store(tmp_path: Path):
    s = Store(f"sqlite+aiosqlite:///{tmp_path / 'crm.db'}")
    await s.migrate()
    yield s
    await s.close()


async def test_migrations_create_the_models_tables_and_indexes(store: Store) -> None:
    assert await store.current_revision() == "0001"

    def describe(conn):
        insp = inspect(conn)
        return {
            t: (
                {c["name"] for c in insp.get_columns(t)},
                {i["name"] for i in insp.get_indexes(t)},
            )
            for t in insp.get_table_names()
            if t != "alembic_version"
        }

    async with store.engine.connect() as conn:
        tables = await conn.run_sync(describe)
    expected = {
        t.name: (
            {c.name for c in t.columns},
            {i.name for i in t.indexes},
        )
        for t in Base.metadata.sorted_tables
    }
    assert tables == expected
    assert "ix_customer_numbers_e164" in tables["customer_numbers"][1]


async def test_migrate_twice_and_downgrade(store: Store) -> None:
    await store.migrate()
    await store.downgrade("base")
    assert await store.current_revision() is None
    await store.migrate()
    assert await store.current_revision() == "0001"


async def test_caller_found_by_any_number_in_any_spelling(store: Store) -> None:
    ana = await store.create_customer(
        "Ana López", ["+34 91 555 12 34", "600111222"], tier="gold", notes="n"
    )
    assert ana.numbers == ("+34915551234", "+34600111222")
    other = await store.create_customer("Someone", ["+44 20 7946 0958"])
    for spelling in ("+34915551234", "0034915551234", "915551234", "91 555 12 34", "600-111-222"):
        found = await store.find_customers_by_number(spelling)
        assert [c.name for c in found] == ["Ana López"], spelling
    assert [c.id for c in await store.find_customers_by_number("00442079460958")] == [other.id]
    assert await store.find_customers_by_number("+34999999999") == []
    assert await store.find_customers_by_number("anonymous") == []
    assert await store.find_customers_by_number("") == []


async def test_a_shared_number_returns_every_owner(store: Store) -> None:
    a = await store.create_customer("A", ["+34915550000"])
    b = await store.create_customer("B", ["915550000"])
    assert [c.id for c in await store.find_customers_by_number("+34915550000")] == [a.id, b.id]
    again = await store.add_number(a.id, "0034915550000")  # already there: not duplicated
    assert again.numbers == ("+34915550000",)
    more = await store.add_number(a.id, "932223344", "work")
    assert more.numbers == ("+34915550000", "+34932223344")


async def test_interactions_upsert_and_history_newest_first(store: Store) -> None:
    ana = await store.create_customer("Ana", ["+34915551234"])
    now = utcnow()
    for i in range(7):
        await store.save_interaction(
            InteractionRecord(
                call_id=f"c{i}",
                customer_id=ana.id,
                caller_id="+34915551234",
                queue="support",
                agent_id="1001",
                joined_at=now - timedelta(days=10 - i),
                wait_seconds=float(i),
                talk_seconds=60.0,
                outcome="answered",
            )
        )
    # a later update only changes what it sets
    await store.save_interaction(
        InteractionRecord(call_id="c6", disposition="resolved", notes="all good")
    )
    rec = await store.get_interaction("c6")
    assert rec is not None
    assert (rec.queue, rec.agent_id, rec.wait_seconds) == ("support", "1001", 6.0)
    assert (rec.disposition, rec.notes) == ("resolved", "all good")
    assert rec.joined_at is not None and rec.joined_at.tzinfo is not None
    assert abs((rec.joined_at - (now - timedelta(days=4))).total_seconds()) < 0.001

    ident = await store.identify("915551234", history=3)
    assert [c.name for c in ident.customers] == ["Ana"]
    assert [h.call_id for h in ident.history] == ["c6", "c5", "c4"]


async def test_disposition_before_the_record_of_the_call_is_kept(store: Store) -> None:
    await store.save_interaction(InteractionRecord(call_id="x", disposition="sale", notes="n"))
    await store.save_interaction(InteractionRecord(call_id="x", queue="sales", talk_seconds=3.0))
    rec = await store.get_interaction("x")
    assert rec is not None and (rec.disposition, rec.queue, rec.talk_seconds) == (
        "sale",
        "sales",
        3.0,
    )


def test_password_hashes_are_salted_and_verified() -> None:
    h1, h2 = hash_password("s3cret"), hash_password("s3cret")
    assert h1 != h2 and h1.startswith("scrypt$")
    assert "s3cret" not in h1
    assert verify_password("s3cret", h1) and verify_password("s3cret", h2)
    assert not verify_password("S3cret", h1)
    assert not verify_password("s3cret", "garbage")
    assert not verify_password("s3cret", "md5$1$2$3$4$5")


async def test_accounts_and_roles(store: Store) -> None:
    await store.upsert_agent("1001", "Lucía")
    user = await store.create_user("1001", "pw-1001", role="agent", agent_id="1001")
    assert (user.role, user.agent_id) == ("agent", "1001")
    assert await store.authenticate("1001", "pw-1001") == user
    assert await store.authenticate("1001", "wrong") is None
    assert await store.authenticate("nobody", "pw-1001") is None
    with pytest.raises(StoreError):
        await store.create_user("1001", "x")
    with pytest.raises(StoreError):
        await store.create_user("boss", "x", role="emperor")
    await store.set_password("1001", "new")
    assert await store.authenticate("1001", "pw-1001") is None
    assert await store.authenticate("1001", "new") is not None


async def test_agent_state_survives_a_new_store_on_the_same_database(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    first = Store(url)
    await first.migrate()
    await first.save_agent_state("1001", "ready")
    await first.save_agent_state("1002", "ready")
    await first.save_agent_state("1002", "not_ready", "lunch")
    await first.close()

    second = Store(url)
    states = await second.load_agent_states()
    await second.close()
    assert {a: (s.state, s.reason) for a, s in states.items()} == {
        "1001": ("ready", None),
        "1002": ("not_ready", "lunch"),
    }


async def test_pop_deliveries_sent_then_acknowledged(store: Store) -> None:
    await store.record_pop_sent("call-1", "1001", "ws")
    await store.record_pop_sent("call-1", "1001", "mqtt")
    await store.record_pop_sent("call-1", "1002", "ws")
    assert await store.record_pop_ack("call-1", "1001")
    assert not await store.record_pop_ack("call-9", "1001")
    rows = await store.pop_deliveries("call-1")
    acked = {(r.agent_id, r.channel): r.acknowledged_at is not None for r in rows}
    assert acked == {("1001", "ws"): True, ("1001", "mqtt"): True, ("1002", "ws"): False}
    assert all(r.sent_at <= (r.acknowledged_at or r.sent_at) for r in rows)


async def test_demo_data_loads_once(store: Store) -> None:
    await load_demo(store)
    await load_demo(store)
    ana = await store.find_customers_by_number("+34915551234")
    assert len(ana) == 1
    assert (ana[0].name, ana[0].tier, ana[0].assigned_agent) == ("Ana López", "gold", "1002")
    assert len(await store.recent_interactions(ana[0].id)) == 2
    assert [a for a, _ in await store.list_agents()] == ["1001", "1002", "1003", "1004"]
    for agent in ("1001", "1004"):
        user = await store.authenticate(agent, agent_password(agent))
        assert user is not None and user.agent_id == agent
    sup = await store.authenticate("supervisor", "demo-super")
    assert sup is not None and sup.role == "supervisor"


async def test_concurrent_writes_share_transactions_and_a_bad_one_fails_alone(
    store: Store,
) -> None:
    records = [InteractionRecord(call_id=f"b{i}", queue="q", outcome="answered") for i in range(20)]
    saved = await asyncio.gather(*map(store.save_interaction, records))
    assert [r.call_id for r in saved] == [f"b{i}" for i in range(20)]
    assert store.writer.batches < 10  # many writes per transaction
    # agent_id is NOT NULL: this one write is refused, the others in its batch are not
    bad = store.record_pop_sent("b0", None, "ws")  # type: ignore[arg-type]
    results = await asyncio.gather(
        bad,
        store.save_agent_state("1001", "ready"),
        store.save_interaction(InteractionRecord(call_id="b0", disposition="sale")),
        return_exceptions=True,
    )
    assert isinstance(results[0], Exception) and results[1] is None
    assert (results[2].queue, results[2].disposition) == ("q", "sale")
    for i in range(20):
        rec = await store.get_interaction(f"b{i}")
        assert rec is not None and (rec.queue, rec.outcome) == ("q", "answered")
    assert (await store.load_agent_states())["1001"].state == "ready"


async def test_an_ack_submitted_right_after_the_sent_record_finds_it(store: Store) -> None:
    sent = asyncio.ensure_future(store.record_pop_sent("call-2", "1001", "ws"))
    await asyncio.sleep(0)  # submitted, not yet written
    assert await store.record_pop_ack("call-2", "1001")
    assert isinstance(await sent, int)
