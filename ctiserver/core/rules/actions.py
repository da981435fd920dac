"""Actions: the YAML mapping that says where a call goes, turned into a Decision.

The supervisor's reference is ``routing_rules/README.md`` (Actions); the keys
are summed up in :func:`parse_action`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ctiserver.core.rules.decision import Decision
from ctiserver.core.rules.expr import Compiled, Env, ExprError, compile_expr
from ctiserver.core.rules.yamlsrc import LineDict

ACTION_KEYS = ("queue", "ivr", "agent", "agent_of", "extension", "voicemail", "callback", "hangup")
EXTRA_KEYS = {
    "queue": {"priority", "skills"},
    "agent": {"timeout", "fallback"},
    "agent_of": {"timeout", "fallback"},
}
_SOUND = re.compile(r"^[A-Za-z0-9_\-./]{1,128}$")
_ID = re.compile(r"^[A-Za-z0-9_\-.@+]{1,64}$")


class ActionError(ValueError):
    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


@dataclass(frozen=True)
class Refs:
    """Names an action refers to, for the checker."""

    queues: tuple[tuple[str, int], ...] = ()
    flows: tuple[tuple[str, int], ...] = ()
    agents: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class ActionSpec:
    """A Decision template; ``agent_of`` is evaluated per call."""

    decision: Decision
    line: int
    agent_of: Compiled | None = None
    refs: Refs = field(default_factory=Refs)

    def resolve(self, scope: Mapping[str, Any]) -> tuple[Decision | None, str]:
        """The decision for this call, or None (with why) if ``agent_of`` is empty."""
        if self.agent_of is None:
            return self.decision, ""
        try:
            agent = self.agent_of(scope)
        except Exception as exc:
            agent, why = None, f"agent_of {self.agent_of.source} failed: {exc}"
        else:
            why = f"agent_of {self.agent_of.source} is empty"
        if agent is None or agent == "":
            fallback = self.decision.fallback
            if fallback is None:
                return None, why + " and there is no fallback: next rule"
            return fallback, why + ": fallback"
        return Decision(
            "agent",
            agent=str(agent),
            agent_timeout=self.decision.agent_timeout,
            fallback=self.decision.fallback,
            message=self.decision.message,
        ), f"agent_of {self.agent_of.source} = {agent!r}"


def sounds(value: Any, line: int) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise ActionError("sounds must be a name or a list of names, e.g. [goodbye]", line)
    for item in items:
        if not isinstance(item, str) or not _SOUND.match(item) or ".." in item:
            raise ActionError(f"bad sound name {item!r} (letters, digits, - _ / .)", line)
    return tuple(items)


def _ident(value: Any, what: str, line: int) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _ID.match(value):
        raise ActionError(f"{what} must be a name or number, got {value!r}", line)
    return value


def _int(value: Any, what: str, line: int, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ActionError(f"{what} must be a whole number from {lo} to {hi}, got {value!r}", line)
    return value


def parse_action(
    node: Any,
    env: Env | None,
    *,
    line: int,
    extra_allowed: frozenset[str] = frozenset(),
) -> ActionSpec:
    """Parse an action mapping. ``env`` None: expressions (``agent_of``) not allowed.

    One action key per mapping::

        queue: sales            priority: 5   skills: {spanish: 3}
        ivr: main_menu
        agent: "1002"           timeout: 20   fallback: {queue: sales}
        agent_of: customer.assigned_agent     (an expression; same timeout/fallback)
        extension: "1003"
        voicemail: "1001"
        message: [vm-nobodyavail, goodbye]    (alone: play, then hang up)
        callback: support                     (offer a callback for that queue)
        hangup: true

    ``message`` next to another action is played before it.
    """
    if not isinstance(node, Mapping):
        raise ActionError("an action must be a mapping, e.g. {queue: sales}", line)
    line = node.line if isinstance(node, LineDict) else line

    def at(key: str) -> int:
        return node.line_of(key) if isinstance(node, LineDict) else line

    present = [k for k in ACTION_KEYS if k in node]
    if len(present) > 1:
        raise ActionError(f"one action per rule, found {', '.join(present)}", line)
    if not present and "message" not in node:
        raise ActionError(
            "no action: use one of queue, ivr, agent, agent_of, extension, voicemail, "
            "message, callback, hangup",
            line,
        )
    kind = present[0] if present else "message"
    allowed = {kind, "message"} | EXTRA_KEYS.get(kind, set()) | extra_allowed
    for key in node:
        if key not in allowed:
            raise ActionError(f"unknown key '{key}' for a {kind} action", at(key))

    message = sounds(node["message"], at("message")) if "message" in node else ()
    queues: list[tuple[str, int]] = []
    flows: list[tuple[str, int]] = []
    agents: list[tuple[str, int]] = []
    agent_of: Compiled | None = None
    fallback: Decision | None = None
    timeout = 0.0
    if kind in ("agent", "agent_of"):
        if "timeout" in node:
            timeout = float(_int(node["timeout"], "timeout", at("timeout"), 1, 600))
        if "fallback" in node:
            fb = parse_action(node["fallback"], None, line=at("fallback"))
            fallback = fb.decision
            queues += fb.refs.queues
            flows += fb.refs.flows
            agents += fb.refs.agents

    value = node.get(kind)
    decision: Decision
    if kind == "queue":
        name = _ident(value, "queue", at(kind))
        queues.append((name, at(kind)))
        priority = _int(node.get("priority", 0), "priority", at("priority"), -100, 100)
        skills_node = node.get("skills", {})
        if not isinstance(skills_node, Mapping):
            raise ActionError("skills must map skill names to minimum levels", at("skills"))
        skills = {
            _ident(k, "skill", at("skills")): _int(v, f"level of skill {k}", at("skills"), 0, 10)
            for k, v in skills_node.items()
        }
        decision = Decision("queue", queue=name, priority=priority, skills=skills, message=message)
    elif kind == "ivr":
        name = _ident(value, "IVR flow", at(kind))
        flows.append((name, at(kind)))
        decision = Decision("ivr", flow=name, message=message)
    elif kind == "agent":
        name = _ident(value, "agent", at(kind))
        agents.append((name, at(kind)))
        decision = Decision(
            "agent", agent=name, agent_timeout=timeout, fallback=fallback, message=message
        )
    elif kind == "agent_of":
        if env is None:
            raise ActionError("agent_of is not allowed here; name the agent", at(kind))
        try:
            agent_of = compile_expr(str(value), env)
        except ExprError as exc:
            raise ActionError(f"agent_of: {exc.message}", at(kind)) from None
        decision = Decision(
            "agent", agent=None, agent_timeout=timeout, fallback=fallback, message=message
        )
    elif kind == "extension":
        decision = Decision(
            "extension", extension=_ident(value, "extension", at(kind)), message=message
        )
    elif kind == "voicemail":
        decision = Decision(
            "voicemail", mailbox=_ident(value, "mailbox", at(kind)), message=message
        )
    elif kind == "callback":
        name = _ident(value, "queue", at(kind))
        queues.append((name, at(kind)))
        decision = Decision("callback", queue=name, message=message)
    elif kind == "hangup":
        if value is not True:
            raise ActionError("write hangup: true", at(kind))
        decision = Decision("hangup", message=message)
    else:
        decision = Decision("message", message=message)
    return ActionSpec(decision, line, agent_of, Refs(tuple(queues), tuple(flows), tuple(agents)))


def is_action(node: Any) -> bool:
    return isinstance(node, Mapping) and any(k in node for k in (*ACTION_KEYS, "message"))


Resolver = Callable[[Mapping[str, Any]], "tuple[Decision | None, str]"]
