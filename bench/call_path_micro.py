"""ctiserver's own share of a freed agent's next ring, in-process (no Asterisk, no sockets).

The real AMI adapter (``asterisk/ami_calls.py``, events parsed as the daemon parses them),
the calls feature's tracker and the real engine, 20 agents all on calls, one caller
waiting: the clock starts when an agent's leg ``Hangup`` is handed to the adapter and stops
when the ``Redirect`` for the waiting caller has been written (to a recorder). Then the
rest of that call's life (the caller's Hangup, the new leg's DialBegin and DialEnd) is fed
untimed, and the next iteration starts. The engine is fed synchronously, as the unit tests
do, without the ACD task's queue. The peer is the same script on another tree (a git
worktree on ``PYTHONPATH``); the end-to-end figure is ``bench/acd_vs_appqueue.py``'s.

    .venv/bin/python bench/call_path_micro.py [--iterations 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ctiserver.asterisk.ami import AmiEvent, parse_event  # noqa: E402
from ctiserver.asterisk.ami_calls import AmiCallEvents, AmiTelephony  # noqa: E402
from ctiserver.calls.model import Call, CallInfo  # noqa: E402
from ctiserver.calls.tracker import CallTracker  # noqa: E402
from ctiserver.core.acd import events as ev  # noqa: E402
from ctiserver.core.acd.engine import Engine  # noqa: E402
from ctiserver.core.acd.model import AcdConfig, AgentConfig, QueueConfig  # noqa: E402

AGENTS = 20


class Recorder:
    """Stands where the AMI connection is: counts the actions written."""

    def __init__(self) -> None:
        self.actions = 0

    def send_nowait(self, *actions: dict[str, str]) -> bool:
        self.actions += len(actions)
        return True


def ami(text: str) -> AmiEvent:
    return parse_event("\r\n".join(line.strip() for line in text.strip().splitlines()))


async def run(iterations: int) -> list[int]:
    agents = {f"{1000 + i}": AgentConfig(f"{1000 + i}", f"{1000 + i}", f"PJSIP/{1000 + i}",
                                         queues=("q",)) for i in range(AGENTS)}
    cfg = AcdConfig({"q": QueueConfig("q", ring_timeout=12)}, agents)
    engine = Engine(cfg)
    sink = Recorder()
    now = [1000.0]
    tracker: CallTracker

    def submit(event: ev.Event, at: float | None) -> None:
        tracker.carry_out(event, engine.handle(event, at or now[0]))

    tracker = CallTracker(AmiTelephony(sink), submit, None,  # type: ignore[arg-type]
                          {a.device: a.id for a in agents.values()})
    adapter = AmiCallEvents(tracker, sink)  # type: ignore[arg-type]
    for agent_id in agents:
        submit(ev.AgentLoggedIn(agent_id), 999.0)
    seq = 0

    async def join() -> str:
        nonlocal seq
        seq += 1
        cid = f"c{seq}"
        call = Call(cid, f"PJSIP/trunk-{seq:08x}", CallInfo(cid, "+34600000000"))
        await tracker.join(call, ev.CallerJoined(cid, "q"))
        return cid

    def ring_and_answer(cid: str, device: str) -> str:
        leg = f"L{cid}"
        for extra in ("", "\nDialStatus: ANSWER"):
            kind = "DialEnd" if extra else "DialBegin"
            adapter.on_ami_event(ami(f"Event: {kind}\nTimestamp: {now[0]}\nUniqueid: {cid}\n"
                                     f"DestChannel: {device}-0001\nDestUniqueid: {leg}{extra}"))
        return leg

    for _ in range(AGENTS):
        await join()
    live = {}
    for a in engine.snapshot(now[0])["agents"]:
        device = agents[a["id"]].device
        live[device] = (a["call_id"], ring_and_answer(a["call_id"], device))
    gc.collect()
    gc.freeze()
    devices = list(live)
    samples: list[int] = []
    for i in range(iterations):
        now[0] += 0.05
        device = devices[i % len(devices)]
        cid, leg = live[device]
        waiting = await join()
        freed = ami(f"Event: Hangup\nTimestamp: {now[0]}\nChannel: {device}-0001\n"
                    f"Uniqueid: {leg}\nLinkedid: {cid}\nCause: 16")
        written = sink.actions
        t0 = time.perf_counter_ns()
        adapter.on_ami_event(freed)
        t1 = time.perf_counter_ns()
        if sink.actions == written:
            raise SystemExit("the freed agent's next caller was not redirected")
        adapter.on_ami_event(ami(f"Event: Hangup\nTimestamp: {now[0]}\nChannel: PJSIP/trunk-x\n"
                                 f"Uniqueid: {cid}\nLinkedid: {cid}\nCause: 16"))
        live[device] = (waiting, ring_and_answer(waiting, device))
        if i >= iterations // 10:  # the first tenth warms up
            samples.append(t1 - t0)
    return sorted(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20000)
    samples = asyncio.run(run(parser.parse_args().iterations))

    def q(p: float) -> float:
        return samples[int(p * (len(samples) - 1))] / 1000

    print(f"agent leg Hangup -> Redirect written, us: p50 {q(0.5):.1f}  p90 {q(0.9):.1f}  "
          f"p99 {q(0.99):.1f}  (n={len(samples)})")


if __name__ == "__main__":
    main()
