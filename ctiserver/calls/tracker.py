"""Follows each queued call from its join to its hang-up.

Telephony facts come in (an agent's phone rung, answered, a channel hung up) and become
ACD events; the ACD's effects go out as actions on the caller's channel (an offer is
``CTI_DIAL`` + a redirect to ``ctiserver-connect``; see asterisk_conf/etc/
extensions_ctiserver.conf). The screen-pop is told at the moment the phone rings.

A call's id is the caller channel's Uniqueid, which is also the Linkedid of every channel
the call creates (the agents' legs), so it is stable for the pop.

Log: one INFO line per queued call, when the caller hangs up: the caller, the number,
the routing decision, who answered, the wait and the talk time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ctiserver.calls import adoption
from ctiserver.calls.model import (
    Call,
    CallerLeg,
    CallInfo,
    CallState,
    HeldChannel,
    Next,
    destination,
)
from ctiserver.calls.phones import Phones
from ctiserver.calls.ports import CallObserver, Claims, Submit, Telephony
from ctiserver.core.acd import events as ev

log = logging.getLogger("ctiserver.calls")

ROUTINE_STATES = frozenset({"offered", "on_call", "wrap_up", "ready"})
AGENT_REQUESTS = (ev.AgentLoggedIn, ev.AgentLoggedOut, ev.AgentPaused, ev.AgentReady)
# the dialplan actions after which the caller is one of ours, queued: it carries CTI_ADOPT
QUEUED_ACTIONS = frozenset({"hold", "connect", "claim"})
# how long an offer whose token another caller took waits for that caller's DialBegin
# before the engine is told the ring failed (docs/fast-path.md)
CLAIM_LOST_WAIT = 1.0
# the RingFailed reason of a ring the PBX ended, not the agent (Asterisk stopping, the AMI
# link lost): the engine makes the agent ready again, as for any ring that did not time out
WITHDRAWN = "withdrawn"


class CallTracker:
    def __init__(self, telephony: Telephony, submit: Submit, pops: CallObserver | None,
                 agent_by_device: Mapping[str, str], clock: Callable[[], float] = time.time,
                 poke: Callable[[], None] | None = None) -> None:
        self.telephony = telephony
        self.submit = submit
        self.pops = pops
        self.clock = clock
        # wakes the ACD task, whose after-steps hook runs run_deferred (see _defer)
        self.poke = poke
        self.phones = Phones(submit, agent_by_device)
        self.calls: dict[str, Call] = {}
        self.agent_legs: dict[str, str] = {}  # agent channel uniqueid -> call id
        self._deferred: list[Callable[[], None]] = []  # screen-pop steps, see _defer
        self.claims: Claims | None = None  # the pre-decided ring, when there is one
        # agent -> the call whose offer of it lost the token to a caller not seen yet
        self.claims_lost: dict[str, str] = {}
        # whether a queue exists now (a caller taken back may name one removed since)
        self.queue_known: Callable[[str], bool] = lambda _queue: True
        # channels Asterisk hangs up because it is stopping, until their Hangup
        self.stopping: set[str] = set()
        self.link_lost_at: float | None = None  # the AMI link dropped, until the resync

    # ------------------------------------------------------------------ telephony in

    def dial_began(self, call_id: str, device: str, leg: str, at: float | None,
                   caller: CallerLeg | None = None) -> None:
        """Channel ``leg`` rings ``device`` for the call ``call_id`` (any call's); ``caller``
        is the caller's channel as the event shows it."""
        agent = self.phones.agent_by_device.get(device)
        if agent is None:
            return
        call = self.calls.get(call_id)
        if (call is None and caller is not None and self.claims is not None
                and caller.context == "ctiserver-inbound"):
            call = self.claims.claimed(call_id, caller, agent, at)  # the pre-decided ring
        self.phones.channel_up(device, leg, call is not None, at)
        if call is None:  # another call rings the phone: busy, nothing more for us
            return
        self.agent_legs[leg] = call.call_id
        self.phones.legs[device] = leg
        call.legs[leg] = device
        log.debug("[%s] ringing agent %s (%s)", call.call_id, agent, device)
        # nothing for the engine (RingStarted would be a no-op step): it counted the offer
        # from its own Ring effect; the ring is the pop's moment
        if self.pops is not None:
            call.info.offered_at = at or self.clock()
            self.pops.offered_nowait(call.info, agent)

    def dial_ended(self, call_id: str, device: str, leg: str, reason: str, at: float | None,
                   status: str = "") -> None:
        """The ring of ``leg`` ended: ``reason`` "answer" or the ACD's failure reason
        (noanswer, busy, unavailable, cancel); ``status`` as the PBX said it, for the log."""
        call = self.calls.get(call_id)
        agent = self.phones.agent_by_device.get(device)
        if call is None or agent is None:
            return
        if reason != "answer" and (call_id in self.stopping or leg in self.stopping):
            self._ring_withdrawn(call, agent, leg, f"Asterisk is stopping ({status})", at)
            return
        if reason == "answer":
            call.state, call.agent_id, call.agent_uid = CallState.CONNECTED, agent, leg
            call.answered, call.answered_at = True, at if at is not None else self.clock()
            log.debug("[%s] answered by agent %s", call.call_id, agent)
            self.submit(ev.RingAnswered(call.call_id, agent), at)
            if self.pops is not None:
                self._defer(self.pops.answered_nowait, call.call_id, agent)
            return
        self.agent_legs.pop(leg, None)
        if reason in ("busy", "unavailable"):
            self.phones.blocked.add(device)
        log.info("[%s] agent %s did not take the call: %s", call.call_id, agent,
                 status or reason)
        self._ring_over(call, agent)
        self.submit(ev.RingFailed(call.call_id, agent, reason), at)

    def _ring_withdrawn(self, call: Call, agent: str, leg: str | None, why: str,
                        at: float | None) -> None:
        """The PBX ended ``agent``'s ring, not the agent: never a no-answer. A caller being
        hung up as well frees the agent with its own Hangup (CallerLeft): told now, the
        engine would offer the agent that caller again for a moment."""
        if leg is not None:
            self.agent_legs.pop(leg, None)
        log.info("[%s] ring of agent %s withdrawn: %s", call.call_id, agent, why)
        self._ring_over(call, agent)
        if call.call_id not in self.stopping:
            self.submit(ev.RingFailed(call.call_id, agent, WITHDRAWN), at)

    @staticmethod
    def _ring_over(call: Call, agent: str) -> None:
        """``agent`` no longer rings for ``call``; with nobody ringing, the caller waits."""
        if call.state == CallState.RINGING and agent in call.ringing:
            call.ringing = tuple(a for a in call.ringing if a != agent)
            if not call.ringing:
                call.state = CallState.WAITING

    def channel_created(self, device: str, uid: str, linkedid: str, at: float | None) -> None:
        if device in self.phones.agent_by_device:
            self.phones.channel_up(device, uid, linkedid in self.calls, at)

    def hung_up(self, device: str, uid: str, cause: str, at: float | None) -> None:
        self.phones.channel_down(device, uid, at)
        if uid in self.stopping:
            self.stopping.discard(uid)
            cause = "Asterisk stopping"  # Asterisk says Unknown (0)
        call = self.calls.pop(uid, None)
        if call is not None:
            self._caller_gone(call, at, cause)
            return
        call_id = self.agent_legs.pop(uid, None)
        if call_id is not None:
            call = self.calls.get(call_id)
            if call is not None and call.agent_uid == uid:
                log.debug("[%s] agent %s hung up", call_id, call.agent_id)
                call.ended = True
                self.submit(ev.CallEnded(call_id), at)

    def device_state(self, device: str, state: str, at: float | None) -> None:
        self.phones.device_state(device, state, at)

    def shutdown_hangup(self, uid: str, at: float | None) -> None:
        """Asterisk hangs channel ``uid`` up because it is stopping (``core stop now``,
        ``core restart now``): the ring it ends is withdrawn, not unanswered (Asterisk 22
        says NOANSWER for it, 1 ms after this)."""
        self.stopping.add(uid)

    def link_lost(self, at: float | None = None) -> None:
        """The AMI link dropped: nothing is seen of the calls until the resync after the
        next login. Meanwhile no agent is offered (their phones count as unavailable): an
        offer that cannot be followed would end in the engine's ring guard, a no-answer
        that is nobody's. The moment is the best end known for calls that end meanwhile."""
        if self.link_lost_at is None:
            self.link_lost_at = at if at is not None else self.clock()
            self.phones.blind(at)

    def claim_lost(self, call_id: str, device: str, at: float | None) -> None:
        """The offer of ``device`` to ``call_id`` found the agent's token taken: another
        caller dialled the agent on its own a moment before. That caller's DialBegin
        tells the engine (which then takes this offer back); it is waited for a while, so
        that the agent is not offered again before it comes."""
        call = self.calls.get(call_id)
        agent = self.phones.agent_by_device.get(device)
        if call is None or agent is None or call.state != CallState.RINGING \
                or agent not in call.ringing:
            return
        log.info("[%s] agent %s was taken by a caller who dialled it first", call_id, agent)
        self.claims_lost[agent] = call_id
        asyncio.get_running_loop().call_later(CLAIM_LOST_WAIT, self._claim_lost_expired,
                                              agent, call_id, at)

    def _claim_lost_expired(self, agent: str, call_id: str, at: float | None) -> None:
        if self.claims_lost.get(agent) != call_id:
            return
        del self.claims_lost[agent]
        call = self.calls.get(call_id)
        if call is not None and call.state == CallState.RINGING and agent in call.ringing:
            log.warning("[%s] nobody rang agent %s after taking its token: offering again",
                        call_id, agent)
            self._ring_over(call, agent)
            self.submit(ev.RingFailed(call_id, agent, "claimed"), at)

    def join_claimed(self, call: Call, joined: ev.CallerJoined, agent: str,
                     at: float | None) -> None:
        """A caller who dialled ``agent`` on its own (the pre-decided ring) joins."""
        call.joined = True
        call.adopt = _adoption(call, joined).encode()  # told the dialplan if it holds
        call.state, call.ringing, call.fast = CallState.RINGING, (agent,), agent
        self.calls[call.call_id] = call
        self.claims_lost.pop(agent, None)  # the caller whose DialBegin was waited for
        if self.pops is not None:
            self.pops.prefetch(call.info)
        self.submit(joined, at)

    def _caller_gone(self, call: Call, at: float | None, cause: str = "",
                     approximate: bool = False) -> None:
        """``approximate``: the call ended unseen (the AMI link was down), ``at`` or later."""
        call.state = CallState.GONE
        if call.agi_reply is not None and not call.agi_reply.done():
            call.agi_reply.set_result(("hangup", {}))
        info, ended = call.info, at if at is not None else self.clock()
        least = "at least " if approximate else ""
        if call.answered:
            answered = call.answered_at or ended
            outcome = (f"answered by agent {call.agent_id}, waited "
                       f"{max(0.0, answered - info.joined_at) if info.joined_at else 0.0:.1f} s, "
                       f"talked {least}{max(0.0, ended - answered):.1f} s")
        else:
            outcome = (f"no agent, after {least}{max(0.0, ended - info.joined_at):.1f} s"
                       if info.joined_at else "no agent")
        if approximate:
            outcome += " (end approximate: the AMI link was down)"
        log.info("[%s] caller hung up (%s): %s (%s) -> %s, %s, %s", call.call_id,
                 cause or "normal", info.caller_id or "unknown", info.caller_name or "-",
                 info.dnis or "no number", call.route or "-", outcome)
        if call.joined:
            for leg, device in call.legs.items():
                if self.agent_legs.get(leg) == call.call_id:
                    self.phones.leg_outlives_caller(device, leg, at)
            if not call.ended:  # the agent hung up first: the engine has ended the call
                self.submit(ev.CallerLeft(call.call_id), at)
            if self.pops is not None:
                outcome = "answered" if call.answered else "abandoned"
                self._defer(self.pops.ended_nowait, call.call_id, call.agent_id,
                            call=call.info, at=at,
                            outcome=f"{outcome}, end approximate" if approximate else outcome)
        for leg in call.legs:
            if self.agent_legs.get(leg) == call.call_id:
                del self.agent_legs[leg]

    # ------------------------------------------------------------------ effects out

    def carry_out(self, event: ev.Event, effects: list[ev.Effect]) -> None:
        for effect in effects:
            if isinstance(effect, ev.Ring):
                self._ring(effect)
            elif isinstance(effect, ev.CancelRing):
                call = self.calls.get(effect.call_id)
                if call is not None and call.state == CallState.RINGING:
                    call.state, call.ringing = CallState.WAITING, ()
                    self._move(call, "ctiserver-hold", {})
            elif isinstance(effect, ev.Announce):
                self._announce(effect)
            elif isinstance(effect, ev.Overflow):
                self._overflow(effect)
            elif isinstance(effect, ev.AgentStateChanged):
                if self.claims is not None:
                    self.claims.agent_state(effect.agent_id, effect.state)
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
                    self._readoptable_in(call, effect.to_queue)
                log.info("[%s] moved from %s to %s (%s)", effect.call_id, effect.from_queue,
                         effect.to_queue, effect.reason)
        if isinstance(event, ev.CallerJoined):
            call = self.calls.get(event.call_id)
            if call is not None and call.agi_reply is not None and not call.agi_reply.done():
                call.state = CallState.WAITING
                call.agi_reply.set_result(("hold", {}))
            elif call is not None and call.fast is not None:
                # the engine did not take the agent the caller dialled (paused meanwhile):
                # the caller waits like any other
                log.info("[%s] agent %s no longer free: holding", call.call_id, call.fast)
                call.fast, call.state, call.ringing = None, CallState.WAITING, ()
                self._move(call, "ctiserver-hold", {})

    def _ring(self, effect: ev.Ring) -> None:
        call = self.calls.get(effect.call_id)
        if call is None or call.state == CallState.GONE:
            return
        fast, call.fast = call.fast, None
        call.state, call.ringing = CallState.RINGING, effect.agent_ids
        if fast is not None and effect.agent_ids == (fast,):
            return  # the caller's phone call to that agent is ringing already
        dial = "&".join(effect.devices)
        timeout = str(max(1, math.ceil(effect.timeout)))  # digits: an extension below
        # an agent that may have been pre-decided: take its token first (a caller may be
        # dialling it on its own at this moment)
        claim = (len(effect.agent_ids) == 1 and self.claims is not None
                 and self.claims.offer_needs_claim(effect.agent_ids[0]))
        log.debug("[%s] offering to %s", call.call_id, ",".join(effect.agent_ids))
        if call.agi_reply is not None and not call.agi_reply.done():
            call.agi_reply.set_result(("claim" if claim else "connect",
                                       {"CTI_DIAL": dial, "CTI_RINGTIMEOUT": timeout}))
        else:
            # the ring timeout travels as the extension (the Dial of ctiserver-connect,
            # <seconds>,1 reads it from there): one Setvar less per offer
            self._move(call, "ctiserver-claim" if claim else "ctiserver-connect",
                       {"CTI_DIAL": dial}, exten=timeout)

    def _announce(self, effect: ev.Announce) -> None:
        call = self.calls.get(effect.call_id)
        # never redirect a ringing caller: that would withdraw the offer
        if call is None or call.state != CallState.WAITING:
            return
        eta = "" if effect.estimated_wait is None else str(
            max(1, math.ceil(effect.estimated_wait / 60)))
        self._move(call, "ctiserver-announce",
                   {"CTI_POS": str(effect.position), "CTI_ETA_MIN": eta})

    def _move(self, call: Call, context: str, variables: dict[str, str],
              exten: str = "s") -> None:
        """Redirect a queued caller. A caller that never asked over FastAGI (the
        pre-decided ring) gets its CTI_ADOPT with the first move, so that wherever it waits
        a restarted ctiserver can take it back."""
        if call.adopt and not call.adopt_on_channel:
            variables = {**variables, adoption.VARIABLE: call.adopt}
            call.adopt_on_channel = True
        self.telephony.redirect(call.channel, context, variables, exten=exten)

    def _overflow(self, effect: ev.Overflow) -> None:
        call = self.calls.get(effect.call_id)
        if call is None:
            return
        kind, _, arg = effect.target.partition(":")
        action, variables = destination(kind, arg)
        log.info("[%s] overflow from %s (%s) to %s", call.call_id, effect.queue, effect.reason,
                 effect.target)
        call.state = CallState.ROUTED
        if call.agi_reply is not None and not call.agi_reply.done():
            call.agi_reply.set_result((action, variables))
        else:
            self.telephony.redirect(call.channel, f"ctiserver-{action}", variables)

    # ------------------------------------------------------------------ screen-pop notes

    def _defer(self, step: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        """Run a screen-pop step (the answered and ended notes, the call's record, agents'
        state notes) once the ACD has taken the events read with it. One AMI read often holds
        an agent's hang-up together with the hang-ups and answers of other calls: the freed
        agent's next caller is offered first, the notes follow, in their order. The ACD
        task runs ``run_deferred`` after its steps (``poke`` wakes it when this read gave
        it nothing); a tracker without that task runs each step at once. The pop itself
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

    # ------------------------------------------------------------------ joining

    async def join(self, call: Call, joined: ev.CallerJoined, timeout: float = 2.0) -> Next:
        """Put the caller in the queue; returns what the dialplan does next: ("connect",
        vars) when an agent is free at once, ("hold", {}) otherwise."""
        loop = asyncio.get_running_loop()
        call.agi_reply = loop.create_future()
        call.joined = True
        call.adopt = _adoption(call, joined).encode()
        self.calls[call.call_id] = call
        if self.pops is not None:
            self.pops.prefetch(call.info)  # the pop is ready before an agent is rung
        self.submit(joined, None)
        # one timer, no asyncio.timeout + shield: once it fires, the caller holds and the
        # engine's later offer is a redirect as for any waiting caller
        timer = loop.call_later(timeout, self._join_unanswered, call, timeout)
        try:
            action, variables = await call.agi_reply
        finally:
            timer.cancel()
        if action in QUEUED_ACTIONS:  # in the same MSet as the answer: no round trip more
            variables = {**variables, adoption.VARIABLE: call.adopt}
            call.adopt_on_channel = True
        return action, variables

    def _join_unanswered(self, call: Call, timeout: float) -> None:
        if call.agi_reply is not None and not call.agi_reply.done():
            log.error("[%s] ACD did not answer within %.1f s: holding", call.call_id, timeout)
            call.state = CallState.WAITING
            call.agi_reply.set_result(("hold", {}))

    # ------------------------------------------------------------------ resync

    def resync(self, channels: Iterable[tuple[str, str, str, float | None]],
               device_states: Iterable[tuple[str, str, float | None]],
               held: Iterable[HeldChannel] = ()) -> None:
        """After (re)connecting: ``channels`` are the live (device, uniqueid, linkedid,
        time stamp), ``device_states`` every (device, state, time stamp), ``held`` the
        callers in ctiserver's contexts: take back the callers we do not know (a restart),
        drop calls that ended while we were not listening (ended when the link was lost,
        as far as we can tell), withdraw the rings that ended meanwhile, and relearn the
        phones."""
        known = set(self.calls)  # followed through the outage (the AMI link only dropped)
        held = list(held)
        # the callers first, so that their agents' legs count as ours; the engine hears
        # of them last, once it knows which phones are busy
        joins = self.readopt(held)
        listed = list(channels)
        live = {uid for _device, uid, _linked, _at in listed}
        lost_at, self.link_lost_at = self.link_lost_at, None
        self.stopping.clear()
        self.phones.channels = {}
        for device, uid, linkedid, at in listed:
            self.channel_created(device, uid, linkedid, at)
        self.phones.legs = {d: u for d, u in self.phones.legs.items() if u in live}
        self.agent_legs = {u: c for u, c in self.agent_legs.items() if u in live}
        for uid in [u for u in self.calls if u not in live]:
            call = self.calls.pop(uid)
            log.warning("[%s] call ended while AMI was disconnected", uid)
            self._caller_gone(call, lost_at, "lost during AMI outage", approximate=True)
        self._rings_lost(listed, known, held)
        self.phones.relearn(device_states)
        for join in joins:
            join()

    def resync_failed(self) -> None:
        """The resync after a login could not be read: the phones are offerable again
        (their state unknown) rather than unavailable until each one's next event."""
        self.link_lost_at = None
        self.phones.relearn(())

    def _rings_lost(self, listed: list[tuple[str, str, str, float | None]],
                    known: set[str], held: list[HeldChannel]) -> None:
        """The offers of the ``known`` calls, as they are now: answered while the link
        was down (the agent's leg is up), or withdrawn when the agent's leg is gone (it
        ended meanwhile, or never began: the Redirect was not sent): nobody's no-answer."""
        ringing = [c for c in self.calls.values()
                   if c.state == CallState.RINGING and c.call_id in known]
        if not ringing:
            return
        legs = {(device, linkedid) for device, _uid, linkedid, _at in listed}
        up = {(h.call_id, device): uid for h in held for device, uid, answered in h.legs
              if answered}
        device_of = {agent: device for device, agent in self.phones.agent_by_device.items()}
        for call in ringing:
            for agent in call.ringing:
                device = device_of.get(agent, "")
                uid = up.get((call.call_id, device))
                if uid is not None:
                    log.info("[%s] agent %s answered while AMI was disconnected",
                             call.call_id, agent)
                    self.agent_legs[uid], call.legs[uid] = call.call_id, device
                    self.phones.legs[device] = uid
                    self.dial_ended(call.call_id, device, uid, "answer", None)
                    break  # a ring-all's other agents: the engine frees them
                if (device, call.call_id) not in legs:
                    self._ring_withdrawn(call, agent, None,
                                         "its ring ended while AMI was disconnected", None)

    # ------------------------------------------------------------------ re-adoption

    def _readoptable_in(self, call: Call, queue: str) -> None:
        """The caller moved to ``queue``: what its channel carries says so too."""
        if not call.adopt:
            return
        try:
            a = adoption.decode(call.adopt)
        except ValueError:
            return
        call.adopt = dataclasses.replace(a, queue=queue).encode()
        if call.agi_reply is None or call.agi_reply.done():  # else it goes with the answer
            self.telephony.set_variables(call.channel, {adoption.VARIABLE: call.adopt})
            call.adopt_on_channel = True

    def readopt(self, held: Iterable[HeldChannel]) -> list[Callable[[], None]]:
        """Take back the callers a previous ctiserver queued (a crash, a restart, a
        promotion): each joins again with its first join time, so the lines are rebuilt in
        their original order. A caller ringing an agent keeps that ring (the engine is told
        the agent is claimed). Calls already answered finish as they are: the agent's phone
        is busy until then. A caller without a usable CTI_ADOPT, or whose queue no longer
        exists, goes to the fallback queue now (one ringing is left to its ring).
        Returns the joins, in order, for the engine (``resync`` runs them)."""
        taken: list[tuple[adoption.Adoption, HeldChannel]] = []
        unreadable = gone = talking = 0
        for h in held:
            if h.call_id in self.calls:
                continue  # ours already: the AMI link only dropped
            if any(answered for _d, _u, answered in h.legs):
                talking += 1
                continue
            try:
                a = adoption.decode(h.adopt)
            except ValueError as exc:
                # its queue is unknown: app_queue's fallback (ctiserver's agents) rather
                # than music until CTI_MAXHOLD
                log.warning("[%s] waiting in %s but cannot be taken back (%s): app_queue "
                            "fallback", h.call_id, h.context, exc)
                if h.context != "ctiserver-connect" and not h.legs:
                    self.telephony.redirect(h.channel, "ctiserver-fallback", {})
                unreadable += 1
                continue
            if not self.queue_known(a.queue):
                log.warning("[%s] waiting for queue %r, which no longer exists: app_queue "
                            "fallback", h.call_id, a.queue)
                self.telephony.redirect(h.channel, "ctiserver-fallback", {})
                gone += 1
                continue
            taken.append((a, h))
        taken.sort(key=lambda t: t[0].joined_at)
        joins = [self._readopt_one(a, h) for a, h in taken]
        ringing = sum(1 for a, h in taken if self.calls[h.call_id].fast is not None)
        if taken or unreadable or gone or talking:
            log.info("re-adopted %d waiting callers (%d ringing an agent); %d without a "
                     "usable %s and %d of a queue gone sent to the fallback queue, %d "
                     "answered calls left to finish", len(taken), ringing, unreadable,
                     adoption.VARIABLE, gone, talking)
        return joins

    def _readopt_one(self, a: adoption.Adoption, h: HeldChannel) -> Callable[[], None]:
        info = CallInfo(call_id=h.call_id, caller_id=a.caller_id, caller_name=a.caller_name,
                        dnis=a.dnis, queue=a.queue, joined_at=a.joined_at)
        call = Call(call_id=h.call_id, channel=h.channel, info=info, state=CallState.WAITING,
                    joined=True, route=a.route, adopt=h.adopt, adopt_on_channel=True)
        self.calls[call.call_id] = call
        rung = [(device, leg) for device, leg, _answered in h.legs
                if device in self.phones.agent_by_device]
        claimed = None
        if len(rung) == 1:  # the ring goes on; a ring-all is offered again from scratch
            device, leg = rung[0]
            claimed = self.phones.agent_by_device[device]
            call.state, call.ringing, call.fast = CallState.RINGING, (claimed,), claimed
            call.legs[leg] = device
            self.agent_legs[leg] = call.call_id
            self.phones.legs[device] = leg
        joined = ev.CallerJoined(call.call_id, a.queue, a.priority, dict(a.skills),
                                 a.preferred_agent, a.preferred_timeout, claimed=claimed,
                                 arrival=a.joined_at)

        def join() -> None:
            if self.pops is not None:
                self.pops.prefetch(info)
                if claimed is not None:
                    info.offered_at = self.clock()
                    self.pops.offered_nowait(info, claimed)
            self.submit(joined, None)

        return join


def _adoption(call: Call, joined: ev.CallerJoined) -> adoption.Adoption:
    info = call.info
    return adoption.Adoption(
        queue=joined.queue, joined_at=info.joined_at or time.time(),
        priority=joined.priority, skills=dict(joined.skills),
        preferred_agent=joined.preferred_agent, preferred_timeout=joined.preferred_timeout,
        caller_id=info.caller_id, caller_name=info.caller_name, dnis=info.dnis,
        route=call.route)
