"""Routing rules: names, functions, actions, precedence, wildcards, normalisation."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import simpleeval

from ctiserver.core.rules import CallContext, Decision, Known, load_ruleset
from ctiserver.core.rules.expr import Env, compile_expr
from ctiserver.core.rules.functions import make_functions

MADRID = ZoneInfo("Europe/Madrid")
TUESDAY_11 = datetime(2026, 12, 22, 11, 0, tzinfo=MADRID)
ROOT = Path(__file__).resolve().parents[2]

HEAD = """
config:
  timezone: Europe/Madrid
  known_queues: [sales, support, billing, technical, vip]
  known_agents: ["1001", "1002", "1003", "1004"]
  lookup_tables: [vip_numbers]
schedules:
  support:
    hours: {mon-fri: "09:00-18:00"}
    holidays: ES
rules:
"""


def rules(body: str, known: Known | None = None):
    known = known or Known(answers=frozenset({"department"}))
    result = load_ruleset({"r.yaml": HEAD + body}, known)
    assert result.ok, [str(p) for p in result.problems]
    assert result.ruleset is not None
    return result.ruleset


def call(caller="+34915551234", dnis="900100200", now=TUESDAY_11, **kw) -> CallContext:
    return CallContext.create(caller_id=caller, dnis=dnis, now=now, **kw)


def one_rule(cond: str) -> str:
    return f"""
  - name: hit
    if: {cond!r}
    then: {{queue: sales}}
  - name: miss
    queue: support
"""


def hit(cond: str, ctx: CallContext | None = None) -> bool:
    decision = rules(one_rule(cond)).decide(ctx or call())
    return decision.rule == "hit"


# ------------------------------------------------------------------ names


@pytest.mark.parametrize(
    "cond,expected",
    [
        ("caller_id == '+34915551234'", True),
        ("caller_name == 'Ana'", True),
        ("dnis == '+34900100200'", True),
        ("digits == '42'", True),
        ("answers.department == 'billing'", True),
        ("department == 'billing'", True),
        ("customer.tier == 'gold'", True),
        ("customer.assigned_agent == '1002'", True),
        ("time == '11:00'", True),
        ("date == '2026-12-22'", True),
        ("weekday == 'tue'", True),
        ("hour == 11 and minute == 0 and day == 22 and month == 12 and year == 2026", True),
        ("now.hour == 11", True),
        ("time >= '09:00' and time < '18:00'", True),
        ("weekday in ['sat', 'sun']", False),
    ],
)
def test_each_name(cond, expected):
    ctx = call(
        caller_name="Ana",
        digits="42",
        answers={"department": "billing"},
        customer={"tier": "gold", "assigned_agent": "1002"},
    )
    assert hit(cond, ctx) is expected


def test_unknown_caller_has_no_customer_fields():
    assert hit("customer.tier == 'gold'") is False
    assert hit("customer is None") is True


def test_unanswered_ivr_variable_is_empty_text():
    assert hit("department == ''") is True


# ------------------------------------------------------------------ functions


@pytest.mark.parametrize(
    "cond,caller,expected",
    [
        ("matches(caller_id, '+3491*')", "+34915551234", True),
        ("matches(caller_id, '+3491*')", "0034915551234", True),
        ("matches(caller_id, '+3491*')", "915551234", True),
        ("matches(caller_id, '+3493*')", "915551234", False),
        ("matches(caller_id, '003491*')", "+34915551234", True),
        ("matches(caller_id, '+349155512??')", "+34915551234", True),
        ("matches(caller_id, '+349155512?')", "+34915551234", False),  # ? is exactly one
        ("matches(caller_id, '10??')", "1002", True),
        ("matches(caller_id, '10??')", "10a2", False),  # ? is a digit
        ("startswith(caller_id, '+34')", "915551234", True),
        ("startswith(caller_id, '0034')", "915551234", True),
        ("endswith(caller_id, '1234')", "915551234", True),
        ("len(caller_id) == 12", "915551234", True),
        ("int(caller_id[-4:]) > 1000", "915551234", True),
        ("lower(str(caller_id)) == '+34915551234'", "915551234", True),
    ],
)
def test_number_functions(cond, caller, expected):
    assert hit(cond, call(caller=caller)) is expected


@pytest.mark.parametrize("dnis", ["900100200", "+34900100200", "0034900100200", "900 100 200"])
def test_dnis_literal_is_normalised_like_the_call(dnis):
    assert hit("dnis == '900100200'", call(dnis=dnis))
    assert hit("dnis in ['900100300', '900100200']", call(dnis=dnis))


def test_schedule_and_holiday_functions():
    christmas = datetime(2026, 12, 25, 11, 0, tzinfo=MADRID)
    assert hit("open('support')", call(now=TUESDAY_11))
    assert not hit("open('support')", call(now=christmas))
    assert hit("holiday('ES')", call(now=christmas))
    assert not hit("holiday('ES')", call(now=TUESDAY_11))
    # Madrid Day (2 May) is a holiday of the Madrid region only
    isidro = datetime(2026, 5, 2, 11, 0, tzinfo=MADRID)
    assert not hit("holiday('ES')", call(now=isidro))
    assert hit("holiday('ES', 'MD')", call(now=isidro))
    assert not hit("holiday('ES', 'CT')", call(now=isidro))


def test_lookup_uses_the_injected_callable_and_is_traced_on_failure():
    seen = []

    def lookup(table, key):
        seen.append((table, key))
        return {"level": 3} if key == "+34915551234" else None

    rs = rules(one_rule("lookup('vip_numbers', caller_id).level == 3"))
    assert rs.decide(call(lookup=lookup)).rule == "hit"
    assert rs.decide(call(caller="+34600000000", lookup=lookup)).rule == "miss"
    assert seen == [("vip_numbers", "+34915551234"), ("vip_numbers", "+34600000000")]

    def broken(table, key):
        raise TimeoutError("CRM took more than 200 ms")

    decision = rs.decide(call(lookup=broken))
    assert decision.rule == "miss"
    assert any("error (counts as false)" in t and "200 ms" in t for t in decision.trace)


# ------------------------------------------------------------------ actions


def test_every_action():
    body = """
  - name: q
    if: digits == '1'
    then: {queue: billing, priority: 5, skills: {billing: 3, spanish: 2}, message: [queue-thereare]}
  - name: i
    if: digits == '2'
    then: {ivr: main_menu}
  - name: a
    if: digits == '3'
    then: {agent: "1002", timeout: 15, fallback: {queue: sales}}
  - name: ao
    if: digits == '4'
    then: {agent_of: customer.assigned_agent, fallback: {voicemail: "1001"}}
  - name: e
    if: digits == '5'
    then: {extension: "1003"}
  - name: v
    if: digits == '6'
    then: {voicemail: "1004"}
  - name: m
    if: digits == '7'
    then: {message: [vm-nobodyavail, goodbye]}
  - name: c
    if: digits == '8'
    then: {callback: support}
  - name: h
    if: digits == '9'
    then: {hangup: true}
"""
    rs = rules(body, Known(flows=frozenset({"main_menu"})))

    def d(digits, **kw) -> Decision:
        return rs.decide(call(digits=digits, **kw))

    q = d("1")
    assert (q.action, q.queue, q.priority, dict(q.skills), q.message) == (
        "queue",
        "billing",
        5,
        {"billing": 3, "spanish": 2},
        ("queue-thereare",),
    )
    assert (d("2").action, d("2").flow) == ("ivr", "main_menu")
    a = d("3")
    assert (a.action, a.agent, a.agent_timeout) == ("agent", "1002", 15.0)
    assert a.fallback == Decision("queue", queue="sales")
    assert d("4", customer={"assigned_agent": "1004"}).agent == "1004"
    assert d("4").action == "voicemail"  # no assigned agent: the fallback
    assert d("4").rule == "ao"
    assert (d("5").action, d("5").extension) == ("extension", "1003")
    assert (d("6").action, d("6").mailbox) == ("voicemail", "1004")
    assert (d("7").action, d("7").message) == ("message", ("vm-nobodyavail", "goodbye"))
    assert (d("8").action, d("8").queue) == ("callback", "support")
    assert d("9").action == "hangup"
    assert d("0").action == "hangup" and d("0").rule is None  # default


def test_agent_of_without_fallback_falls_through_to_next_rule():
    rs = rules("""
  - name: own agent
    if: customer is not None
    then: {agent_of: customer.assigned_agent}
  - name: rest
    queue: support
""")
    assert rs.decide(call(customer={"assigned_agent": "1002"})).agent == "1002"
    d = rs.decide(call(customer={"tier": "gold"}))
    assert d.rule == "rest"
    assert any("no fallback" in t for t in d.trace)


def test_config_default_is_used_when_no_rule_decides():
    result = load_ruleset(
        {
            "r.yaml": "config: {default: {queue: support}}\nrules:\n"
            "  - name: x\n    if: digits == '1'\n    then: {queue: sales}\n"
        }
    )
    assert result.ruleset is not None
    d = result.ruleset.decide(call())
    assert (d.action, d.queue, d.rule) == ("queue", "support", None)
    assert "default" in d.trace[-1]


# ------------------------------------------------------------------ precedence


PRECEDENCE = """
  - name: outer
    if: dnis == '900100200'
    then:
      - name: a
        if: digits == '1'
        then: {queue: sales}
        elif:
          - if: digits == '2'
            then: {queue: billing}
          - if: digits in ['2', '3']
            then: {queue: technical}
        else:
          - name: inner
            if: caller_id == '915551234'
            then: {queue: vip}
  - name: second
    if: digits == '1'
    then: {queue: support}
  - name: last
    extension: "1001"
"""


@pytest.mark.parametrize(
    "dnis,digits,caller,queue,rule",
    [
        ("900100200", "1", "915551234", "sales", "a"),
        ("900100200", "2", "915551234", "billing", "a"),  # first true elif wins
        ("900100200", "3", "915551234", "technical", "a"),
        ("900100200", "4", "915551234", "vip", "inner"),  # else with nested rule
        ("900100300", "1", "915551234", "support", "second"),  # outer false: next rule
    ],
)
def test_if_elif_else_precedence(dnis, digits, caller, queue, rule):
    d = rules(PRECEDENCE).decide(call(dnis=dnis, digits=digits, caller=caller))
    assert (d.queue, d.rule) == (queue, rule)


def test_nested_rules_that_decide_nothing_fall_through_with_a_trace():
    d = rules(PRECEDENCE).decide(call(digits="4", caller="+34600000000"))
    assert (d.action, d.extension, d.rule) == ("extension", "1001", "last")
    text = "\n".join(d.trace)
    assert "no nested rule decided" in text
    assert "r.yaml:" in text and "[inner]" in text


def test_trace_names_file_line_and_truth():
    d = rules(PRECEDENCE).decide(call(digits="2"))
    assert d.trace[0].startswith("r.yaml:")
    assert d.trace[0].endswith(": true")
    assert any(
        t.strip().startswith("r.yaml:") and "[a] if digits == '1': false" in t for t in d.trace
    )
    assert any("[a] elif digits == '2': true" in t for t in d.trace)
    assert d.trace[-1].startswith("→ queue billing")


def test_runtime_error_in_condition_counts_as_false():
    d = rules(one_rule("int(caller_name) > 3")).decide(call(caller_name="Ana"))
    assert d.rule == "miss"
    assert "error (counts as false)" in d.trace[0]


# ------------------------------------------------------------------ examples & simpleeval


def test_shipped_example_answers_the_christmas_eve_question():
    from ctiserver.rules.bundle import compile_sources, read_dir

    bundle = compile_sources(read_dir(ROOT / "routing_rules"), read_dir(ROOT / "ivr_flows"))
    assert bundle.ok, [str(p) for p in bundle.problems]
    assert bundle.ruleset is not None
    at = datetime(2026, 12, 24, 21, 30, tzinfo=MADRID)
    d = bundle.ruleset.decide(call(caller="+34 91 555 1234", dnis="900100200", now=at))
    assert (d.action, d.rule) == ("message", "closed")
    assert d.message == ("vm-nobodyavail", "goodbye")
    gold = {"tier": "gold", "assigned_agent": "1002"}
    d = bundle.ruleset.decide(call(dnis="900100200", customer=gold))
    assert (d.action, d.agent) == ("agent", "1002")
    assert d.fallback is not None and d.fallback.queue == "vip"
    d = bundle.ruleset.decide(call(dnis="900100300", now=at))
    assert (d.action, d.queue) == ("queue", "vip")


@pytest.mark.parametrize(
    "expr",
    [
        "1 + 2 * 3 - 4 / 2",
        "2 ** 10 % 7",
        "'ab' * 3 + 'c'",
        "x > 3 and y == 'hi' or not x",
        "x if y == 'hi' else -x",
        "'h' in y and 'z' not in y",
        "y[0:1] == 'h'",
        "1 < x < 10",
        "x is not None",
    ],
)
def test_compiled_conditions_agree_with_simpleeval(expr):
    names = {"x": 5, "y": "hi"}
    env = Env(names=frozenset(names), functions=make_functions({}, frozenset(), "UTC"))
    ours = compile_expr(expr, env)(names)
    reference = simpleeval.SimpleEval(names=names).eval(expr)
    assert ours == reference
