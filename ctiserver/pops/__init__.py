"""Screen-pops: who is calling, shown to the agent while the phone rings.

``PopService`` is the whole of it for the daemon; the pieces it is made of, and the rules
they keep, are described in ``docs/pops.md``.
"""

from ctiserver.pops.service import PERSISTED_STATES, CallInfo, PopService, PopStore

__all__ = ["PERSISTED_STATES", "CallInfo", "PopService", "PopStore"]
