"""The rule index never changes a decision: indexed == plain evaluation, trace included.

Rule sets (nested if/elif/else, and/or/not, conditions that raise, lookups
with side effects) and calls are generated; every decision made with the index
must equal, field by field and trace line by trace line, the one made by
evaluating every condition in order, and the lookups called must be the same.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ctiserver.core.rules import CallContext, load_ruleset
from ctiserver.core.rules.functions import make_scope
from ctiserver.core.rules.index import describe

MADRID = ZoneInfo("Europe/Madrid")

HEAD = """
config:
  timezone: Europe/Madrid
  known_queues: [sales, support, vip]
  lookup_tables: [vip]
schedules:
  support:
    hours: {mon-fri: "09:00-18:00", sat: "10:00-14:00"}
    holidays: ES
rules:
"""

ATOMS = [
    "dnis == '900100200'",
    "dnis == '911000000'",
    "'900100300' == dnis",
    "dnis == '0034900100200'",
    "dnis in ['900100200', '+442071234567']",
    "dnis != '900100200'",
    "caller_id == '+34915551234'",
    "caller_id == '600123456'",
    "caller_id == '1001'",
    "caller_id in ['1001', '1002']",
    "matches(caller_id, '+3491*')",
    "matches(caller_id, '+34?1*')",
    "matches(caller_id, '*1234')",
    "matches(caller_id, '0034*')",
    "matches(dnis, '9001002?0')",
    "matches(caller_id, '+44*')",
    "startswith(caller_id, '+34')",
    "startswith(dnis, '+349001')",
    "startswith(caller_id, '')",
    "endswith(caller_id, '34')",
    "digits == '1'",
    "digits == ''",
    "digits in ['1', '2']",
    "customer.tier == 'gold'",
    "customer.tier in ['gold', 'silver']",
    "customer.assigned_agent == '1002'",
    "weekday != 'sun'",
    "weekday == 'sat'",
    "time >= '09:00'",
    "hour < 12",
    "open('support')",
    "holiday('ES')",
    "int(digits) > 3",
    "lookup('vip', caller_id)",
    "lower(caller_name) == 'ana'",
    "len(caller_name) > 2",
]

ACTIONS = [
    "{queue: sales}",
    "{queue: vip, priority: 5}",
    "{agent_of: customer.assigned_agent}",  # decides nothing without an assigned agent
    "{agent_of: customer.assigned_agent, timeout: 10}",
    "{voicemail: '1001'}",
]


@st.composite
def conditions(draw: st.DrawFn, depth: int = 0) -> str:
    kind = draw(
        st.sampled_from(["atom", "atom", "atom", "and", "or", "not"] if depth < 2 else ["atom"])
    )
    if kind == "atom":
        return draw(st.sampled_from(ATOMS))
    if kind == "not":
        return f"not ({draw(conditions(depth + 1))})"
    parts = draw(st.lists(conditions(depth + 1), min_size=2, max_size=3))
    return "(" + f" {kind} ".join(parts) + ")"


@st.composite
def bodies(draw: st.DrawFn, depth: int, indent: str) -> str:
    if depth < 2 and draw(st.integers(0, 3)) == 0:
        return "\n" + draw(rule_lists(depth + 1, indent + "    "))
    return " " + draw(st.sampled_from(ACTIONS)) + "\n"


@st.composite
def rules(draw: st.DrawFn, depth: int, indent: str, number: int) -> str:
    name = f"r{depth}_{number}_{draw(st.integers(0, 10**6))}"
    text = f'{indent}- name: {name}\n{indent}  if: "{draw(conditions())}"\n'
    text += f"{indent}  then:{draw(bodies(depth, indent + '  '))}"
    elifs = draw(st.integers(0, 2))
    if elifs:
        text += f"{indent}  elif:\n"
        for _ in range(elifs):
            text += f'{indent}    - if: "{draw(conditions())}"\n'
            text += f"{indent}      then:{draw(bodies(depth, indent + '      '))}"
    if draw(st.booleans()) and draw(st.booleans()):
        text += f"{indent}  else:{draw(bodies(depth, indent + '  '))}"
    return text


@st.composite
def rule_lists(draw: st.DrawFn, depth: int = 0, indent: str = "  ") -> str:
    count = draw(st.integers(1, 8 if depth == 0 else 4))
    return "".join(draw(rules(depth, indent, i)) for i in range(count))


NOWS = [
    datetime(2026, 12, 22, 11, 0, tzinfo=MADRID),  # Tuesday, open
    datetime(2026, 12, 22, 20, 30, tzinfo=MADRID),  # Tuesday evening, closed
    datetime(2026, 12, 26, 10, 30, tzinfo=MADRID),  # Saturday
    datetime(2026, 12, 27, 9, 0, tzinfo=MADRID),  # Sunday
    datetime(2026, 12, 25, 12, 0, tzinfo=MADRID),  # Christmas
]
CUSTOMERS: list[dict[str, Any] | None] = [
    None,
    {"tier": "gold", "assigned_agent": "1002"},
    {"tier": "silver"},
    {"tier": 5, "assigned_agent": ""},
    {"tier": ["gold"]},  # unhashable: the index must give up, not fail
    {},
]


@st.composite
def calls(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "caller_id": draw(
            st.sampled_from(
                ["+34915551234", "600123456", "1001", "+442071234567", "+34971234", "", "+3491"]
            )
        ),
        "dnis": draw(st.sampled_from(["900100200", "911000000", "900100300", "+442071234567"])),
        "digits": draw(st.sampled_from(["", "1", "7", "x"])),
        "caller_name": draw(st.sampled_from(["", "Ana", "BOB"])),
        "customer": draw(st.sampled_from(CUSTOMERS)),
        "now": draw(st.sampled_from(NOWS)),
    }


def recording_lookup(log: list[tuple[str, str]]) -> Any:
    def lookup(table: str, key: str) -> dict[str, str] | None:
        log.append((table, key))
        if key.endswith("9"):
            raise TimeoutError("slow database")
        return {"tier": "vip"} if key.startswith("+34") else None

    return lookup


def both(ruleset: Any, call: dict[str, Any]) -> None:
    plain_log: list[tuple[str, str]] = []
    fast_log: list[tuple[str, str]] = []
    plain = ruleset.decide(
        CallContext.create(**call, lookup=recording_lookup(plain_log)), use_index=False
    )
    fast = ruleset.decide(CallContext.create(**call, lookup=recording_lookup(fast_log)))
    assert fast == plain
    assert fast.trace == plain.trace
    assert fast_log == plain_log


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(body=rule_lists(), batch=st.lists(calls(), min_size=1, max_size=20))
def test_indexed_decisions_equal_plain_evaluation(body: str, batch: list[dict[str, Any]]) -> None:
    result = load_ruleset({"g.yaml": HEAD + body})
    assume(result.ok)
    for call in batch:
        both(result.ruleset, call)


def big_set(n: int) -> str:
    out = [HEAD]
    for i in range(n):
        out.append(
            [
                f"  - name: d{i}\n    if: dnis == '9{i:08d}'\n    then: {{queue: sales}}\n",
                f"  - name: w{i}\n    if: weekday != 'sun' and matches(caller_id, '+1{i:04d}*')\n"
                "    then: {agent_of: customer.assigned_agent}\n",
                f"  - name: t{i}\n    if: customer.tier == 't{i}' or caller_id == '+3460{i:07d}'\n"
                "    then:\n"
                f"      - name: t{i} gold\n        if: dnis == '900100200'\n"
                "        then: {queue: vip}\n"
                "        elif:\n          - if: open('support')\n            then: {queue: sales}\n"
                "        else: {agent_of: customer.assigned_agent}\n",
                f"  - name: o{i}\n    if: hour == {i % 24} and lower(digits) == '{i}'\n"
                "    then: {queue: support}\n",
            ][i % 4]
        )
    out.append("  - name: rest\n    queue: support\n")
    return "".join(out)


@settings(max_examples=300, deadline=None)
@given(
    i=st.integers(0, 420),
    dnis_hit=st.booleans(),
    caller=st.sampled_from(["range", "vip", "other"]),
    tier=st.booleans(),
    now=st.sampled_from(NOWS),
    digits=st.sampled_from(["", "3", "7"]),
)
def test_large_set_indexed_equals_plain(
    big: Any, i: int, dnis_hit: bool, caller: str, tier: bool, now: datetime, digits: str
) -> None:
    call = {
        "caller_id": {"range": f"+1{i:04d}55", "vip": f"+3460{i:07d}", "other": "+34915551234"}[
            caller
        ],
        "dnis": f"9{i:08d}" if dnis_hit else "900100200",
        "digits": digits,
        "caller_name": "",
        "customer": {"tier": f"t{i}", "assigned_agent": "1002"} if tier else None,
        "now": now,
    }
    both(big, call)


@pytest.fixture(scope="module")
def big() -> Any:
    result = load_ruleset({"big.yaml": big_set(400)})
    assert result.ok, [str(p) for p in result.errors[:3]]
    return result.ruleset


def test_the_index_skips_most_rules(big: Any) -> None:
    assert big.index is not None
    assert "indexed by caller_id, customer.tier, dnis" in describe(big.index, len(big.rules))
    assert len(big.index.always) == 100 + 1  # the open(...) rules and the catch-all
    scope = make_scope(
        CallContext.create(caller_id="+10005123", dnis="900000004", now=NOWS[0]),
        big.zone,
        big.soft_names,
    )
    cands = big.index.candidates(scope)
    assert cands is not None and len(set(cands)) == 101 + 2  # d4 and w5


def rules_of(body: str) -> Any:
    result = load_ruleset({"r.yaml": HEAD + body})
    assert result.ok, [str(p) for p in result.problems]
    return result.ruleset


@pytest.mark.parametrize(
    ("condition", "gated"),
    [
        ("dnis == '900100200'", True),
        ("weekday != 'sun' and dnis == '900100200'", True),
        ("time >= '09:00' and hour < 20 and caller_id == '1001'", True),
        ("dnis == '900100200' or matches(caller_id, '+3491*')", True),
        ("customer.tier == 'gold' and open('support')", True),
        ("open('support') and dnis == '900100200'", True),
        ("not holiday('ES') and caller_id == '1001'", True),
        # these could raise or call the database before the gated part: never skipped
        ("int(digits) > 3 and dnis == '900100200'", False),
        ("lookup('vip', caller_id) and dnis == '900100200'", False),
        ("customer.tier == 'x' and dnis == '900100200'", True),  # gated by the tier itself
        ("dnis == '900100200' or open('support')", False),
        ("not dnis == '900100200'", False),
        ("dnis != '900100200'", False),
        ("endswith(caller_id, '1234')", False),
    ],
)
def test_which_conditions_gate_a_rule(condition: str, gated: bool) -> None:
    rs = rules_of(
        f"  - name: a\n    if: {condition}\n    then: {{queue: sales}}\n"
        "  - name: b\n    queue: support\n"
    )
    assert (rs.index.gated if rs.index is not None else 0) == int(gated)


def test_an_else_branch_makes_a_rule_unskippable() -> None:
    rs = rules_of(
        "  - name: a\n    if: dnis == '900100200'\n    then: {queue: sales}\n"
        "    else: {agent_of: customer.assigned_agent}\n"
        "  - name: b\n    if: dnis == '911000000'\n    then: {queue: vip}\n"
        "    elif:\n      - if: caller_id == '1001'\n        then: {queue: sales}\n"
    )
    assert rs.index is not None and rs.index.always == (0,) and rs.index.gated == 1


def test_badly_typed_call_data_falls_back_to_plain_evaluation() -> None:
    rs = rules_of(
        "  - name: a\n    if: matches(caller_id, '+3491*')\n    then: {queue: sales}\n"
        "  - name: b\n    if: customer.tier == 'gold'\n    then: {queue: vip}\n"
    )
    odd = CallContext(caller_id=None, dnis="x", now=NOWS[0], customer={"tier": {"a": 1}})  # type: ignore[arg-type]
    fast, plain = rs.decide(odd), rs.decide(odd, use_index=False)
    assert fast == plain
    assert "error (counts as false)" in fast.trace[0]
