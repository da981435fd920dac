"""Inside the store: ``Accounts``, the users who sign in to the web pages (hashed
passwords, roles, the agent each one is) and their web sessions, kept so that a restart
signs nobody out. Only a session token's hash is stored."""

from __future__ import annotations

import asyncio
import functools
from datetime import datetime
from typing import cast

from sqlalchemy import delete, select

from ctiserver.core.records import StoreError, UserRecord, utcnow
from ctiserver.store import models as m
from ctiserver.store.database import Database
from ctiserver.store.passwords import hash_password, verify_password
from ctiserver.store.rows import aware


def _user(row: m.User) -> UserRecord:
    return UserRecord(
        id=row.id, username=row.username, role=row.role, agent_id=row.agent_id, active=row.active
    )


@functools.cache
def _dummy_hash() -> str:
    return hash_password("not a password of anyone")


class Accounts:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create_user(
        self, username: str, password: str, *, role: str = "agent", agent_id: str | None = None
    ) -> UserRecord:
        if role not in m.ROLES:
            raise StoreError(f"unknown role {role!r}; one of {', '.join(m.ROLES)}")
        if not password:
            raise StoreError("empty password")
        hashed = await asyncio.to_thread(hash_password, password)
        async with self.db.session.begin() as session:
            exists = await session.execute(select(m.User.id).where(m.User.username == username))
            if exists.first() is not None:
                raise StoreError(f"user {username!r} exists")
            row = m.User(
                username=username,
                password_hash=hashed,
                role=role,
                agent_id=agent_id,
                active=True,
                created_at=utcnow(),
            )
            session.add(row)
            await session.flush()
            return _user(row)

    async def set_password(self, username: str, password: str) -> None:
        hashed = await asyncio.to_thread(hash_password, password)
        async with self.db.session.begin() as session:
            result = await session.execute(select(m.User).where(m.User.username == username))
            row = result.scalar_one_or_none()
            if row is None:
                raise StoreError(f"no user {username!r}")
            row.password_hash = hashed

    async def get_user(self, username: str) -> UserRecord | None:
        async with self.db.session() as session:
            result = await session.execute(select(m.User).where(m.User.username == username))
            row = result.scalar_one_or_none()
            return _user(row) if row is not None else None

    async def authenticate(self, username: str, password: str) -> UserRecord | None:
        """``Store.authenticate``."""
        async with self.db.session() as session:
            result = await session.execute(select(m.User).where(m.User.username == username))
            row = result.scalar_one_or_none()
        stored = row.password_hash if row is not None else _dummy_hash()
        ok = await asyncio.to_thread(verify_password, password, stored)
        if row is None or not ok or not row.active:
            return None
        return _user(row)

    # ----------------------------------------------------------- web sessions

    async def save_web_session(self, token_hash: str, user_id: int, expires_at: datetime) -> None:
        async with self.db.session.begin() as session:
            session.add(m.WebSession(token_hash=token_hash, user_id=user_id,
                                     expires_at=expires_at))

    async def delete_web_session(self, token_hash: str) -> None:
        async with self.db.session.begin() as session:
            await session.execute(delete(m.WebSession).where(m.WebSession.token_hash == token_hash))

    async def live_web_sessions(self, now: datetime) -> list[tuple[str, UserRecord, datetime]]:
        """``Store.live_web_sessions``."""
        async with self.db.session.begin() as session:
            inactive = select(m.User.id).where(m.User.active.is_(False))
            await session.execute(delete(m.WebSession).where(
                (m.WebSession.expires_at <= now) | m.WebSession.user_id.in_(inactive)))
            rows = await session.execute(
                select(m.WebSession, m.User)
                .join(m.User, m.User.id == m.WebSession.user_id)
                .where(m.User.active.is_(True))
            )
            return [(ws.token_hash, _user(user), cast(datetime, aware(ws.expires_at)))
                    for ws, user in rows]
