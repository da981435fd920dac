"""PopService on a real SQLite store and the recording notifier."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from ctiserver.calls.model import CallInfo
from ctiserver.core.records import Identification, InteractionRecord
from ctiserver.notify import FanOut, RecordingNotifier
from ctiserver.pops import PopService
from ctiserver.store import Store
from ctiserver.store.demo import load_demo


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(f"sqlite+aiosqlite:///{tmp_path / 'crm.db'}")
    await s.migrate()
    await load_demo(s)
    yield s
    await s.close()


def screen(pops: PopService, agent_id: str) -> dict[str, Any]:
    """The pop on the agent's screen, which must show one."""
    pop = pops.current(agent_id)
    assert pop is not None
    return pop


def ana_call(call_id: str = "1700000000.1", joined: float = 1_700_000_000.0) -> CallInfo:
    return CallInfo(
        call_id=call_id,
        caller_id="+34915551234",  # routing normalised it
        caller_name="ANA",
        dnis="+34910000000",
        queue="support",
        digits="2",
        answers={"account": "77"},
        joined_at=joined,
    )


async def test_known_caller_pop_then_answer_end_and_disposition(store: Store) -> None:
    clock, notes = Clock(time.time()), RecordingNotifier()
    pops = PopService(
        store, notes, crm_url_template="https://crm.example/s?phone={e164}", clock=clock
    )
    await pops.offered(ana_call(joined=clock.now - 12), "1001")
    pop = notes.of_kind("pop.offered", "1001")[0].data
    assert pop["known"] and not pop["partial"]
    assert pop["customer"]["name"] == "Ana López" and pop["customer"]["tier"] == "gold"
    assert pop["caller_id"] == "+34915551234" and pop["waited"] == 12.0
    assert pop["crm_url"] == "https://crm.example/s?phone=%2B34915551234"
    assert [h["disposition"] for h in pop["history"]] == ["resolved", "billing question"]
    assert (pop["queue"], pop["digits"], pop["answers"]) == ("support", "2", {"account": "77"})

    clock.now += 3
    pops.answered_nowait("1700000000.1", "1001")
    clock.now += 100
    await pops.ended("1700000000.1", "1001")
    assert notes.of_kind("call.ended", "1001")[0].data["talk"] == 100.0
    assert screen(pops, "1001")["stage"] == "ended"  # kept on screen for wrap-up

    assert await pops.dispose("1700000000.1", "1001", "sale", "upgraded to 1Gb")
    assert pops.current("1001") is None
    rec = await store.get_interaction("1700000000.1")
    assert rec is not None
    assert (rec.wait_seconds, rec.talk_seconds, rec.outcome) == (15.0, 100.0, "answered")
    assert (rec.disposition, rec.notes, rec.agent_id) == ("sale", "upgraded to 1Gb", "1001")
    ana = (await store.find_customers_by_number("+34915551234"))[0]
    assert rec.customer_id == ana.id
    # the next agent sees it in the history
    await pops.offered(ana_call("c2"), "1003")
    assert notes.of_kind("pop.offered", "1003")[0].data["history"][0]["notes"] == "upgraded to 1Gb"


async def test_unknown_caller_then_created_from_the_form(store: Store) -> None:
    notes = RecordingNotifier()
    pops = PopService(store, notes)
    await pops.offered(CallInfo("c9", "+34932000000", joined_at=time.time()), "1001")
    pop = notes.of_kind("pop.offered")[0].data
    assert not pop["known"] and not pop["partial"] and pop["customer"] is None
    customer = await store.create_customer("New One", ["+34932000000"])
    await pops.link_customer("c9", customer.to_dict())
    assert screen(pops, "1001")["customer"]["name"] == "New One"
    await pops.ended("c9", "1001")
    rec = await store.get_interaction("c9")
    assert rec is not None and rec.customer_id == customer.id and rec.outcome == "abandoned"


class SlowStore:
    """A real store whose lookups wait until the test lets them through."""

    def __init__(self, store: Store) -> None:
        self.store, self.gate = store, asyncio.Event()

    async def identify(self, number: str, history: int = 5) -> Identification:
        await self.gate.wait()
        return await self.store.identify(number, history)

    async def save_interaction(self, record: InteractionRecord) -> InteractionRecord:
        return await self.store.save_interaction(record)

    def save_interaction_nowait(self, record: InteractionRecord) -> asyncio.Future[Any]:
        return asyncio.ensure_future(self.save_interaction(record))

    async def save_agent_state(self, agent_id: str, state: str, reason: str | None = None
                               ) -> None:
        await self.store.save_agent_state(agent_id, state, reason)


async def test_slow_crm_gives_a_partial_pop_in_time_then_the_full_one(store: Store) -> None:
    slow, notes = SlowStore(store), RecordingNotifier()
    pops = PopService(slow, notes, lookup_timeout=0.1)
    started = time.monotonic()
    await pops.offered(ana_call(), "1001")
    assert time.monotonic() - started < 0.3
    first = notes.of_kind("pop.offered")[0].data
    assert first["partial"] and first["customer"] is None
    assert (first["caller_id"], first["queue"], first["digits"]) == ("+34915551234", "support", "2")
    slow.gate.set()
    full = await notes.wait_for(lambda n: n.kind == "pop.offered" and not n.data["partial"])
    assert full.data["customer"]["name"] == "Ana López"
    assert screen(pops, "1001")["customer"]["name"] == "Ana López"
    await pops.close()


class CountingSlowStore(SlowStore):
    """A slow store that counts lookups and tells when one has answered."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.lookups, self.answered = 0, asyncio.Event()

    async def identify(self, number: str, history: int = 5) -> Identification:
        self.lookups += 1
        ident = await super().identify(number, history)
        self.answered.set()
        return ident


async def test_lookup_started_when_the_caller_joins_makes_the_ring_pop_complete(
    store: Store,
) -> None:
    slow, notes = CountingSlowStore(store), RecordingNotifier()
    pops = PopService(slow, notes, lookup_timeout=0.05)
    call = ana_call()
    pops.prefetch(call)  # the caller joined the queue; the CRM is slower than lookup_timeout
    slow.gate.set()
    await asyncio.wait_for(slow.answered.wait(), 5)
    started = time.monotonic()
    await pops.offered(call, "1001")  # later, the agent's phone rings (ring-all: two phones)
    await pops.offered(call, "1002")
    assert time.monotonic() - started < 0.05
    sent = notes.of_kind("pop.offered")
    assert [(n.agent_id, n.data["partial"], n.data["customer"]["name"]) for n in sent] == [
        ("1001", False, "Ana López"),
        ("1002", False, "Ana López"),
    ]
    assert slow.lookups == 1
    await pops.ended(call.call_id, "1001")
    await pops.close()


async def test_database_down_pop_partial_and_interaction_spooled_then_flushed(
    store: Store, tmp_path: Path
) -> None:
    down = Store(f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'dir' / 'x.db'}")
    notes, spool = RecordingNotifier(), tmp_path / "spool.jsonl"
    pops = PopService(down, notes, spool_path=spool)
    started = time.monotonic()
    await pops.offered(ana_call(), "1001")
    assert time.monotonic() - started < 0.3
    assert notes.of_kind("pop.offered")[0].data["partial"] is True
    pops.answered_nowait("1700000000.1", "1001")
    await pops.ended("1700000000.1", "1001")
    assert not await pops.dispose("1700000000.1", "1001", "callback", "call her back")
    assert list(pops.pending) == ["1700000000.1"]
    assert spool.exists()
    await down.close()

    # a restart with the database back: the spool is read and stored
    revived = PopService(store, RecordingNotifier(), spool_path=spool)
    assert list(revived.pending) == ["1700000000.1"]
    assert await revived.flush() == 0
    assert not spool.exists()
    rec = await store.get_interaction("1700000000.1")
    assert rec is not None and (rec.disposition, rec.notes, rec.outcome) == (
        "callback",
        "call her back",
        "answered",
    )


async def test_a_store_that_refuses_at_once_gives_a_partial_pop_and_routing_goes_on(
    tmp_path: Path,
) -> None:
    closed = Store(f"sqlite+aiosqlite:///{tmp_path / 'crm.db'}")
    await closed.migrate()
    await closed.close()  # identify now raises at once, before any future exists
    notes = RecordingNotifier()
    pops = PopService(closed, notes)
    with pytest.raises(RuntimeError):
        await pops.lookup("1700000000.1", "+34915551234")  # routing: its own fallback
    await pops.offered(ana_call(), "1001")
    assert notes.of_kind("pop.offered")[0].data["partial"] is True
    await pops.close()


async def test_agent_state_is_published_and_persisted(store: Store) -> None:
    notes = RecordingNotifier()
    pops = PopService(store, notes)
    await pops.agent_state("1001", "not_ready", "lunch")
    await pops.agent_state("1001", "offered", call_id="c1")
    n = notes.of_kind("agent.state", "1001")
    assert [x.data["state"] for x in n] == ["not_ready", "offered"]
    states = await store.load_agent_states()
    assert (states["1001"].state, states["1001"].reason) == ("not_ready", "lunch")


class Stuck:
    async def publish(
        self, kind: str, data: Mapping[str, Any], *, agent_id: str | None = None
    ) -> None:
        await asyncio.Event().wait()


class Broken:
    async def publish(
        self, kind: str, data: Mapping[str, Any], *, agent_id: str | None = None
    ) -> None:
        raise ConnectionError("down")


class Queued:
    """A channel that may wait (as MQTT): the fan-out gives it a queue and a task."""

    def __init__(self, notes: RecordingNotifier) -> None:
        self.notes = notes

    async def publish(
        self, kind: str, data: Mapping[str, Any], *, agent_id: str | None = None
    ) -> None:
        await self.notes.publish(kind, data, agent_id=agent_id)


async def test_fanout_a_stuck_or_broken_channel_does_not_hold_the_others() -> None:
    good = RecordingNotifier()
    fan = FanOut({"stuck": Stuck(), "broken": Broken(), "good": Queued(good)}, timeout=30)
    started = time.monotonic()
    for i in range(3):
        await fan.publish("pop.offered", {"i": i}, agent_id="1001")
    assert time.monotonic() - started < 0.05
    await good.wait_for(lambda n: n.data["i"] == 2)
    assert [n.data["i"] for n in good.sent] == [0, 1, 2]
    await fan.close()


class Immediate:
    """A target that only queues (as the WebSocket hub): called at once by the fan-out."""

    def __init__(self, fail: bool = False) -> None:
        self.got: list[tuple[str, object]] = []
        self.fail = fail

    def publish_nowait(
        self, kind: str, data: Mapping[str, Any], *, agent_id: str | None = None
    ) -> None:
        if self.fail:
            raise RuntimeError("bug")
        self.got.append((kind, data["i"]))

    async def publish(
        self, kind: str, data: Mapping[str, Any], *, agent_id: str | None = None
    ) -> None:
        self.publish_nowait(kind, data, agent_id=agent_id)


async def test_fanout_queueing_targets_get_it_at_once_and_a_failing_one_harms_nobody() -> None:
    good, broken, queued = Immediate(), Immediate(fail=True), RecordingNotifier()
    fan = FanOut({"broken": broken, "hub": good, "mqtt": Queued(queued)})
    fan.publish_nowait("pop.offered", {"i": 1}, agent_id="1001")
    assert good.got == [("pop.offered", 1)]  # before any await: no task in between
    await queued.wait_for(lambda n: n.data["i"] == 1)
    await fan.close()


class CountingStore:
    """A real store that counts lookups and agent-state saves, and can be made to fail."""

    def __init__(self, store: Store) -> None:
        self.store, self.lookups = store, 0
        self.state_saves: list[tuple[str, str, str | None]] = []
        self.fail_lookups = 0
        self.down = False

    async def identify(self, number: str, history: int = 5) -> Identification:
        self.lookups += 1
        if self.fail_lookups:
            self.fail_lookups -= 1
            raise ConnectionError("database down")
        return await self.store.identify(number, history)

    async def save_interaction(self, record: InteractionRecord) -> InteractionRecord:
        if self.down:
            raise ConnectionError("database down")
        return await self.store.save_interaction(record)

    def save_interaction_nowait(self, record: InteractionRecord) -> asyncio.Future[Any]:
        return asyncio.ensure_future(self.save_interaction(record))

    async def save_agent_state(self, agent_id: str, state: str, reason: str | None = None
                               ) -> None:
        if self.down:
            raise ConnectionError("database down")
        self.state_saves.append((agent_id, state, reason))
        await self.store.save_agent_state(agent_id, state, reason)


async def test_routing_and_the_pop_share_one_lookup(store: Store) -> None:
    counting, notes = CountingStore(store), RecordingNotifier()
    pops = PopService(counting, notes)
    call = ana_call()
    ident = await pops.lookup(call.call_id, call.caller_id)  # the FastAGI route asks
    assert ident.customers[0].name == "Ana López"
    pops.prefetch(call)  # the caller joins the queue
    await pops.offered(call, "1001")  # an agent's phone rings
    assert notes.of_kind("pop.offered")[0].data["customer"]["name"] == "Ana López"
    assert counting.lookups == 1
    await pops.ended(call.call_id, "1001")
    # a call routed elsewhere is forgotten; a new call asks again
    await pops.lookup("other", call.caller_id)
    pops.forget("other")
    await pops.lookup("other", call.caller_id)
    assert counting.lookups == 3
    await pops.close()


async def test_a_lookup_that_failed_in_routing_is_asked_again_at_the_ring(store: Store) -> None:
    counting, notes = CountingStore(store), RecordingNotifier()
    counting.fail_lookups = 2  # routing and the queue join find the database down
    pops = PopService(counting, notes)
    call = ana_call()
    with pytest.raises(ConnectionError):
        await pops.lookup(call.call_id, call.caller_id)
    pops.prefetch(call)
    await asyncio.sleep(0)  # the join's attempt fails too
    await pops.offered(call, "1001")  # the database is back at ring time
    pop = notes.of_kind("pop.offered")[0].data
    assert not pop["partial"] and pop["customer"]["name"] == "Ana López"
    assert counting.lookups == 3
    await pops.close()


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every fsync the pop service makes (the spool's), listed; each still runs."""
    made: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        made.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return made


async def test_the_spool_is_written_only_when_the_database_refuses(
    store: Store, tmp_path: Path, fsyncs: list[int]
) -> None:
    counting, spool = CountingStore(store), tmp_path / "spool.jsonl"
    pops = PopService(counting, RecordingNotifier(), spool_path=spool)
    for i in range(5):
        await pops.ended(f"ok{i}", call=CallInfo(f"ok{i}", "+34915551234"))
    assert fsyncs == [] and not spool.exists()

    counting.down = True
    await pops.ended("kept", call=CallInfo("kept", "+34915551234"))
    assert spool.exists() and len(fsyncs) == 1 and list(pops.pending) == ["kept"]
    counting.down = False
    await pops.ended("ok5", call=CallInfo("ok5", "+34915551234"))  # not in the spool
    assert len(fsyncs) == 1
    # an update of the spooled call reaches the database: its old version leaves the spool
    assert await pops.dispose("kept", "1001", "callback", "")
    assert not spool.exists() and not pops.pending
    rec = await store.get_interaction("kept")
    assert rec is not None and (rec.outcome, rec.disposition) == ("abandoned", "callback")


async def test_agent_states_saved_when_they_change_and_again_after_an_outage(
    store: Store,
) -> None:
    counting = CountingStore(store)
    pops = PopService(counting, RecordingNotifier())
    for state in ("ready", "offered", "on_call", "wrap_up", "ready", "offered", "ready"):
        await pops.agent_state("1001", state)
    assert counting.state_saves == [("1001", "ready", None)]
    counting.down = True
    await pops.agent_state("1001", "not_ready", "lunch")  # logged, kept for retry
    assert counting.state_saves == [("1001", "ready", None)]
    counting.down = False
    assert await pops.flush() == 0
    assert counting.state_saves[-1] == ("1001", "not_ready", "lunch")
    states = await store.load_agent_states()
    assert (states["1001"].state, states["1001"].reason) == ("not_ready", "lunch")
    await pops.close()


async def test_the_ring_pop_and_the_answer_go_out_before_the_adapter_returns(
    store: Store,
) -> None:
    # the call adapter's synchronous entry points: with the lookup done (routing asked when
    # the call came in) and a notifier that queues at once, nothing waits for a task
    class Hub:  # queues at once, as the WebSocket hub
        def __init__(self) -> None:
            self.got: list[tuple[str, object]] = []

        def publish_nowait(
            self, kind: str, data: Mapping[str, Any], *, agent_id: str | None = None
        ) -> None:
            self.got.append((kind, data))

    hub = Hub()
    pops = PopService(store, FanOut({"hub": hub}))
    call = ana_call()
    await pops.lookup(call.call_id, call.caller_id)
    pops.offered_nowait(call, "1001")
    pops.answered_nowait(call.call_id, "1001")
    assert [kind for kind, _ in hub.got] == ["pop.offered", "pop.answered"]
    assert screen(pops, "1001")["customer"]["name"] == "Ana López"
    # a lookup still under way: the pop waits for it (up to lookup_timeout) in a task
    slow = SlowStore(store)
    pops = PopService(slow, FanOut({"hub": hub}), lookup_timeout=5)
    pops.offered_nowait(ana_call("c2"), "1002")
    assert len(hub.got) == 2
    slow.gate.set()
    for _ in range(250):
        if len(hub.got) == 3:
            break
        await asyncio.sleep(0.02)
    assert screen(pops, "1002")["customer"]["name"] == "Ana López"
    assert not screen(pops, "1002")["partial"]
    await pops.close()


async def test_ready_again_after_a_call_is_published_at_once_and_not_written_again(
    store: Store,
) -> None:
    class Hub:
        def __init__(self) -> None:
            self.got: list[tuple[str, object]] = []

        def publish_nowait(
            self, kind: str, data: Mapping[str, Any], *, agent_id: str | None = None
        ) -> None:
            self.got.append((kind, data["state"]))

    counting, hub = CountingStore(store), Hub()
    pops = PopService(counting, FanOut({"hub": hub}))
    await pops.agent_state("1001", "ready")
    for state in ("offered", "on_call", "wrap_up", "ready"):
        pops.agent_state_changed("1001", state)
    assert hub.got[-4:] == [("agent.state", s) for s in ("offered", "on_call", "wrap_up",
                                                         "ready")]
    pops.agent_state_changed("1001", "not_ready", "lunch")  # a change: saved by a task
    await asyncio.sleep(0)
    for _ in range(250):
        if len(counting.state_saves) == 2:
            break
        await asyncio.sleep(0.02)
    assert counting.state_saves == [("1001", "ready", None), ("1001", "not_ready", "lunch")]
    await pops.close()


class NowaitStore(CountingStore):
    """The real store's synchronous save (``save_interaction_nowait``), which can be made
    to refuse at once or to hang."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.hang: asyncio.Future[object] | None = None

    def save_interaction_nowait(self, record: InteractionRecord) -> asyncio.Future[Any]:
        if self.down:
            failed = asyncio.get_running_loop().create_future()
            failed.set_exception(ConnectionError("database down"))
            return failed
        if self.hang is not None:
            return self.hang
        return self.store.save_interaction_nowait(record)


async def until(predicate: Callable[[], bool], what: str) -> None:
    for _ in range(250):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def test_the_end_of_a_call_is_stored_without_a_task_and_kept_when_the_database_fails(
    store: Store, tmp_path: Path
) -> None:
    nowait, spool = NowaitStore(store), tmp_path / "spool.jsonl"
    notes = RecordingNotifier()
    pops = PopService(nowait, FanOut({"hub": notes}), spool_path=spool, save_timeout=0.2)
    tasks = len(asyncio.all_tasks())
    pops.ended_nowait("ok", call=CallInfo("ok", "+34915551234", joined_at=time.time()))
    assert len(asyncio.all_tasks()) - tasks <= 1  # at most the writer's batch task
    await until(lambda: not pops.pending, "the record stored")
    rec = await store.get_interaction("ok")
    assert rec is not None and rec.outcome == "abandoned"

    nowait.down = True  # refused at once: kept and spooled
    pops.ended_nowait("refused", call=CallInfo("refused", "+34915551234"))
    await until(lambda: spool.exists(), "the spool")
    assert list(pops.pending) == ["refused"]
    nowait.down = False

    nowait.hang = asyncio.get_running_loop().create_future()  # no answer: spooled in time
    pops.ended_nowait("slow", call=CallInfo("slow", "+34915551234"))
    await until(lambda: "slow" in spool.read_text(), "the late record in the spool")
    nowait.hang.set_result(None)  # the database answers after all: out of pending and spool
    await until(lambda: "slow" not in pops.pending, "the late answer")
    assert "slow" not in spool.read_text() and list(pops.pending) == ["refused"]
    assert await pops.flush() == 0 and not spool.exists()
    await pops.close()


async def test_steady_traffic_with_a_healthy_database_never_spools_nor_saves_twice(
    store: Store, tmp_path: Path, fsyncs: list[int]
) -> None:
    # Under steady traffic a save is always under way when the retry pass comes round (every
    # 5 s): that save is not a failure. Counting it as one stored it a second time and wrote
    # the spool (an fsync on the event loop), and each later answer rewrote it: an fsync
    # after nearly every call for as long as calls kept coming.
    class SlowWriter(NowaitStore):
        """Answers each save when the test says, as a busy writer answers later."""

        def __init__(self, store: Store) -> None:
            super().__init__(store)
            self.saves: list[str] = []
            self.unanswered: list[asyncio.Future[object]] = []

        def save_interaction_nowait(self, record: InteractionRecord) -> asyncio.Future[Any]:
            self.saves.append(record.call_id)
            answer = asyncio.get_running_loop().create_future()
            self.unanswered.append(answer)
            return answer

        async def save_interaction(self, record: InteractionRecord) -> InteractionRecord:
            self.saves.append(record.call_id)
            await asyncio.sleep(0)  # the writer's round trip: other calls end meanwhile
            return await self.store.save_interaction(record)

    writer, spool = SlowWriter(store), tmp_path / "spool.jsonl"
    pops = PopService(writer, FanOut({"hub": RecordingNotifier()}), spool_path=spool,
                      save_timeout=5)
    for i in range(20):
        pops.ended_nowait(f"c{i}", call=CallInfo(f"c{i}", "+34915551234"))
        if i % 5 == 4:  # the retry pass, while this call's save is under way
            retry = asyncio.create_task(pops.flush())
            await asyncio.sleep(0)
            pops.ended_nowait(f"c{i}b", call=CallInfo(f"c{i}b", "+34915551234"))
            await retry
        for answer in writer.unanswered[:-1]:  # the writer answers all but the newest
            if not answer.done():
                answer.set_result(None)
        await asyncio.sleep(0)
    for answer in writer.unanswered:
        if not answer.done():
            answer.set_result(None)
    await until(lambda: not pops.pending, "every record answered")
    assert fsyncs == [] and not spool.exists()
    assert sorted(writer.saves) == sorted(set(writer.saves))  # each record saved once
    assert len(writer.saves) == 24
    await pops.close()
