"""Print screen-pops read from mosquitto_sub ("TOPIC PAYLOAD" lines), one line each."""

import json
import sys

for line in sys.stdin:
    topic, _, payload = line.partition(" ")
    try:
        note = json.loads(payload)
    except json.JSONDecodeError:
        continue
    kind, agent, data = note.get("kind", "?"), note.get("agent_id", "?"), note.get("data", {})
    if kind == "pop.offered":
        customer = data.get("customer") or {}
        who = customer.get("name") or "unknown caller"
        tier = f" [{customer['tier']}]" if customer.get("tier") else ""
        waited = data.get("waited")
        print(f"POP   agent {agent}: {data.get('caller_id', '?')} {who}{tier}, queue "
              f"{data.get('queue') or '-'}, waited {waited if waited is not None else '?'} s"
              f"{'  (partial: CRM unavailable)' if data.get('partial') else ''}", flush=True)
    else:
        print(f"      agent {agent}: {kind} {data.get('call_id', '')}", flush=True)
