"""The CRM store on SQLite: migrations, caller lookup, interactions, accounts, state."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import Connection, inspect

from ctiserver.core.records import Identification, InteractionRecord, StoreError, utcnow
from ctiserver.store import Store
from ctiserver.store.demo import agent_password, load_demo
from ctiserver.store.models import Base
from ctiserver.store.passwords import hash_password, verify_password
from ctiserver.store.rawsqlite import file_target
from ctiserver.store.writer import Statement


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(f"sqlite+aiosqlite:///{tmp_path / 'crm.db'}")
    await s.migrate()
    yield s
    await s.close()


async def test_migrations_create_the_models_tables_and_indexes(store: Store) -> None:
    assert await store.current_revision() == "0002"

    def describe(conn: Connection) -> dict[str, tuple[set[str], set[str | None]]]:
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
    assert await store.current_revision() == "0002"


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
    saved_b0 = cast(InteractionRecord, results[2])
    assert (saved_b0.queue, saved_b0.disposition) == ("q", "sale")
    for i in range(20):
        rec = await store.get_interaction(f"b{i}")
        assert rec is not None and (rec.queue, rec.outcome) == ("q", "answered")
    assert (await store.load_agent_states())["1001"].state == "ready"


async def test_an_ack_submitted_right_after_the_sent_record_finds_it(store: Store) -> None:
    sent = asyncio.ensure_future(store.record_pop_sent("call-2", "1001", "ws"))
    await asyncio.sleep(0)  # submitted, not yet written
    assert await store.record_pop_ack("call-2", "1001")
    assert isinstance(await sent, int)


# ------------------------------------------------ the per-call path on sqlite3 (a file)


def _stored(path: Path, table: str, where: str, *args: object) -> list[dict[str, tuple[Any, str]]]:
    """Rows as SQLite holds them: each column's value and storage class (id left out)."""
    conn = sqlite3.connect(path)
    try:
        cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})") if r[1] != "id"]
        select = ", ".join(f"{c}, typeof({c})" for c in cols)
        rows = conn.execute(f"SELECT {select} FROM {table} WHERE {where}", args).fetchall()
    finally:
        conn.close()
    return [{c: (row[2 * i], row[2 * i + 1]) for i, c in enumerate(cols)} for row in rows]


async def test_identify_on_sqlite3_returns_what_sqlalchemy_returns(store: Store) -> None:
    assert store.callers._readers is not None  # a file: identify runs on sqlite3
    a = await store.create_customer("Ana", ["+34915550001", "600111222", "+34932220000"])
    b = await store.create_customer("Bea", ["+34915550001"], tier="gold", email="b@x.es")
    await store.upsert_agent("1001")
    c = await store.create_customer(
        "Ñoño", ["+34915550003"], assigned_agent="1001", notes="línea 1\nlínea 2"
    )
    t0 = utcnow().replace(microsecond=123456)
    for i in range(8):
        await store.save_interaction(
            InteractionRecord(
                call_id=f"h{i}", customer_id=a.id, caller_id="+34915550001", queue="q",
                agent_id="1001" if i % 2 else None,
                joined_at=t0 - timedelta(minutes=i % 4),  # ties: newest id first
                answered_at=t0 if i % 3 else None,
                wait_seconds=i if i % 2 else i + 0.25,  # an int is stored as a REAL
                outcome="answered", notes="ñ" * i,
            )
        )
    await store.save_interaction(InteractionRecord(call_id="undated", customer_id=a.id))
    for number in ("+34915550001", "0034915550001", "600111222", "+34932220000",
                   "+34915550003", "+34999999999", "1001", "anonymous"):
        e164 = store.normalize(number)
        for history in (0, 1, 3, 5, 50):
            raw = await store.identify(number, history)
            core = await store.callers._identify_core(e164, history)
            assert raw == core, (number, history)
            for h in raw.history:
                for t in (h.joined_at, h.answered_at):
                    assert t is None or t.tzinfo is UTC
    shared = await store.identify("+34915550001", 50)
    assert [x.id for x in shared.customers] == [a.id, b.id]
    assert shared.customers[0].numbers == ("+34915550001", "+34600111222", "+34932220000")
    assert [h.call_id for h in shared.history][:5] == ["h4", "h0", "h5", "h1", "h6"]
    assert shared.history[-1].call_id == "undated"  # NULL joined_at last
    assert (await store.identify("+34915550003")).customers[0] == c
    assert await store.identify("") == Identification(number="")
    assert await store.identify("+34999999999") == Identification(number="+34999999999")


async def test_writes_on_sqlite3_store_what_sqlalchemy_stores(store: Store) -> None:
    """Each per-call write through the sqlite3 writer and the same through SQLAlchemy Core
    (the writer's async path) on the same file: the same results, the same bytes stored."""
    db = Path(store.engine.url.database or "")
    writer = store.writer
    assert writer._thread is not None  # a file: the writer runs on sqlite3

    async def both(
        stmt: Statement[Any] | None, params: dict[str, Any], key: str
    ) -> tuple[Any, Any]:
        assert stmt is not None  # built: SQLite has an upsert
        raw = await writer.write(stmt, {**params, key: f"{params[key]}-raw"})
        (core,) = await writer._async_transaction([(stmt, {**params, key: f"{params[key]}-core"})])
        return raw, core

    joined = datetime(2026, 11, 23, 18, 46, 15, 123456, tzinfo=UTC)
    full = {
        "call_id": "full", "customer_id": None, "caller_id": "+34915550001", "dnis": "900",
        "queue": "q", "agent_id": "1001", "digits": "12", "joined_at": joined,
        "answered_at": joined.replace(microsecond=0),  # still written with .000000
        # SQLAlchemy writes an aware time's own fields, dropping the offset: so does this
        "ended_at": joined.replace(tzinfo=timezone(timedelta(hours=2))),
        "wait_seconds": 3, "talk_seconds": 60.5, "outcome": "answered",
        "disposition": None, "notes": "ñandú",
    }
    partial = dict.fromkeys(full) | {"call_id": "partial", "disposition": "sale"}
    update = dict.fromkeys(full) | {"call_id": "full", "notes": "later", "ended_at": joined}
    for params in (full, partial, update):
        raw, core = await both(store.interactions._upsert, params, "call_id")
        assert raw == replace(core, call_id=raw.call_id)
        assert raw == await store.get_interaction(raw.call_id)  # as the ORM reads it
        stored = _stored(db, "interactions", "call_id LIKE ?", f"{params['call_id']}-%")
        assert len(stored) == 2
        assert stored[0] | {"call_id": None} == stored[1] | {"call_id": None}

    (row,) = _stored(db, "interactions", "call_id = 'full-raw'")
    assert row["joined_at"] == ("2026-11-23 18:46:15.123456", "text")
    assert row["answered_at"] == ("2026-11-23 18:46:15.000000", "text")
    assert row["ended_at"] == ("2026-11-23 18:46:15.123456", "text")  # the update's
    assert row["wait_seconds"] == (3.0, "real") and row["notes"] == ("later", "text")
    got = await store.get_interaction("full-raw")
    assert got is not None and got.joined_at == joined and got.joined_at.tzinfo is UTC
    assert (got.queue, got.wait_seconds, got.answered_at) == ("q", 3.0, full["answered_at"])
    # a new row from an update: blanks where the column is NOT NULL, NULL elsewhere
    assert await store.get_interaction("partial-raw") == InteractionRecord(
        call_id="partial-raw", caller_id="", dnis="", queue="", digits="", outcome="",
        disposition="sale", notes="",
    )

    at = joined.replace(microsecond=7)
    state = {"agent_id": "1001", "state": "ready", "reason": None, "updated_at": at}
    assert await both(store.agents._state_upsert, state, "agent_id") == (None, None)
    rows = _stored(db, "agent_states", "agent_id LIKE '1001-%' ORDER BY agent_id")
    assert rows[0] | {"agent_id": None} == rows[1] | {"agent_id": None}
    assert rows[0]["updated_at"] == ("2026-11-23 18:46:15.000007", "text")
    assert (await store.load_agent_states())["1001-raw"].updated_at == at

    sent = {"call_id": "c", "agent_id": "1001", "channel": "ws", "sent_at": at}
    ids = await both(store.deliveries._sent, sent, "call_id")
    assert all(isinstance(i, int) for i in ids) and ids[0] != ids[1]
    ack = {"of_call": "c", "by_agent": "1001", "acked_at": at}
    assert await both(store.deliveries._ack, ack, "of_call") == (True, True)
    assert await both(store.deliveries._ack, ack, "of_call") == (False, False)  # already
    rows = _stored(db, "pop_deliveries", "call_id LIKE 'c-%' ORDER BY call_id")
    assert rows[0] | {"call_id": None} == rows[1] | {"call_id": None}
    (delivery,) = await store.pop_deliveries("c-raw")
    assert (delivery.sent_at, delivery.acknowledged_at) == (at, at)


async def test_a_bad_write_in_a_sqlite3_batch_fails_alone(store: Store) -> None:
    base = store.writer.writes
    results = await asyncio.gather(
        store.save_interaction(InteractionRecord(call_id="ok1", queue="q")),
        store.save_interaction(InteractionRecord(call_id="fk", customer_id=424242)),
        store.record_pop_sent("ok1", None, "ws"),  # type: ignore[arg-type]  # NOT NULL
        store.save_interaction(InteractionRecord(call_id="ok2", queue="q")),
        return_exceptions=True,
    )
    assert isinstance(results[1], sqlite3.IntegrityError) and "FOREIGN KEY" in str(results[1])
    assert isinstance(results[2], sqlite3.IntegrityError) and "NOT NULL" in str(results[2])
    assert [r.call_id for r in results[::3]] == ["ok1", "ok2"]  # type: ignore[union-attr]
    assert await store.get_interaction("fk") is None
    assert store.writer.writes == base + 2
    # the writer's connection goes on
    assert (await store.save_interaction(InteractionRecord(call_id="ok3"))).call_id == "ok3"


async def test_a_dead_database_file_fails_the_caller_not_hangs(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'gone' / 'crm.db'}"
    s = Store(url)
    try:
        async with asyncio.timeout(10):
            with pytest.raises(sqlite3.OperationalError, match="unable to open"):
                await s.identify("915551234")
            with pytest.raises(sqlite3.OperationalError, match="unable to open"):
                await s.save_interaction(InteractionRecord(call_id="x"))
            with pytest.raises(sqlite3.OperationalError):
                await s.record_pop_sent("x", "1001", "ws")
            # once the file is there, the same store works (no connection was kept)
            (tmp_path / "gone").mkdir()
            await s.migrate()
            assert (await s.save_interaction(InteractionRecord(call_id="x"))).call_id == "x"
            assert (await s.identify("915551234")).customers == ()
    finally:
        await s.close()

    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database " * 200)
    s = Store(f"sqlite+aiosqlite:///{junk}")
    try:
        async with asyncio.timeout(10):
            with pytest.raises(sqlite3.DatabaseError, match="not a database"):
                await s.identify("915551234")
            with pytest.raises(sqlite3.DatabaseError, match="not a database"):
                await s.save_agent_state("1001", "ready")
    finally:
        await s.close()


def _files(folder: Path) -> set[str]:
    return {f.name for f in folder.iterdir()}


async def test_close_ends_the_threads_and_their_connections(tmp_path: Path) -> None:
    db = tmp_path / "crm.db"
    s = Store(f"sqlite+aiosqlite:///{db}")
    await s.migrate()
    await asyncio.gather(s.identify("915551234"), s.identify("915551235"))
    await s.save_agent_state("1001", "ready")
    names = {t.name for t in threading.enumerate()}
    assert "store-writer-0" in names
    assert "store-reader-0" not in names  # lookups read on the event loop
    await s.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("store-")]
    # the last connection to a WAL database that closes removes its -wal file
    assert _files(tmp_path) == {"crm.db"}
    with pytest.raises(RuntimeError):
        await s.identify("915551234")


def test_only_a_sqlite_file_runs_on_sqlite3() -> None:
    for url in ("sqlite+aiosqlite://", "sqlite+aiosqlite:///:memory:",
                "sqlite+aiosqlite:///file:crm?mode=memory&uri=true"):
        assert file_target(url) is None, url
    args, kwargs = file_target("sqlite+aiosqlite:///crm.db")  # type: ignore[misc]
    assert Path(args[0]).is_absolute() and args[0].endswith("crm.db")


async def test_lookups_read_on_the_loop_and_go_to_the_reader_thread_when_that_fails_or_is_slow(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    import ctiserver.store.identify as store_module

    s = Store(f"sqlite+aiosqlite:///{tmp_path / 'crm.db'}")
    await s.migrate()
    await load_demo(s)
    first = s.identify("915551234")
    assert first.done()  # answered on the loop: no thread hop
    assert (await first).customers[0].name == "Ana López"
    # the loop's connection fails (here: closed under it): the reader thread answers
    assert s.callers._inline is not None
    s.callers._inline.close()
    fallback = s.identify("915551234")
    assert not fallback.done()
    assert (await fallback).customers[0].name == "Ana López"
    assert "store-reader-0" in {t.name for t in threading.enumerate()}
    # a slow lookup on the loop: every later one goes to the thread, with a warning
    s.callers._inline = None
    monkeypatch.setattr(store_module, "INLINE_SLOW", -1.0)
    assert (await s.identify("915551234")).customers
    assert "lookups move to the reader thread" in caplog.text
    later = s.identify("915551234")
    assert not later.done() and (await later).customers[0].name == "Ana López"
    await s.close()
