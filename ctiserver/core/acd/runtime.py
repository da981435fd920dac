"""Run-time records of the ACD engine: one per agent, one per call (queues: queues.py).

Plain mutable objects owned by the engine's parts; nothing here decides anything.
Times are epoch seconds (float).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from .model import AgentConfig, Needs
from .states import (
    BLOCKING_DEVICE_STATES,
    LOGGED_OUT,
    READY,
    WAITING,
    AgentState,
    CallerState,
)

# nobody rung, no skill of its own: one value shared by the callers without (a caller's
# offered_to is replaced, never changed in place), so that a waiting caller holds no
# container of its own for them: fewer objects for the garbage collector to walk
NOBODY: frozenset[str] = frozenset()
NO_SKILLS: Mapping[str, int] = MappingProxyType({})


class AgentRt:
    __slots__ = (
        "answered_at",
        "block_epoch",
        "call_id",
        "call_queue",
        "calls",
        "cfg",
        "device_state",
        "epoch",
        "id",
        "idle_periods",
        "idle_since",
        "idle_total",
        "idle_waits_phone",
        "in_index",
        "order",
        "pending",
        "queues",
        "reason",
        "since",
        "state",
        "tags",
        "talk_total",
        "wrap_started",
        "last_talk",
    )

    def __init__(self, cfg: AgentConfig, order: int) -> None:
        self.cfg = cfg
        self.id = cfg.id
        self.order = order  # position in AcdConfig.agents: the last tie-breaker
        self.queues: tuple[str, ...] = ()  # queues this agent serves
        # the class-head tags it can fit (waiting.py): None, then its skills
        self.tags: tuple[str | None, ...] = (None, *cfg.skills)
        self.state: AgentState = LOGGED_OUT
        self.reason: str | None = None
        self.since = 0.0
        self.call_id: str | None = None
        self.call_queue: str | None = None
        self.device_state = "UNKNOWN"
        self.block_epoch = 0  # bumped on every device state change: RING_BLOCK_END carries it
        self.idle_since = 0.0
        # ready after a call while its phone is still busy with it: the idle period starts
        # when the phone is free (engine, DeviceStateChanged)
        self.idle_waits_phone = False
        self.idle_total = 0.0  # completed idle periods (ready until answering)
        self.idle_periods = 0
        self.talk_total = 0.0
        self.calls = 0
        self.answered_at = 0.0
        self.wrap_started = 0.0
        self.last_talk = 0.0
        # deferred change requested while on a call: (state, reason)
        self.pending: tuple[AgentState, str | None] | None = None
        self.epoch = 0  # bumped on every state change; timers carry it
        self.in_index = False  # currently in the ready indexes (available)

    @property
    def available(self) -> bool:
        return self.state == READY and self.device_state not in BLOCKING_DEVICE_STATES

    @property
    def avg_idle(self) -> float | None:
        return self.idle_total / self.idle_periods if self.idle_periods else None

    @property
    def avg_talk(self) -> float:
        return self.talk_total / self.calls if self.calls else 0.0


class CallerRt:
    __slots__ = (
        "answered_at",
        "agent_id",
        "arrival",
        "call_id",
        "came_from",
        "entered",
        "needs",
        "needs_cap",
        "needs_req",
        "needs_until",
        "offered_to",
        "overdue",
        "preferred",
        "priority",
        "q_epoch",
        "queue",
        "relax_epoch",
        "req",
        "ring_epoch",
        "seq",
        "skills",
        "base_priority",
        "status",
    )

    def __init__(
        self,
        call_id: str,
        queue: str,
        base_priority: int,
        skills: Mapping[str, int],
        preferred: str | None,
        arrival: float,
        seq: int,
    ) -> None:
        self.call_id = call_id
        self.queue = queue
        self.base_priority = base_priority
        self.skills = skills  # the call's own requirements
        self.preferred = preferred
        self.arrival = arrival  # first entry in any queue: ordering and skill relaxation
        self.seq = seq  # join order: the last tie-breaker between callers
        self.entered = arrival  # entry in the current queue: max_wait, announcements
        self.priority = base_priority  # + the current queue's priority
        self.req: tuple[tuple[str, int], ...] = ()  # queue's + call's skill -> level
        # cache of the relaxed requirements (skills.needs_at): the needs, the req they
        # were made from (None: no cache) at which relax cap, and the wait from which
        # they no longer hold (the next relax step). Four slots, not a tuple: nothing
        # allocated for the collector when it changes
        self.needs: Needs = ()
        self.needs_req: Needs | None = None
        self.needs_cap: int | None = None
        self.needs_until = 0.0
        self.status: CallerState = WAITING
        self.offered_to = NOBODY  # the agents it rings (a new set at each change)
        self.agent_id: str | None = None
        self.answered_at = 0.0
        self.overdue = False  # max_wait passed while ringing: overflow if the offer fails
        self.came_from: tuple[str, ...] = ()  # queues it overflowed from, in order
        self.q_epoch = 0  # bumped on queue change / leaving: queue timers carry it
        self.relax_epoch = -1  # the q_epoch whose RELAX timers are set (callers.py)
        self.ring_epoch = 0  # bumped on every offer: the ring guard timer carries it

    @property
    def order_key(self) -> tuple[int, float, int]:
        """Who goes first: higher priority, then longer waiting, then joined first."""
        return (-self.priority, self.arrival, self.seq)
