"""``python -m ctiserver.store upgrade|demo|adduser [--url URL]``: store administration.

(Meant to back ``ctiserver db upgrade`` / ``ctiserver db demo`` in the main CLI.)
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os

from ctiserver.store.demo import load_demo
from ctiserver.store.store import DEFAULT_URL, Store


async def run(args: argparse.Namespace) -> None:
    store = Store(args.url)
    try:
        await store.migrate()
        if args.command == "demo":
            await load_demo(store)
        elif args.command == "adduser":
            password = getpass.getpass(f"password for {args.username}: ")
            await store.create_user(
                args.username, password, role=args.role, agent_id=args.agent or None
            )
            if args.agent:
                await store.upsert_agent(args.agent)
    finally:
        await store.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ctiserver-store")
    parser.add_argument("--url", default=os.environ.get("CTISERVER_DB_URL", DEFAULT_URL))
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("upgrade", help="apply the migrations")
    sub.add_parser("demo", help="apply the migrations and load the demo data")
    add = sub.add_parser("adduser", help="create a user account (asks for the password)")
    add.add_argument("username")
    add.add_argument("--role", default="agent", choices=["agent", "supervisor", "admin"])
    add.add_argument("--agent", default="", help="agent id this account logs in as")
    asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
