"""What the calls feature needs from the rest of ctiserver, declared here and wired in
``ctiserver.app``: the telephony adapter, the dialplan's channel, the rules, the ACD task
and whoever follows calls (the screen-pops)."""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from ctiserver.calls.model import (
    Call,
    CallerLeg,
    CallInfo,
    HeldChannel,
    InboundCall,
    MemberChange,
    QueueMember,
)
from ctiserver.core.acd import events as ev
from ctiserver.core.ivr.session import IvrSession
from ctiserver.core.rules.context import CallContext
from ctiserver.core.rules.decision import Decision
from ctiserver.core.rules.model import RuleSet


class Telephony(Protocol):
    """Actions on the PBX that nobody waits for."""

    def redirect(self, channel: str, context: str, variables: Mapping[str, str],
                 exten: str = "s") -> None:
        """Set ``variables`` on ``channel``, then send it to ``context,exten,1``."""

    def set_globals(self, values: Mapping[str, str]) -> None:
        """Set the dialplan's global variables, in this order."""

    def set_variables(self, channel: str, variables: Mapping[str, str]) -> None:
        """Set variables on ``channel``, wherever it is in the dialplan."""


class PbxRefused(Exception):
    """Asterisk answered an action with an error (a module not loaded, a permission)."""


class QueueMembers(Protocol):
    """An app_queue queue's members, as the fallback follower keeps them
    (``calls.fallback``; ``AmiTelephony`` does it)."""

    async def queue_members(self, queue: str) -> list[QueueMember] | None:
        """The queue's members; None when Asterisk has no such queue. ConnectionError when
        not connected, TimeoutError or PbxRefused when Asterisk did not list them."""

    async def change_members(self, queue: str, changes: Sequence[MemberChange]) -> list[str]:
        """Carry out ``changes`` in order and wait for Asterisk's answers: one text per
        change refused (``"QueueAdd PJSIP/1001: Permission denied"``)."""

    def change_members_nowait(self, queue: str, changes: Sequence[MemberChange]) -> bool:
        """Carry out ``changes`` in order, nobody waiting (a refusal is logged); False
        when nothing could be sent (no AMI connection)."""

    async def dialplan_global(self, name: str) -> str | None:
        """The dialplan's global variable ``name`` ("" when unset); None if not asked."""


class Claims(Protocol):
    """The pre-decided ring, as the call tracker uses it (``PreDecided``)."""

    def claimed(self, call_id: str, caller: CallerLeg, agent_id: str,
                at: float | None) -> Call | None:
        """A caller ctiserver has not heard of dialled ``agent_id`` on its own: the call,
        registered with the tracker, or None if it is none of ours."""

    def offer_needs_claim(self, agent_id: str) -> bool:
        """An offer of ``agent_id`` must take the agent's token first (ctiserver-claim)."""

    def agent_state(self, agent_id: str, state: str) -> None:
        """The engine's word on an agent's state."""


class DialplanChannel(Protocol):
    """The caller's channel while the dialplan waits for the routing decision."""

    async def run_ivr(self, session: IvrSession) -> dict[str, Any]:
        """Drive an IVR session on the channel: ``{"answers", "decision", "hungup",
        "trace"}`` (see ``ctiserver.asterisk.ivr_agi.run_ivr``)."""

    async def answer(self, action: str, variables: Mapping[str, str]) -> None:
        """Hand the decision to the dialplan; the channel is released after it."""


class Rules(Protocol):
    def decide(self, ctx: CallContext) -> Decision: ...

    def ivr_session(self, name: str, answers: dict[str, str]) -> IvrSession: ...


class RuleVersions(Protocol):
    """The rules in force and their version (the pre-decided ring follows them)."""

    @property
    def version(self) -> str | None: ...

    @property
    def ruleset(self) -> RuleSet: ...


class Customer(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def tier(self) -> str: ...
    @property
    def assigned_agent(self) -> str | None: ...


class Identified(Protocol):
    """The CRM's answer for a caller: the matching customers, best first."""

    @property
    def customers(self) -> Sequence[Customer]: ...


class CallObserver(Protocol):
    """Told of each queued call's moments (the screen-pops); all but ``lookup`` return
    at once: they run on the ACD task's path."""

    def lookup(self, call_id: str, number: str) -> Awaitable[Identified]: ...

    def forget(self, call_id: str) -> None: ...

    def prefetch(self, call: CallInfo) -> None: ...

    def offered_nowait(self, call: CallInfo, agent_id: str) -> None: ...

    def answered_nowait(self, call_id: str, agent_id: str) -> None: ...

    def ended_nowait(self, call_id: str, agent_id: str | None, *, call: CallInfo,
                     at: float | None, outcome: str) -> None: ...

    def agent_state_changed(self, agent_id: str, state: str, reason: str | None,
                            call_id: str | None) -> None: ...


class Submit(Protocol):
    """Queue an event for the ACD task (``at``: Asterisk's time stamp, if it gave one)."""

    def __call__(self, event: ev.Event, at: float | None) -> None: ...


class Request(Protocol):
    """Give the ACD task an event and wait for it to be taken (AcdError if refused)."""

    def __call__(self, event: ev.Event) -> Awaitable[Any]: ...


class CallEvents(Protocol):
    """What the telephony adapter tells the calls feature (``CallTracker`` does it)."""

    def dial_began(self, call_id: str, device: str, leg: str, at: float | None,
                   caller: CallerLeg | None = None) -> None: ...

    def claim_lost(self, call_id: str, device: str, at: float | None) -> None: ...

    def dial_ended(self, call_id: str, device: str, leg: str, reason: str, at: float | None,
                   status: str = "") -> None: ...

    def channel_created(self, device: str, uid: str, linkedid: str,
                        at: float | None) -> None: ...

    def hung_up(self, device: str, uid: str, cause: str, at: float | None) -> None: ...

    def device_state(self, device: str, state: str, at: float | None) -> None: ...

    def shutdown_hangup(self, uid: str, at: float | None) -> None:
        """Asterisk is stopping and hangs channel ``uid`` up."""

    def link_lost(self, at: float | None = None) -> None:
        """The link to the PBX dropped: nothing is seen until the next ``resync``."""

    def resync(self, channels: Iterable[tuple[str, str, str, float | None]],
               device_states: Iterable[tuple[str, str, float | None]],
               held: Iterable[HeldChannel] = ()) -> None: ...

    def resync_failed(self) -> None: ...


class Router(Protocol):
    """What the dialplan adapter asks of the calls feature (``Routing`` does it)."""

    async def route(self, inbound: InboundCall, channel: DialplanChannel) -> None: ...

    async def phone_command(self, device: str, command: str) -> str: ...
