"""CRM store: customers, interactions, agents and accounts (SQLAlchemy 2 async + Alembic)."""

from ctiserver.store.records import (
    AgentStateRecord,
    CustomerRecord,
    Identification,
    InteractionRecord,
    PopDeliveryRecord,
    UserRecord,
)
from ctiserver.store.store import DEFAULT_URL, Store, StoreError, from_epoch, utcnow

__all__ = [
    "DEFAULT_URL",
    "AgentStateRecord",
    "CustomerRecord",
    "Identification",
    "InteractionRecord",
    "PopDeliveryRecord",
    "Store",
    "StoreError",
    "UserRecord",
    "from_epoch",
    "utcnow",
]
