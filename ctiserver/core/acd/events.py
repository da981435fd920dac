"""What the ACD engine consumes (events) and produces (effects).

This module is the contract between the pure engine and its adapters. The
engine never performs I/O: adapters translate AMI events and API calls into
the events below, call ``Engine.handle(event, now)``, and carry out the
returned effects (ring a phone, play an announcement, notify the web page).

``now`` is always wall-clock seconds since the epoch as a float, so Asterisk's
own event ``Timestamp`` can be used as the time of an event.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# ---------------------------------------------------------------- events in


@dataclass(frozen=True, slots=True)
class CallerJoined:
    """A caller enters a queue (the routing decision said so)."""

    call_id: str
    queue: str
    priority: int = 0
    # skill -> minimum level (1..10), added to the queue's own requirements
    skills: Mapping[str, int] = field(default_factory=dict)
    # the customer's own agent: offered first for the queue's preferred_agent_timeout
    preferred_agent: str | None = None
    # how long to wait for the preferred agent (the routing rule's timeout); None: the queue's
    preferred_timeout: float | None = None
    # the agent the caller is already ringing: the dialplan took the agent ctiserver had
    # pre-decided for the number (Engine.peek); offered at once when still available
    claimed: str | None = None
    # when the caller first joined, if before this event: a caller taken back after a
    # restart keeps its place (arrival orders the line; service level counts from it)
    arrival: float | None = None


@dataclass(frozen=True, slots=True)
class CallerLeft:
    """The caller hung up (or was taken away) at any point of the call."""

    call_id: str


@dataclass(frozen=True, slots=True)
class RingStarted:
    """The agent's phone is ringing for this call (AMI DialBegin)."""

    call_id: str
    agent_id: str


@dataclass(frozen=True, slots=True)
class RingAnswered:
    """The agent answered (AMI DialEnd with DialStatus ANSWER)."""

    call_id: str
    agent_id: str


@dataclass(frozen=True, slots=True)
class RingFailed:
    """The offer ended without an answer. reason: noanswer, busy, unavailable, cancel,
    withdrawn (the PBX ended it: Asterisk stopping, its link lost); only noanswer
    makes the agent not ready."""

    call_id: str
    agent_id: str
    reason: str = "noanswer"


@dataclass(frozen=True, slots=True)
class CallEnded:
    """A connected call is over (either side hung up): the agent goes to wrap-up."""

    call_id: str


@dataclass(frozen=True, slots=True)
class AgentLoggedIn:
    agent_id: str
    ready: bool = True


@dataclass(frozen=True, slots=True)
class AgentLoggedOut:
    agent_id: str


@dataclass(frozen=True, slots=True)
class AgentPaused:
    """Agent goes not ready with a reason code."""

    agent_id: str
    reason: str = "pause"


@dataclass(frozen=True, slots=True)
class AgentReady:
    """Agent goes ready (unpause, or end of wrap-up on request)."""

    agent_id: str


@dataclass(frozen=True, slots=True)
class DeviceStateChanged:
    """Asterisk's device state for a device, e.g. ``PJSIP/1001`` -> ``INUSE``.

    States as Asterisk names them: NOT_INUSE, INUSE, BUSY, INVALID, UNAVAILABLE,
    RINGING, RINGINUSE, ONHOLD, UNKNOWN.
    """

    device: str
    state: str


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed: the engine fires its timers due at ``now``."""


Event = (
    CallerJoined
    | CallerLeft
    | RingStarted
    | RingAnswered
    | RingFailed
    | CallEnded
    | AgentLoggedIn
    | AgentLoggedOut
    | AgentPaused
    | AgentReady
    | DeviceStateChanged
    | Tick
)

# -------------------------------------------------------------- effects out


@dataclass(frozen=True, slots=True)
class Ring:
    """Offer the call: ring these agents' devices (several only for ring-all)."""

    call_id: str
    agent_ids: tuple[str, ...]
    devices: tuple[str, ...]
    timeout: float


@dataclass(frozen=True, slots=True)
class Announce:
    """Tell a waiting caller their position and, when honest, the expected wait."""

    call_id: str
    position: int
    estimated_wait: float | None


@dataclass(frozen=True, slots=True)
class Overflow:
    """Take the caller out of the queue to ``target``: ``queue:NAME`` is handled by
    the engine itself; others (``voicemail:BOX``, ``message:SOUND``, ``extension:X``,
    ``fallback``) are carried out by the adapter."""

    call_id: str
    queue: str
    target: str
    reason: str  # max_wait | no_agents | queue_removed


@dataclass(frozen=True, slots=True)
class AgentStateChanged:
    """For dashboards, the agent page and persistence.

    state: logged_out, ready, not_ready, offered, on_call, wrap_up
    """

    agent_id: str
    state: str
    reason: str | None = None
    call_id: str | None = None


@dataclass(frozen=True, slots=True)
class CallAbandoned:
    call_id: str
    queue: str
    waited: float


@dataclass(frozen=True, slots=True)
class CancelRing:
    """Stop ringing these agents for this call: the engine withdrew the offer itself
    (its ring guard timer expired, the agent logged out or paused while ringing)."""

    call_id: str
    agent_ids: tuple[str, ...]
    reason: str  # guard_timeout | agent_logged_out | agent_paused | reconfigured


@dataclass(frozen=True, slots=True)
class QueueChanged:
    """The engine moved a waiting caller to another queue (an ``Overflow`` target
    ``queue:NAME``). Informational: the caller stays in the engine's hands, the adapter
    has nothing to carry out (it may update the caller's display or the dashboards)."""

    call_id: str
    from_queue: str
    to_queue: str
    reason: str  # max_wait | no_agents


Effect = Ring | Announce | Overflow | AgentStateChanged | CallAbandoned | CancelRing | QueueChanged
