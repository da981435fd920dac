"""Numbers whose routing depends on nothing but the number.

For such a number every call gets the same decision, so ctiserver can work it out before
a call comes (the pre-decided ring, docs/fast-path.md). A number qualifies when, walking
the rules in the order ``RuleSet.decide`` does, every condition met on the way to the
deciding rule reads the dialled number and nothing else (no caller, time, schedule, CRM
record, lookup, digits or IVR answer), no nested rules are entered, and the deciding
action names a queue. Anything else, or any doubt, and the number is not pre-decided: its
calls take the FastAGI route, where the rules see everything.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from ctiserver.core.rules.context import CallContext
from ctiserver.core.rules.decision import Decision
from ctiserver.core.rules.functions import make_scope
from ctiserver.core.rules.model import Rule, RuleSet

NUMBER_ONLY = frozenset({"dnis"})
MAX_NUMBERS = 500  # pre-decided numbers: each costs an Asterisk global and its upkeep


def fixed_decisions(rs: RuleSet, now: datetime) -> dict[str, Decision]:
    """The numbers (as written in the rules) whose every call is queued the same way,
    and that decision; at most ``MAX_NUMBERS`` of them, in rule order."""
    out: dict[str, Decision] = {}
    for number in _numbers_named(rs.rules):
        if len(out) >= MAX_NUMBERS:
            break
        d = fixed_decision(rs, number, now)
        if d is not None:
            out[number] = d
    return out


def fixed_decision(rs: RuleSet, number: str, now: datetime) -> Decision | None:
    """The decision for every call to ``number``, or None if it may depend on anything
    else or is not a plain queue."""
    ctx = CallContext.create(caller_id="", dnis=number, now=now, region=rs.region)
    scope = make_scope(ctx, rs.zone, rs.soft_names)
    walked = _walk(rs.rules, scope)
    if walked is None:
        return None
    decision = rs.decide(ctx)
    if decision.action != "queue" or not decision.queue or decision.queue not in rs.queues:
        return None
    if walked != (decision.rule or ""):  # the walk and the rules must agree
        return None
    return decision


def _walk(rules: tuple[Rule, ...], scope: Mapping[str, Any]) -> str | None:
    """The name of the deciding rule ("" for the default), or None when a condition on the
    way reads more than the number, or the way enters nested rules or a per-call action."""
    for rule in rules:
        for br in rule.branches:
            cond = br.cond
            if cond is not None:
                if not cond.names <= NUMBER_ONLY:
                    return None
                try:
                    ok = cond(scope)
                except Exception:  # noqa: BLE001 - decide() reads an error as false
                    continue
                if not ok:
                    continue
            action = br.action
            if action is None or action.agent_of is not None:
                return None
            return rule.name
    return ""


def _numbers_named(rules: Iterable[Rule]) -> list[str]:
    """Texts compared with the number in conditions that read nothing else, in order."""
    seen: dict[str, None] = {}
    for rule in rules:
        for br in rule.branches:
            cond = br.cond
            if cond is not None and cond.names <= NUMBER_ONLY and cond.names:
                for node in ast.walk(cond.tree):
                    if isinstance(node, ast.Constant) and isinstance(node.value, str):
                        text = node.value.strip()
                        if text and all(ch.isdigit() or ch == "+" for ch in text):
                            seen.setdefault(text, None)
            if br.rules:
                seen.update((n, None) for n in _numbers_named(br.rules))
    return list(seen)
