"""CRM store: customers and numbers, interactions, agents, users, agent state, pop deliveries.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "customers",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("email", sa.String(200), nullable=True),
        sa.Column("tier", sa.String(32), nullable=False),
        sa.Column(
            "assigned_agent",
            sa.String(32),
            sa.ForeignKey("agents.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("notes", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "customer_numbers",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "customer_id",
            sa.Integer,
            sa.ForeignKey("customers.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("e164", sa.String(64), nullable=False),
        sa.Column("label", sa.String(32), nullable=False),
        sa.UniqueConstraint("customer_id", "e164", name="uq_customer_numbers_customer_e164"),
    )
    op.create_index("ix_customer_numbers_e164", "customer_numbers", ["e164"])
    op.create_table(
        "interactions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("call_id", sa.String(64), nullable=False, unique=True),
        sa.Column(
            "customer_id",
            sa.Integer,
            sa.ForeignKey("customers.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("caller_id", sa.String(64), nullable=False),
        sa.Column("dnis", sa.String(64), nullable=False),
        sa.Column("queue", sa.String(64), nullable=False),
        sa.Column("agent_id", sa.String(32), nullable=True),
        sa.Column("digits", sa.String(64), nullable=False),
        sa.Column("joined_at", TS, nullable=True),
        sa.Column("answered_at", TS, nullable=True),
        sa.Column("ended_at", TS, nullable=True),
        sa.Column("wait_seconds", sa.Float, nullable=True),
        sa.Column("talk_seconds", sa.Float, nullable=True),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("disposition", sa.String(64), nullable=False),
        sa.Column("notes", sa.Text, nullable=False),
    )
    op.create_index(
        "ix_interactions_customer_started", "interactions", ["customer_id", "joined_at"]
    )
    op.create_index("ix_interactions_agent", "interactions", ["agent_id"])
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("username", sa.String(64), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(256), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column(
            "agent_id",
            sa.String(32),
            sa.ForeignKey("agents.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "agent_states",
        sa.Column("agent_id", sa.String(32), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "pop_deliveries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("call_id", sa.String(64), nullable=False),
        sa.Column("agent_id", sa.String(32), nullable=False),
        sa.Column("channel", sa.String(8), nullable=False),
        sa.Column("sent_at", TS, nullable=False),
        sa.Column("acknowledged_at", TS, nullable=True),
    )
    op.create_index("ix_pop_deliveries_call_agent", "pop_deliveries", ["call_id", "agent_id"])


def downgrade() -> None:
    op.drop_table("pop_deliveries")
    op.drop_table("agent_states")
    op.drop_table("users")
    op.drop_index("ix_interactions_agent", "interactions")
    op.drop_index("ix_interactions_customer_started", "interactions")
    op.drop_table("interactions")
    op.drop_index("ix_customer_numbers_e164", "customer_numbers")
    op.drop_table("customer_numbers")
    op.drop_table("customers")
    op.drop_table("agents")
