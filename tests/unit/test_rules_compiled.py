"""Compiled conditions compute what simpleeval's tree walk computes, errors included.

``core/rules/expr.py`` compiles each condition once into closures specialised by the
shape of their operands (names and constants read inline, comparisons with a constant
written inline, the length guard of ``+`` / ``*`` dropped when an operand is a number),
and computes once per call the sub-expressions that recur across a rule set.
:class:`Reference` is simpleeval's plain tree walk, given the rules' operators, record
access, number normalisation and functions as ``routing_rules/README.md`` describes
them. For every expression and call the compiled condition must give the same value of
the same type, or fail with the same exception type and message (the trace shows it),
whether its sub-expressions are computed once per call or not.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import simpleeval
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ctiserver.core.numbers import normalize
from ctiserver.core.rules import CallContext, load_ruleset
from ctiserver.core.rules import loader as loader_module
from ctiserver.core.rules.expr import (
    BINOPS,
    CMPOPS,
    MAX_STRING,
    UNARYOPS,
    EvalError,
    ExprError,
    compile_expr,
    get_attr,
    get_item,
    shared_subexpressions,
)
from ctiserver.core.rules.functions import NUMBER_NAMES, RECORD_NAMES, make_scope, wildcard_regex
from ctiserver.core.rules.loader import rules_env
from ctiserver.core.rules.yamlsrc import load_yaml
from ctiserver.core.schedules import build_schedule, holiday_calendar

MADRID = ZoneInfo("Europe/Madrid")
SCHEDULES = {
    "support": build_schedule(
        "support", {"hours": {"mon-fri": "09:00-18:00"}, "holidays": "ES"}, "Europe/Madrid"
    )
}
TABLES = frozenset({"vip"})
ANSWERS = frozenset({"department"})


def text(value: Any) -> str:
    return "" if value is None else str(value)


def to_int(value: Any) -> int:
    if isinstance(value, str) and len(value) > 30:
        raise EvalError("number too long")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise EvalError(f"not a number: {value!r}") from None


class Reference(simpleeval.SimpleEval):  # type: ignore[misc]
    """simpleeval's tree walk with the rules' semantics: records read with ``get_attr`` /
    ``get_item``, lists as tuples, the guarded operators, the documented functions."""

    def __init__(self, scope: Mapping[str, Any], ctx: CallContext) -> None:
        now = scope["now"]

        def lookup(table: str, key: Any) -> Any:
            try:
                row = ctx.lookup(table, text(key))
            except Exception as exc:
                raise EvalError(f"lookup('{table}') failed: {exc}") from None
            return dict(row) if row is not None else None

        functions: dict[str, Callable[..., Any]] = {
            "matches": lambda x, p: wildcard_regex(text(p)).fullmatch(text(x)) is not None,
            "startswith": lambda x, p: text(x).startswith(text(p)),
            "endswith": lambda x, p: text(x).endswith(text(p)),
            "open": lambda name: SCHEDULES[name].is_open(now),
            "holiday": lambda c, r=None: now.date() in holiday_calendar(c, r),
            "lookup": lookup,
            "len": lambda x: 0 if x is None else len(x),
            "int": to_int,
            "str": lambda x: text(x)[:MAX_STRING],
            "lower": lambda x: text(x).lower(),
        }
        operators: dict[Any, Callable[..., Any]] = {**BINOPS, **UNARYOPS, **CMPOPS}
        super().__init__(operators=operators, functions=functions, names=dict(scope))
        self.nodes[ast.List] = self.nodes[ast.Tuple] = self._eval_seq

    def _eval_seq(self, node: ast.List | ast.Tuple) -> tuple[Any, ...]:
        return tuple(self._eval(e) for e in node.elts)

    def _eval_attribute(self, node: ast.Attribute) -> Any:
        return get_attr(self._eval(node.value), node.attr)

    def _eval_subscript(self, node: ast.Subscript) -> Any:
        return get_item(self._eval(node.value), self._eval(node.slice))

    def run(self, source: str) -> Any:
        tree = _Numbers().visit(ast.parse(source.strip(), mode="eval"))
        return self._eval(tree.body)


class _Numbers(ast.NodeTransformer):
    """The documented number rules: a text compared with ``caller_id`` / ``dnis`` is
    normalised; a pattern or prefix written ``00…`` for them means ``+…``."""

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        self.generic_visit(node)
        operands = [node.left, *node.comparators]
        if any(isinstance(o, ast.Name) and o.id in NUMBER_NAMES for o in operands):
            operands = [self.number(o) for o in operands]
            node.left, node.comparators = operands[0], operands[1:]
        return node

    def number(self, node: ast.expr) -> ast.expr:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return ast.Constant(normalize(node.value, "ES"))
        if isinstance(node, ast.List | ast.Tuple):
            return type(node)(elts=[self.number(e) for e in node.elts], ctx=ast.Load())
        return node

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        head = node.args[0] if node.args else None
        if (
            isinstance(node.func, ast.Name)
            and node.func.id in ("matches", "startswith", "endswith")
            and isinstance(head, ast.Name)
            and head.id in NUMBER_NAMES
        ):
            node.args[1:] = [
                ast.Constant("+" + a.value[2:])
                if isinstance(a, ast.Constant)
                and isinstance(a.value, str)
                and a.value.startswith("00")
                else a
                for a in node.args[1:]
            ]
        return node


def outcome(run: Callable[..., Any], *args: Any) -> tuple[Any, ...]:
    """("value", type, value) or ("error", exception type, message) of ``run(*args)``."""
    try:
        value = run(*args)
    except Exception as exc:
        return ("error", type(exc).__name__, str(exc))
    return ("value", type(value), value)


def lookup(table: str, key: str) -> Mapping[str, Any] | None:
    if key.endswith("9"):
        raise TimeoutError("slow database")
    return {"level": 3, "name": "Big"} if key.startswith("+34") else None


AT = datetime(2026, 12, 22, 11, 30, tzinfo=MADRID)  # Tuesday, support open
CONTEXTS = [
    CallContext.create(caller_id="+34915551234", dnis="900100200", now=AT, lookup=lookup),
    CallContext.create(
        caller_id="600123459",
        dnis="911000000",
        now=datetime(2026, 12, 25, 20, 5, tzinfo=MADRID),  # Christmas, evening
        caller_name="Ana",
        digits="42",
        answers={"department": "billing"},
        customer={"tier": "gold", "name": "Ana Pérez", "assigned_agent": "1002"},
        lookup=lookup,
    ),
    CallContext.create(
        caller_id="+442071234567",
        dnis="+34900100300",
        now=datetime(2026, 12, 26, 8, 0, tzinfo=MADRID),  # Saturday
        caller_name="ÁNGEL",
        digits="abc",
        customer={},  # a record without the fields the rules read
        lookup=lookup,
    ),
    CallContext.create(
        caller_id="1001",
        dnis="900100200",
        now=datetime(2026, 12, 27, 23, 59, tzinfo=MADRID),  # Sunday night
        caller_name="bob",
        digits="1" * 40,
        customer={"tier": 3, "name": None, "tags": ["a", "b"]},
        lookup=lookup,
    ),
]

EXPRESSIONS = [
    # the shapes of bench/rules_bench.py's worst case
    "endswith(caller_id, '1234') and hour >= 8",
    "lower(caller_name) == 'ana'",
    "hour * 100 + minute == 1130",
    "open('support') and day == 22",
    "len(digits) == 2",
    # names and constants, each comparison with a constant on either side
    "hour == 11",
    "hour != 11",
    "hour < 12",
    "hour <= 11",
    "hour > 10",
    "hour >= 24",
    "minute >= 30",
    "hour <= 8",
    "11 == hour",
    "12 > hour",
    "time >= '09:00' and time < '18:00'",
    "weekday in ['sat', 'sun']",
    "weekday not in ('sat', 'sun')",
    "date == '2026-12-25'",
    "1 < hour < 20",
    "0 <= minute < 30 <= hour",
    "hour is not None",
    "caller_name is None",
    "digits == '' or digits == '42'",
    # numbers are normalised
    "dnis == '900100200'",
    "'900100200' == dnis",
    "dnis in ['900100200', '911000000']",
    "caller_id != '0034915551234'",
    "matches(caller_id, '0034*')",
    "matches(dnis, '9001002?0')",
    "startswith(caller_id, '+34')",
    "endswith(dnis, '00')",
    # arithmetic: guarded and not, numbers and texts
    "hour * 60 + minute > 600",
    "(hour * 60 + minute) // 7 % 3",
    "-hour < -10",
    "not hour",
    "+minute",
    "hour + 0.5 > 11",
    "hour / 4",
    "2 ** hour > 1000",
    "hour ** 200",
    "minute % (hour - hour)",
    "caller_name * 3",
    "caller_name * hour",
    "hour * caller_name",
    "caller_name * 1000",
    "digits * 30",
    "digits * 25 + digits * 25",
    "caller_name + digits",
    "caller_name + hour",
    "hour + caller_name",
    "department + '!'",
    "department == 'billing'",
    # records: missing fields, None, odd types
    "customer.tier == 'gold'",
    "customer.tier in ['gold', 'silver']",
    "customer.missing is None",
    "customer.tier + 1 > 2",
    "customer.tier * 2",
    "customer.tier < 3",
    "customer.name",
    "lower(customer.name) == 'ana pérez'",
    "len(customer.name) > 3",
    "len(customer.tier)",
    "len(customer.tags)",
    "customer['tier'] == 'gold'",
    "customer[0]",
    "answers.department == 'billing'",
    "now.hour == hour",
    "now.tzinfo",
    "caller_name.upper",
    # functions, with errors
    "int(digits) > 3",
    "int(digits) * 2 == 84",
    "int(customer.tier) == 3",
    "int(caller_name)",
    "str(hour) + ':' + str(minute)",
    "str(customer)",
    "lower(caller_name) in ['ana', 'bob']",
    "lower(caller_name) + lower(caller_name)",
    "lower(digits) == lower(caller_name)",
    "len(caller_id) - len(dnis)",
    "holiday('ES')",
    "holiday('ES', 'MD') or weekday == 'sat'",
    "not open('support') or hour > 20",
    "lookup('vip', caller_id) is not None",
    "lookup('vip', caller_id).level > 2",
    "lookup('vip', caller_id)",
    "matches(digits, caller_name)",
    "startswith(caller_name, lower(caller_name))",
    # slices, ternaries, lists
    "caller_id[:3] == '+34'",
    "caller_id[100] is None",
    "digits[0] == '4'",
    "caller_id[1:hour:2]",
    "hour if digits else minute",
    "'day' if hour < 20 else 'night'",
    "[hour, minute, caller_name]",
    "(hour, lower(caller_name)) == (11, '')",
    "hour and minute and caller_name",
    "digits or caller_name or 'nobody'",
    # which error comes first: the left operand is evaluated first
    "int(digits) + int(caller_name)",
    "int(caller_name) - len(customer.tier) * int(digits)",
    "int(digits) == int(caller_name)",
    # a value computed once per call is one object: ``is`` and NaN could tell
    "lower(caller_name) is lower(caller_name)",
    "hour * 100 + minute is not hour * 100 + minute",
    "(hour * 1e308 * 10 - hour * 1e308 * 10) in [hour * 1e308 * 10 - hour * 1e308 * 10]",
    "hour in None",
    "caller_name not in None",
    "lower(caller_name) in None",
]


def compiled(source: str, shared: frozenset[str] = frozenset()) -> Callable[[Any], Any]:
    env = rules_env(SCHEDULES, TABLES, "Europe/Madrid", "ES", ANSWERS, shared)
    return compile_expr(source, env).fn


def check(source: str) -> None:
    """Compiled, with and without per-call memos, against the reference, on every call."""
    plain = compiled(source)
    memoised = compiled(source, shared_subexpressions([source, source], RECORD_NAMES))
    for ctx in CONTEXTS:
        scope = make_scope(ctx, MADRID, ANSWERS)
        expected = outcome(Reference(scope, ctx).run, source)
        assert outcome(plain, dict(scope)) == expected, (source, ctx)
        shared_scope = dict(scope)  # computed once, then read from the scope
        assert outcome(memoised, shared_scope) == expected, (source, ctx)
        assert outcome(memoised, shared_scope) == expected, (source, ctx)


@pytest.mark.parametrize("source", EXPRESSIONS)
def test_compiled_condition_equals_the_tree_walk(source: str) -> None:
    check(source)


@pytest.mark.parametrize("value", [None, "", "Ana", 0, 5, ("a", "b")])
@pytest.mark.parametrize(
    "source", ["lower(caller_name)", "len(caller_name)", "str(caller_name)", "len(digits) > 1"]
)
def test_functions_of_a_text_name_accept_any_value(source: str, value: Any) -> None:
    """``CallContext.create`` makes ``caller_name`` a text; read inline, these functions
    still give what they give for any value (a context built by hand)."""
    scope = make_scope(CONTEXTS[0], MADRID, ANSWERS)
    scope["caller_name"] = scope["digits"] = value
    expected = outcome(Reference(scope, CONTEXTS[0]).run, source)
    assert outcome(compiled(source), dict(scope)) == expected


def test_the_expressions_cover_errors_and_memos() -> None:
    """The list above exercises what it is meant to: errors and shared sub-expressions."""
    errors = 0
    for source in EXPRESSIONS:
        for ctx in CONTEXTS:
            scope = make_scope(ctx, MADRID, ANSWERS)
            errors += outcome(Reference(scope, ctx).run, source)[0] == "error"
    assert errors > 40
    shared = shared_subexpressions(EXPRESSIONS, RECORD_NAMES)
    assert any("lower" in key for key in shared)
    assert "\x00=hour * 100 + minute" in shared


def test_a_shared_sub_expression_is_found_by_its_text() -> None:
    texts = [
        "'Ángel' == lower(caller_name) or hour * 100 + minute > 900",  # offsets in bytes
        "lower(caller_name) == 'x' and hour*100+minute > 900",  # other spacing: not the same
        "lookup('vip', caller_id) and lookup('vip', caller_id)",  # asks the database
        "len(customer) + len(customer) > str(now) + str(now)",  # a record; now is no record
    ]
    assert shared_subexpressions(texts, RECORD_NAMES) == {
        "\x00=lower(caller_name)",
        "\x00=str(now)",
    }


# ------------------------------------------------------------ generated expressions

OPERANDS = [
    "hour",
    "minute",
    "day",
    "caller_id",
    "caller_name",
    "digits",
    "dnis",
    "time",
    "weekday",
    "department",
    "customer.tier",
    "customer.name",
    "answers.department",
    "0",
    "1",
    "3",
    "100",
    "2.5",
    "''",
    "'ana'",
    "'42'",
    "'+34915551234'",
    "'900100200'",
    "None",
    "True",
    "lower(caller_name)",
    "len(digits)",
    "int(digits)",
    "str(hour)",
    "open('support')",
    "holiday('ES')",
    "lookup('vip', caller_id)",
    "matches(caller_id, '+34*')",
    "startswith(dnis, '0034')",
    "endswith(caller_id, '4')",
    "caller_id[:3]",
    "['gold', 'silver']",
]


@st.composite
def expressions(draw: st.DrawFn, depth: int = 0) -> str:
    kinds = ["operand"] if depth >= 3 else ["operand", "bin", "cmp", "bool", "not", "call", "if"]
    kind = draw(st.sampled_from(kinds))
    sub = expressions(depth + 1)
    if kind == "operand":
        return draw(st.sampled_from(OPERANDS))
    if kind == "bin":
        op = draw(st.sampled_from(["+", "-", "*", "//", "%", "/"]))
        return f"({draw(sub)} {op} {draw(sub)})"
    if kind == "cmp":
        op = draw(st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "in", "not in", "is"]))
        return f"({draw(sub)} {op} {draw(sub)})"
    if kind == "bool":
        op = draw(st.sampled_from(["and", "or"]))
        parts = draw(st.lists(sub, min_size=2, max_size=3))
        return "(" + f" {op} ".join(parts) + ")"
    if kind == "not":
        return f"(not {draw(sub)})"
    if kind == "call":
        return f"{draw(st.sampled_from(['lower', 'len', 'int', 'str']))}({draw(sub)})"
    return f"({draw(sub)} if {draw(sub)} else {draw(sub)})"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(source=expressions())
def test_generated_conditions_equal_the_tree_walk(source: str) -> None:
    try:
        compiled(source)
    except ExprError:
        assume(False)  # refused at load time (e.g. a constant 1 // 0): nothing to run
    check(source)


# ------------------------------------------------------------ whole rule sets

HEAD = """
config:
  timezone: Europe/Madrid
  known_queues: [sales, support, vip]
  lookup_tables: [vip]
schedules:
  support:
    hours: {mon-fri: "09:00-18:00"}
    holidays: ES
rules:
"""

SHARED_RULES = (
    "".join(
        f'  - name: r{i}\n    if: "{cond}"\n    then: {{queue: sales}}\n'
        for i, cond in enumerate(
            [
                "lower(caller_name) == 'zed'",
                "int(digits) > 100",
                "lookup('vip', caller_id) is None and hour < 0",
                "hour * 100 + minute == 9999",
                "lower(caller_name) == 'nobody'",
                "int(digits) > 50",
                "str(lookup('vip', caller_id)) == 'x'",
                "str(lookup('vip', caller_id)) == 'y'",
                "hour * 100 + minute == -1 or len(digits) == 7",
                "open('support') and lower(caller_name) == 'bob'",
                "len(digits) == 40",
            ]
        )
    )
    + "  - name: rest\n    queue: support\n"
)


def decisions(text: str, monkeypatch: pytest.MonkeyPatch | None = None) -> list[tuple[Any, ...]]:
    if monkeypatch is not None:  # no sub-expression computed once per call
        monkeypatch.setattr(loader_module, "shared_subexpressions", lambda *_: frozenset())
    result = load_ruleset({"r.yaml": HEAD + text})
    assert result.ruleset is not None, [str(p) for p in result.problems]
    out = []
    for ctx in CONTEXTS:
        log: list[tuple[str, str]] = []
        call = CallContext(**{**ctx.__dict__, "lookup": logged(log)})
        d = result.ruleset.decide(call)
        out.append((d, d.trace, tuple(log)))
    return out


def logged(log: list[tuple[str, str]]) -> Callable[[str, str], Mapping[str, Any] | None]:
    def logging_lookup(table: str, key: str) -> Mapping[str, Any] | None:
        log.append((table, key))
        return lookup(table, key)

    return logging_lookup


def test_memos_change_no_decision_trace_or_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = list(loader_module._conditions(load_yaml(HEAD + SHARED_RULES)))
    # lower(caller_name), int(digits), len(digits), hour * 100, hour * 100 + minute
    assert len(shared_subexpressions(texts, RECORD_NAMES)) == 5
    with_memos = decisions(SHARED_RULES)
    without = decisions(SHARED_RULES, monkeypatch)
    assert with_memos == without
    # lookup() is never memoised: asked once per condition that reads it, as before
    assert all(len(log) == 3 for _d, _t, log in with_memos)


def test_an_error_is_not_memoised_it_happens_again() -> None:
    (_d, trace, _log), *_ = decisions(SHARED_RULES)
    # the first call has no digits: int('') fails in both rules, with the same message
    errors = [line for line in trace if "int(digits)" in line]
    assert len(errors) == 2
    assert all(line.endswith("error (counts as false): not a number: ''") for line in errors)


def test_a_branch_that_decides_nothing_skips_its_elif_and_else() -> None:
    rules = (
        "  - name: a\n    if: hour >= 0\n    then: {agent_of: customer.assigned_agent}\n"
        "    elif:\n      - if: hour >= 0\n        then: {queue: vip}\n"
        "    else: {queue: vip}\n"
        "  - name: b\n    if: hour < 0\n    then: {queue: vip}\n"
        "  - name: c\n    queue: sales\n"
    )
    (d, trace, _log), (d2, trace2, _log2), *_ = decisions(rules)
    assert (d.rule, d2.rule) == ("c", "a")  # the first call has no customer
    assert trace == (
        "r.yaml:12 [a] if hour >= 0: true",
        "    agent_of customer.assigned_agent is empty and there is no fallback: next rule",
        "r.yaml:19 [b] if hour < 0: false",
        "r.yaml:21 [c] always: taken",
        "→ queue sales (rule 'c')",
    )
    assert trace2[-1] == "→ agent 1002 (rule 'a')"
