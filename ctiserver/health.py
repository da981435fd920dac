"""How the daemon is, for ``GET /healthz`` and for systemd: the verdict, the event loop's
lag, and the task that keeps systemd told (STATUS lines, watchdog pings).

``judge`` turns the parts' facts into a ``HealthReport``. "ok" when nothing is wrong;
otherwise "degraded", with one reason per condition, and ``routing`` (HTTP 200) only
while new calls are still routed by ctiserver:

| condition                          | routing | what callers and agents notice          |
|------------------------------------|---------|-----------------------------------------|
| AMI link down                      | no      | new calls go to the app_queue fallback  |
| no routing rules loaded at all     | no      | every call goes to the fallback         |
| the ACD task stopped               | no      | nobody is offered a call                |
| the standby of a pair              | no      | nothing: the leader routes              |
| rules files refused                | yes     | an older rule set routes                |
| database unreachable               | yes     | pops without CRM data; records wait     |
| MQTT broker unreachable            | yes     | MQTT pops wait in a bounded queue       |
| event loop late by > ``LAG_LIMIT`` | yes     | slower rings and pops                   |

The loop-lag probe is the task that pings the watchdog: one task on the event loop that
sleeps ``TICK`` and measures how late it wakes. A loop blocked for longer than WatchdogSec
sends no ``WATCHDOG=1`` and systemd restarts the daemon.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

from ctiserver.sdnotify import SdNotify
from ctiserver.web.ports import HealthReport

log = logging.getLogger("ctiserver.health")

TICK = 0.25  # seconds between the probe's wake-ups (4 timers a second: no measurable CPU)
STATUS_EVERY = 1.0  # seconds between looks at the verdict for systemd's STATUS line
# Asterisk drops an AMI client that does not read for its writetimeout (100 ms by default):
# a loop that late is a problem worth an admin's look
LAG_LIMIT = 0.1
LAG_WINDOW = 30.0  # seconds over which the worst lateness is reported


@dataclass(frozen=True)
class Facts:
    """The parts' own word on how they are, at one moment."""

    ami_up: bool  # logged in to the AMI
    acd_running: bool  # the task that owns the engine runs
    rules_version: str | None  # the rule set routing calls; None: none loaded
    rules_refused: bool  # the files on disk were refused (an older version routes)
    database_up: bool | None  # None: not probed yet
    mqtt_up: bool | None  # None: no MQTT configured
    loop_lag: float  # seconds: the worst lateness over LAG_WINDOW
    agents_logged_in: int


class Since:
    """When each condition was first seen, kept for as long as it lasts."""

    def __init__(self) -> None:
        self._first: dict[str, float] = {}

    def observe(self, active: Iterable[str], now: float) -> Mapping[str, float]:
        keys = set(active)
        for key in [k for k in self._first if k not in keys]:
            del self._first[key]
        for key in keys:
            self._first.setdefault(key, now)
        return self._first


def stamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def judge(f: Facts, since: Since, now: float, *, role: str = "leader",
          lag_limit: float = LAG_LIMIT) -> HealthReport:
    """The verdict on ``f``; ``since`` remembers when each condition began."""
    # condition -> (new calls are no longer routed, why, with {since})
    found: dict[str, tuple[bool, str]] = {}
    if role != "leader":  # an active/standby pair's standby (docs/failover.md)
        found["role"] = (True, "standby since {since}: the other member routes calls; this "
                               "one leads when it gets the lock")
    if not f.ami_up:
        found["ami"] = (True, "AMI link down since {since}, reconnecting: new calls go to "
                              "the fallback queue")
    if not f.acd_running:
        found["acd"] = (True, "ACD task stopped since {since}: no call is offered")
    if f.rules_version is None:
        found["rules"] = (True, "no routing rules loaded since {since}: calls go to the "
                                "fallback queue")
    elif f.rules_refused:
        found["rules"] = (False, "routing rules files refused since {since}: still routing "
                                 f"with version {f.rules_version}")
    if f.database_up is False:
        found["database"] = (False, "database unreachable since {since}: pops without CRM "
                                    "data, records kept to write later")
    if f.mqtt_up is False:
        found["mqtt"] = (False, "MQTT broker unreachable since {since}: MQTT pops wait")
    if f.loop_lag > lag_limit:
        found["event_loop"] = (False, f"event loop late by up to {f.loop_lag * 1000:.0f} ms "
                                      f"in the last {LAG_WINDOW:.0f} s (limit "
                                      f"{lag_limit * 1000:.0f} ms)")
    first = since.observe(found, now)
    checks = {
        "ami": "down" if "ami" in found else "up",
        "acd": "stopped" if "acd" in found else "running",
        "rules": ("none" if f.rules_version is None
                  else "refused" if f.rules_refused else "ok"),
        "database": {True: "up", False: "down", None: "unknown"}[f.database_up],
        "mqtt": {True: "up", False: "down", None: "off"}[f.mqtt_up],
        "event_loop": "late" if "event_loop" in found else "ok",
    }
    return HealthReport(
        status="standby" if role != "leader" else "degraded" if found else "ok",
        role=role,
        routing=not any(blocks for blocks, _ in found.values()),
        checks=checks,
        reasons=tuple(text.format(since=stamp(first[key]))
                      for key, (_, text) in found.items()),
        agents_logged_in=f.agents_logged_in,
        loop_lag_ms=round(f.loop_lag * 1000, 1),
    )


def status_line(r: HealthReport) -> str:
    """What ``systemctl status ctiserver`` shows on its Status: line."""
    agents = f"{r.agents_logged_in} agent{'' if r.agents_logged_in == 1 else 's'} logged in"
    if not r.reasons:
        return f"routing, AMI connected, {agents}"
    return "; ".join(("routing" if r.routing else "NOT routing", *r.reasons, agents))


class LoopLag:
    """The event loop's lateness as the probe measured it, over the last ``window`` s."""

    def __init__(self, window: float = LAG_WINDOW) -> None:
        self.window = window
        self._samples: deque[tuple[float, float]] = deque()

    def record(self, now: float, lag: float) -> None:
        self._samples.append((now, lag))
        self._trim(now)

    def worst(self, now: float) -> float:
        self._trim(now)
        return max((lag for _, lag in self._samples), default=0.0)

    def _trim(self, now: float) -> None:
        while self._samples and self._samples[0][0] < now - self.window:
            self._samples.popleft()


class Probe:
    """Asks a part every ``every`` seconds whether it answers within ``timeout``: /healthz
    reads the last answer, so nobody can make it query the database per request."""

    def __init__(self, name: str, check: Callable[[], Awaitable[object]], *,
                 every: float = 5.0, timeout: float = 2.0) -> None:
        self.name = name
        self.check = check
        self.every = every
        self.timeout = timeout
        self.up: bool | None = None

    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self.check(), self.timeout)
            except Exception as exc:  # noqa: BLE001 - any failure means "unreachable"
                if self.up is not False:
                    log.warning("health: %s unreachable (%s: %s)", self.name,
                                type(exc).__name__, exc)
                self.up = False
            else:
                if self.up is False:
                    log.info("health: %s reachable again", self.name)
                self.up = True
            await asyncio.sleep(self.every)


class Monitor:
    """Keeps systemd told, from the event loop itself: measures the loop's lag, pings the
    watchdog every half ``watchdog`` seconds (withheld while ``alive`` says no, so that
    systemd restarts a daemon whose ACD task died) and sends a STATUS line when the
    verdict's wording changes (after ``ready``)."""

    def __init__(self, report: Callable[[], HealthReport], alive: Callable[[], bool],
                 notify: SdNotify, lag: LoopLag, watchdog: float | None, *,
                 tick: float = TICK, status_every: float = STATUS_EVERY) -> None:
        self.report = report
        self.alive = alive
        self.notify = notify
        self.lag = lag
        self.watchdog = watchdog
        self.tick = tick if watchdog is None else min(tick, watchdog / 4)
        self.status_every = status_every
        self._ready = False
        self._line = ""
        self._withheld = False

    def ready(self) -> None:
        """The daemon serves: FastAGI and the web listen (the AMI link may still be down)."""
        self._ready = True
        self._line = status_line(self.report())
        self.notify.ready(self._line)

    def stopping(self) -> None:
        self._ready = False
        self.notify.stopping()

    async def run(self) -> None:
        self.notify.status("starting")
        last_ping = last_status = -math.inf
        while True:
            expected = time.monotonic() + self.tick
            await asyncio.sleep(self.tick)
            now = time.monotonic()
            self.lag.record(now, max(0.0, now - expected))
            if self.watchdog is not None and now - last_ping >= self.watchdog / 2:
                if self.alive():
                    self.notify.watchdog()
                    last_ping = now
                elif not self._withheld:
                    self._withheld = True
                    log.error("the ACD task has stopped: watchdog pings withheld, so that "
                              "systemd restarts ctiserver")
            if self._ready and now - last_status >= self.status_every:
                last_status = now
                line = status_line(self.report())
                if line != self._line:
                    self._line = line
                    self.notify.status(line)
