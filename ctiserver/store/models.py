"""Tables of the CRM store (SQLAlchemy 2 declarative models).

The schema itself is created by the Alembic migrations in ``migrations/``; these models
must stay in step with them (``tests/unit/test_store.py`` compares the two).
Times are stored as timezone-aware UTC timestamps.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

ROLES = ("agent", "supervisor", "admin")


class Base(DeclarativeBase):
    pass


class Agent(Base):
    __tablename__ = "agents"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # "1001"
    name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(200), nullable=True)
    tier: Mapped[str] = mapped_column(String(32), default="standard")
    assigned_agent: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("agents.id", ondelete="SET NULL"), nullable=True
    )
    notes: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    numbers: Mapped[list[CustomerNumber]] = relationship(
        back_populates="customer", cascade="all, delete-orphan", order_by="CustomerNumber.id"
    )


class CustomerNumber(Base):
    __tablename__ = "customer_numbers"
    __table_args__ = (
        UniqueConstraint("customer_id", "e164", name="uq_customer_numbers_customer_e164"),
        Index("ix_customer_numbers_e164", "e164"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    e164: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(32), default="")

    customer: Mapped[Customer] = relationship(back_populates="numbers")


class Interaction(Base):
    """One call as the customer lived it: waited, talked, what the agent recorded."""

    __tablename__ = "interactions"
    __table_args__ = (
        Index("ix_interactions_customer_started", "customer_id", "joined_at"),
        Index("ix_interactions_agent", "agent_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(String(64), unique=True)
    customer_id: Mapped[int | None] = mapped_column(
        ForeignKey("customers.id", ondelete="SET NULL"), nullable=True
    )
    caller_id: Mapped[str] = mapped_column(String(64), default="")
    dnis: Mapped[str] = mapped_column(String(64), default="")
    queue: Mapped[str] = mapped_column(String(64), default="")
    agent_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    digits: Mapped[str] = mapped_column(String(64), default="")
    joined_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    answered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    wait_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    talk_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    outcome: Mapped[str] = mapped_column(String(32), default="")  # answered | abandoned
    disposition: Mapped[str] = mapped_column(String(64), default="")
    notes: Mapped[str] = mapped_column(Text, default="")


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(16), default="agent")
    agent_id: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("agents.id", ondelete="SET NULL"), nullable=True
    )
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AgentState(Base):
    """The last known ACD state of an agent, restored when ctiserver restarts."""

    __tablename__ = "agent_states"

    agent_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))  # logged_out | ready | not_ready | ...
    reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PopDelivery(Base):
    __tablename__ = "pop_deliveries"
    __table_args__ = (Index("ix_pop_deliveries_call_agent", "call_id", "agent_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(String(64))
    agent_id: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str] = mapped_column(String(8))  # ws | mqtt
    sent_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class WebSession(Base):
    """A signed-in page, kept so that a restart of ctiserver does not sign everyone out.
    Only a hash of the token is stored: the database does not hold usable credentials."""

    __tablename__ = "web_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer, ForeignKey("users.id", ondelete="CASCADE"))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
