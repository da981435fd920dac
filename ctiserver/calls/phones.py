"""Agents' phones: which channels live on each, and the device state the engine is told.

A channel on an agent's phone that is not part of one of our calls (a private call, an
Originate, a call from the app_queue fallback) makes the phone in use from then on, so
Asterisk's RINGING / INUSE states say nothing new (manager_ctiserver.conf filters them out;
should they come anyway, those that only echo our own call are dropped). Asterisk computes
device states asynchronously, so its NOT_INUSE comes a few ms after an agent's leg hangs
up: the engine is told at the hang-up itself whether the phone is free or still busy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ctiserver.calls.ports import Submit
from ctiserver.core.acd import events as ev

OUR_CALL_DEVICE_STATES = frozenset({"RINGING", "INUSE", "RINGINUSE", "ONHOLD"})


class Phones:
    def __init__(self, submit: Submit, agent_by_device: Mapping[str, str]) -> None:
        self.submit = submit
        self.agent_by_device = dict(agent_by_device)
        # device -> the uniqueid of our call's leg on it, from DialBegin to its Hangup
        self.legs: dict[str, str] = {}
        # device -> every live channel on it (ours, private calls), first word..Hangup
        self.channels: dict[str, set[str]] = {}
        self.states: dict[str, str] = {}  # device -> the state the engine has
        # devices whose ring failed busy / unavailable since their last state: the engine
        # blocks them on its own, so their next state counts even if it is the same
        self.blocked: set[str] = set()
        self.unseen: set[str] = set()  # agents' phones blind since the AMI link dropped

    def configure(self, agent_by_device: Mapping[str, str]) -> None:
        self.agent_by_device = dict(agent_by_device)
        self.states = {}  # agents rebuilt by the engine start over: tell them again

    def channel_up(self, device: str, uid: str, ours: bool, at: float | None) -> None:
        """Channel ``uid`` is live on an agent's phone (counted once, from its Newchannel
        or its DialBegin, whichever comes first); one that is not ours makes it busy."""
        live = self.channels.setdefault(device, set())
        if uid not in live:
            live.add(uid)
            if not ours:
                self.set_state(device, "INUSE", at)

    def channel_down(self, device: str, uid: str, at: float | None) -> None:
        live = self.channels.get(device)
        if live is not None:
            live.discard(uid)
            if not live:
                del self.channels[device]
        if self.legs.get(device) == uid:
            del self.legs[device]
            # Say what the phone is now, before the engine frees the agent: with another
            # call on it, in use (Asterisk sends no change: in use before, in use still);
            # with none, free, if all the engine heard was our call's ringing / in use
            # (Asterisk's own NOT_INUSE follows a few ms later and changes nothing)
            if live:
                self.set_state(device, "INUSE", at)
            elif self.states.get(device, "NOT_INUSE") in OUR_CALL_DEVICE_STATES:
                self.set_state(device, "NOT_INUSE", at)

    def leg_outlives_caller(self, device: str, leg: str, at: float | None) -> None:
        """The caller hung up first: until the agent's leg ends too the phone is busy, or
        the engine would offer it the next caller on a phone still tearing down this one."""
        if self.legs.get(device) == leg:
            self.set_state(device, "INUSE", at)

    def device_state(self, device: str, state: str, at: float | None) -> None:
        """A state Asterisk reported. Ringing / in use caused by our own call (the only
        channel on the phone) say nothing the engine needs; passed on, they would also keep
        the agent blocked after the call until Asterisk reports NOT_INUSE. With another
        call on the phone they count."""
        leg = self.legs.get(device)
        if leg is not None and state in OUR_CALL_DEVICE_STATES and \
                self.channels.get(device, set()) <= {leg}:
            return
        if device in self.agent_by_device:
            state = (state or "UNKNOWN").upper()
            # the NOT_INUSE after each of our calls: the engine heard it at the hang-up
            if self.states.get(device) != state or device in self.blocked:
                self.set_state(device, state, at)

    def blind(self, at: float | None) -> None:
        """The AMI link is down: every agent's phone is unavailable to the engine until
        ``relearn`` reads its state again."""
        self.unseen = set(self.agent_by_device)
        for device in self.unseen:
            self.set_state(device, "UNAVAILABLE", at)

    def relearn(self, device_states: Iterable[tuple[str, str, float | None]]) -> None:
        """Every (device, state, time stamp) Asterisk lists after a login. A phone unseen
        since the link dropped takes its state as listed, even one our own leg explains
        (the engine was told UNAVAILABLE meanwhile); one Asterisk does not list (a Local
        device) is UNKNOWN, offerable, as before the loss."""
        unseen, self.unseen = self.unseen, set()
        for device, state, at in device_states:
            if device in unseen:
                unseen.discard(device)
                self.set_state(device, (state or "UNKNOWN").upper(), at)
            else:
                self.device_state(device, state, at)
        for device in unseen:
            self.set_state(device, "UNKNOWN", None)

    def set_state(self, device: str, state: str, at: float | None) -> None:
        self.states[device] = state
        self.blocked.discard(device)
        self.submit(ev.DeviceStateChanged(device, state), at)
