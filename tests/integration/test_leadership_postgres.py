"""The leadership of an active/standby pair on a real PostgreSQL: one leader at a time, a
dead leader's lock free at once, a database restart that costs the leader nothing, and a
leader cut off from the database for too long stepping down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from ctiserver.store.leadership import Leadership
from tests.fixtures_services import PostgresServer

pytestmark = pytest.mark.integration

KEY = 4242


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


class Member:
    def __init__(self, pg: PostgresServer, name: str, fence_after: float = 8.0) -> None:
        self.changes: list[tuple[float, bool]] = []
        self.lead = Leadership(pg.url, KEY, name=name, interval=0.1, fence_after=fence_after,
                               on_change=lambda leader, _why: self.changes.append(
                                   (time.monotonic(), leader)))
        self.task = asyncio.get_running_loop().create_task(self.lead.run())

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def until(predicate: object, timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while not predicate():  # type: ignore[operator]
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - t0


async def test_one_leader_and_the_standby_takes_over_when_it_dies(
        postgres: PostgresServer) -> None:
    a = Member(postgres, "a")
    await until(lambda: a.lead.leader, 5, "a leads")
    b = Member(postgres, "b")
    await until(lambda: b.lead.reachable, 5, "b reaches the database")
    await asyncio.sleep(0.5)  # five of b's attempts
    assert not b.lead.leader and a.lead.leader
    await a.stop()  # the process is gone: its session, and the lock, with it
    took = await until(lambda: b.lead.leader, 5, "b leads")
    await b.stop()
    assert took < 1.0, f"standby took {took:.2f} s to lead"


async def test_a_database_restart_costs_the_leader_nothing(postgres: PostgresServer) -> None:
    a = Member(postgres, "a")
    await until(lambda: a.lead.leader, 5, "a leads")
    b = Member(postgres, "b")
    await until(lambda: b.lead.reachable, 5, "b reaches the database")
    postgres.stop()
    await until(lambda: not a.lead.reachable and not b.lead.reachable, 5, "both cut off")
    postgres.start()
    await until(lambda: a.lead.reachable and b.lead.reachable, 15, "both reconnected")
    await asyncio.sleep(1.0)  # well past b's hold-off
    assert a.lead.leader and not b.lead.leader
    assert [leader for _t, leader in a.changes] == [True]  # never stepped down
    assert b.changes == []  # never led: no split brain
    await a.stop()
    await b.stop()


async def test_a_leader_cut_off_too_long_steps_down(postgres: PostgresServer) -> None:
    a = Member(postgres, "a", fence_after=1.0)
    await until(lambda: a.lead.leader, 5, "a leads")
    postgres.stop()
    try:
        await until(lambda: not a.lead.leader, 5, "a steps down")
        assert a.changes[-1][1] is False
        assert a.changes[-1][0] - a.changes[0][0] >= 1.0
    finally:
        postgres.start()
        await a.stop()
