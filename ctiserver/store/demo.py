"""Demo data: four agents with accounts, a supervisor, and a few customers.

Demo accounts (never use them outside a demo):

===========  ============  ==========
username     password      role
===========  ============  ==========
1001..1004   demo-<id>     agent (e.g. ``1001`` / ``demo-1001``)
supervisor   demo-super    supervisor
admin        demo-admin    admin
===========  ============  ==========

Loading is idempotent: running it twice adds nothing the second time.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from ctiserver.core.records import InteractionRecord
from ctiserver.store.store import Store, utcnow

AGENTS = {
    "1001": "Lucía Martín",
    "1002": "Javier Ruiz",
    "1003": "Marta Gómez",
    "1004": "Pablo Sanz",
}
SUPERVISOR = ("supervisor", "demo-super")
ADMIN = ("admin", "demo-admin")


def agent_password(agent_id: str) -> str:
    return f"demo-{agent_id}"


CUSTOMERS: list[dict[str, Any]] = [
    {
        "name": "Ana López",
        "numbers": ["+34915551234", "+34600111222"],
        "tier": "gold",
        "assigned_agent": "1002",
        "notes": "Prefers to be called in the morning. Fibre + mobile bundle.",
        "email": "ana.lopez@example.com",
        "history": [
            (
                "demo-ana-1",
                "1002",
                40,
                18.0,
                312.0,
                "billing question",
                "Invoice of March explained.",
            ),
            ("demo-ana-2", "1001", 9, 6.0, 145.0, "resolved", "Router replaced, signal OK."),
        ],
    },
    {
        "name": "Carlos Pérez",
        "numbers": ["+34932223344"],
        "tier": "silver",
        "assigned_agent": None,
        "notes": "",
        "email": None,
        "history": [],
    },
    {
        "name": "Hotel Miramar",
        "numbers": ["+34955667788", "+34955667789"],
        "tier": "platinum",
        "assigned_agent": "1003",
        "notes": "Business account; ask for the reference of the booking.",
        "email": "reception@miramar.example",
        "history": [],
    },
]


async def load_demo(store: Store) -> None:
    """Create the demo agents, accounts and customers that are not there yet."""
    for agent_id, name in AGENTS.items():
        await store.upsert_agent(agent_id, name)
        if await store.get_user(agent_id) is None:
            await store.create_user(
                agent_id, agent_password(agent_id), role="agent", agent_id=agent_id
            )
    for (username, password), role in ((SUPERVISOR, "supervisor"), (ADMIN, "admin")):
        if await store.get_user(username) is None:
            await store.create_user(username, password, role=role)

    now = utcnow()
    for spec in CUSTOMERS:
        numbers: list[str] = spec["numbers"]
        if await store.find_customers_by_number(numbers[0]):
            continue
        customer = await store.create_customer(
            str(spec["name"]),
            numbers,
            tier=str(spec["tier"]),
            assigned_agent=spec["assigned_agent"],
            notes=str(spec["notes"]),
            email=spec["email"],
        )
        for call_id, agent, days_ago, wait, talk, disposition, notes in spec["history"]:
            joined = now - timedelta(days=days_ago)
            await store.save_interaction(
                InteractionRecord(
                    call_id=call_id,
                    customer_id=customer.id,
                    caller_id=numbers[0],
                    dnis="+34910000000",
                    queue="support",
                    agent_id=agent,
                    joined_at=joined,
                    answered_at=joined + timedelta(seconds=wait),
                    ended_at=joined + timedelta(seconds=wait + talk),
                    wait_seconds=wait,
                    talk_seconds=talk,
                    outcome="answered",
                    disposition=disposition,
                    notes=notes,
                )
            )
