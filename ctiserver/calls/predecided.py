"""The pre-decided ring: the agent for a number, chosen before the call comes.

For a number whose calls the rules all send to one queue whatever else is known
(``core.rules.fixed``), ctiserver keeps in the Asterisk global ``CTI_NEXT_<number>`` the
agent the next caller would be rung to (``Engine.peek``), and ``CTI_RT_<number>`` the
queue's ring timeout. A caller to that number takes the agent's token and dials at once
in the dialplan (extensions_ctiserver.conf, [ctiserver-inbound] step 2), with no FastAGI
round trip: the ring starts as soon as with app_queue. ctiserver learns of the call from
its ``DialBegin`` and takes it from there (CallerJoined with ``claimed``), with the rules'
decision, the CRM lookup and the screen-pop as for any call. The whole protocol, and why
no caller can ever ring an agent another caller was given, is in docs/fast-path.md.

Tokens, per agent ``K`` (the dial string's letters and digits): ctiserver writes
``CTI_FREE_K`` = a new number ``g`` when it pre-decides the agent; a caller takes it by
joining the dialplan GROUP ``K-g`` and finding itself alone there (else it leaves). Whoever
rings a pre-decided agent takes the token first: the callers who dial on their own, and
ctiserver's own offers of that agent (the [ctiserver-claim] context). Joining and counting
are atomic in Asterisk: a token is taken at most once.
"""

from __future__ import annotations

import itertools
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from ctiserver.calls.model import Call, CallerLeg, CallInfo
from ctiserver.calls.ports import RuleVersions, Telephony
from ctiserver.calls.routing import who_called
from ctiserver.calls.tracker import CallTracker
from ctiserver.core.acd import events as ev
from ctiserver.core.acd.model import AcdConfig
from ctiserver.core.rules.fixed import fixed_decisions

log = logging.getLogger("ctiserver.calls")

# the peek of the engine: (queue, priority, skills, now) -> the one agent, or None
Peek = Callable[[str, int, Mapping[str, int], float], "str | None"]

# devices the dialplan's token expressions take as they are (no , : ? | " or spaces)
_DEVICE_OK = re.compile(r"[A-Za-z0-9/_.@-]+")
_NUMBER_OK = re.compile(r"\+?[0-9]{1,30}")
# states in which an agent's token is withdrawn (a ready agent leaves by an offer, which
# takes the token with it)
_WITHDRAW = frozenset({"not_ready", "logged_out"})


@dataclass(frozen=True)
class FixedRoute:
    """Where every call to ``number`` goes (the rules' fixed decision)."""

    number: str
    queue: str
    priority: int = 0
    skills: Mapping[str, int] = field(default_factory=dict)
    ring_timeout: float = 15.0
    described: str = ""  # the decision and its rule, for the call's log line


def token_key(device: str) -> str:
    """The agent's part of its token variables: the dial string's letters and digits
    (the dialplan's ``FILTER(A-Za-z0-9,...)``)."""
    return re.sub(r"[^A-Za-z0-9]", "", device)


class PreDecided:
    def __init__(self, telephony: Telephony, tracker: CallTracker, peek: Peek,
                 devices: Mapping[str, str], *, region: str = "ES",
                 clock: Callable[[], float] = time.time) -> None:
        self.telephony = telephony
        self.tracker = tracker
        self.peek = peek
        self.clock = clock
        self.region = region
        self.devices = {a: d for a, d in devices.items() if _DEVICE_OK.fullmatch(d)}
        self.routes: dict[str, FixedRoute] = {}
        # every route ever published, for a caller who took an agent just before a reload
        self.known: dict[str, FixedRoute] = {}
        self.published: dict[str, str] = {}  # number -> agent id published ("" none)
        self.live: dict[str, int] = {}  # agent -> token written and not known taken
        # token numbers only grow, across restarts too (a token left in Asterisk by an
        # earlier run is never equal to a new one)
        self._gen = itertools.count(int(clock() * 1000))
        self.enabled = True
        self.rules_version: str | None = None  # the rules the routes come from

    # ------------------------------------------------------------------ routes

    def follow(self, rules: RuleVersions, acd: AcdConfig, zone: ZoneInfo) -> None:
        """The routes of the rules in force, worked out again when their version changed:
        the numbers whose every call goes to one queue (``core.rules.fixed``)."""
        version = rules.version
        if version is None or version == self.rules_version:
            return
        self.rules_version = version
        routes = {}
        for number, d in fixed_decisions(rules.ruleset, datetime.now(zone)).items():
            q = acd.queues.get(d.queue or "")
            if q is not None:
                routes[number] = FixedRoute(number, q.name, d.priority, dict(d.skills),
                                            q.ring_timeout,
                                            f"{d.describe()} (rule {d.rule or '-'})")
        self.set_routes(routes)

    def set_routes(self, routes: Mapping[str, FixedRoute]) -> None:
        """The rules changed: publish for these numbers from now on."""
        if not self.enabled:
            return
        fresh = {n: r for n, r in routes.items() if _NUMBER_OK.fullmatch(n)}
        out: dict[str, str] = {}
        for number in self.routes.keys() - fresh.keys():
            if self.published.pop(number, ""):
                out[f"CTI_NEXT_{number}"] = ""
        for number, route in fresh.items():
            if self.routes.get(number) != route:
                out[f"CTI_RT_{number}"] = str(max(1, round(route.ring_timeout)))
                self.published.pop(number, None)  # publish it afresh below
        self.routes = fresh
        self.known.update(fresh)
        if out:
            self.telephony.set_globals(out)
        if fresh:
            log.info("pre-decided ring for %d number(s): %s", len(fresh),
                     ", ".join(sorted(fresh)[:10]) + (" ..." if len(fresh) > 10 else ""))

    def reset(self) -> None:
        """Asterisk (re)connected: it may have restarted, or keep globals we no longer vouch
        for (a ctiserver that crashed, or had other rules). Every agent's token is withdrawn
        (a number published by then is harmless: nobody can take its agent), then every
        number and token is written again."""
        self.telephony.set_globals({f"CTI_FREE_{token_key(d)}": ""
                                    for d in self.devices.values()})
        self.published.clear()
        self.live.clear()
        routes, self.routes = self.routes, {}
        self.set_routes(routes)
        self.refresh()

    def disable(self, why: str) -> None:
        """Asterisk cannot take tokens (no GROUP functions): every call asks over FastAGI."""
        if self.enabled:
            log.error("pre-decided ring off: %s; every call asks ctiserver over FastAGI", why)
        self.enabled = False
        self.withdraw_all()
        self.routes = {}

    def withdraw_all(self) -> None:
        """ctiserver stops: no caller may take an agent it published."""
        out = {f"CTI_NEXT_{n}": "" for n, agent in self.published.items() if agent}
        out.update({f"CTI_FREE_{token_key(self.devices[a])}": "" for a in self.live})
        self.published.clear()
        self.live.clear()
        if out:
            self.telephony.set_globals(out)

    # ------------------------------------------------------------------ publishing

    def refresh(self) -> None:
        """After the engine's steps: publish, for each number, the agent its next caller
        would be rung to, and each newly published agent's token (token first)."""
        if not self.routes:
            return
        now = self.clock()
        out: dict[str, str] = {}
        # numbers of one queue (and priority and skills) share one peek: hundreds of numbers
        # usually lead to a handful of queues
        peeked: dict[tuple[str, int, tuple[tuple[str, int], ...]], str] = {}
        for number, route in self.routes.items():
            key = (route.queue, route.priority, tuple(sorted(route.skills.items())))
            agent = peeked.get(key)
            if agent is None:
                agent = self.peek(route.queue, route.priority, route.skills, now) or ""
                if agent and (agent not in self.devices or agent in self.tracker.claims_lost):
                    agent = ""
                peeked[key] = agent
            if self.published.get(number) == agent:
                continue
            if agent and agent not in self.live:
                gen = next(self._gen)
                self.live[agent] = gen
                out[f"CTI_FREE_{token_key(self.devices[agent])}"] = str(gen)
            self.published[number] = agent
            out[f"CTI_NEXT_{number}"] = self.devices[agent] if agent else ""
        if out:
            self.telephony.set_globals(out)

    # ------------------------------------------------------------------ the tracker's port

    def offer_needs_claim(self, agent_id: str) -> bool:
        return self.live.pop(agent_id, None) is not None

    def agent_state(self, agent_id: str, state: str) -> None:
        if state in _WITHDRAW and agent_id in self.live:
            # a caller who read the agent a moment ago may still take it: the race of a
            # pause with an offer, which every ACD has; the ring then fails or is answered
            del self.live[agent_id]
            self.telephony.set_globals({f"CTI_FREE_{token_key(self.devices[agent_id])}": ""})

    def claimed(self, call_id: str, caller: CallerLeg, agent_id: str,
                at: float | None) -> Call | None:
        route = self.known.get(caller.exten)
        if route is None:
            log.warning("[%s] rings agent %s from %s,%s: no pre-decided route for it",
                        call_id, agent_id, caller.context, caller.exten)
            return None
        self.live.pop(agent_id, None)
        number, name, dnis = who_called(caller.caller_id, caller.caller_name, caller.exten,
                                        self.region)
        info = CallInfo(call_id=call_id, caller_id=number, caller_name=name, dnis=dnis,
                        joined_at=at if at is not None else self.clock(), queue=route.queue)
        call = Call(call_id=call_id, channel=caller.channel, info=info,
                    route=f"{route.described}, pre-decided")
        joined = ev.CallerJoined(call_id, route.queue, route.priority, dict(route.skills),
                                 claimed=agent_id)
        self.tracker.join_claimed(call, joined, agent_id, at)
        return call
