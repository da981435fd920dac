"""AMI events -> the calls feature, and its actions -> AMI.

It translates and nothing more: one table (``HANDLERS``) maps AMI event names to the
tracker's intent-named methods, with the agent's device read from the channel name and
Asterisk's ``Timestamp``; ``AmiTelephony`` turns a redirect into Setvar + Redirect actions,
and the fallback queue's member changes into QueueAdd / QueueRemove / QueuePause.
The first word of a channel the phone places is its Newchannel; of one that rings the
phone, the DialBegin that every way of ringing a phone publishes (Dial, Queue, Originate,
Page...): manager_ctiserver.conf leaves out the Newchannel of those (extension ``s``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence

from ctiserver.asterisk import callerid
from ctiserver.asterisk.ami import AmiConnection, AmiEvent
from ctiserver.calls.model import (
    ADOPT_VARIABLE,
    CallerLeg,
    HeldChannel,
    MemberChange,
    QueueMember,
)
from ctiserver.calls.ports import CallEvents, PbxRefused

log = logging.getLogger("ctiserver.calls")

DIAL_FAILURES = {
    "NOANSWER": "noanswer", "BUSY": "busy", "CHANUNAVAIL": "unavailable",
    "CONGESTION": "unavailable", "CANCEL": "cancel", "DONTCALL": "noanswer",
    "TORTURE": "noanswer", "INVALIDARGS": "unavailable",
}


# where a queued caller waits or rings an agent: a restarted ctiserver takes them back
HELD_CONTEXTS = frozenset({"ctiserver-hold", "ctiserver-announce", "ctiserver-connect",
                           "ctiserver-claim"})


def device_of(channel: str) -> str:
    """``PJSIP/1001-0000000a`` -> ``PJSIP/1001``; ``Local/x@ctx-0001;1`` -> ``Local/x@ctx``."""
    base = channel.split(";", 1)[0]
    return base.rsplit("-", 1)[0] if "-" in base else base


def _ts(event: AmiEvent) -> float | None:
    try:
        return float(event.Timestamp)
    except (TypeError, ValueError):
        return None


class AmiTelephony:
    """``ctiserver.calls.ports.Telephony`` and ``QueueMembers`` over the AMI connection."""

    def __init__(self, ami: AmiConnection) -> None:
        self.ami = ami

    def redirect(self, channel: str, context: str, variables: Mapping[str, str],
                 exten: str = "s") -> None:
        """Setvar each variable, then Redirect to context,exten,1: pipelined in one write
        (AMI runs one session's actions in order), their responses not awaited."""
        actions = [{"Action": "Setvar", "Channel": channel, "Variable": name,
                    "Value": value} for name, value in variables.items()]
        actions.append({"Action": "Redirect", "Channel": channel, "Context": context,
                        "Exten": exten, "Priority": "1"})
        self.ami.send_nowait(*actions)

    def set_variables(self, channel: str, variables: Mapping[str, str]) -> None:
        self.ami.send_nowait(*({"Action": "Setvar", "Channel": channel, "Variable": name,
                                "Value": value} for name, value in variables.items()))

    def set_globals(self, values: Mapping[str, str]) -> None:
        """One Setvar with no channel (a global) each, pipelined in one write."""
        self.ami.send_nowait(*({"Action": "Setvar", "Variable": name, "Value": value}
                               for name, value in values.items()))


    # ------------------------------------------------------------------ queue members
    # ``calls.ports.QueueMembers``: the app_queue fallback queue that ctiserver keeps

    async def queue_members(self, queue: str) -> list[QueueMember] | None:
        """QueueStatus of ``queue``: its members, or None when Asterisk has no such queue
        (the list then holds no QueueParams)."""
        reply = await self.ami.call({"Action": "QueueStatus", "Queue": queue}, timeout=10)
        listed = _as_list(reply)
        if not listed and str(getattr(reply, "response", "")) == "Error":
            raise PbxRefused(f"QueueStatus: {getattr(reply, 'message', '') or 'error'}")
        if not any(m.event == "QueueParams" and m.Queue == queue for m in listed):
            return None
        return [QueueMember(device=m.Location or m.Interface, name=m.Name or m.MemberName,
                            state_device=m.StateInterface, paused=m.Paused == "1",
                            reason=m.PausedReason or "", dynamic=m.Membership == "dynamic")
                for m in listed if m.event == "QueueMember" and m.Queue == queue]

    async def change_members(self, queue: str, changes: Sequence[MemberChange]) -> list[str]:
        """The changes sent in order (AMI runs one session's actions in order), their
        answers awaited together; each refusal as "QueueAdd PJSIP/1001: <message>"."""
        actions = [_member_action(queue, c) for c in changes]
        replies = await asyncio.gather(
            *(self.ami.call(a, timeout=10, as_list=False, quiet=True) for a in actions),
            return_exceptions=True)
        refused = []
        for action, reply in zip(actions, replies, strict=True):
            what = f"{action['Action']} {action['Interface']}"
            if isinstance(reply, BaseException):
                refused.append(f"{what}: {reply or type(reply).__name__}")
            elif str(getattr(reply, "response", "")) != "Success":
                refused.append(f"{what}: {getattr(reply, 'message', '') or 'error'}")
        return refused

    def change_members_nowait(self, queue: str, changes: Sequence[MemberChange]) -> bool:
        """The changes pipelined in one write; a refusal is logged when its answer comes.
        Not connected: False, and no warning per change (the next login reconciles)."""
        if not self.ami.connected.is_set():
            return False
        return self.ami.send_nowait(*(_member_action(queue, c) for c in changes))

    async def dialplan_global(self, name: str) -> str | None:
        try:
            reply = await self.ami.call({"Action": "Getvar", "Variable": f"GLOBAL({name})"},
                                        timeout=5)
        except (ConnectionError, TimeoutError):
            return None
        if str(reply.get("Response", "")) != "Success":
            return None
        return str(reply.get("Value", "") or "")


def _member_action(queue: str, change: MemberChange) -> dict[str, str]:
    """A change to a queue's members as its AMI action (QueueAdd / QueueRemove /
    QueuePause); the member's device is also the one whose state app_queue reads, so it
    never rings a phone that is busy with another call (``ringinuse = no``)."""
    action: dict[str, str]
    if change.action == "add":
        action = {"Action": "QueueAdd", "Queue": queue, "Interface": change.device,
                  "Penalty": "0", "Paused": "true" if change.paused else "false",
                  "MemberName": change.name, "StateInterface": change.device}
    elif change.action == "remove":
        return {"Action": "QueueRemove", "Queue": queue, "Interface": change.device}
    else:
        action = {"Action": "QueuePause", "Queue": queue, "Interface": change.device,
                  "Paused": "true" if change.paused else "false"}
    if change.paused and change.reason:
        action["Reason"] = change.reason
    return action


class AmiCallEvents:
    def __init__(self, tracker: CallEvents, ami: AmiConnection) -> None:
        self.tracker = tracker
        self.ami = ami

    def on_ami_event(self, event: AmiEvent) -> None:
        handler = HANDLERS.get(event.event)
        if handler is not None:
            handler(self.tracker, event)

    async def resync(self) -> None:
        """After (re)connecting: tell the tracker every live channel and device state, and
        the callers waiting in ctiserver's contexts with what they carry (re-adoption)."""
        try:
            channels = [m for m in _as_list(await self.ami.call(
                {"Action": "CoreShowChannels"}, timeout=10)) if m.Uniqueid]
            listed = [(device_of(m.Channel), m.Uniqueid, m.Linkedid, _ts(m)) for m in channels]
            states = await self.ami.call({"Action": "DeviceStateList"}, timeout=10)
            devices = [(m.Device, m.State, _ts(m)) for m in _as_list(states)
                       if m.event == "DeviceStateChange"]
            held = await self._held(channels)
        except (ConnectionError, TimeoutError) as exc:
            log.warning("resync after AMI login failed: %s; agents' phones count as offerable",
                        exc)
            self.tracker.resync_failed()
            return
        self.tracker.resync(listed, devices, held)

    async def _held(self, channels: list[AmiEvent]) -> list[HeldChannel]:
        """The callers (a call's first channel) in the contexts where ctiserver keeps
        them, each with its CTI_ADOPT (one Getvar each, all in flight together)."""
        callers = [m for m in channels
                   if m.Context in HELD_CONTEXTS and m.Uniqueid == m.Linkedid]
        if not callers:
            return []
        legs: dict[str, list[tuple[str, str, bool]]] = {}
        for m in channels:
            if m.Uniqueid != m.Linkedid:
                legs.setdefault(m.Linkedid, []).append(
                    (device_of(m.Channel), m.Uniqueid, m.ChannelStateDesc == "Up"))
        replies = await asyncio.gather(*(
            self.ami.call({"Action": "Getvar", "Channel": m.Channel,
                           "Variable": ADOPT_VARIABLE}, timeout=10) for m in callers),
            return_exceptions=True)
        held = []
        for m, reply in zip(callers, replies, strict=True):
            value = ""
            if not isinstance(reply, BaseException) and \
                    str(reply.get("Response", "")) == "Success":
                value = str(reply.get("Value") or "")
            held.append(HeldChannel(call_id=m.Uniqueid, channel=m.Channel, context=m.Context,
                                    adopt="" if value == "(null)" else value,
                                    legs=tuple(legs.get(m.Uniqueid, ()))))
        return held

    def link_lost(self) -> None:
        self.tracker.link_lost()


async def groups_available(ami: AmiConnection) -> bool | None:
    """Whether Asterisk has the GROUP functions the pre-decided ring's tokens need
    (func_groupcount); None when it could not be asked. Getvar of a function Asterisk
    does not have answers Success with an empty value."""
    try:
        reply = await ami.call({"Action": "Getvar",
                                "Variable": "GROUP_COUNT(ctiserver-check@cti)"}, timeout=5)
    except (ConnectionError, TimeoutError):
        return None
    return str(reply.get("Response", "")) == "Success" and str(reply.get("Value", "")).isdigit()


def _as_list(resp: object) -> list[AmiEvent]:
    return list(resp) if isinstance(resp, list) else []


def _dial_begin(t: CallEvents, e: AmiEvent) -> None:
    caller = None
    if e.Context == "ctiserver-inbound":  # the pre-decided ring: a caller we do not know
        caller = CallerLeg(channel=e.Channel or "", caller_id=e.CallerIDNum or "",
                           caller_name=callerid.from_ami(e.CallerIDName, e.Channel),
                           context=e.Context,
                           exten=e.Exten or "")
    t.dial_began(e.Uniqueid, device_of(e.DestChannel), e.DestUniqueid, _ts(e), caller)


def _dial_end(t: CallEvents, e: AmiEvent) -> None:
    status = (e.DialStatus or "").upper()
    reason = "answer" if status == "ANSWER" else DIAL_FAILURES.get(status, "noanswer")
    t.dial_ended(e.Uniqueid, device_of(e.DestChannel), e.DestUniqueid, reason, _ts(e),
                 status=status)


def _new_channel(t: CallEvents, e: AmiEvent) -> None:
    t.channel_created(device_of(e.Channel), e.Uniqueid, e.Linkedid, _ts(e))


def _soft_hangup(t: CallEvents, e: AmiEvent) -> None:
    # Cause is the reason Asterisk hangs the channel up: 4, AST_SOFTHANGUP_SHUTDOWN, is
    # every channel's at `core stop now` / `core restart now` (manager_ctiserver.conf
    # passes only that one)
    if e.Cause == "4":
        t.shutdown_hangup(e.Uniqueid, _ts(e))


def _hangup(t: CallEvents, e: AmiEvent) -> None:
    t.hung_up(device_of(e.Channel), e.Uniqueid, e.get("Cause-txt") or e.Cause, _ts(e))


def _device_state(t: CallEvents, e: AmiEvent) -> None:
    t.device_state(e.Device, e.State, _ts(e))


def _user_event(_t: CallEvents, e: AmiEvent) -> None:
    """The dialplan's own markers: an offer that lost the agent's token to a caller who
    dialled it first; the others are logged with the call's id."""
    name = e.UserEvent
    if name == "CtiClaimLost":
        _t.claim_lost(e.CallId or "", device_of(e.Dial or ""), _ts(e))
    elif name == "CtiFallback":
        log.warning("[%s] call sent to the app_queue fallback (AGI status %s)",
                    e.CallId, e.AgiStatus or "?")
    elif name == "CtiHoldExpired":
        log.warning("[%s] caller held too long without ctiserver: fallback", e.CallId)
    elif name == "CtiAnnounce":
        log.info("[%s] position announcement %s (position %s)", e.CallId, e.State,
                 e.Position)


HANDLERS: dict[str, Callable[[CallEvents, AmiEvent], None]] = {
    "Newchannel": _new_channel,
    "DialBegin": _dial_begin,
    "DialEnd": _dial_end,
    "Hangup": _hangup,
    "SoftHangupRequest": _soft_hangup,
    "DeviceStateChange": _device_state,
    "UserEvent": _user_event,
}
