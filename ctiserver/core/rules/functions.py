"""The names and functions rule conditions can use, and wildcard number patterns.

The supervisor's reference for both is ``routing_rules/README.md`` (Conditions).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from functools import cache, lru_cache
from typing import Any

from ctiserver.core.rules.context import CallContext
from ctiserver.core.rules.expr import (
    MAX_STRING,
    MISSING,
    EvalError,
    Evaluator,
    ExprError,
    Function,
    per_call,
)
from ctiserver.core.schedules import WEEKDAYS, Schedule, ScheduleError, holiday_calendar

BASE_NAMES = frozenset(
    {
        "caller_id",
        "caller_name",
        "dnis",
        "digits",
        "answers",
        "customer",
        "now",
        "time",
        "date",
        "weekday",
        "hour",
        "minute",
        "day",
        "month",
        "year",
    }
)
NUMBER_NAMES = frozenset({"caller_id", "dnis"})
TEXT_NAMES = frozenset({"caller_id", "dnis", "caller_name", "digits", "time", "date", "weekday"})
INT_NAMES = frozenset({"hour", "minute", "day", "month", "year"})  # always an int (make_scope)
RECORD_NAMES = frozenset({"customer", "answers"})  # mappings the adapter gives
CTX_KEY = "\x00ctx"  # not a valid identifier: unreachable from expressions


# ------------------------------------------------------------------ wildcards


def literal_prefix(pattern: str) -> str:
    """The part of a pattern before its first wildcard."""
    for i, ch in enumerate(pattern):
        if ch in "*?":
            return pattern[:i]
    return pattern


def wildcard_regex(pattern: str) -> re.Pattern[str]:
    """``*`` = any run of characters, ``?`` = exactly one digit, the rest literal."""
    if len(pattern) > 64:
        raise ExprError(f"pattern too long: {pattern!r}")
    out = []
    for ch in pattern:
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(r"\d")
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out), re.DOTALL)


_regex_cache: Callable[[str], re.Pattern[str]] = lru_cache(maxsize=256)(wildcard_regex)


def pattern_contains(outer: str, inner: str) -> bool:
    """True if every number matching ``inner`` also matches ``outer`` (sound, not complete)."""

    @cache
    def go(i: int, j: int) -> bool:
        if i == len(outer):
            return j == len(inner)
        a = outer[i]
        if a == "*":
            # '*' absorbs zero or more of inner's tokens
            return go(i + 1, j) or (j < len(inner) and go(i, j + 1))
        if j == len(inner):
            return False
        b = inner[j]
        if b == "*":
            return False
        if a == "?":
            return (b == "?" or b.isdigit()) and go(i + 1, j + 1)
        return a == b and go(i + 1, j + 1)

    return go(0, 0)


def patterns_overlap(a: str, b: str) -> bool:
    """True if some number matches both wildcard patterns."""

    def fits(x: str, y: str) -> bool:
        return x == y or (x == "?" and (y == "?" or y in _DIGITS)) or (y == "?" and x in _DIGITS)

    @cache
    def go(i: int, j: int) -> bool:
        if i == len(a) and j == len(b):
            return True
        if i < len(a) and a[i] == "*" and (go(i + 1, j) or (j < len(b) and go(i, j + 1))):
            return True
        if j < len(b) and b[j] == "*" and (go(i, j + 1) or (i < len(a) and go(i + 1, j))):
            return True
        return (
            i < len(a)
            and j < len(b)
            and "*" not in (a[i], b[j])
            and fits(a[i], b[j])
            and go(i + 1, j + 1)
        )

    return go(0, 0)


_DIGITS = frozenset("0123456789")


def _text(value: Any) -> str:
    return "" if value is None else str(value)


# ------------------------------------------------------------------ functions


def _const_str(consts: Sequence[Any], index: int, what: str) -> str | None:
    value = consts[index] if index < len(consts) else MISSING
    if value is MISSING:
        return None
    if not isinstance(value, str):
        raise ExprError(f"{what} must be text, got {value!r}")
    return value


def _matches(args: Sequence[Evaluator], consts: Sequence[Any]) -> Evaluator:
    subject, pattern_fn = args
    pattern = _const_str(consts, 1, "the pattern")
    if pattern is not None:
        rx = wildcard_regex(pattern)
        return lambda s: rx.fullmatch(_text(subject(s))) is not None
    return lambda s: _regex_cache(_text(pattern_fn(s))).fullmatch(_text(subject(s))) is not None


def _matches_name(key: str, consts: Sequence[Any]) -> Evaluator | None:
    pattern = _const_str(consts, 1, "the pattern")
    if pattern is None:
        return None
    fullmatch = wildcard_regex(pattern).fullmatch
    return lambda s: fullmatch(s[key]) is not None


def _startswith_name(key: str, consts: Sequence[Any]) -> Evaluator | None:
    prefix = _const_str(consts, 1, "the prefix")
    return None if prefix is None else (lambda s: s[key].startswith(prefix))


def _endswith_name(key: str, consts: Sequence[Any]) -> Evaluator | None:
    suffix = _const_str(consts, 1, "the suffix")
    return None if suffix is None else (lambda s: s[key].endswith(suffix))


def _startswith(args: Sequence[Evaluator], consts: Sequence[Any]) -> Evaluator:
    subject, prefix = args
    return lambda s: _text(subject(s)).startswith(_text(prefix(s)))


def _endswith(args: Sequence[Evaluator], consts: Sequence[Any]) -> Evaluator:
    subject, suffix = args
    return lambda s: _text(subject(s)).endswith(_text(suffix(s)))


def _len(args: Sequence[Evaluator], consts: Sequence[Any]) -> Evaluator:
    (arg,) = args

    def length(s: Mapping[str, Any]) -> int:
        value = arg(s)
        return 0 if value is None else len(value)

    return length


# len / str / lower of a name, read inline: the same result as the generic builders
# for any value (the name need not hold a str), one closure call fewer


def _len_name(key: str, consts: Sequence[Any]) -> Evaluator:
    def length(s: Mapping[str, Any]) -> int:
        value = s[key]
        return 0 if value is None else len(value)

    return length


def _str_name(key: str, consts: Sequence[Any]) -> Evaluator:
    return lambda s: _text(s[key])[:MAX_STRING]


def _lower_name(key: str, consts: Sequence[Any]) -> Evaluator:
    def lower(s: Mapping[str, Any]) -> str:
        value = s[key]
        return value.lower() if type(value) is str else _text(value).lower()

    return lower


def _int(args: Sequence[Evaluator], consts: Sequence[Any]) -> Evaluator:
    (arg,) = args

    def to_int(s: Mapping[str, Any]) -> int:
        value = arg(s)
        if isinstance(value, str) and len(value) > 30:
            raise EvalError("number too long")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise EvalError(f"not a number: {value!r}") from None

    return to_int


def _str(args: Sequence[Evaluator], consts: Sequence[Any]) -> Evaluator:
    (arg,) = args
    return lambda s: _text(arg(s))[:MAX_STRING]


def _lower(args: Sequence[Evaluator], consts: Sequence[Any]) -> Evaluator:
    (arg,) = args
    return lambda s: _text(arg(s)).lower()


def make_functions(
    schedules: Mapping[str, Schedule],
    lookup_tables: frozenset[str],
    zone_name: str,
) -> dict[str, Function]:
    """The function table of one rule set (schedules and tables are fixed at load)."""
    # one evaluator per schedule / calendar, shared by every rule that calls it: fewer
    # objects for a decision to walk through than one per rule
    evaluators: dict[str, Evaluator] = {}

    def shared(key: str, compute: Evaluator) -> Evaluator:
        if key not in evaluators:
            evaluators[key] = per_call(key, compute)
        return evaluators[key]

    def build_open(args: Sequence[Evaluator], consts: Sequence[Any]) -> Evaluator:
        name = _const_str(consts, 0, "the schedule name")
        if name is None:
            raise ExprError("the schedule name must be written literally, e.g. open('support')")
        schedule = schedules.get(name)
        if schedule is None:
            known = ", ".join(sorted(schedules)) or "none defined"
            raise ExprError(f"unknown schedule '{name}' (known: {known})")
        return shared(f"\x00open:{name}", lambda s: schedule.is_open(s["now"]))

    def build_holiday(args: Sequence[Evaluator], consts: Sequence[Any]) -> Evaluator:
        country = _const_str(consts, 0, "the country")
        subdiv = _const_str(consts, 1, "the region") if len(args) > 1 else None
        if country is None or (len(args) > 1 and subdiv is None):
            raise ExprError("write the country (and region) literally, e.g. holiday('ES', 'MD')")
        try:
            calendar = holiday_calendar(country, subdiv)
        except ScheduleError as exc:
            raise ExprError(str(exc)) from None
        return shared(f"\x00holiday:{country}:{subdiv}", lambda s: s["now"].date() in calendar)

    def build_lookup(args: Sequence[Evaluator], consts: Sequence[Any]) -> Evaluator:
        table = _const_str(consts, 0, "the table name")
        if table is None:
            raise ExprError(
                "the table name must be written literally, e.g. lookup('vip', caller_id)"
            )
        if table not in lookup_tables:
            known = ", ".join(sorted(lookup_tables)) or "none: list them in config.lookup_tables"
            raise ExprError(f"table '{table}' is not allowed (allowed: {known})")
        key = args[1]

        def lookup(s: Mapping[str, Any]) -> Any:
            ctx: CallContext = s[CTX_KEY]
            try:
                row = ctx.lookup(table, _text(key(s)))
            except Exception as exc:  # the adapter's timeout or DB error
                raise EvalError(f"lookup('{table}') failed: {exc}") from None
            return dict(row) if row is not None else None

        return lookup

    fns = [
        Function(
            "matches",
            2,
            2,
            _matches,
            "matches(number, '+3491*'): * anything, ? one digit",
            _matches_name,
            returns=bool,
        ),
        Function(
            "startswith", 2, 2, _startswith, "startswith(text, prefix)", _startswith_name, bool
        ),
        Function("endswith", 2, 2, _endswith, "endswith(text, suffix)", _endswith_name, bool),
        Function("open", 1, 1, build_open, "open('schedule'): the schedule is open now"),
        Function("holiday", 1, 2, build_holiday, "holiday('ES'[, 'MD']): today is a holiday"),
        Function("lookup", 2, 2, build_lookup, "lookup('table', key): a record or None"),
        Function("len", 1, 1, _len, "len(text)", _len_name, returns=int),
        Function("int", 1, 1, _int, "int(text)", returns=int),
        Function("str", 1, 1, _str, "str(value)", _str_name, returns=str),
        Function("lower", 1, 1, _lower, "lower(text)", _lower_name, returns=str),
    ]
    return {f.name: f for f in fns}


def make_scope(ctx: CallContext, zone: Any, soft_names: frozenset[str]) -> dict[str, Any]:
    """The names one call exposes to the conditions.

    ``caller_id``, ``dnis``  E.164 numbers (``+34915551234``); internal extensions as dialled
    ``caller_name``         caller ID name, text
    ``digits``              digits the caller keyed in (text, may be empty)
    ``answers``             all IVR answers, a record: ``answers.department``
    ``<answer name>``       every variable an IVR flow sets, as text ('' if not answered)
    ``customer``            the CRM record of the caller or None: ``customer.tier``
    ``now``                 the instant (``now.hour`` …) in the rules' time zone
    ``time``                local time as text ``'21:30'``; compare with ``time >= '09:00'``
    ``date``                local date as text ``'2026-12-24'``
    ``weekday``             ``'mon'`` … ``'sun'``
    ``hour``, ``minute``, ``day``, ``month``, ``year``  numbers
    """
    local: datetime = ctx.now.astimezone(zone)
    scope: dict[str, Any] = {
        "caller_id": ctx.caller_id,
        "caller_name": ctx.caller_name,
        "dnis": ctx.dnis,
        "digits": ctx.digits,
        "answers": ctx.answers,
        "customer": ctx.customer,
        "now": local,
        "time": f"{local.hour:02d}:{local.minute:02d}",
        "date": local.date().isoformat(),
        "weekday": WEEKDAYS[local.weekday()],
        "hour": local.hour,
        "minute": local.minute,
        "day": local.day,
        "month": local.month,
        "year": local.year,
        CTX_KEY: ctx,
    }
    if soft_names:
        answers = ctx.answers
        for name in soft_names:
            scope[name] = answers.get(name, "")
    return scope
