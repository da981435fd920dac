"""CRM store: customers, interactions, agents and accounts (SQLAlchemy 2 async + Alembic).

``Store`` is the facade; the plain records it hands out are ``ctiserver.core.records``.
See ``docs/store.md``.
"""

from ctiserver.store.database import DEFAULT_URL
from ctiserver.store.store import Store

__all__ = ["DEFAULT_URL", "Store"]
