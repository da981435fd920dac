"""Benchmark: one routing decision with a 1,000-rule set. Prints p50/p99/max.

    python bench/rules_bench.py [--rules 1000] [--calls 5000]

The set mixes DNIS rules, wildcard caller rules, schedule and CRM conditions,
and a nested block; most calls fall through to the last rules, which is the
worst case (every condition is evaluated). The goal is p99 < 1 ms.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from ctiserver.core.rules import CallContext, load_ruleset

HEADER = """
config:
  timezone: Europe/Madrid
  known_queues: [sales, support, billing, technical, vip]
  lookup_tables: [blocked]
schedules:
  support:
    hours: {mon-fri: "08:00-21:00", sat: "10:00-14:00"}
    holidays: {country: ES, subdiv: MD}
rules:
"""

KINDS = [
    "  - name: dnis {i}\n    if: dnis == '9{i:08d}'\n    then: {{queue: sales, priority: {p}}}\n",
    "  - name: wildcard {i}\n    if: matches(caller_id, '+1{i:04d}*') and weekday != 'sun'\n"
    "    then: {{queue: support, skills: {{spanish: 2}}}}\n",
    "  - name: crm {i}\n    if: customer.tier == 'tier{i}' and open('support')\n"
    "    then: {{queue: vip, priority: 9}}\n",
    "  - name: digits {i}\n    if: digits == '{i}' or startswith(caller_id, '+99{i}')\n"
    "    then: {{queue: billing}}\n",
    "  - name: time {i}\n    if: dnis == '8{i:08d}' and time >= '09:00' and time < '18:00'\n"
    "    then: {{queue: technical}}\n",
]


def build(n: int) -> str:
    parts = [HEADER]
    for i in range(n - 2):
        parts.append(KINDS[i % len(KINDS)].format(i=i, p=i % 10))
    parts.append(
        "  - name: nested\n    if: dnis == '900100200'\n    then:\n"
        "      - name: gold\n        if: customer.tier == 'gold'\n        then: {queue: vip}\n"
        "      - name: rest\n        queue: sales\n"
    )
    parts.append("  - name: everything else\n    queue: support\n")
    return "".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rules", type=int, default=1000)
    ap.add_argument("--calls", type=int, default=5000)
    args = ap.parse_args()
    t0 = time.perf_counter()
    result = load_ruleset({"bench.yaml": build(args.rules)})
    load_ms = (time.perf_counter() - t0) * 1000
    if result.ruleset is None:
        raise SystemExit("\n".join(str(p) for p in result.errors[:5]))
    ruleset = result.ruleset
    rng = random.Random(7)
    base = datetime(2026, 12, 22, 8, 0, tzinfo=ZoneInfo("Europe/Madrid"))
    contexts = [
        CallContext.create(
            caller_id=rng.choice(["+34915551234", "+442071234567", "600123456", "1001"]),
            dnis=rng.choice(["900100200", "900100300", "911000000"]),
            now=base + timedelta(minutes=rng.randrange(0, 60 * 24 * 7)),
            customer=rng.choice([None, {"tier": "gold", "assigned_agent": "1002"}]),
        )
        for _ in range(200)
    ]
    for ctx in contexts[:50]:  # warm up
        ruleset.decide(ctx)
    samples = []
    evaluated = 0
    for i in range(args.calls):
        ctx = contexts[i % len(contexts)]
        t = time.perf_counter_ns()
        decision = ruleset.decide(ctx)
        samples.append((time.perf_counter_ns() - t) / 1e6)
        evaluated += len(decision.trace)
    samples.sort()
    p50 = statistics.median(samples)
    p99 = samples[int(len(samples) * 0.99) - 1]
    print(
        f"{args.rules} rules (loaded and checked in {load_ms:.0f} ms), {args.calls} decisions, "
        f"{evaluated / args.calls:.0f} trace lines per decision"
    )
    print(f"p50 {p50:.3f} ms   p99 {p99:.3f} ms   max {samples[-1]:.3f} ms")
    print("OK: p99 under 1 ms" if p99 < 1.0 else "TOO SLOW: p99 is 1 ms or more")


if __name__ == "__main__":
    main()
