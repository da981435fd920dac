"""CRM store: customers, interactions, agents and accounts (SQLAlchemy 2 async + Alembic).

``Store`` is the facade; ``records`` the plain types it hands out. See ``docs/store.md``.
``Store`` and ``DEFAULT_URL`` are imported on first use, so that importing the records
alone (the web adapter does) does not load SQLAlchemy and the database layer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from ctiserver.store.database import DEFAULT_URL
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


def __getattr__(name: str) -> object:
    if name == "Store":
        from ctiserver.store.store import Store

        return Store
    if name == "DEFAULT_URL":
        from ctiserver.store.database import DEFAULT_URL

        return DEFAULT_URL
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
