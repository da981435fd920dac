"""Screen-pops: who is calling, shown to the agent while the phone rings.

``PopService`` (``service``) is what the daemon calls; its parts are the CRM lookups
(``lookups``), the pure payload builder (``payload``), the interaction log
(``interactions``), the agents' persisted states (``agent_states``) and the ports it needs
(``ports``). How they fit and the rules they keep: docs/pops.md.
"""

from ctiserver.pops.agent_states import PERSISTED_STATES
from ctiserver.pops.ports import PopStore
from ctiserver.pops.service import PopService

__all__ = ["PERSISTED_STATES", "PopService", "PopStore"]
