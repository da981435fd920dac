"""Screen-pop latency on the real call path: agent's phone rung -> pop received.

Real components only: the sandbox Asterisk, the ctiserver daemon (``python -m ctiserver
run``, SQLite store with the demo customers, MQTT to a mosquitto started here with the
example ACL), sipp callers and the 60 bench agents' sipp phones (2001-2060 on 127.0.0.1:5080,
auto-logged-in). Measured, per call offered:

- start: the AMI ``DialBegin`` of the agent's leg (Asterisk's ``Timestamp``, read by the
  ``observer`` AMI user);
- WebSocket: ``time.time()`` when the ``pop.offered`` arrives on that agent's WebSocket (one
  signed-in WebSocket per agent, as the agent page does: the hub gives pops to the agent's
  connections only);
- MQTT: ``time.time()`` when it arrives at an MQTT client subscribed to ``ctiserver/agents/+/pops``
  as the ACL's read-all ``dashboard`` user.

Asterisk and the receivers run on the same machine: the same clock. Callers alternate
between demo customers (a CRM hit with history) and unknown numbers.

Run it under the integration lock (it shares Asterisk, port 4573 and the phone ports):

    flock /tmp/cti-integration.lock .venv/bin/python bench/pop_latency.py
    ... --calls 60 --rate 10          (a quick run)
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ctiserver.store import Store  # noqa: E402
from ctiserver.store.demo import load_demo  # noqa: E402
from tests.fixtures_services import MosquittoServer  # noqa: E402
from tests.integration.harness import (  # noqa: E402
    BENCH_AGENTS,
    BENCH_PHONES,
    AgentPhones,
    CtiServer,
    bench_server,
    place_calls,
    sandbox,
)
from tests.integration.pop_clients import (  # noqa: E402
    AmiWatch,
    Inbox,
    cancel_all,
    mqtt_inbox,
    ws_inbox,
)

REPO = Path(__file__).resolve().parents[1]
ACL = REPO / "screenpop" / "mosquitto" / "acl"
AGENTS = BENCH_AGENTS
DNIS = "900999000"
MQTT_USERS = {"ctiserver": "bench-pub", "dashboard": "bench-dash"}
CALLERS = [
    ("+34915551234", "Ana Lopez"),  # demo customer with history
    ("+34600000001", "Desconocido"),
    ("+34955667788", "Hotel Miramar"),
    ("+34600000002", "Otro"),
]


def daemon(workdir: Path, db_url: str, mqtt_port: int) -> CtiServer:
    return bench_server(workdir, DNIS, database_url=db_url,
                        mqtt_url=f"mqtt://ctiserver:bench-pub@127.0.0.1:{mqtt_port}")


async def prepare_store(db_url: str) -> None:
    store = Store(db_url)
    try:
        await store.migrate()
        await load_demo(store)
        for agent in AGENTS:
            await store.upsert_agent(agent, f"Bench {agent}")
            if await store.get_user(agent) is None:
                await store.create_user(agent, f"bench-{agent}", role="agent", agent_id=agent)
    finally:
        await store.close()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def report(name: str, latencies: list[float], expected: int, target_ms: float) -> bool:
    if not latencies:
        print(f"{name:10s} no pop received of {expected}: FAIL")
        return False
    ms = [x * 1000 for x in latencies]
    missing = expected - len(ms)
    p99 = pct(ms, 99)
    ok = p99 < target_ms and missing == 0
    print(f"{name:10s} n={len(ms):4d} missing={missing:3d}  p50={statistics.median(ms):6.1f} ms"
          f"  p90={pct(ms, 90):6.1f}  p99={p99:6.1f}  max={max(ms):6.1f} ms"
          f"  min={min(ms):5.1f}  -> {'PASS' if ok else 'FAIL'} (p99 < {target_ms:g} ms)")
    return ok


async def run(args: argparse.Namespace) -> int:
    sandbox("up")
    work = Path(tempfile.mkdtemp(prefix="ctiserver-pop-bench-"))
    db_url = f"sqlite+aiosqlite:///{work}/crm.db"
    await prepare_store(db_url)
    tasks: list[asyncio.Task[Any]] = []
    sessions: list[Any] = []
    with MosquittoServer(acl_file=ACL, passwords=MQTT_USERS) as broker:
        cti = daemon(work, db_url, broker.port).start()
        try:
            base = f"http://127.0.0.1:{cti.web_port}"
            ws: dict[str, Inbox] = {}
            for agent in AGENTS:
                session, ws[agent] = await ws_inbox(base, agent, f"bench-{agent}", tasks)
                sessions.append(session)
            mqtt = await mqtt_inbox(broker.port, "dashboard", MQTT_USERS["dashboard"],
                                    "ctiserver/agents/+/pops", tasks)
            print(f"daemon up, {len(ws)} agent WebSockets and one MQTT dashboard subscribed; "
                  f"{args.calls} calls at {args.rate:g}/s ...", flush=True)
            async with AmiWatch(only=("DialBegin",)) as ami:
                with AgentPhones(work, port=BENCH_PHONES, answer_ms=args.answer_ms,
                                 talk_ms=(500, 1500), calls=args.calls * 2, timeout=600):
                    started = time.monotonic()
                    result = await asyncio.to_thread(
                        place_calls, work, DNIS, calls=args.calls, rate=args.rate,
                        maxwait_ms=30000, callers=CALLERS * (args.calls // len(CALLERS) + 1),
                        timeout=args.calls // max(1, int(args.rate)) + 120)
                    elapsed = time.monotonic() - started
                rings = [e for e in ami.named("DialBegin")
                         if e.DestChannel.split("/")[1].rsplit("-", 1)[0] in ws]
            # every pop for a ring is in by now (the calls are over); compute the delays
            ws_lat, mqtt_lat = [], []
            for e in rings:
                agent = e.DestChannel.split("/")[1].rsplit("-", 1)[0]
                rung = float(e.Timestamp)
                got = [m["_received"] for m in ws[agent].items
                       if m.get("kind") == "pop.offered" and m["data"]["call_id"] == e.Uniqueid]
                if got:
                    ws_lat.append(min(got) - rung)
                got = [m["_received"] for m in mqtt.items
                       if m.get("kind") == "pop.offered" and m["agent_id"] == agent
                       and m["data"]["call_id"] == e.Uniqueid]
                if got:
                    mqtt_lat.append(min(got) - rung)
            known = sum(1 for inbox in ws.values() for m in inbox.items
                        if m.get("kind") == "pop.offered" and m["data"].get("known"))
            partial = sum(1 for inbox in ws.values() for m in inbox.items
                          if m.get("kind") == "pop.offered" and m["data"].get("partial"))
        finally:
            await cancel_all(tasks)
            for session in sessions:
                await session.close()
            cti.stop()
    print(f"sipp: {result.successful} successful, {result.failed} failed in {elapsed:.1f} s; "
          f"{len(rings)} agent phones rung; pops with a known customer {known}, partial {partial}")
    print(f"pop latency, agent's phone rung (AMI DialBegin) -> pop received, "
          f"{args.calls} calls at {args.rate:g}/s:")
    ok_ws = report("WebSocket", ws_lat, len(rings), args.target_ms)
    ok_mqtt = report("MQTT", mqtt_lat, len(rings), args.target_ms)
    print(f"daemon log: {cti.log_path}")
    return 0 if ok_ws and ok_mqtt and result.failed == 0 else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0, help="calls per second")
    parser.add_argument("--answer-ms", type=int, default=300, help="agent phones ring this long")
    parser.add_argument("--target-ms", type=float, default=50.0, help="p99 target")
    # SIGTERM unwinds like Ctrl-C: the daemon, sipp and mosquitto are stopped on the way out
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
