"""Real PostgreSQL 15 and mosquitto servers for integration tests, on loopback.

Use them from a test module with a small fixture::

    @pytest.fixture(scope="module")
    def postgres():
        with PostgresServer() as server:
            yield server

Both wait for readiness by polling with a deadline, and stop what they started.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from ctiserver.calls.model import CallInfo
from ctiserver.mqtt import MqttNotifier
from ctiserver.notify import FanOut
from ctiserver.pops import PopService
from ctiserver.store import Store
from ctiserver.store.demo import load_demo
from ctiserver.web import AgentControlError, WebSocketHub, make_app
from ctiserver.web.ports import Health

PG_BIN = Path("/usr/lib/postgresql/15/bin")
MOSQUITTO = Path("/usr/sbin/mosquitto")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, within: float = 15.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {host}:{port} after {within}s") from None
            time.sleep(0.05)  # poll interval, bounded by the deadline


class PostgresServer:
    """A throwaway PostgreSQL cluster owned by user ``postgres`` in a temp dir."""

    def __init__(self) -> None:
        if not (PG_BIN / "initdb").exists():
            raise RuntimeError(f"PostgreSQL 15 not found in {PG_BIN}")
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="ctiserver-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self.running = False

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        cmd = [*(["runuser", "-u", "postgres", "--"] if self._as_postgres else []), *args]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)

    def init(self) -> PostgresServer:
        self._run(
            str(PG_BIN / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )
        return self

    def start(self) -> None:
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off"
        self._run(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            opts,
            "-l",
            str(self.log),
            "-w",
            "-t",
            "30",
            "start",
        )
        self.running = True
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.running:
            self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
            self.running = False

    def __enter__(self) -> PostgresServer:
        self.init()
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _make_certificates(folder: Path) -> None:
    """ca.pem (a throw-away CA) and server.pem / server.key for IP 127.0.0.1, with openssl."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for cmd in (
        ["openssl", "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
         "-subj", "/CN=ctiserver test CA"],
        ["openssl", "req", *ec, "-keyout", "server.key", "-out", "server.csr",
         "-subj", "/CN=127.0.0.1"],
        ["openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
         "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "san.ext"],
    ):
        subprocess.run(cmd, cwd=folder, check=True, capture_output=True, timeout=30)
    for name in ("server.key", "server.pem", "ca.pem"):
        os.chmod(folder / name, 0o644)  # mosquitto may drop to another user


class MosquittoServer:
    """mosquitto on 127.0.0.1:port with a temp config (anonymous, or ACL + passwords)."""

    def __init__(self, *, acl_file: Path | None = None, passwords: dict[str, str] | None = None,
                 tls: bool = False):
        if not MOSQUITTO.exists():
            raise RuntimeError(f"mosquitto not found at {MOSQUITTO}")
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="ctiserver-mqtt-"))
        self.log = self.root / "mosquitto.log"
        self.tls = tls
        lines = [
            f"listener {self.port} 127.0.0.1",
            "persistence false",
            f"log_dest file {self.log}",
            "log_type all",
        ]
        if tls:  # a CA of its own and a certificate for 127.0.0.1 signed by it
            self.ca_file = self.root / "ca.pem"
            _make_certificates(self.root)
            lines += [f"cafile {self.ca_file}", f"certfile {self.root / 'server.pem'}",
                      f"keyfile {self.root / 'server.key'}"]
        if passwords:
            pwfile = self.root / "passwd"
            pwfile.touch()
            for user, password in passwords.items():
                subprocess.run(
                    ["mosquitto_passwd", "-b", str(pwfile), user, password],
                    check=True,
                    capture_output=True,
                    timeout=30,
                )
            os.chmod(pwfile, 0o644)
            lines += ["allow_anonymous false", f"password_file {pwfile}"]
        else:
            lines += ["allow_anonymous true"]
        if acl_file is not None:
            lines.append(f"acl_file {acl_file}")
        self.config = self.root / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")
        os.chmod(self.root, 0o755)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [str(MOSQUITTO), "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def __enter__(self) -> MosquittoServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


# --------------------------------------------------------------- the web stack


class InProcessAgentControl:
    """A small real ``AgentControl``: agent states kept here, changes told to the
    PopService (as the daemon does with the engine's AgentStateChanged effects)."""

    def __init__(self, pops: PopService, agents: tuple[str, ...] = ("1001", "1002", "1003")):
        self.pops = pops
        self.agents: dict[str, dict[str, Any]] = {
            a: {"state": "logged_out", "reason": None, "call_id": None} for a in agents
        }

    async def _set(
        self, agent_id: str, state: str, reason: str | None = None, call_id: str | None = None
    ) -> None:
        if agent_id not in self.agents:
            raise AgentControlError(f"unknown agent {agent_id}")
        self.agents[agent_id] = {"state": state, "reason": reason, "call_id": call_id}
        await self.pops.agent_state(agent_id, state, reason, call_id)

    async def login(self, agent_id: str) -> None:
        await self._set(agent_id, "not_ready", "login")

    async def logout(self, agent_id: str) -> None:
        await self._set(agent_id, "logged_out")

    async def pause(self, agent_id: str, reason: str) -> None:
        await self._set(agent_id, "not_ready", reason)

    async def ready(self, agent_id: str) -> None:
        if self.agents.get(agent_id, {}).get("state") == "logged_out":
            raise AgentControlError("log in first")
        await self._set(agent_id, "ready")

    def snapshot(self) -> dict[str, Any]:
        return {"agents": {a: dict(s) for a, s in self.agents.items()}, "queues": {}}

    def current_call(self, agent_id: str) -> dict[str, Any] | None:
        s = self.agents.get(agent_id)
        if s is None or s["call_id"] is None:
            return None
        return {"call_id": s["call_id"], "state": s["state"]}

    # what the daemon does at the ACD's moments
    async def offer(self, call: CallInfo, agent_id: str) -> None:
        await self._set(agent_id, "offered", call_id=call.call_id)
        await self.pops.offered(call, agent_id)

    async def answer(self, call_id: str, agent_id: str) -> None:
        await self._set(agent_id, "on_call", call_id=call_id)
        self.pops.answered_nowait(call_id, agent_id)

    async def hang_up(self, call_id: str, agent_id: str) -> None:
        await self.pops.ended(call_id, agent_id)
        await self._set(agent_id, "wrap_up", call_id=call_id)


class WebStack:
    """Store + notifier fan-out (WebSocket hub, optional MQTT) + PopService + aiohttp app,
    served on 127.0.0.1 on a free port. ``async with WebStack(url) as stack: ...``"""

    def __init__(
        self,
        db_url: str,
        *,
        mqtt_url: str | None = None,
        migrate: bool = True,
        demo: bool = True,
        lookup_timeout: float = 0.2,
        crm_url_template: str | None = "https://crm.example/search?phone={e164}",
        health: Health | None = None,
    ):
        self.db_url, self.mqtt_url = db_url, mqtt_url
        self.health = health
        self._migrate, self._demo = migrate, demo
        self.lookup_timeout = lookup_timeout
        self.crm_url_template = crm_url_template

    async def __aenter__(self) -> WebStack:
        self.store = Store(self.db_url)
        if self._migrate:
            await self.store.migrate()
        if self._demo:
            await load_demo(self.store)
        self.hub = WebSocketHub(self.store)
        channels: dict[str, Any] = {"ws": self.hub}
        self.mqtt: MqttNotifier | None = None
        if self.mqtt_url:
            self.mqtt = MqttNotifier(
                self.mqtt_url, deliveries=self.store, client_id=f"ctiserver-test-{free_port()}"
            )
            self.mqtt.start()
            channels["mqtt"] = self.mqtt
        self.fanout = FanOut(channels)
        self.pops = PopService(
            self.store,
            self.fanout,
            lookup_timeout=self.lookup_timeout,
            crm_url_template=self.crm_url_template,
        )
        self.control = InProcessAgentControl(self.pops)
        self.app = make_app(store=self.store, pops=self.pops, control=self.control, hub=self.hub,
                            health=self.health)
        self.runner = web.AppRunner(self.app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        sockets = site._server.sockets  # type: ignore[union-attr]
        self.port = sockets[0].getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()
        await self.pops.close()
        await self.fanout.close()
        if self.mqtt is not None:
            await self.mqtt.close()
        await self.store.close()
