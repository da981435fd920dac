"""A call as the calls feature follows it, and what the dialplan does with it next."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal


class CallState(StrEnum):
    ROUTING = "routing"  # the dialplan waits for the decision (FastAGI)
    WAITING = "waiting"  # queued, on hold or hearing an announcement
    RINGING = "ringing"  # offered: an agent's phone rings
    CONNECTED = "connected"  # an agent answered
    ROUTED = "routed"  # left the queue for another destination (overflow)
    GONE = "gone"  # the caller hung up


@dataclass
class CallInfo:
    """What the screen-pop and the call's record need to know of a call."""

    call_id: str  # stable: the caller channel's Linkedid
    caller_id: str  # E.164 when it could be normalised (routing does it, once)
    caller_name: str = ""
    dnis: str = ""
    queue: str = ""
    digits: str = ""
    answers: dict[str, Any] = field(default_factory=dict)
    joined_at: float = 0.0
    offered_at: float | None = None


@dataclass(frozen=True, slots=True)
class InboundCall:
    """A new call as the dialplan hands it over, before any decision."""

    call_id: str  # the caller channel's Uniqueid
    channel: str
    caller_id: str  # as Asterisk gave it: routing normalises it
    caller_name: str
    dnis: str


# (dialplan action, channel variables): how ctiserver-inbound goes on (see the
# asterisk_conf/etc/extensions_ctiserver.conf contract)
Next = tuple[str, dict[str, str]]


@dataclass
class Call:
    call_id: str
    channel: str
    info: CallInfo
    state: CallState = CallState.ROUTING
    agi_reply: asyncio.Future[Next] | None = None  # the routing request still waiting
    ringing: tuple[str, ...] = ()  # agents being offered the call
    legs: dict[str, str] = field(default_factory=dict)  # agents' legs: uniqueid -> device
    agent_id: str | None = None
    agent_uid: str | None = None
    answered: bool = False
    answered_at: float | None = None
    ended: bool = False  # the answering agent hung up (CallEnded told)
    joined: bool = False  # entered an ACD queue (not routed elsewhere)
    route: str = ""  # the routing decision, for the hang-up line
    # the agent the caller dialled on its own, pre-decided (calls/predecided.py), until the
    # engine has taken the call: its offer of that agent is no redirect
    fast: str | None = None
    # what the caller's channel carries so that a restarted ctiserver can take it back
    # (calls/adoption.py); "" until it joins a queue
    adopt: str = ""
    adopt_on_channel: bool = False  # set on the channel already (else: with the next move)


def destination(kind: str, arg: str) -> Next:
    """A non-queue target -> what the dialplan does next."""
    if kind == "voicemail":
        return "voicemail", {"CTI_MAILBOX": arg}
    if kind == "message":
        return "message", {"CTI_MESSAGE": arg.replace(",", "&").replace(" ", "&")}
    if kind == "extension":
        return "extension", {"CTI_EXTEN": arg}
    if kind == "hangup":
        return "hangup", {}
    return "fallback", {}


@dataclass(frozen=True, slots=True)
class CallerLeg:
    """The caller's channel as a ``DialBegin`` shows it (the pre-decided ring: a caller
    ctiserver has not heard of yet)."""

    channel: str
    caller_id: str
    caller_name: str
    context: str
    exten: str


# the channel variable a queued caller carries for re-adoption (calls/adoption.py)
ADOPT_VARIABLE = "CTI_ADOPT"


@dataclass(frozen=True, slots=True)
class HeldChannel:
    """A caller's channel found in ctiserver's hold, announce or connect contexts when the
    AMI link comes up: a caller a restarted ctiserver may take back (re-adoption)."""

    call_id: str  # the channel's Uniqueid (= its Linkedid: the call's first channel)
    channel: str
    context: str
    adopt: str  # its CTI_ADOPT value, "" when it has none
    # the channels of the call on other devices: (device, uniqueid, answered)
    legs: tuple[tuple[str, str, bool], ...] = ()


@dataclass(frozen=True, slots=True)
class QueueMember:
    """A member of an app_queue queue as Asterisk lists it (AMI ``QueueStatus``)."""

    device: str  # the interface rung, e.g. PJSIP/1001
    name: str = ""  # MemberName: ctiserver writes the agent's id
    state_device: str = ""  # StateInterface: whose device state app_queue reads
    paused: bool = False
    reason: str = ""  # the pause reason
    dynamic: bool = True  # False: a member written in queues.conf, which AMI cannot remove


@dataclass(frozen=True, slots=True)
class MemberChange:
    """One change to an app_queue queue's members: ``add`` (the agent's device, named by
    the agent's id, paused or not), ``remove``, or ``pause`` (paused or not, with a reason)."""

    action: Literal["add", "remove", "pause"]
    device: str
    name: str = ""
    paused: bool = False
    reason: str = ""
