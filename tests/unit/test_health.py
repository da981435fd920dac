"""The health verdict (/healthz, systemd's Status line), the loop-lag probe and the task
that pings systemd's watchdog, over a real unix datagram socket."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from pathlib import Path

import aiohttp

from ctiserver.health import Facts, LoopLag, Monitor, Probe, Since, judge, status_line
from ctiserver.sdnotify import SdNotify
from ctiserver.store import Store
from ctiserver.web.ports import HealthReport
from tests.fixtures_services import WebStack

ALL_WELL = Facts(ami_up=True, acd_running=True, rules_version="3f2a9c0d1e2b", rules_refused=False,
             database_up=True, mqtt_up=True, loop_lag=0.002, agents_logged_in=60)
T0 = 1_796_000_000.0  # 2026-11-30T00:53:20Z


def facts(**changes: object) -> Facts:
    return dataclasses.replace(ALL_WELL, **changes)  # type: ignore[arg-type]


def test_all_well_is_ok_and_routing_with_no_reasons() -> None:
    r = judge(ALL_WELL, Since(), T0)
    assert (r.status, r.role, r.routing, r.reasons) == ("ok", "leader", True, ())
    assert r.checks == {"ami": "up", "acd": "running", "rules": "ok", "database": "up",
                        "mqtt": "up", "event_loop": "ok"}
    assert r.agents_logged_in == 60 and r.loop_lag_ms == 2.0
    assert status_line(r) == "routing, AMI connected, 60 agents logged in"


def test_ami_down_stops_routing_and_says_since_when() -> None:
    since = Since()
    first = judge(facts(ami_up=False), since, T0)
    later = judge(facts(ami_up=False), since, T0 + 42)
    for r in (first, later):
        assert (r.status, r.routing, r.checks["ami"]) == ("degraded", False, "down")
        assert r.reasons == ("AMI link down since 2026-11-30T00:53:20Z, reconnecting: new "
                             "calls go to the fallback queue",)
    assert status_line(later).startswith("NOT routing; AMI link down since 2026-11-30T00:53:20Z")
    assert status_line(later).endswith("; 60 agents logged in")
    # back up, then down again: a new outage, a new time
    assert judge(ALL_WELL, since, T0 + 50).status == "ok"
    again = judge(facts(ami_up=False), since, T0 + 60)
    assert "since 2026-11-30T00:54:20Z" in again.reasons[0]


def test_what_still_routes_is_degraded_with_200_and_what_does_not_is_503() -> None:
    routes = {
        "database": facts(database_up=False),
        "mqtt": facts(mqtt_up=False),
        "rules": facts(rules_refused=True),
        "event_loop": facts(loop_lag=0.35),
    }
    for check, f in routes.items():
        r = judge(f, Since(), T0)
        assert (r.status, r.routing) == ("degraded", True), check
        assert len(r.reasons) == 1 and r.checks[check] in ("down", "refused", "late"), check
    assert "still routing with version 3f2a9c0d1e2b" in judge(
        facts(rules_refused=True), Since(), T0).reasons[0]
    assert judge(facts(loop_lag=0.35), Since(), T0).reasons == (
        "event loop late by up to 350 ms in the last 30 s (limit 100 ms)",)
    blocked = {"ami": facts(ami_up=False), "acd": facts(acd_running=False),
               "rules": facts(rules_version=None)}
    for check, f in blocked.items():
        r = judge(f, Since(), T0)
        assert (r.status, r.routing) == ("degraded", False), check
        assert r.checks[check] in ("down", "stopped", "none"), check


def test_no_mqtt_configured_and_a_database_not_probed_yet_are_not_faults() -> None:
    r = judge(facts(mqtt_up=None, database_up=None), Since(), T0)
    assert (r.status, r.routing, r.reasons) == ("ok", True, ())
    assert (r.checks["mqtt"], r.checks["database"]) == ("off", "unknown")


def test_several_conditions_each_give_a_reason() -> None:
    r = judge(facts(ami_up=False, database_up=False, mqtt_up=False, agents_logged_in=1),
              Since(), T0)
    assert [reason.split(" since ")[0] for reason in r.reasons] == [
        "AMI link down", "database unreachable", "MQTT broker unreachable"]
    assert status_line(r).endswith("; 1 agent logged in")


def test_the_report_has_no_host_url_or_secret() -> None:
    body = str(judge(facts(ami_up=False, database_up=False, mqtt_up=False), Since(), T0)
               .to_json())
    for leak in ("127.0.0.1", "5038", "postgresql", "mqtt://", "secret", "password"):
        assert leak not in body


def test_the_loop_lag_is_the_worst_over_the_window() -> None:
    lag = LoopLag(window=30)
    lag.record(100.0, 0.4)
    lag.record(101.0, 0.001)
    assert lag.worst(110.0) == 0.4
    assert lag.worst(131.0) == 0.001  # the 0.4 s is out of the window
    assert lag.worst(200.0) == 0.0


async def first_answer(probe: Probe) -> bool | None:
    task = asyncio.create_task(probe.run())
    try:
        for _ in range(200):  # the first answer, within 4 s
            if probe.up is not None:
                break
            await asyncio.sleep(0.02)
        return probe.up
    finally:
        task.cancel()


async def test_the_database_probe_says_whether_the_store_answers_in_time(
        tmp_path: Path) -> None:
    good = Store(f"sqlite+aiosqlite:///{tmp_path / 'crm.db'}")
    gone = Store(f"sqlite+aiosqlite:///{tmp_path / 'no-such-dir' / 'crm.db'}")
    try:
        assert await first_answer(Probe("database", good.ping, every=60)) is True
        assert await first_answer(Probe("database", gone.ping, every=60)) is False
    finally:
        await good.close()
        await gone.close()
    never = asyncio.Event()
    assert await first_answer(Probe("database", never.wait, every=60, timeout=0.1)) is False


# ------------------------------------------------------------------ watchdog and status


class Listener:
    """What systemd would read: a unix datagram socket, bound in the abstract namespace."""

    def __init__(self) -> None:
        self.name = f"@ctiserver-test-{time.monotonic_ns()}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name[1:])
        self.sock.setblocking(False)

    async def receive(self, timeout: float) -> tuple[float, str] | None:
        loop = asyncio.get_running_loop()
        try:
            data = await asyncio.wait_for(loop.sock_recv(self.sock, 4096), timeout)
        except TimeoutError:
            return None
        return time.monotonic(), data.decode()

    async def until(self, text: str, timeout: float) -> list[tuple[float, str]]:
        """Every datagram up to and including the first containing ``text``."""
        got: list[tuple[float, str]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            item = await self.receive(deadline - time.monotonic())
            if item is None:
                break
            got.append(item)
            if text in item[1]:
                return got
        raise AssertionError(f"no {text!r} within {timeout} s; got {got}")


async def test_the_watchdog_is_pinged_every_half_interval_and_status_follows_the_verdict(
) -> None:
    listener = Listener()
    state = {"f": ALL_WELL}
    since = Since()
    monitor = Monitor(lambda: judge(state["f"], since, time.time()), lambda: True,
                      SdNotify({"NOTIFY_SOCKET": listener.name}), LoopLag(), watchdog=0.4,
                      status_every=0.1)
    task = asyncio.create_task(monitor.run())
    try:
        assert "STATUS=starting" in (await listener.until("STATUS=starting", 2))[-1][1]
        monitor.ready()
        ready = (await listener.until("READY=1", 2))[-1][1]
        assert ready == "READY=1\nSTATUS=routing, AMI connected, 60 agents logged in"
        pings: list[float] = []
        while len(pings) < 6:
            got = await listener.until("WATCHDOG=1", 2)
            pings.append(got[-1][0])
        gaps = [b - a for a, b in zip(pings, pings[1:], strict=False)]
        assert all(0.15 <= g <= 0.35 for g in gaps), gaps  # half of 0.4 s, on 0.1 s ticks
        state["f"] = facts(ami_up=False)
        status = (await listener.until("STATUS=NOT routing", 2))[-1][1]
        assert "AMI link down since" in status
        monitor.stopping()
        assert (await listener.until("STOPPING=1", 2))[-1][1] == "STOPPING=1\nSTATUS=stopping"
    finally:
        task.cancel()
        listener.sock.close()


async def test_no_watchdog_ping_while_the_acd_task_is_stopped() -> None:
    listener = Listener()
    alive = {"acd": True}
    monitor = Monitor(lambda: judge(ALL_WELL, Since(), time.time()), lambda: alive["acd"],
                      SdNotify({"NOTIFY_SOCKET": listener.name}), LoopLag(), watchdog=0.2)
    task = asyncio.create_task(monitor.run())
    try:
        await listener.until("WATCHDOG=1", 2)
        alive["acd"] = False
        await asyncio.sleep(0)
        # at most one ping already on its way, then none for five intervals
        deadline = time.monotonic() + 1.0
        late: list[str] = []
        while (item := await listener.receive(deadline - time.monotonic())) is not None:
            late.append(item[1])
        assert late.count("WATCHDOG=1") <= 1, late
    finally:
        task.cancel()
        listener.sock.close()


async def test_a_blocked_event_loop_is_measured_by_the_probe() -> None:
    lag = LoopLag()
    monitor = Monitor(lambda: judge(ALL_WELL, Since(), time.time()), lambda: True,
                      SdNotify({}), lag, watchdog=None, tick=0.05)
    task = asyncio.create_task(monitor.run())
    try:
        await asyncio.sleep(0.1)
        time.sleep(0.3)  # noqa: ASYNC251 - blocking the loop on purpose
        for _ in range(40):  # the probe's next wake-up, at most 2 s away
            if lag.worst(time.monotonic()) >= 0.2:
                break
            await asyncio.sleep(0.05)
        assert 0.2 <= lag.worst(time.monotonic()) < 0.5
    finally:
        task.cancel()


# ------------------------------------------------------------------ GET /healthz


class Verdict:
    """The Health port, answering what the test sets."""

    def __init__(self, report: HealthReport) -> None:
        self.report = report

    def health(self) -> HealthReport:
        return self.report


async def test_healthz_needs_no_sign_in_and_answers_503_when_not_routing(
        tmp_path: Path) -> None:
    verdict = Verdict(judge(ALL_WELL, Since(), T0))
    async with WebStack(f"sqlite+aiosqlite:///{tmp_path / 'crm.db'}",
                        health=verdict) as stack, aiohttp.ClientSession() as http:
        async with http.get(f"{stack.base}/healthz") as r:
            assert r.status == 200
            assert r.headers["Cache-Control"] == "no-store"
            body = await r.json()
        assert body == {"status": "ok", "role": "leader", "routing": True,
                        "checks": {"ami": "up", "acd": "running", "rules": "ok",
                                   "database": "up", "mqtt": "up", "event_loop": "ok"},
                        "reasons": [], "agents_logged_in": 60, "loop_lag_ms": 2.0}
        verdict.report = judge(facts(ami_up=False), Since(), T0)
        async with http.get(f"{stack.base}/healthz") as r:
            assert r.status == 503
            body = await r.json()
        assert (body["status"], body["routing"], body["checks"]["ami"]) == (
            "degraded", False, "down")
        assert body["reasons"][0].startswith("AMI link down since")
        verdict.report = judge(facts(database_up=False), Since(), T0)
        async with http.head(f"{stack.base}/healthz") as r:
            assert r.status == 200  # degraded, still routing


def test_the_standby_of_a_pair_says_so_and_is_not_routing() -> None:
    """A load balancer in front of the pair sends agents to the member that answers 200."""
    r = judge(ALL_WELL, Since(), 1000.0, role="standby")
    assert (r.status, r.role, r.routing) == ("standby", "standby", False)
    assert any(reason.startswith("standby since") for reason in r.reasons)
    assert judge(ALL_WELL, Since(), 1000.0, role="leader").routing
