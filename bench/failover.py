"""No caller stranded, measured: an active/standby pair's failover and a restart's
re-adoption, on the sandbox Asterisk with sipp callers and agent phones, PostgreSQL shared
by the pair. Every time comes from Asterisk's AMI time stamps or the daemons' own log
lines, against the wall clock read just before the kill.

1. Failover: two ctiservers ([ha], one PostgreSQL); callers at --rate calls/s to --agents
   agents (talk 1-2 s, so some wait); the leader is killed (kill -9) --kills times, the
   killed one restarted as the standby each time. Per kill: the standby leading (its log
   line) and the first agent rung after that, both from the kill; the callers on hold at
   the kill and whether they were rung in the order they joined. Over the run: callers
   lost (never answered), callers sent to the app_queue fallback.
2. Re-adoption: one ctiserver, --readopt callers on hold (no agent logged in), kill -9,
   restart with the 60 bench agents logged in. Times: from the restart to its AMI login,
   from the login to "re-adopted N", to the first and to the 60th agent rung; order kept.
3. ctiserver down: its 60 agents logged in, then kill -9; callers go to the app_queue
   fallback queue whose members ctiserver kept. Peer, in the same run: the same callers
   straight into app_queue (bench-appqueue: the same agents and settings). Answer time
   from the caller's Newchannel to the agent's answer.

There is no peer for 1 and 2 in app_queue: a restart of app_queue is a restart of
Asterisk, which drops every call. The issue's targets are judged: failover (first ring
after the kill) under 5 s in every kill, 0 lost, order kept.

Run under the integration lock:
``flock /tmp/cti-integration.lock .venv/bin/python bench/failover.py``
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import tempfile
import textwrap
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ctiserver.calls import adoption  # noqa: E402
from tests.fixtures_services import PostgresServer  # noqa: E402
from tests.integration.harness import (  # noqa: E402
    BENCH_AGENTS,
    BENCH_PHONES,
    AgentPhones,
    CtiServer,
    Observer,
    place_calls,
    sandbox,
)

DNIS = "900100999"
SECOND_AGI = 4574
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def log_time(cti: CtiServer, text: str, nth: int = 1) -> float:
    """Wall time of the ``nth`` log line containing ``text`` (the log's own stamp)."""
    seen = 0
    for line in cti.log().splitlines():
        if text in line:
            seen += 1
            if seen == nth:
                m = _STAMP.match(line)
                assert m, line
                return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    raise AssertionError(f"{text!r} x{nth} not in {cti.log_path}")


def config(workdir: Path, agents: list[str], *, logged_in: bool, extra: str = "",
           database_url: str | None = None, agi_port: int = 4573) -> CtiServer:
    toml = "".join(f'\n[[agents]]\nid = "{a}"\nname = "Bench {a}"\nqueues = ["bench"]\n'
                   f"auto_login = {str(logged_in).lower()}\n" for a in agents)
    queues = '\n[[queues]]\nname = "bench"\nstrategy = "longest_idle"\nring_timeout = 15\n'
    rules = textwrap.dedent(f"""
        config:
          timezone: Europe/Madrid
          region: ES
          default: {{queue: bench}}
        rules:
          - name: bench line
            if: dnis == '{DNIS}'
            then: {{queue: bench}}
        """)
    return CtiServer(workdir, queues=queues, agents=toml, rules=rules, extra=extra,
                     database_url=database_url, agi_port=agi_port)


class LeanObserver(Observer):
    """The observer keeping only the events this bench reads. At 20 calls/s for minutes it
    otherwise holds every AMI event (GBs), and a scan of them stalls its reading long
    enough for Asterisk to drop it (writetimeout)."""

    KEEP = {"Newchannel", "DialBegin", "DialEnd", "Hangup", "UserEvent"}

    def __init__(self) -> None:
        super().__init__()
        self.manager.callbacks.clear()
        self.manager.register_event("*", lambda _m, e: self.keep(e))

    def keep(self, e: Any) -> None:
        name = e.event
        if name in self.KEEP or (
                name == "Newexten" and e.get("Context") in ("ctiserver-hold",
                                                            "ctiserver-inbound")) or (
                name == "VarSet" and e.get("Variable") in ("CTI_DIAL", "CTI_ADOPT")):
            self.events.append(e)


def pump_until(obs: Observer, predicate: Any, timeout: float, what: str) -> None:
    """Wait for ``predicate`` while the observer takes in events (a deadline, no sleep)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        obs.pump(0.1)


def launch(obs: Observer, cti: CtiServer, text: str, timeout: float = 20) -> None:
    """Start a daemon and wait for ``text`` in its log while the observer keeps reading:
    an observer not read for its writetimeout (1 s) is dropped by Asterisk."""
    cti.start(wait=False)
    log_seen(obs, cti, text, timeout)


def log_seen(obs: Observer, cti: CtiServer, text: str, timeout: float, count: int = 1) -> None:
    pump_until(obs, lambda: cti.log().count(text) >= count, timeout,
               f"{text!r} in {cti.log_path}")


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(p / 100 * len(xs) + 0.5) - 1))]


def ami(obs: Observer, action: dict[str, str]) -> Any:
    async def send() -> Any:
        return await asyncio.wait_for(obs.manager.send_action(action), 5)
    return obs.loop.run_until_complete(send())


class Calls:
    """sipp callers in a thread, distinct numbers."""

    def __init__(self, work: Path, calls: int, rate: float, prefix: str) -> None:
        self.result: Any = None
        callers = [(f"+346{prefix}{i:05d}", f"Caller {i}") for i in range(calls)]

        def run() -> None:
            self.result = place_calls(work, DNIS, calls=calls, rate=rate, callers=callers,
                                      maxwait_ms=180000, timeout=int(calls / rate) + 400)
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()


def callers_of(events: list[Any]) -> list[str]:
    """The callers (first channels) that entered ctiserver's dialplan, in order."""
    return list(dict.fromkeys(e.Uniqueid for e in events if e.event == "Newexten"
                              and e.Context == "ctiserver-inbound" and e.Uniqueid == e.Linkedid))


def answered_of(events: list[Any]) -> set[str]:
    return {e.Uniqueid for e in events if e.event == "DialEnd" and e.DialStatus == "ANSWER"
            and e.Uniqueid == e.Linkedid}


def waiting_at(events: list[Any]) -> list[str]:
    """Callers on hold and not rung at the end of ``events``, in the order they joined
    their queue: the join time on their CTI_ADOPT (two callers routed at the same moment
    may reach the hold context in the other order)."""
    held = list(dict.fromkeys(e.Uniqueid for e in events if e.event == "Newexten"
                              and e.Context == "ctiserver-hold"))
    joined = {e.Uniqueid: adoption.decode(e.Value).joined_at for e in events
              if e.event == "VarSet" and e.Variable == "CTI_ADOPT"}
    rung_or_gone = {e.Uniqueid for e in events if e.event in ("DialBegin", "Hangup")}
    return sorted((u for u in held if u not in rung_or_gone),
                  key=lambda u: joined.get(u, float("inf")))


def offered(events: list[Any]) -> list[str]:
    """Callers in the order ctiserver offered them an agent: its Setvar of CTI_DIAL, which
    Asterisk runs in the order sent. (Rings of offers made together start in any order.)"""
    return list(dict.fromkeys(e.Uniqueid for e in events if e.event == "VarSet"
                              and e.Variable == "CTI_DIAL"))


def order_kept(waiting: list[str], after: list[Any]) -> bool:
    among = set(waiting)
    rung = [u for u in offered(after) if u in among]
    return rung == waiting[:len(rung)]


def failover(args: argparse.Namespace, obs: Observer, pg: PostgresServer,
             work: Path) -> list[tuple[str, bool]]:
    agents = BENCH_AGENTS[:args.agents]

    def member(name: str, port: int) -> CtiServer:
        ha = f'[ha]\nenabled = true\nname = "{name}"\ninterval = 0.2\n'
        return config(work / name, agents, logged_in=True, extra=ha, database_url=pg.url,
                      agi_port=port)

    a, b = member("a", 4573), member("b", SECOND_AGI)
    ami(obs, {"Action": "Setvar", "Variable": "CTI_AGI2",
              "Value": f"agi://127.0.0.1:{SECOND_AGI}"})
    leads: list[float] = []
    rings: list[float] = []
    kept: list[bool] = []
    waiting_counts: list[int] = []
    start = len(obs.events)
    try:
        launch(obs, a, "leader: took the lock")
        launch(obs, b, "contending for the leadership")
        leader, standby = a, b
        # enough callers to outlast the kills (each also waits for a restart, ~2 s)
        total = int(args.rate * (args.kills * (args.period + 5) + 2 * args.period))
        calls = Calls(work, total, args.rate, "1")
        obs.pump(args.period)
        for k in range(args.kills):
            promotions = standby.log().count("leading (")
            before = len(obs.events)
            waiting = waiting_at(obs.events[start:])
            assert leader.proc is not None
            killed = time.time()
            leader.proc.kill()
            leader.proc.wait(10)
            leader.proc = None
            log_seen(obs, standby, "leading (", 15, count=promotions + 1)
            led = log_time(standby, "leading (", promotions + 1)
            ring = obs.wait_for(lambda e, t=led: e.event == "DialBegin"
                                and float(e.Timestamp) >= t, 15, "a ring after the promotion")[0]
            leads.append(led - killed)
            rings.append(float(ring.Timestamp) - killed)
            obs.pump(args.period / 2)
            kept.append(order_kept(waiting, obs.events[before:]))
            waiting_counts.append(len(waiting))
            print(f"kill {k + 1}: standby leading {leads[-1]:.3f} s after the kill, first "
                  f"ring {rings[-1]:.3f} s; {len(waiting)} on hold at the kill, order "
                  f"{'kept' if kept[-1] else 'NOT kept'}", flush=True)
            launch(obs, leader, "contending for the leadership")  # back, as the standby
            leader, standby = standby, leader
            obs.pump(args.period / 2)
        pump_until(obs, lambda: not calls.thread.is_alive(), total / args.rate + 400,
                   "the callers done")  # a plain join would leave the observer unread
        obs.pump(1.0)
    finally:
        for m in (b, a):
            m.stop()
        try:
            ami(obs, {"Action": "Setvar", "Variable": "CTI_AGI2", "Value": ""})
        except TimeoutError:
            print("could not clear CTI_AGI2 (observer not connected): `sandbox restart`")
    events = obs.events[start:]
    callers = callers_of(events)
    answered = answered_of(events)
    lost = [u for u in callers if u not in answered]
    fallback = [e for e in events if e.event == "UserEvent" and e.UserEvent == "CtiFallback"]
    print(f"\nfailover over {args.kills} kills at {args.rate:g} calls/s, {args.agents} agents: "
          f"standby leading p50/p99/max {pct(leads, 50):.3f} / {pct(leads, 99):.3f} / "
          f"{max(leads):.3f} s; first ring after the kill p50/p99/max {pct(rings, 50):.3f} / "
          f"{pct(rings, 99):.3f} / {max(rings):.3f} s")
    print(f"   callers {len(callers)}, answered {len(callers) - len(lost)}, lost {len(lost)}, "
          f"sent to the fallback {len(fallback)}; on hold at the kills "
          f"{statistics.mean(waiting_counts):.1f} on average, order kept in "
          f"{sum(kept)}/{len(kept)} kills")
    return [("failover: first ring within 5 s of every kill", max(rings) < 5.0),
            ("failover: 0 callers lost", not lost),
            ("failover: 0 callers sent to the fallback", not fallback),
            ("failover: waiting callers keep their order", all(kept))]


def readoption(args: argparse.Namespace, obs: Observer, work: Path) -> list[tuple[str, bool]]:
    n = args.readopt
    cti = config(work / "single", BENCH_AGENTS, logged_in=False)
    launch(obs, cti, "AMI logged in")
    start = len(obs.events)
    try:
        calls = Calls(work, n, 50.0, "2")
        pump_until(obs, lambda: len(waiting_at(obs.events[start:])) >= n, 60,
                   f"{n} callers on hold")
        waiting = waiting_at(obs.events[start:])
        assert cti.proc is not None
        cti.proc.kill()
        cti.proc.wait(10)
        cti.proc = None
        cti.agents = config(work, BENCH_AGENTS, logged_in=True).agents
        before = len(obs.events)
        restarted = time.time()
        launch(obs, cti, f"re-adopted {n} waiting callers", 30)
        login = log_time(cti, "AMI logged in")
        adopted = log_time(cti, "re-adopted")
        def rings() -> list[Any]:
            return [e for e in obs.events[before:] if e.event == "DialBegin"]
        pump_until(obs, lambda: len(rings()) >= len(BENCH_AGENTS), 30, "every agent rung")
        stamps = sorted(float(e.Timestamp) for e in rings())
        first, sixtieth = stamps[0], stamps[len(BENCH_AGENTS) - 1]
        pump_until(obs, lambda: answered_of(obs.events[before:]) >= set(waiting), 300,
                   "every re-adopted caller answered")
        pump_until(obs, lambda: not calls.thread.is_alive(), 400, "the callers done")
        kept = order_kept(waiting, obs.events[before:])
    finally:
        cti.stop()
    print(f"\nre-adoption of {len(waiting)} callers on hold: AMI login {login - restarted:.2f} s "
          f"after the restart began; 're-adopted' {(adopted - login) * 1000:.0f} ms after the "
          f"login; first agent rung {(first - login) * 1000:.0f} ms, the "
          f"{len(BENCH_AGENTS)}th {(sixtieth - login) * 1000:.0f} ms after it; all answered; "
          f"order {'kept' if kept else 'NOT kept'}")
    return [(f"re-adoption: all {len(waiting)} callers taken back and answered",
             len(waiting) == n),
            ("re-adoption: order kept", kept)]


def answer_times(events: list[Any]) -> tuple[list[float], int]:
    """Each caller's wait: its Newchannel to the DialEnd ANSWER of its first answered ring
    (seconds), and how many callers got none."""
    born = {e.Uniqueid: float(e.Timestamp) for e in events if e.event == "Newchannel"
            and e.Uniqueid == e.Linkedid and e.get("Context") in (
                "ctiserver-inbound", "bench-appqueue")}
    done: dict[str, float] = {}
    for e in events:
        if e.event == "DialEnd" and e.DialStatus == "ANSWER" and e.Uniqueid in born:
            done.setdefault(e.Uniqueid, float(e.Timestamp))
    return [done[u] - born[u] for u in done], len(born) - len(done)


def fallback(args: argparse.Namespace, obs: Observer, work: Path) -> list[tuple[str, bool]]:
    """ctiserver killed: callers reach the fallback queue, whose members ctiserver kept.
    The peer: the same callers straight into app_queue (queue bench-appqueue, the same 60
    agents, the same settings), in the same run."""
    n, rate = args.fallback_calls, args.fallback_rate
    cti = config(work / "down", BENCH_AGENTS, logged_in=True)
    launch(obs, cti, "fallback queue ctiserver-fallback")
    assert cti.proc is not None
    cti.proc.kill()
    cti.proc.wait(10)
    cti.proc = None
    results = {}
    for name, trunk in (("fallback (ctiserver down)", "sipp"), ("app_queue alone", "appqueue")):
        start = len(obs.events)
        callers = [(f"+3463{i:06d}", f"Caller {i}") for i in range(n)]
        done = threading.Event()

        def run(t: str = trunk, c: list[tuple[str, str]] = callers,
                done: threading.Event = done) -> None:
            place_calls(work, DNIS, calls=n, rate=rate, callers=c, maxwait_ms=180000,
                        timeout=int(n / rate) + 400, trunk=t)
            done.set()
        threading.Thread(target=run, daemon=True).start()
        pump_until(obs, done.is_set, n / rate + 500, f"{name}: the callers done")
        obs.pump(1.0)
        results[name] = answer_times(obs.events[start:])
    print(f"\nwith ctiserver down, {n} calls at {rate:g}/s to the 60 agents, answer time "
          f"(caller's Newchannel -> agent answered):")
    for name, (waits, unanswered) in results.items():
        print(f"   {name:26s} p50/p95/p99 {pct(waits, 50):.2f} / {pct(waits, 95):.2f} / "
              f"{pct(waits, 99):.2f} s; answered {len(waits)}, not answered {unanswered}")
    fb, aq = results["fallback (ctiserver down)"], results["app_queue alone"]
    print(f"   ratio fallback/app_queue p50 {pct(fb[0], 50) / pct(aq[0], 50):.2f}x")
    return [("fallback: every caller answered with ctiserver down", fb[1] == 0 and
             len(fb[0]) == n)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--rate", type=float, default=20.0, help="calls/s during the kills")
    ap.add_argument("--agents", type=int, default=30, help="bench agents in the pair's queue")
    ap.add_argument("--period", type=float, default=6.0, help="seconds between kills")
    ap.add_argument("--readopt", type=int, default=200, help="callers on hold at the restart")
    ap.add_argument("--fallback-calls", type=int, default=300)
    ap.add_argument("--fallback-rate", type=float, default=60.0,
                    help="calls/s with ctiserver down (60/s is ~1.2x the agents' capacity)")
    args = ap.parse_args()
    sandbox("up")
    work = Path(tempfile.mkdtemp(prefix="failover-bench-"))
    print(f"work directory (the daemons' logs): {work}")
    obs = LeanObserver()
    obs.start()
    checks: list[tuple[str, bool]] = []
    try:
        with AgentPhones(work, port=BENCH_PHONES, answer_ms=200, talk_ms=(1000, 2000),
                         calls=100000, timeout=3600):
            with PostgresServer() as pg:
                checks += failover(args, obs, pg, work)
            checks += readoption(args, obs, work)
            checks += fallback(args, obs, work)
    finally:
        obs.close()
    print("\n=== targets ===")
    for label, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {label}")
    return 0 if all(ok for _l, ok in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
