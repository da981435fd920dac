"""Routing one inbound call: who is calling, what the rules decide, where the call goes.

The caller's number is normalised to E.164 here, once, and travels on the call. The CRM
is asked who it is (bounded; the screen-pop keeps the answer, one lookup per call), the
rules decide, IVR flows run on the channel when the rules say so, and the caller is then
queued with the ACD or sent elsewhere. Whatever goes wrong here, the dialplan's fallback
(app_queue) takes the call: no caller is lost to a bug.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from ctiserver.calls import adoption
from ctiserver.calls.model import Call, CallInfo, InboundCall, Next, destination
from ctiserver.calls.ports import CallObserver, DialplanChannel, Request, Rules
from ctiserver.calls.tracker import CallTracker
from ctiserver.core import numbers
from ctiserver.core.acd import events as ev
from ctiserver.core.acd.engine import AcdError
from ctiserver.core.acd.model import AcdConfig
from ctiserver.core.rules.context import CallContext
from ctiserver.core.rules.decision import Decision

log = logging.getLogger("ctiserver.route")

MAX_IVR_ROUNDS = 5
# control characters (C0, DEL, C1), line and paragraph separators and bidi controls: a
# name must never split, forge or disguise a log line or a pop; quotes are part of names
_NAME_BAD = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def clean_name(raw: str | None) -> str:
    """The caller's name as sent (quotes, apostrophes, backslashes kept), less control
    characters; "" for none ("unknown", "anonymous")."""
    name = _NAME_BAD.sub("", raw or "").strip()
    return "" if name.lower() in ("unknown", "anonymous") else name[:80]


def who_called(caller_id: str, caller_name: str, dnis: str,
               region: str) -> tuple[str, str, str]:
    """(caller in E.164, clean name, dialled number) of a call as Asterisk gave them: the
    one place a call's numbers are normalised, whichever way ctiserver hears of it."""
    number = numbers.clean(dnis)
    if number == "s":  # a trunk that gave no dialled number (the dialplan's `s`)
        number = ""
    return numbers.normalize(caller_id, region), clean_name(caller_name), number


class Routing:
    def __init__(self, tracker: CallTracker, rules: Rules, acd: Callable[[], AcdConfig],
                 request_acd: Request, pops: CallObserver | None = None, *,
                 region: str = "ES", timezone: str = "Europe/Madrid",
                 lookup_timeout: float = 0.2,
                 lookup: Callable[[str, str], Mapping[str, Any] | None] | None = None,
                 linked: Callable[[], bool] | None = None) -> None:
        """``pops`` gives the call's CRM lookup (shared with the pop) and is told when a
        call is not queued; ``lookup`` is the rules' ``lookup(table, key)``; ``linked``
        says whether ctiserver hears the PBX's call events (the AMI link is up)."""
        self.tracker = tracker
        self.rules = rules
        self.acd = acd
        self.request_acd = request_acd
        self.pops = pops
        self.region = region
        self.tz = ZoneInfo(timezone)
        self.lookup_timeout = lookup_timeout
        self.lookup = lookup
        self.linked = linked

    # ---------------------------------------------------------------- inbound calls

    async def route(self, inbound: InboundCall, channel: DialplanChannel) -> None:
        uid = inbound.call_id
        if uid in self.tracker.calls:
            # a pre-decided ring the agent did not answer (docs/fast-path.md): the caller is
            # queued already, and the engine offers the next agent as to any waiting caller
            log.debug("[%s] back from a pre-decided ring: holding", uid)
            call = self.tracker.calls[uid]
            call.adopt_on_channel = bool(call.adopt)
            await channel.answer("hold", {adoption.VARIABLE: call.adopt} if call.adopt else {})
            return
        if self.linked is not None and not self.linked():
            # blind to the call's events and unable to move a waiting caller: the agent it
            # rang would be taken for not answering. app_queue takes it instead.
            log.warning("[%s] AMI link down: call sent to the fallback queue", uid)
            await channel.answer("fallback", {})
            return
        caller, name, dnis = who_called(inbound.caller_id, inbound.caller_name, inbound.dnis,
                                        self.region)
        # the decision line repeats who called; this one shows a call that never gets there
        log.debug("[%s] inbound %s (%s) -> %s on %s", uid, caller or "unknown", name or "-",
                  dnis, inbound.channel)
        queued = False
        try:
            queued = await self._route(channel, uid, inbound.channel, caller, name, dnis)
        finally:
            if not queued and self.pops is not None:
                self.pops.forget(uid)

    async def _route(self, channel: DialplanChannel, uid: str, chan: str, caller: str,
                     name: str, dnis: str) -> bool:
        """Route the call; True when the caller joined a queue."""
        customer = await self._customer(uid, caller)
        answers: dict[str, str] = {}
        decision = await self._decide(caller, name, dnis, answers, customer)
        for _ in range(MAX_IVR_ROUNDS):
            if decision.action != "ivr":
                break
            try:
                session = self.rules.ivr_session(decision.flow or "", answers)
            except KeyError:
                log.error("[%s] rules chose unknown IVR flow %r", uid, decision.flow)
                decision = decision.fallback or Decision("hangup")
                break
            result = await channel.run_ivr(session)
            if result["hungup"]:
                log.info("[%s] caller left during the IVR", uid)
                return False
            answers.update({k: str(v) for k, v in result["answers"].items()})
            decision = result["decision"] or await self._decide(caller, name, dnis, answers,
                                                                customer)
        # a queued call's decision is repeated in its hang-up line (tracker.py), which says
        # how it ended: one INFO line per queued call; the others end here
        queued = decision.action in ("queue", "agent")
        log.log(logging.DEBUG if queued else logging.INFO,
                "[%s] decision: %s (rule %s) for %s (%s) -> %s on %s", uid,
                decision.describe(), decision.rule or "-", caller or "unknown", name or "-",
                dnis or "no number", chan)
        info = CallInfo(call_id=uid, caller_id=caller, caller_name=name, dnis=dnis,
                        digits=answers.get("digits", "") or "".join(
                            v for v in answers.values() if v.isdigit()),
                        answers=dict(answers), joined_at=time.time())
        call = Call(call_id=uid, channel=chan, info=info,
                    route=f"{decision.describe()} (rule {decision.rule or '-'})")
        action, variables = await self._carry_out(call, decision, customer)
        await channel.answer(action, variables)
        return call.joined

    async def _decide(self, caller: str, name: str, dnis: str, answers: dict[str, str],
                      customer: Mapping[str, Any] | None) -> Decision:
        ctx = CallContext.create(
            caller_id=caller, dnis=dnis, now=datetime.now(self.tz), region=self.region,
            caller_name=name, digits=answers.get("digits"), answers=dict(answers),
            customer=customer, **({"lookup": self.lookup} if self.lookup else {}))
        if self.lookup is None:
            return self.rules.decide(ctx)
        # lookup() blocks (each call bounded by its timeout): never on the event loop
        return await asyncio.to_thread(self.rules.decide, ctx)

    async def _customer(self, uid: str, caller: str) -> Mapping[str, Any] | None:
        if self.pops is None or not caller:
            return None
        try:
            # waiting never cancels the lookup: the pop uses its answer when it comes
            lookup = asyncio.ensure_future(self.pops.lookup(uid, caller))
            if not lookup.done():
                await asyncio.wait((lookup,), timeout=self.lookup_timeout)
            if not lookup.done():
                log.warning("[%s] CRM lookup slower than %.0f ms: routing without customer "
                            "data", uid, self.lookup_timeout * 1000)
                return None
            ident = lookup.result()
        except Exception as exc:
            log.warning("[%s] CRM unavailable (%s): routing without customer data", uid,
                        type(exc).__name__)
            return None
        if not ident.customers:
            return None
        c = ident.customers[0]
        return {"id": c.id, "name": c.name, "tier": c.tier,
                "assigned_agent": c.assigned_agent or ""}

    async def _carry_out(self, call: Call, d: Decision,
                         customer: Mapping[str, Any] | None) -> Next:
        if d.action in ("queue", "agent"):
            acd = self.acd()
            queue, preferred = d.queue, None
            if d.action == "agent":
                preferred = d.agent
                fb = d.fallback
                queue = fb.queue if fb is not None and fb.action == "queue" else None
                if queue is None and preferred in acd.agents and acd.agents[preferred].queues:
                    queue = acd.agents[preferred].queues[0]
                if preferred not in acd.agents:
                    log.warning("[%s] agent %r unknown: using the fallback", call.call_id,
                                preferred)
                    preferred = None
                    if fb is not None and fb.action != "queue":
                        return await self._carry_out(call, fb, customer)
            if queue is None or queue not in acd.queues:
                log.error("[%s] no such queue %r: app_queue fallback", call.call_id, queue)
                return "fallback", {}
            call.info.queue = queue
            joined = ev.CallerJoined(call.call_id, queue, d.priority, dict(d.skills), preferred,
                                     d.agent_timeout if preferred else None)
            return await self.tracker.join(call, joined)
        if d.action == "extension":
            return destination("extension", d.extension or "")
        if d.action == "voicemail":
            return destination("voicemail", d.mailbox or "")
        if d.action in ("message", "callback"):
            if d.action == "callback":
                log.info("[%s] callback requested by %s", call.call_id, call.info.caller_id)
            return destination("message", "&".join(d.message) or "goodbye")
        return "hangup", {}

    # ---------------------------------------------------------------- agents' phones

    async def phone_command(self, device: str, command: str) -> str:
        """A feature code dialled on an agent's phone: "ok" or "error"."""
        agent_id = self.tracker.phones.agent_by_device.get(device)
        events: dict[str, ev.Event] = {}
        if agent_id is not None:
            events = {"login": ev.AgentLoggedIn(agent_id), "logout": ev.AgentLoggedOut(agent_id),
                      "pause": ev.AgentPaused(agent_id, "phone"), "ready": ev.AgentReady(agent_id)}
        if command not in events:
            log.warning("feature code %r from %s: not an agent device or unknown command",
                        command, device)
            return "error"
        try:
            await self.request_acd(events[command])
        except AcdError as exc:
            log.info("agent %s: %s refused: %s", agent_id, command, exc)
            return "error"
        log.info("agent %s: %s from the phone", agent_id, command)
        return "ok"
