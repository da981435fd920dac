"""The pop's payloads on their own: pure functions of what is known of the call."""

from __future__ import annotations

from datetime import UTC, datetime

from ctiserver.calls.model import CallInfo
from ctiserver.core.records import CustomerRecord, Identification, InteractionRecord
from ctiserver.pops.payload import (
    answered_note,
    crm_url,
    ended,
    history_item,
    offered_pop,
    state_note,
)

JOINED = 1_700_000_000.0

ANA = CustomerRecord(1, "Ana López", "gold", "1001", "", None, ("+34915551234",))
ANNA = CustomerRecord(7, "Anna L.", "basic", None, "", None, ("+34915551234",))
PAST = InteractionRecord(
    call_id="old.1",
    queue="support",
    agent_id="1002",
    joined_at=datetime(2024, 5, 1, 9, 30, tzinfo=UTC),
    wait_seconds=4.0,
    talk_seconds=120.5,
    outcome="answered",
    disposition="resolved",
    notes="router reset",
)


def call(**changes: object) -> CallInfo:
    info = CallInfo(
        call_id="c1",
        caller_id="+34915551234",  # as routing gives it: normalised once, there
        caller_name="ANA",
        dnis="+34910000000",
        queue="support",
        digits="2",
        answers={"account": "77"},
        joined_at=JOINED,
        offered_at=JOINED + 12.34,
    )
    for name, value in changes.items():
        setattr(info, name, value)
    return info


def test_the_full_pop_names_the_first_customer_and_lists_the_others_and_the_history() -> None:
    info = call()
    ident = Identification("+34915551234", (ANA, ANNA), (PAST,))
    pop = offered_pop(info, ident,
                      crm_url_template="https://crm.example/s?phone={e164}")
    assert pop == {
        "call_id": "c1",
        "stage": "offered",
        "caller_id": "+34915551234",
        "caller_name": "ANA",
        "dnis": "+34910000000",
        "queue": "support",
        "digits": "2",
        "answers": {"account": "77"},
        "joined_at": JOINED,
        "offered_at": JOINED + 12.34,
        "waited": 12.3,
        "partial": False,
        "known": True,
        "customer": ANA.to_dict(),
        "other_matches": [{"id": 7, "name": "Anna L."}],
        "history": [history_item(PAST)],
        "crm_url": "https://crm.example/s?phone=%2B34915551234",
    }
    assert pop["answers"] is not info.answers  # the pop is the agent's: a copy


def test_without_the_crm_answer_the_pop_is_partial_and_an_unknown_caller_is_not_known() -> None:
    partial = offered_pop(call(), None)
    assert partial["partial"] and not partial["known"]
    assert (partial["customer"], partial["other_matches"], partial["history"]) == (None, [], [])
    assert partial["crm_url"] is None  # no template
    unknown = offered_pop(call(), Identification("+34915551234"))
    assert not unknown["partial"] and not unknown["known"] and unknown["customer"] is None


def test_waited_is_unknown_without_a_join_time_and_the_same_input_gives_the_same_pop() -> None:
    assert offered_pop(call(joined_at=0.0), None)["waited"] is None
    assert offered_pop(call(), None) == offered_pop(call(), None)  # no clock inside


def test_crm_url_quotes_the_number_and_needs_a_template_and_a_number() -> None:
    assert crm_url("https://crm/{number}", "+34 9") == "https://crm/%2B34%209"
    assert crm_url(None, "+349") is None and crm_url("https://crm/{e164}", "") is None


def test_history_item() -> None:
    assert history_item(PAST) == {
        "call_id": "old.1",
        "at": "2024-05-01T09:30:00+00:00",
        "queue": "support",
        "agent_id": "1002",
        "wait": 4.0,
        "talk": 120.5,
        "outcome": "answered",
        "disposition": "resolved",
        "notes": "router reset",
    }


def test_answered_note() -> None:
    assert answered_note("c1", JOINED + 15.04, JOINED) == {
        "call_id": "c1", "answered_at": JOINED + 15.04, "waited": 15.0}
    assert answered_note("c1", JOINED, 0.0)["waited"] is None


def test_an_answered_call_ends_with_its_record_and_the_agent_s_note() -> None:
    record, note = ended("c1", call(), customer_id=1, agent_id="1001",
                         answered_at=JOINED + 15, ended_at=JOINED + 115.06)
    assert record == InteractionRecord(
        call_id="c1",
        customer_id=1,
        caller_id="+34915551234",  # as routing gives it: normalised once, there
        dnis="+34910000000",
        queue="support",
        agent_id="1001",
        digits="2",
        joined_at=datetime.fromtimestamp(JOINED, UTC),
        answered_at=datetime.fromtimestamp(JOINED + 15, UTC),
        ended_at=datetime.fromtimestamp(JOINED + 115.06, UTC),
        wait_seconds=15.0,
        talk_seconds=100.1,
        outcome="answered",
    )
    assert note == {"call_id": "c1", "ended_at": JOINED + 115.06, "talk": 100.1,
                    "waited": 15.0}


def test_an_unanswered_call_is_abandoned_by_nobody_and_tells_no_agent() -> None:
    record, note = ended("c1", call(), customer_id=None, agent_id="1001",
                         answered_at=None, ended_at=JOINED + 30)
    assert note is None
    assert (record.agent_id, record.answered_at, record.talk_seconds) == (None, None, None)
    assert (record.wait_seconds, record.outcome) == (30.0, "abandoned")
    record, note = ended("c1", call(joined_at=0.0), customer_id=None, agent_id=None,
                         answered_at=JOINED, ended_at=JOINED + 5, outcome="transferred")
    assert note is None  # answered, but by no known agent
    assert (record.joined_at, record.wait_seconds, record.outcome) == (None, None, "transferred")


def test_state_note() -> None:
    assert state_note("1001", "not_ready", "lunch", None) == {
        "agent_id": "1001", "state": "not_ready", "reason": "lunch", "call_id": None}
