"""Skill requirements: what a caller needs of an agent, and whether an agent has it.

``fits`` is the one definition of "the agent's skills meet the caller's needs". Two
hot loops carry a copy inlined by hand, where the bench measured that it pays:
``Dispatcher.best_caller_for`` (with the cached case of ``needs_at``) and the walk of
``ReadyIndex.pick``. tests/unit/test_acd_skills.py holds ``fits``, ``needs_at`` and
``best_caller_for`` equal to a reference written from docs/acd.md; test_acd_ready_index
does the same for ``pick``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .runtime import CallerRt

from .model import Needs, Relax

__all__ = ["Needs", "Relax", "caller_req", "capped", "fits", "needs_at"]


def fits(skills: Mapping[str, int], needs: Needs) -> bool:
    """Whether an agent with ``skills`` has every skill of ``needs`` at its level or more."""
    for name, need in needs:
        if skills.get(name, 0) < need:
            return False
    return True


def capped(req: Needs, cap: int | None) -> Needs:
    """``req`` with every level at most ``cap`` (a relax step), and at least 1."""
    return tuple(
        (name, max(1, level if cap is None or cap > level else cap)) for name, level in req
    )


def caller_req(queue_req: Mapping[str, int], call: Mapping[str, int]) -> Needs:
    """The queue's and the call's requirements together (the higher level of the two)."""
    req = dict(queue_req)
    for name, level in call.items():
        req[name] = max(req.get(name, 0), level)
    return tuple(sorted(req.items()))


def needs_at(
    c: CallerRt, relax: Relax, now: float, memo: dict[int | None, Needs] | None = None
) -> Needs:
    """The caller's requirements after the relax steps reached at ``now``.

    Cached on the caller (``c.needs``, made from ``c.needs_req`` at cap ``c.needs_cap``,
    holding up to the wait ``c.needs_until``: the next step); a queue change or a
    reconfiguration gives ``c.req`` a new tuple, so ``is`` tells (but for ``()``, a
    singleton: no requirement, nothing to relax).

    ``memo``: the queue's own requirements relaxed to each cap (QueueRt.needs_memo),
    used for a caller with no requirement of its own (its ``req`` is the queue's), as
    most are: their first look then makes no tuple."""
    waited = now - c.arrival
    req = c.req
    if c.needs_req is req and waited < c.needs_until:
        return c.needs
    cap: int | None = None
    until = float("inf")
    for after, low in relax:
        if waited < after:
            until = after
            break
        cap = low
    if c.needs_req is req and c.needs_cap == cap:
        needs = c.needs
    elif memo is None or c.skills:
        needs = capped(req, cap)
    else:
        found = memo.get(cap)
        if found is None:
            found = memo[cap] = capped(req, cap)
        needs = found
    c.needs, c.needs_req, c.needs_cap, c.needs_until = needs, req, cap, until
    return needs
