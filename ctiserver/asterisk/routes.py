"""FastAGI routes: ``route`` (every inbound call) and ``agent`` (agents' feature codes).

``route`` reads the caller's data, asks the CRM who it is (bounded; the pop service keeps
the answer for the screen-pop, one lookup per call), evaluates the
routing rules, runs IVR flows on the channel when the rules say so, and then either
queues the caller with the ACD or sends the call elsewhere. It answers the dialplan
through channel variables (CTI_ACTION and friends). Whatever goes wrong here, the
dialplan's fallback (app_queue) takes the call: no caller is lost to a bug.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from ctiserver.asterisk.calls import Call, CallAdapter, destination, device_of
from ctiserver.asterisk.fastagi import agi_ok, agi_quote
from ctiserver.asterisk.ivr_agi import run_ivr
from ctiserver.core import numbers
from ctiserver.core.acd import events as ev
from ctiserver.core.acd.engine import AcdError
from ctiserver.core.acd.model import AcdConfig
from ctiserver.core.rules.context import CallContext
from ctiserver.core.rules.decision import Decision
from ctiserver.pops import CallInfo
from ctiserver.rules.runtime import RulesRuntime
from ctiserver.store.records import Identification

log = logging.getLogger("ctiserver.route")

MAX_IVR_ROUNDS = 5
# values MSet takes as they are: no separators, quotes, brackets or ${...}
_PLAIN = re.compile(r"[\w@&/.:+*#-]*", re.ASCII)
_NAME_BAD = re.compile(r"[\x00-\x1f\x7f\"\\]")


def clean_name(raw: str | None) -> str:
    name = _NAME_BAD.sub("", raw or "").strip()
    return "" if name.lower() in ("unknown", "anonymous") else name[:80]


class Routes:
    def __init__(self, calls: CallAdapter, rules: RulesRuntime, acd: Callable[[], AcdConfig],
                 request_acd: Callable[[ev.Event], Any],
                 identify: Callable[[str, str], Awaitable[Identification]] | None = None, *,
                 forget: Callable[[str], None] | None = None, region: str = "ES",
                 timezone: str = "Europe/Madrid", lookup_timeout: float = 0.2,
                 lookup: Callable[[str, str], Mapping[str, Any] | None] | None = None) -> None:
        """``identify(call_id, number)`` is the call's CRM lookup (``PopService.lookup``,
        shared with the pop); ``forget(call_id)`` tells it the call was not queued."""
        self.calls = calls
        self.rules = rules
        self.acd = acd
        self.request_acd = request_acd
        self.identify = identify
        self.forget = forget
        self.region = region
        self.tz = ZoneInfo(timezone)
        self.lookup_timeout = lookup_timeout
        self.lookup = lookup

    # ---------------------------------------------------------------- inbound calls

    async def route(self, request: Any) -> None:
        h = request.headers
        uid = h.get("agi_uniqueid", "")
        channel = h.get("agi_channel", "")
        raw_caller = h.get("agi_callerid", "")
        caller = numbers.normalize(raw_caller, self.region)
        name = clean_name(h.get("agi_calleridname"))
        dnis = numbers.clean(h.get("agi_arg_1") or h.get("agi_extension"))
        if dnis == "s":  # a trunk that gave no dialled number (the dialplan's `s`)
            dnis = ""
        # the decision line repeats who called; this one shows a call that never gets there
        log.debug("[%s] inbound %s (%s) -> %s on %s", uid, caller or "unknown", name or "-",
                  dnis, channel)
        queued = False
        try:
            queued = await self._route(request, uid, channel, caller, name, dnis)
        finally:
            if not queued and self.forget is not None:
                self.forget(uid)

    async def _route(self, request: Any, uid: str, channel: str, caller: str, name: str,
                     dnis: str) -> bool:
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
            result = await run_ivr(request, session)
            if result["hungup"]:
                log.info("[%s] caller left during the IVR", uid)
                return False
            answers.update({k: str(v) for k, v in result["answers"].items()})
            decision = result["decision"] or await self._decide(caller, name, dnis, answers,
                                                                customer)
        # a queued call's decision is repeated in its hang-up line (calls.py), which says
        # how it ended: one INFO line per queued call; the others end here
        queued = decision.action in ("queue", "agent")
        log.log(logging.DEBUG if queued else logging.INFO,
                "[%s] decision: %s (rule %s) for %s (%s) -> %s on %s", uid,
                decision.describe(), decision.rule or "-", caller or "unknown", name or "-",
                dnis or "no number", channel)
        info = CallInfo(call_id=uid, caller_id=caller, caller_name=name, dnis=dnis,
                        digits=answers.get("digits", "") or "".join(
                            v for v in answers.values() if v.isdigit()),
                        answers=dict(answers), joined_at=time.time())
        call = Call(call_id=uid, channel=channel, info=info,
                    route=f"{decision.describe()} (rule {decision.rule or '-'})")
        action, variables = await self._carry_out(call, decision, customer)
        await self._answer(request, uid, action, variables)
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
        if self.identify is None or not caller:
            return None
        try:
            # waiting never cancels the lookup: the pop uses its answer when it comes
            lookup = asyncio.ensure_future(self.identify(uid, caller))
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
                         customer: Mapping[str, Any] | None) -> tuple[str, dict[str, str]]:
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
            return await self.calls.join(call, joined)
        if d.action == "extension":
            return destination("extension", d.extension or "")
        if d.action == "voicemail":
            return destination("voicemail", d.mailbox or "")
        if d.action in ("message", "callback"):
            if d.action == "callback":
                log.info("[%s] callback requested by %s", call.call_id, call.info.caller_id)
            return destination("message", "&".join(d.message) or "goodbye")
        return "hangup", {}

    async def _answer(self, request: Any, uid: str, action: str,
                      variables: dict[str, str]) -> None:
        """Hand the decision to the dialplan. Plain values (the usual case) go in one
        ``EXEC MSet``; anything else one ``SET VARIABLE`` each. The last command ends the
        AGI (``send_last``): CTI_ACTION is set last, and the dialplan goes on from there."""
        values = {**variables, "CTI_ACTION": action}
        if all(_PLAIN.fullmatch(v) for v in values.values()):
            pairs = ",".join(f"{k}={v}" for k, v in values.items())
            commands = [f'EXEC MSet "{pairs}"']
        else:
            commands = [f"SET VARIABLE {k} {agi_quote(v)}" for k, v in values.items()]
        *first, last = commands
        for command in first:
            reply = await request.send_command(command)
            if not agi_ok(reply):
                log.info("[%s] channel left while answering the dialplan", uid)
                return
        request.send_last(last)

    # ---------------------------------------------------------------- agents' phones

    async def agent(self, request: Any) -> None:
        h = request.headers
        device = device_of(h.get("agi_channel", ""))
        command = h.get("agi_arg_1", "")
        agent_id = self.calls.agent_by_device.get(device)
        events: dict[str, ev.Event] = {}
        if agent_id is not None:
            events = {"login": ev.AgentLoggedIn(agent_id), "logout": ev.AgentLoggedOut(agent_id),
                      "pause": ev.AgentPaused(agent_id, "phone"), "ready": ev.AgentReady(agent_id)}
        result = "error"
        if command in events:
            try:
                await self.request_acd(events[command])
                result = "ok"
                log.info("agent %s: %s from the phone", agent_id, command)
            except AcdError as exc:
                log.info("agent %s: %s refused: %s", agent_id, command, exc)
        else:
            log.warning("feature code %r from %s: not an agent device or unknown command",
                        command, device)
        await request.send_command(f"SET VARIABLE CTI_RESULT {agi_quote(result)}")
