"""CRM store: customers, interactions, agents and accounts (SQLAlchemy 2 async + Alembic).

``Store`` is the facade; ``records`` the plain types it hands out. See ``docs/store.md``.
"""

from ctiserver.store.database import DEFAULT_URL
from ctiserver.store.records import (
    AgentStateRecord,
    CustomerRecord,
    Identification,
    InteractionRecord,
    PopDeliveryRecord,
    StoreError,
    UserRecord,
    from_epoch,
    utcnow,
)
from ctiserver.store.store import Store

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
