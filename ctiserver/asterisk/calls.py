"""The Asterisk adapter: AMI events -> ACD events, ACD effects -> AMI actions.

It translates and nothing more. One table (``HANDLERS``) maps AMI event names to
handlers; one function (``carry_out``) turns engine effects into Setvar/Redirect
actions on the caller's channel (see asterisk_conf/etc/extensions_ctiserver.conf for
the contexts; an offer is Setvar CTI_DIAL + Redirect to ctiserver-connect,<ring timeout>,1).
Screen-pops are triggered here at the moment Asterisk reports the agent's phone ringing
(DialBegin), and on answer (DialEnd ANSWER).

A call's id is the caller channel's Uniqueid, which is also the Linkedid of every
channel the call creates (the agents' legs), so it is stable for the pop.

Agents' phones: besides translating, the adapter keeps the live channels of each agent
device, from the first word of them to their Hangup. A channel on an agent's phone that is
not part of one of our calls (a private call, an Originate, a call from the app_queue
fallback) makes the phone in use from then on, so Asterisk's RINGING / INUSE device states
say nothing new and manager_ctiserver.conf filters them out (two events less per call);
should they come anyway, those that only echo our own call are dropped. The first word of
a channel the phone places is its Newchannel; of one that rings the phone, the DialBegin
that every way of ringing a phone publishes (Dial, Queue, Originate, Page...):
manager_ctiserver.conf leaves out the Newchannel of those (extension ``s``), one event less
per call. Asterisk computes device states asynchronously, so its NOT_INUSE comes a few ms
after an agent's leg hangs up; the adapter tells the engine at the hang-up itself whether
the phone is free or still busy with another call (for which Asterisk would send no change
at all).

Log: one INFO line per queued call, when the caller hangs up: the caller, the number,
the routing decision (routes.py logs it at DEBUG for queued calls), who answered, the wait
and the talk time; ringing and answering are DEBUG, a ring that fails is INFO.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ctiserver.asterisk.ami import AmiConnection
from ctiserver.core.acd import events as ev
from ctiserver.core.acd.model import AcdConfig
from ctiserver.pops import CallInfo, PopService

log = logging.getLogger("ctiserver.calls")

OUR_CALL_DEVICE_STATES = frozenset({"RINGING", "INUSE", "RINGINUSE", "ONHOLD"})
ROUTINE_STATES = frozenset({"offered", "on_call", "wrap_up", "ready"})
AGENT_REQUESTS = (ev.AgentLoggedIn, ev.AgentLoggedOut, ev.AgentPaused, ev.AgentReady)
DIAL_FAILURES = {
    "NOANSWER": "noanswer", "BUSY": "busy", "CHANUNAVAIL": "unavailable",
    "CONGESTION": "unavailable", "CANCEL": "cancel", "DONTCALL": "noanswer",
    "TORTURE": "noanswer", "INVALIDARGS": "unavailable",
}


@dataclass
class Call:
    call_id: str
    channel: str
    info: CallInfo
    state: str = "routing"  # routing | waiting | ringing | connected | gone
    agi_reply: asyncio.Future[tuple[str, dict[str, str]]] | None = None
    ringing: tuple[str, ...] = ()
    legs: dict[str, str] = field(default_factory=dict)  # agents' legs: uniqueid -> device
    agent_id: str | None = None
    agent_uid: str | None = None
    answered: bool = False
    answered_at: float | None = None
    ended: bool = False  # the answering agent hung up (CallEnded told)
    joined: bool = False  # entered an ACD queue (not routed elsewhere)
    route: str = ""  # the routing decision, for the hang-up line


def device_of(channel: str) -> str:
    """``PJSIP/1001-0000000a`` -> ``PJSIP/1001``; ``Local/x@ctx-0001;1`` -> ``Local/x@ctx``."""
    base = channel.split(";", 1)[0]
    return base.rsplit("-", 1)[0] if "-" in base else base


def _ts(event: Any) -> float | None:
    try:
        return float(event.Timestamp)
    except (TypeError, ValueError):
        return None


class CallAdapter:
    def __init__(self, ami: AmiConnection, submit: Callable[[ev.Event, float | None], None],
                 pops: PopService | None, acd: AcdConfig,
                 clock: Callable[[], float] = time.time,
                 poke: Callable[[], None] | None = None) -> None:
        self.ami = ami
        self.submit = submit
        self.pops = pops
        self.clock = clock
        # wakes the ACD task, whose after-steps hook runs run_deferred (see _defer)
        self.poke = poke
        self.calls: dict[str, Call] = {}
        self.agent_legs: dict[str, str] = {}  # agent channel uniqueid -> call id
        # agent device -> the uniqueid of our call's leg on it, from DialBegin to its Hangup
        self.device_legs: dict[str, str] = {}
        # agent device -> every live channel on it (ours, private calls), Newchannel..Hangup
        self.device_channels: dict[str, set[str]] = {}
        self.device_states: dict[str, str] = {}  # agent device -> state the engine has
        # devices whose ring failed busy / unavailable since their last state: the engine
        # blocks them on its own, so their next state counts even if it is the same
        self.device_blocked: set[str] = set()
        self._deferred: list[Callable[[], None]] = []  # screen-pop steps, see _defer
        self.set_config(acd)

    def set_config(self, acd: AcdConfig) -> None:
        self.agent_by_device = {a.device: a.id for a in acd.agents.values()}
        self.device_states = {}  # agents rebuilt by the engine start over: tell them again

    # ------------------------------------------------------------------ AMI events in

    def on_ami_event(self, event: Any) -> None:
        handler = HANDLERS.get(getattr(event, "event", None) or "")
        if handler is not None:
            handler(self, event)

    def _dial_begin(self, e: Any) -> None:
        device = device_of(e.DestChannel)
        agent = self.agent_by_device.get(device)
        if agent is None:
            return
        call = self.calls.get(e.Uniqueid)
        self._on_phone(device, e.DestUniqueid, call is not None, e)
        if call is None:  # another call rings the phone: busy, nothing more for us
            return
        self.agent_legs[e.DestUniqueid] = call.call_id
        self.device_legs[device] = e.DestUniqueid
        call.legs[e.DestUniqueid] = device
        at = _ts(e)
        log.debug("[%s] ringing agent %s (%s)", call.call_id, agent, e.DestChannel)
        # nothing for the engine (RingStarted would be a no-op step): it counted the offer
        # from its own Ring effect; the ring is the pop's moment
        if self.pops is not None:
            call.info.offered_at = at or self.clock()
            self.pops.offered_nowait(call.info, agent)

    def _dial_end(self, e: Any) -> None:
        call = self.calls.get(e.Uniqueid)
        agent = self.agent_by_device.get(device_of(e.DestChannel))
        if call is None or agent is None:
            return
        status = (e.DialStatus or "").upper()
        at = _ts(e)
        if status == "ANSWER":
            call.state, call.agent_id, call.agent_uid = "connected", agent, e.DestUniqueid
            call.answered, call.answered_at = True, at if at is not None else self.clock()
            log.debug("[%s] answered by agent %s", call.call_id, agent)
            self.submit(ev.RingAnswered(call.call_id, agent), at)
            if self.pops is not None:
                self._defer(self.pops.answered_nowait, call.call_id, agent)
        else:
            self.agent_legs.pop(e.DestUniqueid, None)
            reason = DIAL_FAILURES.get(status, "noanswer")
            if reason in ("busy", "unavailable"):
                self.device_blocked.add(device_of(e.DestChannel))
            log.info("[%s] agent %s did not take the call: %s", call.call_id, agent, status)
            if call.state == "ringing" and agent in call.ringing:
                call.ringing = tuple(a for a in call.ringing if a != agent)
                if not call.ringing:
                    call.state = "waiting"
            self.submit(ev.RingFailed(call.call_id, agent, reason), at)

    def _new_channel(self, e: Any) -> None:
        device = device_of(e.Channel)
        if device in self.agent_by_device:
            self._on_phone(device, e.Uniqueid, e.Linkedid in self.calls, e)

    def _on_phone(self, device: str, uid: str, ours: bool, e: Any) -> None:
        """Channel ``uid`` is live on an agent's phone (counted once, from its Newchannel or
        its DialBegin, whichever comes first); one that is not ours makes the phone busy."""
        live = self.device_channels.setdefault(device, set())
        if uid not in live:
            live.add(uid)
            if not ours:
                self._set_device(device, "INUSE", _ts(e))

    def _hangup(self, e: Any) -> None:
        uid = e.Uniqueid
        at = _ts(e)
        device = device_of(e.Channel)
        live = self.device_channels.get(device)
        if live is not None:
            live.discard(uid)
            if not live:
                del self.device_channels[device]
        if self.device_legs.get(device) == uid:
            del self.device_legs[device]
            # Say what the phone is now, before the engine frees the agent: with another
            # call on it, in use (Asterisk sends no change: in use before, in use still);
            # with none, free, if all the engine heard was our call's ringing / in use
            # (Asterisk's own NOT_INUSE follows a few ms later and changes nothing)
            if live:
                self._set_device(device, "INUSE", at)
            elif self.device_states.get(device, "NOT_INUSE") in OUR_CALL_DEVICE_STATES:
                self._set_device(device, "NOT_INUSE", at)
        call = self.calls.pop(uid, None)
        if call is not None:
            self._caller_gone(call, at, e.get("Cause-txt") or e.Cause)
            return
        call_id = self.agent_legs.pop(uid, None)
        if call_id is not None:
            call = self.calls.get(call_id)
            if call is not None and call.agent_uid == uid:
                log.debug("[%s] agent %s hung up", call_id, call.agent_id)
                call.ended = True
                self.submit(ev.CallEnded(call_id), at)

    def _caller_gone(self, call: Call, at: float | None, cause: str = "") -> None:
        call.state = "gone"
        if call.agi_reply is not None and not call.agi_reply.done():
            call.agi_reply.set_result(("hangup", {}))
        info, ended = call.info, at if at is not None else self.clock()
        if call.answered:
            answered = call.answered_at or ended
            outcome = (f"answered by agent {call.agent_id}, waited "
                       f"{max(0.0, answered - info.joined_at) if info.joined_at else 0.0:.1f} s, "
                       f"talked {max(0.0, ended - answered):.1f} s")
        else:
            outcome = (f"no agent, after {max(0.0, ended - info.joined_at):.1f} s"
                       if info.joined_at else "no agent")
        log.info("[%s] caller hung up (%s): %s (%s) -> %s, %s, %s", call.call_id,
                 cause or "normal", info.caller_id or "unknown", info.caller_name or "-",
                 info.dnis or "no number", call.route or "-", outcome)
        if call.joined:
            # the agent's leg of this call (ringing or answered) goes a few ms after the
            # caller's: until its own Hangup the phone is busy, or the engine would offer it
            # the next caller at once, on a phone still tearing down this call
            for leg, device in call.legs.items():
                if self.device_legs.get(device) == leg and self.agent_legs.get(leg) == call.call_id:
                    self._set_device(device, "INUSE", at)
            if not call.ended:  # the agent hung up first: the engine has ended the call
                self.submit(ev.CallerLeft(call.call_id), at)
            if self.pops is not None:
                outcome = "answered" if call.answered else "abandoned"
                self._defer(self.pops.ended_nowait, call.call_id, call.agent_id,
                            call=call.info, at=at, outcome=outcome)
        for leg in call.legs:
            if self.agent_legs.get(leg) == call.call_id:
                del self.agent_legs[leg]

    def _device_state(self, e: Any) -> None:
        # Ringing / in use caused by our own call (the only channel on the phone) say
        # nothing the engine needs; passed on, they would also keep the agent blocked after
        # the call until Asterisk reports NOT_INUSE, a few ms after the hang-up (its device
        # states are computed asynchronously). With another call on the phone they count.
        leg = self.device_legs.get(e.Device)
        if leg is not None and e.State in OUR_CALL_DEVICE_STATES and \
                self.device_channels.get(e.Device, set()) <= {leg}:
            return
        if e.Device in self.agent_by_device:
            state = (e.State or "UNKNOWN").upper()
            # the NOT_INUSE after each of our calls: the engine heard it at the hang-up
            if self.device_states.get(e.Device) != state or e.Device in self.device_blocked:
                self._set_device(e.Device, state, _ts(e))

    def _set_device(self, device: str, state: str, at: float | None) -> None:
        self.device_states[device] = state
        self.device_blocked.discard(device)
        self.submit(ev.DeviceStateChanged(device, state), at)

    def _user_event(self, e: Any) -> None:
        name = e.UserEvent
        if name == "CtiFallback":
            log.warning("[%s] call sent to the app_queue fallback (AGI status %s)",
                        e.CallId, e.AgiStatus or "?")
        elif name == "CtiHoldExpired":
            log.warning("[%s] caller held too long without ctiserver: fallback", e.CallId)
        elif name == "CtiAnnounce":
            log.info("[%s] position announcement %s (position %s)", e.CallId, e.State,
                     e.Position)

    # ------------------------------------------------------------------ effects out

    def carry_out(self, event: ev.Event, effects: list[ev.Effect]) -> None:
        for effect in effects:
            if isinstance(effect, ev.Ring):
                self._ring(effect)
            elif isinstance(effect, ev.CancelRing):
                call = self.calls.get(effect.call_id)
                if call is not None and call.state == "ringing":
                    call.state, call.ringing = "waiting", ()
                    self._redirect(call, "ctiserver-hold", {})
            elif isinstance(effect, ev.Announce):
                self._announce(effect)
            elif isinstance(effect, ev.Overflow):
                self._overflow(effect)
            elif isinstance(effect, ev.AgentStateChanged):
                # what follows from a call (offered, on call, wrap-up, ready again) is in
                # the call's own lines: debug; agents' requests and not-ready: info
                routine = effect.state in ROUTINE_STATES and not isinstance(event, AGENT_REQUESTS)
                log.log(logging.DEBUG if routine else logging.INFO,
                        "agent %s: %s%s", effect.agent_id, effect.state,
                        f" ({effect.reason})" if effect.reason else "")
                if self.pops is not None:
                    self._defer(self.pops.agent_state_changed, effect.agent_id, effect.state,
                                effect.reason, effect.call_id)
            elif isinstance(effect, ev.CallAbandoned):
                log.info("[%s] abandoned in %s after %.1f s", effect.call_id, effect.queue,
                         effect.waited)
            elif isinstance(effect, ev.QueueChanged):
                call = self.calls.get(effect.call_id)
                if call is not None:
                    call.info.queue = effect.to_queue
                log.info("[%s] moved from %s to %s (%s)", effect.call_id, effect.from_queue,
                         effect.to_queue, effect.reason)
        if isinstance(event, ev.CallerJoined):
            call = self.calls.get(event.call_id)
            if call is not None and call.agi_reply is not None and not call.agi_reply.done():
                call.state = "waiting"
                call.agi_reply.set_result(("hold", {}))

    def _ring(self, effect: ev.Ring) -> None:
        call = self.calls.get(effect.call_id)
        if call is None or call.state == "gone":
            return
        call.state, call.ringing = "ringing", effect.agent_ids
        dial = "&".join(effect.devices)
        timeout = str(max(1, math.ceil(effect.timeout)))  # digits: an extension below
        log.debug("[%s] offering to %s", call.call_id, ",".join(effect.agent_ids))
        if call.agi_reply is not None and not call.agi_reply.done():
            call.agi_reply.set_result(("connect", {"CTI_DIAL": dial, "CTI_RINGTIMEOUT": timeout}))
        else:
            # the ring timeout travels as the extension (the Dial of ctiserver-connect,
            # <seconds>,1 reads it from there): one Setvar less per offer
            self._redirect(call, "ctiserver-connect", {"CTI_DIAL": dial}, exten=timeout)

    def _defer(self, step: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        """Run a screen-pop step (the answered and ended notes, the call's record, agents'
        state notes) once the ACD has taken the events read with it. One AMI read often holds
        an agent's hang-up together with the hang-ups and answers of other calls: the freed
        agent's next caller is offered first, the notes follow, in their order. The ACD
        task runs ``run_deferred`` after its steps (``poke`` wakes it when this read gave
        it nothing); an adapter without that task runs each step at once. The pop itself
        (DialBegin) is not deferred."""
        self._deferred.append(functools.partial(step, *args, **kwargs))
        if self.poke is None:  # no ACD task to come after
            self.run_deferred()
        elif len(self._deferred) == 1:
            self.poke()

    def run_deferred(self) -> None:
        if not self._deferred:
            return
        steps, self._deferred = self._deferred, []
        for step in steps:
            try:
                step()
            except Exception:  # one failed note must not cost the others
                log.exception("screen-pop step %s failed", getattr(step, "func", step))

    def _announce(self, effect: ev.Announce) -> None:
        call = self.calls.get(effect.call_id)
        # never redirect a ringing caller: that would withdraw the offer
        if call is None or call.state != "waiting":
            return
        eta = "" if effect.estimated_wait is None else str(
            max(1, math.ceil(effect.estimated_wait / 60)))
        self._redirect(call, "ctiserver-announce",
                       {"CTI_POS": str(effect.position), "CTI_ETA_MIN": eta})

    def _overflow(self, effect: ev.Overflow) -> None:
        call = self.calls.get(effect.call_id)
        if call is None:
            return
        kind, _, arg = effect.target.partition(":")
        action, variables = destination(kind, arg)
        log.info("[%s] overflow from %s (%s) to %s", call.call_id, effect.queue, effect.reason,
                 effect.target)
        call.state = "routed"
        if call.agi_reply is not None and not call.agi_reply.done():
            call.agi_reply.set_result((action, variables))
        else:
            self._redirect(call, f"ctiserver-{action}", variables)

    def _redirect(self, call: Call, context: str, variables: dict[str, str],
                  exten: str = "s") -> None:
        """Setvar each variable, then Redirect to context,exten,1: pipelined in one write
        (AMI runs one session's actions in order), their responses not awaited."""
        actions = [{"Action": "Setvar", "Channel": call.channel, "Variable": name,
                    "Value": value} for name, value in variables.items()]
        actions.append({"Action": "Redirect", "Channel": call.channel, "Context": context,
                        "Exten": exten, "Priority": "1"})
        self.ami.send_nowait(*actions)

    # ------------------------------------------------------------------ FastAGI side

    async def join(self, call: Call, joined: ev.CallerJoined,
                   timeout: float = 2.0) -> tuple[str, dict[str, str]]:
        """Put the caller in the queue; returns what the dialplan does next: ("connect",
        vars) when an agent is free at once, ("hold", {}) otherwise."""
        loop = asyncio.get_running_loop()
        call.agi_reply = loop.create_future()
        call.joined = True
        self.calls[call.call_id] = call
        if self.pops is not None:
            self.pops.prefetch(call.info)  # the pop is ready before an agent is rung
        self.submit(joined, None)
        # one timer, no asyncio.timeout + shield: once it fires, the caller holds and the
        # engine's later offer is a Redirect as for any waiting caller
        timer = loop.call_later(timeout, self._join_unanswered, call, timeout)
        try:
            return await call.agi_reply
        finally:
            timer.cancel()

    def _join_unanswered(self, call: Call, timeout: float) -> None:
        if call.agi_reply is not None and not call.agi_reply.done():
            log.error("[%s] ACD did not answer within %.1f s: holding", call.call_id, timeout)
            call.state = "waiting"
            call.agi_reply.set_result(("hold", {}))

    # ------------------------------------------------------------------ resync

    async def resync(self) -> None:
        """After (re)connecting: drop calls that ended while we were not listening and
        learn every agent's device state."""
        try:
            channels = await self.ami.call({"Action": "CoreShowChannels"}, timeout=10)
            listed = [m for m in _as_list(channels) if m.Uniqueid]
            live = {m.Uniqueid for m in listed}
            self.device_channels = {}
            for m in listed:
                self._new_channel(m)
            self.device_legs = {d: u for d, u in self.device_legs.items() if u in live}
            for uid in [u for u in self.calls if u not in live]:
                call = self.calls.pop(uid)
                log.warning("[%s] call ended while AMI was disconnected", uid)
                self._caller_gone(call, None, "lost during AMI outage")
            states = await self.ami.call({"Action": "DeviceStateList"}, timeout=10)
            for m in _as_list(states):
                if m.event == "DeviceStateChange":
                    self._device_state(m)
        except (ConnectionError, TimeoutError) as exc:
            log.warning("resync after AMI login failed: %s", exc)


def destination(kind: str, arg: str) -> tuple[str, dict[str, str]]:
    """A non-queue target -> (dialplan action, channel variables)."""
    if kind == "voicemail":
        return "voicemail", {"CTI_MAILBOX": arg}
    if kind == "message":
        return "message", {"CTI_MESSAGE": arg.replace(",", "&").replace(" ", "&")}
    if kind == "extension":
        return "extension", {"CTI_EXTEN": arg}
    if kind == "hangup":
        return "hangup", {}
    return "fallback", {}


def _as_list(resp: Any) -> list[Any]:
    return list(resp) if isinstance(resp, list) else []


HANDLERS: dict[str, Callable[[CallAdapter, Any], None]] = {
    "Newchannel": CallAdapter._new_channel,
    "DialBegin": CallAdapter._dial_begin,
    "DialEnd": CallAdapter._dial_end,
    "Hangup": CallAdapter._hangup,
    "DeviceStateChange": CallAdapter._device_state,
    "UserEvent": CallAdapter._user_event,
}
