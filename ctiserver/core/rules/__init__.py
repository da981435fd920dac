"""Routing rules: if/elif/else rules over a call context, compiled once, evaluated purely.

Public API::

    result = load_ruleset(sources, known=Known(...))
    if result.ok:
        decision = result.ruleset.decide(CallContext.create(caller_id=..., dnis=..., now=...))

Nothing here reads files, sockets or the clock: text comes in with its file
name, time comes in with the context.
"""

from ctiserver.core.problems import Problem
from ctiserver.core.rules.context import CallContext
from ctiserver.core.rules.decision import Decision
from ctiserver.core.rules.loader import load_ruleset
from ctiserver.core.rules.model import Known, LoadResult, RuleSet

__all__ = [
    "CallContext",
    "Decision",
    "Known",
    "LoadResult",
    "Problem",
    "RuleSet",
    "load_ruleset",
]
