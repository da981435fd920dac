"""Real components for integration tests: the sandbox Asterisk, an AMI observer, the
ctiserver daemon as a subprocess, and sipp callers and agent phones. Nothing here is a
mock: every test talks SIP to a real Asterisk 22 on loopback.

Waiting is always "poll with a deadline" or "wait on an event": never a bare sleep.
"""

from __future__ import annotations

import asyncio
import csv
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from panoramisk import Manager

REPO = Path(__file__).resolve().parents[2]
SANDBOX = REPO / "asterisk_conf" / "sandbox"
SIPP_DIR = REPO / "asterisk_conf" / "sipp"
AGI_PORT = 4573  # the dialplan's CTI_AGI global points here
ANSWERING_PHONES = 5070  # agents 1001-1004
NO_ANSWER_PHONE = 5072  # agent 1005
BENCH_PHONES = 5080  # agents 2001-2060
# server b of the two-server sandbox (`sandbox up b`, asterisk_conf/etc-b/)
AMI_PORT_B = 5039
SIP_PORT_B = 5062
PHONES_B = 5074  # agents 3001-3004 on server b
NO_ANSWER_PHONE_B = 5076  # agent 3005 on server b
BUSY_PHONE_B = 5078  # agent 3006 on server b (busy_phone.xml)
LOOPBACK = ["-i", "127.0.0.1", "-mi", "127.0.0.1", "-ci", "127.0.0.1"]


def sandbox(*args: str, timeout: float = 300) -> str:
    proc = subprocess.run([str(SANDBOX), *args], capture_output=True, text=True, timeout=timeout)
    if proc.returncode not in (0, 3):
        raise RuntimeError(f"sandbox {' '.join(args)} failed:\n{proc.stderr}{proc.stdout}")
    return proc.stdout + proc.stderr


def wait_until(predicate: Callable[[], Any], timeout: float, what: str,
               interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


# ---------------------------------------------------------------- AMI observer


class Observer:
    """Watches every AMI event as the sandbox's `observer` user, in its own thread-free
    asyncio loop driven by the test (``pump``); of server a, or of b with ``port=AMI_PORT_B``."""

    def __init__(self, port: int = 5038) -> None:
        self.loop = asyncio.new_event_loop()
        self.events: list[Any] = []
        self.manager = Manager(host="127.0.0.1", port=port, username="observer",
                               secret="observer-sandbox-secret", loop=self.loop,
                               ping_delay=30, reconnect_timeout=1)
        self.manager.register_event("*", lambda _m, e: self.events.append(e))

    def start(self) -> None:
        self.loop.run_until_complete(self._connect())

    async def _connect(self) -> None:
        self.manager.connect()
        deadline = time.monotonic() + 15
        while not self.manager.authenticated:
            if time.monotonic() > deadline:
                raise AssertionError("observer could not log in to AMI")
            await asyncio.sleep(0.05)

    def pump(self, seconds: float = 0.05) -> None:
        self.loop.run_until_complete(asyncio.sleep(seconds))

    def wait_for(self, predicate: Callable[[Any], bool], timeout: float, what: str,
                 count: int = 1) -> list[Any]:
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.events if predicate(e)]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout:.0f} s waiting for {count} x {what}; "
                    f"saw {len(found)}")
            self.pump(0.05)

    def named(self, name: str, **fields: str) -> list[Any]:
        return [e for e in self.events if e.event == name
                and all(str(e.get(k, "")) == v for k, v in fields.items())]

    def close(self) -> None:
        self.manager.close()
        self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.close()


def dialed_agents(obs: Observer) -> list[str]:
    """Devices rung, in order, from DialBegin events (e.g. ['PJSIP/1001', ...])."""
    return [e.DestChannel.rsplit("-", 1)[0] for e in obs.events if e.event == "DialBegin"]


# ---------------------------------------------------------------- the fallback queue

FALLBACK_QUEUE = "ctiserver-fallback"  # queues.conf; ctiserver keeps its members


@dataclass(frozen=True)
class Member:
    name: str  # MemberName
    paused: bool
    reason: str
    membership: str  # dynamic | static


def ami_call(obs: Observer, action: dict[str, str], as_list: bool | None = None) -> Any:
    """Send an AMI action as the observer and wait for its response."""
    async def send() -> Any:
        return await asyncio.wait_for(obs.manager.send_action(action, as_list=as_list), 10)

    return obs.loop.run_until_complete(send())


def fallback_members(obs: Observer) -> dict[str, Member]:
    """The fallback queue's members as Asterisk lists them (QueueStatus), by device."""
    reply = ami_call(obs, {"Action": "QueueStatus", "Queue": FALLBACK_QUEUE})
    return {e.Location: Member(e.Name, e.Paused == "1", e.PausedReason or "", e.Membership)
            for e in (reply if isinstance(reply, list) else [])
            if e.get("Event") == "QueueMember" and e.Queue == FALLBACK_QUEUE}


def set_fallback_members(obs: Observer, devices: tuple[str, ...]) -> None:
    """The fallback queue with these members, ready (for tests that run it without
    ctiserver: the members are otherwise whatever the last ctiserver left)."""
    for device in fallback_members(obs):
        ami_call(obs, {"Action": "QueueRemove", "Queue": FALLBACK_QUEUE, "Interface": device},
                 as_list=False)
    for device in devices:
        reply = ami_call(obs, {"Action": "QueueAdd", "Queue": FALLBACK_QUEUE,
                               "Interface": device, "StateInterface": device,
                               "MemberName": device.rsplit("/", 1)[-1], "Paused": "false"},
                         as_list=False)
        assert reply.response == "Success", reply
    assert set(fallback_members(obs)) == set(devices)


# ---------------------------------------------------------------- the daemon

DEFAULT_AGENTS = textwrap.dedent("""
    [[agents]]
    id = "1001"
    name = "Lucia Martin"
    queues = ["support", "sales"]
    skills = { billing = 5, technical = 2 }
    auto_login = true

    [[agents]]
    id = "1002"
    name = "Javier Romero"
    queues = ["support"]
    skills = { technical = 8 }
    auto_login = true

    [[agents]]
    id = "1003"
    name = "Marta Navarro"
    queues = ["support", "sales"]
    skills = { billing = 3, technical = 5 }
    auto_login = true
""")

DEFAULT_QUEUES = textwrap.dedent("""
    [[queues]]
    name = "support"
    strategy = "longest_idle"
    ring_timeout = 10

    [[queues]]
    name = "sales"
    strategy = "longest_idle"
    ring_timeout = 10
""")

DEFAULT_RULES = textwrap.dedent("""
    config:
      timezone: Europe/Madrid
      region: ES
      default: {queue: support}
    rules:
      - name: test line
        if: dnis == '900100999'
        then: {queue: support}
""")


BENCH_AGENTS = [str(2001 + i) for i in range(60)]  # sipp phones on BENCH_PHONES


def bench_server(workdir: Path, dnis: str, **kwargs: Any) -> CtiServer:
    """ctiserver for the benchmarks: one longest-idle queue `bench` served by the 60 bench
    agents (logged in at start), and one rule sending ``dnis`` to it."""
    agents = "".join(f'\n[[agents]]\nid = "{a}"\nname = "Bench {a}"\nqueues = ["bench"]\n'
                     "auto_login = true\n" for a in BENCH_AGENTS)
    queues = '\n[[queues]]\nname = "bench"\nstrategy = "longest_idle"\nring_timeout = 15\n'
    rules = textwrap.dedent(f"""
        config:
          timezone: Europe/Madrid
          region: ES
          default: {{queue: bench}}
        rules:
          - name: bench line
            if: dnis == '{dnis}'
            then: {{queue: bench}}
        """)
    return CtiServer(workdir, queues=queues, agents=agents, rules=rules, **kwargs)


@dataclass
class CtiServer:
    """ctiserver run as a user runs it: ``python -m ctiserver run --config FILE``."""

    workdir: Path
    queues: str = DEFAULT_QUEUES
    agents: str = DEFAULT_AGENTS
    rules: str = DEFAULT_RULES
    extra: str = ""
    flows_from: Path | None = REPO / "ivr_flows"
    database_url: str | None = None
    mqtt_url: str | None = None
    web_port: int = field(default_factory=free_port)
    pre_decided: bool = True  # [rules] pre_decided (docs/fast-path.md)
    agi_port: int = AGI_PORT  # another port: the second member of an active/standby pair
    env: dict[str, str] = field(default_factory=dict)  # more environment for the daemon
    restore_agents: bool = True  # [state] restore_agents: agents as they were at the stop
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = Path()

    def write(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        rules_dir, flows_dir = self.workdir / "rules", self.workdir / "flows"
        rules_dir.mkdir(exist_ok=True)
        flows_dir.mkdir(exist_ok=True)
        (rules_dir / "main.yaml").write_text(self.rules)
        if self.flows_from is not None:
            for f in self.flows_from.glob("*.yaml"):
                (flows_dir / f.name).write_text(f.read_text())
        db = self.database_url or f"sqlite+aiosqlite:///{self.workdir}/ctiserver.db"
        mqtt = f'[mqtt]\nurl = "{self.mqtt_url}"\n' if self.mqtt_url else ""
        cfg = self.workdir / "ctiserver.toml"
        cfg.write_text(textwrap.dedent(f"""
            [ami]
            host = "127.0.0.1"
            port = 5038
            username = "ctiserver"
            reconnect_max = 2
            [agi]
            bind = "127.0.0.1:{self.agi_port}"
            [web]
            bind = "127.0.0.1:{self.web_port}"
            [database]
            url = "{db}"
            [rules]
            dir = "rules"
            flows_dir = "flows"
            pre_decided = {str(self.pre_decided).lower()}
            [state]
            dir = "state"
            restore_agents = {str(self.restore_agents).lower()}
            """) + mqtt + self.extra + self.queues + self.agents)
        return cfg

    def start(self, wait: bool = True) -> CtiServer:
        cfg = self.write()
        self.log_path = self.workdir / "ctiserver.log"
        # the daemon runs this checkout's code, as the tests do (not the venv's install)
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, "CTISERVER_AMI_SECRET": "ctiserver-sandbox-secret",
               "PYTHONUNBUFFERED": "1", "PYTHONPATH": path, **self.env}
        wait_until(lambda: not port_open(self.agi_port), 10,
                   f"FastAGI port {self.agi_port} to be free")
        self.proc = subprocess.Popen(
            [sys.executable, *_entry(), "run", "--config", str(cfg)],
            stdout=self.log_path.open("wb"), stderr=subprocess.STDOUT, cwd=self.workdir, env=env)
        if wait:
            self.wait_log("AMI logged in", 30)
            wait_until(lambda: port_open(self.agi_port), 10, "FastAGI listening")
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_log(self, text: str, timeout: float, count: int = 1) -> None:
        def seen() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"ctiserver exited ({self.proc.returncode}):\n{self.log()}")
            return self.log().count(text) >= count
        wait_until(seen, timeout, f"{text!r} in the ctiserver log")

    def kill(self) -> None:
        """kill -9: nothing of ctiserver's own shutdown runs."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise AssertionError("ctiserver did not stop on SIGTERM within 15 s") from None
        rc = self.proc.returncode
        self.proc = None
        return rc


def _entry() -> list[str]:
    """``-m ctiserver``, or CTISERVER_TEST_WRAPPER: a script that runs ``ctiserver.cli.main``
    under a profiler (for the benchmarks; see bench/README or the CHANGELOG)."""
    wrapper = os.environ.get("CTISERVER_TEST_WRAPPER")
    return [wrapper] if wrapper else ["-m", "ctiserver"]


# ---------------------------------------------------------------- sipp


@dataclass
class SippResult:
    returncode: int
    successful: int
    failed: int
    output: str


def write_callers(path: Path, callers: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="") as fh:
        fh.write("SEQUENTIAL\n")
        w = csv.writer(fh, delimiter=";", lineterminator="\n")
        for number, name in callers:
            w.writerow([number, name])
    return path


def place_calls(workdir: Path, dnis: str, calls: int = 1, rate: float = 1.0,
                maxwait_ms: int = 30000, callers: list[tuple[str, str]] | None = None,
                timeout: int = 120, trunk: str = "sipp", port: int | None = None,
                scenario: str = "caller.xml", sip_port: int = 5060) -> SippResult:
    """Run sipp callers to completion (bounded by -m and -timeout), to server a, or to
    server b with ``sip_port=SIP_PORT_B``."""
    inf = write_callers(workdir / f"callers-{time.monotonic_ns()}.csv",
                        callers or [("+34600000001", "Test Caller")])
    sf = SIPP_DIR / scenario
    if trunk != "sipp":
        text = sf.read_text().replace("X-Test-Trunk: sipp", f"X-Test-Trunk: {trunk}")
        sf = workdir / f"caller-{trunk}.xml"
        sf.write_text(text)
    cmd = ["sipp", "-sf", str(sf), "-inf", str(inf), *LOOPBACK,
           "-p", str(port or free_port()), "-m", str(calls), "-r", str(rate),
           "-timeout", str(timeout), "-set", "maxwait", str(maxwait_ms),
           "-s", dnis, "-nostdin", "-trace_err", "-error_file", str(workdir / "sipp-errors.log"),
           f"127.0.0.1:{sip_port}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 30,
                          cwd=workdir)
    return SippResult(proc.returncode, _stat(proc.stdout, "Successful call"),
                      _stat(proc.stdout, "Failed call"), proc.stdout + proc.stderr)


def _stat(out: str, label: str) -> int:
    for line in out.splitlines():
        if line.strip().startswith(label):
            return int(line.split("|")[2].strip() or 0)
    return -1


class AgentPhones:
    """One sipp UAS answering for every agent whose contact points at ``port`` (or, with
    ``busy=True``, refusing every call with 486 Busy Here)."""

    def __init__(self, workdir: Path, port: int = ANSWERING_PHONES, answer_ms: int = 200,
                 talk_ms: tuple[int, int] = (500, 800), calls: int = 1000,
                 timeout: int = 600, busy: bool = False) -> None:
        self.port = port
        phone = ["-sf", str(SIPP_DIR / "agent_phone.xml"),
                 "-set", "answer_ms", str(answer_ms), "-set", "talk_min", str(talk_ms[0]),
                 "-set", "talk_max", str(talk_ms[1])]
        self.cmd = ["sipp", *(["-sf", str(SIPP_DIR / "busy_phone.xml")] if busy else phone),
                    *LOOPBACK, "-p", str(port), "-m", str(calls), "-timeout", str(timeout),
                    "-nostdin", "-trace_err",
                    "-error_file", str(workdir / f"phones-{port}-errors.log")]
        self.workdir = workdir
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> AgentPhones:
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, cwd=self.workdir, text=True)
        wait_until(lambda: _udp_bound(self.port), 10, f"sipp phones on UDP {self.port}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _udp_bound(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


# ---------------------------------------------------------------- sipp callers with DTMF

DTMF_SLOTS = 8  # digit slots in asterisk_conf/sipp/caller_dtmf.xml


def dtmf_sets(menus: list[str], gap_ms: int | list[int] = 2000,
              inter_ms: int = 200) -> list[str]:
    """sipp ``-set`` arguments for caller_dtmf.xml: each string in ``menus`` answers one
    menu; it is sent ``gap_ms`` after the previous one (so that menu's prompt has started),
    its digits ``inter_ms`` apart."""
    gaps = gap_ms if isinstance(gap_ms, list) else [gap_ms] * len(menus)
    slots: list[tuple[str, int]] = []
    for menu, gap in zip(menus, gaps, strict=True):
        for i, digit in enumerate(menu):
            if digit not in "0123456789*#":
                raise ValueError(f"not a DTMF digit: {digit!r}")
            slots.append((digit, gap if i == 0 else inter_ms))
    if len(slots) > DTMF_SLOTS:
        raise ValueError(f"at most {DTMF_SLOTS} digits per call")
    slots += [("-", 0)] * (DTMF_SLOTS - len(slots))
    args: list[str] = []
    for n, (digit, wait) in enumerate(slots, start=1):
        args += ["-set", f"d{n}", digit, "-set", f"w{n}", str(wait)]
    return args


def place_dtmf_call(workdir: Path, dnis: str, menus: list[str],
                    gap_ms: int | list[int] = 2000, inter_ms: int = 200,
                    caller: tuple[str, str] = ("+34600000001", "Test Caller"),
                    maxwait_ms: int = 20000, timeout: int = 60,
                    port: int | None = None) -> SippResult:
    """One sipp call that answers IVR menus with DTMF (SIP INFO), then waits for the far
    end to hang up (bounded by ``maxwait_ms`` after the last digit and ``timeout``)."""
    inf = write_callers(workdir / f"callers-{time.monotonic_ns()}.csv", [caller])
    cmd = ["sipp", "-sf", str(SIPP_DIR / "caller_dtmf.xml"), "-inf", str(inf), *LOOPBACK,
           "-p", str(port or free_port()), "-m", "1", "-r", "1", "-timeout", str(timeout),
           "-set", "maxwait", str(maxwait_ms), *dtmf_sets(menus, gap_ms, inter_ms),
           "-s", dnis, "-nostdin", "-trace_err",
           "-error_file", str(workdir / "sipp-dtmf-errors.log"), "127.0.0.1:5060"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 30,
                          cwd=workdir)
    return SippResult(proc.returncode, _stat(proc.stdout, "Successful call"),
                      _stat(proc.stdout, "Failed call"), proc.stdout + proc.stderr)
