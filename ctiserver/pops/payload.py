"""What the pop service sends and stores, built from what is known of the call.

Pure functions: no I/O, no clock (every time is given), no state; the pop on the agent's
screen, the ``pop.answered``, ``call.ended`` and ``agent.state`` notes, and the call's
interaction record.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from ctiserver.calls.model import CallInfo
from ctiserver.core.records import Identification, InteractionRecord, from_epoch


def offered_pop(
    info: CallInfo,
    ident: Identification | None,
    *,
    crm_url_template: str | None = None,
) -> dict[str, Any]:
    """The pop shown when the agent's phone rings: full with the CRM's answer ``ident``,
    partial (``partial: true``, what the call itself tells) without it. The caller's
    number is E.164 already where it could be (routing normalised it, once)."""
    customers = ident.customers if ident is not None else ()
    waited = (info.offered_at or 0) - info.joined_at if info.joined_at else None
    return {
        "call_id": info.call_id,
        "stage": "offered",
        "caller_id": info.caller_id,
        "caller_name": info.caller_name,
        "dnis": info.dnis,
        "queue": info.queue,
        "digits": info.digits,
        "answers": dict(info.answers),
        "joined_at": info.joined_at,
        "offered_at": info.offered_at,
        "waited": round1(waited),
        "partial": ident is None,
        "known": bool(customers),
        "customer": customers[0].to_dict() if customers else None,
        "other_matches": [{"id": c.id, "name": c.name} for c in customers[1:]],
        "history": [history_item(h) for h in ident.history] if ident is not None else [],
        "crm_url": crm_url(crm_url_template, info.caller_id),
    }


def crm_url(template: str | None, e164: str) -> str | None:
    """The CRM's page for the number, from ``template`` (``{e164}`` or ``{number}``)."""
    if not template or not e164:
        return None
    return template.format(e164=quote(e164, safe=""), number=quote(e164, safe=""))


def history_item(rec: InteractionRecord) -> dict[str, Any]:
    """One of the caller's past interactions, as the pop lists them."""
    return {
        "call_id": rec.call_id,
        "at": rec.joined_at.isoformat() if rec.joined_at else None,
        "queue": rec.queue,
        "agent_id": rec.agent_id,
        "wait": rec.wait_seconds,
        "talk": rec.talk_seconds,
        "outcome": rec.outcome,
        "disposition": rec.disposition,
        "notes": rec.notes,
    }


def answered_note(call_id: str, answered_at: float, joined_at: float) -> dict[str, Any]:
    """What ``pop.answered`` carries."""
    waited = answered_at - joined_at if joined_at else None
    return {"call_id": call_id, "answered_at": answered_at, "waited": round1(waited)}


def ended(
    call_id: str,
    info: CallInfo,
    *,
    customer_id: int | None,
    agent_id: str | None,
    answered_at: float | None,
    ended_at: float,
    outcome: str | None = None,
) -> tuple[InteractionRecord, dict[str, Any] | None]:
    """The interaction record of the ended call (``outcome`` defaults to answered /
    abandoned), and what ``call.ended`` carries to the agent who talked (None if nobody
    did: the call was not answered, or by no known agent)."""
    wait = (answered_at or ended_at) - info.joined_at if info.joined_at else None
    talk = ended_at - answered_at if answered_at is not None else None
    record = InteractionRecord(
        call_id=call_id,
        customer_id=customer_id,
        caller_id=info.caller_id,
        dnis=info.dnis,
        queue=info.queue,
        agent_id=agent_id if answered_at is not None else None,
        digits=info.digits,
        joined_at=from_epoch(info.joined_at) if info.joined_at else None,
        answered_at=from_epoch(answered_at),
        ended_at=from_epoch(ended_at),
        wait_seconds=round1(wait),
        talk_seconds=round1(talk),
        outcome=outcome or ("answered" if answered_at is not None else "abandoned"),
    )
    if answered_at is None or not agent_id:
        return record, None
    return record, {
        "call_id": call_id,
        "ended_at": ended_at,
        "talk": round1(talk),
        "waited": round1(wait),
    }


def state_note(
    agent_id: str, state: str, reason: str | None, call_id: str | None
) -> dict[str, Any]:
    """What an ``agent.state`` notification carries."""
    return {"agent_id": agent_id, "state": state, "reason": reason, "call_id": call_id}


def round1(value: float | None) -> float | None:
    """Seconds as the payloads give them: to a tenth."""
    return round(value, 1) if value is not None else None
