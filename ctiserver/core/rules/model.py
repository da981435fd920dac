"""The compiled rules: a :class:`RuleSet` of :class:`Rule` s and how it routes a call.

Built by :func:`ctiserver.core.rules.loader.load_ruleset`; rules run in file
order, first decision wins.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any
from zoneinfo import ZoneInfo

from ctiserver.core.problems import Problem
from ctiserver.core.rules.actions import ActionSpec
from ctiserver.core.rules.context import CallContext
from ctiserver.core.rules.decision import Decision
from ctiserver.core.rules.expr import Compiled
from ctiserver.core.rules.functions import make_scope
from ctiserver.core.rules.index import RuleIndex
from ctiserver.core.schedules import Schedule


@dataclass(frozen=True)
class Known:
    """Names that exist outside the rule files; empty = not checked (except flows)."""

    queues: frozenset[str] = frozenset()
    agents: frozenset[str] = frozenset()
    flows: frozenset[str] | None = None  # None: IVR flows not checked
    answers: frozenset[str] = frozenset()  # variables the IVR flows set


@dataclass(frozen=True)
class Branch:
    cond: Compiled | None  # None: else / unconditional
    line: int
    action: ActionSpec | None
    rules: tuple[Rule, ...]
    on_true: str  # precomputed trace lines
    on_false: str
    on_error: str
    fell_through: str
    indent: str
    # index of ``rules`` (set by the builder once the set is complete)
    index: RuleIndex | None = field(default=None, compare=False, repr=False)
    # the branches of ``rules`` in one sequence, for the hot loop
    flat: Flat = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "flat", Flat.of(self.rules))


@dataclass(frozen=True)
class Rule:
    name: str
    file: str
    line: int
    branches: tuple[Branch, ...]
    # (condition evaluator or None, branch) pairs, for the hot loop
    steps: tuple[tuple[Any, Branch], ...] = ()

    def __post_init__(self) -> None:
        steps = tuple((b.cond.fn if b.cond is not None else None, b) for b in self.branches)
        object.__setattr__(self, "steps", steps)


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]
    schedules: Mapping[str, Schedule]
    zone: ZoneInfo
    region: str
    default: Decision
    soft_names: frozenset[str]
    lookup_tables: frozenset[str]
    queues: frozenset[str]
    agents: frozenset[str]
    index: RuleIndex | None = field(default=None, compare=False, repr=False)
    flat: Flat = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "flat", Flat.of(self.rules))

    def decide(self, ctx: CallContext, *, use_index: bool = True) -> Decision:
        """Route one call. Never raises for bad call data: errors are traced as false.

        ``use_index=False`` evaluates every condition in order (the reference
        semantics); the index only skips rules that are provably false for the
        call, so the result, trace included, is the same.
        """
        scope = make_scope(ctx, self.zone, self.soft_names)
        trace: list[str] = []
        found = _run(self.rules, self.flat, self.index, scope, trace, use_index)
        if found is None:
            trace.append(f"no rule decided: default → {self.default.describe()}")
            return self.default.explained(None, tuple(trace))
        decision, rule = found
        trace.append(f"→ {decision.describe()} (rule '{rule}')")
        return decision.explained(rule, tuple(trace))


def _taken(scope: Mapping[str, Any]) -> bool:
    """The condition of an ``else`` or unconditional branch."""
    return True


@dataclass(frozen=True, slots=True)
class Flat:
    """The branches of a rule list in one sequence, for :func:`_run_all`.

    Branch ``i`` is ``branches[i]`` of rule ``rules[i]``; ``rest[i]`` branches of the
    same rule follow it; ``false_lines[i]`` is its trace line when its condition is
    false. ``steps`` pairs each position with the evaluator of its condition.
    """

    steps: tuple[tuple[int, Any], ...]
    branches: tuple[Branch, ...]
    rules: tuple[Rule, ...]
    rest: tuple[int, ...]
    false_lines: tuple[str, ...]

    @classmethod
    def of(cls, rules: Sequence[Rule]) -> Flat:
        rows = [
            (cond if cond is not None else _taken, br, rule, len(rule.steps) - j - 1)
            for rule in rules
            for j, (cond, br) in enumerate(rule.steps)
        ]
        return cls(
            tuple((i, row[0]) for i, row in enumerate(rows)),
            tuple(row[1] for row in rows),
            tuple(row[2] for row in rows),
            tuple(row[3] for row in rows),
            tuple(row[1].on_false for row in rows),
        )


def _run(
    rules: tuple[Rule, ...],
    flat: Flat,
    index: RuleIndex | None,
    scope: Mapping[str, Any],
    trace: list[str],
    use_index: bool = True,
) -> tuple[Decision, str] | None:
    """The first rule that decides, in order. With ``use_index``, only the rules the index
    cannot rule out are evaluated; the others get the trace lines they would have written.
    Without it, every condition is evaluated (the reference semantics, :func:`_run_all`)."""
    order: list[int] | None = None
    if use_index and index is not None:
        order = index.candidates(scope)
    if order is None:
        return _run_all(flat, scope, trace, use_index)
    assert index is not None
    append = trace.append
    pos = 0
    for i in order:
        if i < pos:
            continue  # a rule found through two atoms
        if i > pos:
            # the rules in between are false without side effects: copy their trace
            trace.extend(index.false_lines[index.starts[pos] : index.starts[i]])
        pos = i + 1
        rule = rules[i]
        for cond, br in rule.steps:
            if cond is not None:
                try:
                    ok = cond(scope)
                except Exception as exc:
                    append(f"{br.on_error}{exc}")
                    continue
                if not ok:
                    append(br.on_false)
                    continue
            found = _take(br, rule, scope, trace, use_index)
            if found is not None:
                return found
            break
    trace.extend(index.false_lines[index.starts[pos] :])
    return None


def _run_all(
    flat: Flat, scope: Mapping[str, Any], trace: list[str], use_index: bool
) -> tuple[Decision, str] | None:
    """Every condition in order, until a rule decides: one loop over the branches of all
    the rules (the hot path when no rule can be skipped). The trace lines of a run of
    false conditions are copied in one slice when something else happens, or at the end."""
    false_lines = flat.false_lines
    start = 0  # false_lines[start:i]: the false conditions not traced yet
    steps = iter(flat.steps)
    for i, cond in steps:
        try:
            ok = cond(scope)
        except Exception as exc:
            trace.extend(false_lines[start:i])
            trace.append(f"{flat.branches[i].on_error}{exc}")
            start = i + 1
            continue
        if not ok:
            continue
        trace.extend(false_lines[start:i])
        found = _take(flat.branches[i], flat.rules[i], scope, trace, use_index)
        if found is not None:
            return found
        rest = flat.rest[i]  # taken without deciding: the rule's later branches are not tried
        if rest:
            next(islice(steps, rest, rest), None)
        start = i + 1 + rest
    trace.extend(false_lines[start:])
    return None


def _take(
    br: Branch, rule: Rule, scope: Mapping[str, Any], trace: list[str], use_index: bool
) -> tuple[Decision, str] | None:
    """A branch whose condition held: its action, or its nested rules."""
    trace.append(br.on_true)
    if br.action is not None:
        decision, why = br.action.resolve(scope)
        if why:
            trace.append(f"{br.indent}    {why}")
        if decision is not None:
            return decision, rule.name
        return None
    found = _run(br.rules, br.flat, br.index, scope, trace, use_index)
    if found is None:
        trace.append(br.fell_through)
    return found


@dataclass
class LoadResult:
    ruleset: RuleSet | None
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.ruleset is not None

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]
