"""The composition root: builds every part from the configuration and runs them.

    Asterisk ──AMI──▶ AmiCallEvents ──▶ CallTracker ──events──▶ AcdRunner(Engine)
    AcdRunner ──effects──▶ CallTracker ──▶ AmiTelephony ──AMI──▶ Asterisk
    Asterisk ──FastAGI──▶ AgiRoutes ──▶ Routing (rules, IVR, CRM lookup) ──join──▶ CallTracker
    CallTracker ──offered/answered/ended──▶ PopService ──▶ FanOut(WebSocketHub, MqttNotifier)
    AcdRunner ──agents' states──▶ FallbackFollower ──QueueAdd/Remove/Pause──▶ app_queue
    Web page ──▶ AgentControl ──▶ AcdRunner

Nothing else constructs these objects; they receive what they need here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from ctiserver import config
from ctiserver.acd.control import EngineControl
from ctiserver.acd.runner import AcdRunner
from ctiserver.asterisk.agi_calls import AgiRoutes
from ctiserver.asterisk.ami import AmiConnection, AmiEvent
from ctiserver.asterisk.ami_calls import AmiCallEvents, AmiTelephony, groups_available
from ctiserver.asterisk.fastagi import FastAgiServer
from ctiserver.asterisk.queues_import import read_queues_conf
from ctiserver.calls.fallback import FallbackFollower
from ctiserver.calls.predecided import PreDecided
from ctiserver.calls.routing import Routing
from ctiserver.calls.tracker import CallTracker
from ctiserver.config import Config
from ctiserver.core.acd import events as ev
from ctiserver.core.acd.engine import Engine
from ctiserver.core.acd.states import LOGGED_OUT
from ctiserver.core.rules.model import Known
from ctiserver.health import Facts, LoopLag, Monitor, Probe, Since, judge
from ctiserver.notify import FanOut, Notifier
from ctiserver.pops import PopService
from ctiserver.rules.runtime import RulesRuntime
from ctiserver.sdnotify import SdNotify, watchdog_interval
from ctiserver.store import Store
from ctiserver.store.leadership import Leadership
from ctiserver.store.lookup import SqlLookup
from ctiserver.web.app import make_app
from ctiserver.web.hub import WebSocketHub
from ctiserver.web.ports import HealthReport

log = logging.getLogger("ctiserver")

# how long a standby keeps a caller the other member did not answer, waiting to lead
STANDBY_HOLD = 2.0


class Daemon:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        # per-call writes (interaction records, pop deliveries and acks, agent states) wait
        # up to 200 ms to share a transaction: a commit (an fsync on SQLite) and its thread
        # round trip cost more than the statements; nobody is kept waiting on them but an
        # agent's "saved" on a disposition or an ack
        self.store = Store(cfg.database_url, region=cfg.region, write_delay=0.2)
        self.hub = WebSocketHub(deliveries=self.store)
        channels: dict[str, Notifier] = {"websocket": self.hub}
        self.mqtt = None
        if cfg.mqtt_url:
            from ctiserver.mqtt.publisher import MqttNotifier

            self.mqtt = MqttNotifier(cfg.mqtt_url, deliveries=self.store,
                                     ca_file=cfg.mqtt_ca_file)
            channels["mqtt"] = self.mqtt
        self.notifier = FanOut(channels)
        self.pops = PopService(self.store, self.notifier, crm_url_template=cfg.crm_url_template,
                               lookup_timeout=cfg.lookup_timeout,
                               spool_path=cfg.state_dir / "interactions.spool")
        self.rules = RulesRuntime(cfg.rules_dir, cfg.flows_dir, cfg.state_dir,
                                  known=Known(queues=frozenset(cfg.acd.queues),
                                              agents=frozenset(cfg.acd.agents)))
        self.engine = Engine(cfg.acd)
        self.ami = AmiConnection(cfg.ami, self._on_ami_event, on_login=self._on_ami_login,
                                 on_lost=self._on_ami_lost)
        self.runner = AcdRunner(self.engine, self._carry_out)
        self.calls = CallTracker(AmiTelephony(self.ami), self.runner.submit, self.pops,
                                 {a.device: a.id for a in cfg.acd.agents.values()},
                                 poke=self.runner.poke)
        self.calls.queue_known = lambda queue: queue in self.cfg.acd.queues
        self.ami_calls = AmiCallEvents(self.calls, self.ami)
        self.runner.after_steps(self.calls.run_deferred)
        # app_queue's fallback queue keeps ctiserver's agents, for when ctiserver is down
        self.fallback: FallbackFollower | None = None
        if cfg.fallback_queue:
            self.fallback = FallbackFollower(
                AmiTelephony(self.ami), cfg.fallback_queue,
                {a.id: a.device for a in cfg.acd.agents.values()})
        # the pre-decided ring: numbers whose routing is the number alone
        self.predecided: PreDecided | None = None
        self.zone = ZoneInfo(cfg.timezone)  # not looked up again on the ACD's path
        if cfg.pre_decided:
            self.predecided = PreDecided(
                AmiTelephony(self.ami), self.calls, self.engine.peek,
                {a.id: a.device for a in cfg.acd.agents.values()}, region=cfg.region)
            self.calls.claims = self.predecided
            self.runner.after_steps(self._refresh_predecided)
        # lookup(table, key) in rules: only [crm] lookup_tables, each call bounded
        self.sql_lookup = (SqlLookup(self.store.engine, cfg.lookup_tables, cfg.lookup_timeout)
                           if cfg.lookup_tables else None)
        # one CRM lookup per call: routing starts it, the pop uses its answer
        self.routing = Routing(self.calls, self.rules, lambda: self.cfg.acd,
                               self.runner.request, self.pops, region=cfg.region,
                               timezone=cfg.timezone, lookup_timeout=cfg.lookup_timeout,
                               lookup=self.sql_lookup, linked=self.ami.connected.is_set)
        self.agi_routes = AgiRoutes(self.routing)
        self.agi = FastAgiServer(cfg.agi_host, cfg.agi_port)
        self.agi.add_route("route", self._route)
        self.agi.add_route("agent", self._agent)
        self.control = EngineControl(self.runner)
        self.stop_event = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self.restored: set[str] = set()
        self.web_runner: web.AppRunner | None = None
        # an active/standby pair (docs/failover.md): the standby keeps its AMI link and
        # rules warm, acts on nothing, and takes over when it gets the lock
        self.role = "leader"
        self.leading = asyncio.Event()  # set once this process leads
        self.leadership: Leadership | None = None
        self.exit_code = 0
        if cfg.ha.enabled:
            self.role = "standby"
            self.ami.acting = False
            self.leadership = Leadership(cfg.database_url, cfg.ha.lock_key, name=cfg.ha.name,
                                         interval=cfg.ha.interval,
                                         fence_after=cfg.ha.fence_after,
                                         on_change=self._leadership_changed)
        # /healthz and systemd (Type=notify, WatchdogSec=): docs/operations.md
        self.acd_task: asyncio.Task[None] | None = None
        self.health = DaemonHealth(self)
        self.monitor = Monitor(self.health.health, self.health.acd_running, SdNotify(),
                               self.health.lag, watchdog_interval(os.environ, os.getpid()))

    # ------------------------------------------------------------------ leader or standby

    async def _route(self, request: Any) -> None:
        if self.role != "leader" and not await self._leading_soon(request):
            return  # no CTI_ACTION: the dialplan asks the other member (ctiserver-second)
        await self.agi_routes.route(request)

    async def _leading_soon(self, request: Any) -> bool:
        """A standby asked from [ctiserver-second]: the other member, asked first, gave no
        answer, so it may be dying. Rather than send the caller to the fallback queue,
        wait a moment for the lock it would free (a killed leader's goes at once)."""
        if self.leadership is None or request.headers.get("agi_context") != "ctiserver-second":
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.leading.wait(), STANDBY_HOLD)
        return self.role == "leader"

    async def _agent(self, request: Any) -> None:
        if self.role == "leader":
            await self.agi_routes.agent(request)

    def _leadership_changed(self, leader: bool, why: str) -> None:
        if leader:
            self._tasks.append(asyncio.get_running_loop().create_task(self._promote(why)))
            return
        # whatever this process believes about calls is stale from here on: stop, and let
        # the service manager start it again as a standby (Restart= in the systemd unit)
        log.error("lost the leadership (%s): stopping so that only the leader acts", why)
        self.role = "standby"
        self.ami.acting = False
        self.exit_code = 3
        self.stop_event.set()

    async def _promote(self, why: str) -> None:
        t0 = time.monotonic()
        self.role = "leader"
        self.ami.acting = True
        await self._agents_back()
        self.leading.set()  # the agents first: a caller held for this is then routed
        if self.ami.connected.is_set():
            self._on_ami_login()  # the waiting callers taken back, the pre-decided ring
        log.warning("leading (%s): agents restored in %.0f ms; taking callers back",
                    why, (time.monotonic() - t0) * 1000)
    def _on_ami_event(self, event: AmiEvent) -> None:
        # a standby follows no call: what it would learn is rebuilt at its promotion from
        # Asterisk's own lists (the resync), and half-followed calls would be worse
        if self.role == "leader":
            self.ami_calls.on_ami_event(event)

    def _on_ami_login(self) -> None:
        if self.role != "leader":
            log.info("standby: AMI link up, waiting for the leadership")
            return
        self._tasks.append(asyncio.get_running_loop().create_task(self.ami_calls.resync()))
        if self.fallback is not None:
            self.fallback.logged_in()
        if self.predecided is not None:
            self.predecided.reset()
            self._tasks.append(asyncio.get_running_loop().create_task(self._check_groups()))

    def _on_ami_lost(self) -> None:
        self.ami_calls.link_lost()

    async def _check_groups(self) -> None:
        available = await groups_available(self.ami)
        if available is False and self.predecided is not None:
            self.predecided.disable("Asterisk has no GROUP_COUNT (load func_groupcount.so)")

    def _refresh_predecided(self) -> None:
        """After the ACD's steps: the routes again if the rules changed, then the agents."""
        if self.predecided is not None:
            self.predecided.follow(self.rules, self.cfg.acd, self.zone)
            if self.ami.connected.is_set():
                self.predecided.refresh()

    def _carry_out(self, event: ev.Event, effects: list[ev.Effect]) -> None:
        self.calls.carry_out(event, effects)
        if self.fallback is not None:
            self.fallback.follow(event, effects)

    async def start(self) -> None:
        cfg = self.cfg
        self._tasks.append(asyncio.create_task(self.monitor.run(), name="monitor"))
        self._tasks.append(asyncio.create_task(self.health.database.run(), name="db-probe"))
        if self.sql_lookup is not None:
            self.sql_lookup.bind(asyncio.get_running_loop())
        result = self.rules.start()
        if not result.ok:
            log.error("routing rules: %s", result.reason)
        log.info("routing rules version %s loaded", self.rules.version)
        try:
            await asyncio.wait_for(self.store.migrate(), 30)
            for agent in cfg.acd.agents.values():
                await self.store.upsert_agent(agent.id, agent.name)
        except Exception as exc:  # routing must work without the CRM database
            log.error("database %s unavailable at start (%s): routing continues without CRM",
                      _safe_url(cfg.database_url), exc)
        if self.role == "leader":
            await self._agents_back()
            self.leading.set()
        self.acd_task = asyncio.create_task(self.runner.run(), name="acd")
        self._tasks.append(self.acd_task)
        if self.leadership is not None:
            log.info("standby %s: contending for the leadership", cfg.ha.name)
            self._tasks.append(asyncio.create_task(self.leadership.run(), name="leadership"))
        self._tasks.append(asyncio.create_task(self.pops.run_retry(5.0), name="pop-retry"))
        self._tasks.append(asyncio.create_task(self._watch_rules(), name="rules-watch"))
        if self.mqtt is not None:
            self.mqtt.start()
        await self.agi.start()
        app = make_app(store=self.store, pops=self.pops, control=self.control, hub=self.hub,
                       health=self.health)
        app.middlewares.append(self._leader_only)
        self.web_runner = web.AppRunner(app, access_log=None)
        await self.web_runner.setup()
        await web.TCPSite(self.web_runner, cfg.web_host, cfg.web_port).start()
        log.info("agent page on http://%s:%d/", cfg.web_host, cfg.web_port)
        await self.ami.start()
        # ready without waiting for the AMI login: with Asterisk down ctiserver must be up
        # and retrying, and a call it cannot follow goes to the fallback (Routing.linked)
        self.monitor.ready()

    async def _agents_back(self) -> None:
        """Agents as they were (the database), then those logged in at start."""
        cfg = self.cfg
        if cfg.restore_agents:
            try:
                await self._restore_agents()
            except Exception as exc:
                log.error("agents' states not restored: database %s unavailable (%s)",
                          _safe_url(cfg.database_url), exc)
        for agent_id in cfg.auto_login:
            if agent_id in cfg.acd.agents and agent_id not in self.restored:
                self.runner.submit(ev.AgentLoggedIn(agent_id))

    async def _restore_agents(self) -> None:
        states = await self.store.load_agent_states()
        for agent_id, rec in states.items():
            if agent_id not in self.cfg.acd.agents or rec.state == "logged_out":
                continue
            self.runner.submit(ev.AgentLoggedIn(agent_id, ready=rec.state == "ready"))
            self.restored.add(agent_id)
            if rec.state == "not_ready":
                self.runner.submit(ev.AgentPaused(agent_id, rec.reason or "pause"))
            log.info("agent %s restored as %s", agent_id, rec.state)

    @web.middleware
    async def _leader_only(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Agents' browsers land on the leader: a standby sends them to its peer."""
        if self.role == "leader" or request.path in ("/healthz", "/metrics"):
            return await handler(request)  # type: ignore[no-any-return]
        if self.cfg.ha.peer_url:
            raise web.HTTPTemporaryRedirect(self.cfg.ha.peer_url.rstrip("/") +
                                            str(request.rel_url))
        return web.json_response({"error": "this ctiserver is the standby"}, status=503)

    async def _watch_rules(self) -> None:
        def reloaded(result: Any) -> None:
            if result.ok:
                log.info("routing rules reloaded: version %s", result.version)
                self.runner.poke()  # the pre-decided numbers follow the new rules
            else:
                log.error("routing rules NOT reloaded, keeping version %s: %s",
                          self.rules.version, result.reason)

        await self.rules.watch(self.stop_event, reloaded)

    def reload_rules(self) -> None:
        result = self.rules.reload()
        if result.ok:
            log.info("SIGHUP: routing rules version %s", result.version)
            self.runner.poke()
        else:
            log.error("SIGHUP: routing rules refused, keeping %s: %s", self.rules.version,
                      result.reason)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop_event.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload_rules)
        try:
            await self.start()
        except BaseException as exc:
            # stop what did start (the rules watcher only stops on stop_event): without
            # this the process hung in asyncio's shutdown, holding its ports, and silent
            log.error("start failed: %r", exc)
            self.stop_event.set()
            await self.close()
            raise
        await self.stop_event.wait()
        log.info("stopping")
        self.monitor.stopping()
        await self.close()
        if self.exit_code:
            raise SystemExit(self.exit_code)

    async def close(self) -> None:
        if self.fallback is not None:
            # the members stay as they are now: the fallback takes over with them
            await self.fallback.close(2.0 if self.ami.connected.is_set() else 0)
        if self.predecided is not None and self.ami.connected.is_set():
            # no caller may take an agent from a ctiserver that is gone
            self.predecided.withdraw_all()
            with contextlib.suppress(Exception):
                await self.ami.call({"Action": "Ping"}, timeout=2)  # after the Setvars
        self.ami.close()
        await self.agi.close()
        if self.web_runner is not None:
            await self.web_runner.cleanup()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await asyncio.wait_for(self.notifier.drain(2.0), 3.0)
        except Exception:
            pass
        await self.notifier.close()
        await self.pops.close()
        await self.store.close()
        self.monitor.notify.close()
        log.info("stopped")


class DaemonHealth:
    """``web.ports.Health``: asks the AMI link, the database probe, the MQTT notifier, the
    rules and the ACD task how they are; ``ctiserver.health`` judges."""

    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon
        self.lag = LoopLag()
        self.since = Since()
        self.database = Probe("database", daemon.store.ping)

    def acd_running(self) -> bool:
        task = self.d.acd_task
        return task is None or not task.done()  # not started yet is not stopped

    def facts(self) -> Facts:
        d = self.d
        return Facts(
            ami_up=d.ami.connected.is_set(), acd_running=self.acd_running(),
            rules_version=d.rules.version, rules_refused=d.rules.last_refusal is not None,
            database_up=self.database.up,
            mqtt_up=None if d.mqtt is None else d.mqtt.connected.is_set(),
            loop_lag=self.lag.worst(time.monotonic()),
            agents_logged_in=sum(a.state is not LOGGED_OUT for a in d.engine.agents.values()))

    def health(self) -> HealthReport:
        return judge(self.facts(), self.since, time.time(), role=self.d.role)


def load_config(path: str | Path) -> Config:
    """The configuration file, an ``[acd] import_queues_conf`` read by the Asterisk
    adapter's queues.conf reader."""
    return config.load(path, read_queues_conf=lambda p: read_queues_conf(p).config)


def _safe_url(url: str) -> str:
    """A database URL without its password, for logs."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<database>"


def run(cfg: Config) -> None:
    # uvloop (libuv) runs the same asyncio code with far less CPU per socket read, timer
    # and callback; CTISERVER_EVENT_LOOP=asyncio keeps the standard loop
    factory = None
    if os.environ.get("CTISERVER_EVENT_LOOP", "uvloop") == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(Daemon(cfg).run())

