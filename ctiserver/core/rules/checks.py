"""Load-time checks of compiled rules: branches and rules that can never be reached."""

from __future__ import annotations

import ast
from collections.abc import Callable, Sequence

from ctiserver.core.problems import Problem
from ctiserver.core.rules.functions import (
    NUMBER_NAMES,
    literal_prefix,
    pattern_contains,
    patterns_overlap,
)
from ctiserver.core.rules.model import Branch, Rule


def branch_problems(fname: str, rule: Rule) -> list[Problem]:
    """Always-false conditions; elif/else after an always-true condition can never run."""
    problems: list[Problem] = []
    for i, br in enumerate(rule.branches):
        if br.cond is not None and br.cond.constant and not br.cond.value:
            problems.append(
                Problem(
                    fname,
                    br.line,
                    f"condition '{br.cond.source}' is always false",
                    rule.name,
                    "warning",
                )
            )
        if _always_true(br) and i + 1 < len(rule.branches):
            nxt = rule.branches[i + 1]
            problems.append(
                Problem(
                    fname,
                    nxt.line,
                    f"this branch can never be taken: the condition at line {br.line} "
                    "is always true",
                    rule.name,
                )
            )
            break
    return problems


def reachability_problems(rules: Sequence[Rule], norm: Callable[[str], str]) -> list[Problem]:
    """Rules after one that always decides; rules shadowed by an earlier number pattern.

    ``norm`` normalises a number as the compiler does (the rules' region).
    """
    problems: list[Problem] = []
    for i, rule in enumerate(rules):
        if _rule_always_decides(rule) and i + 1 < len(rules):
            nxt = rules[i + 1]
            problems.append(
                Problem(
                    nxt.file,
                    nxt.line,
                    f"unreachable: rule '{rule.name}' (line {rule.line}) always decides before it",
                    nxt.name,
                )
            )
            break
    # wildcard shadowing: an earlier single-pattern rule that always decides
    required = [
        [
            (name, inner, literal_prefix(inner))
            for name, inner in _required_patterns(r.branches[0].cond.tree, norm)
        ]
        if r.branches[0].cond is not None
        else []
        for r in rules
    ]
    for i, earlier in enumerate(rules):
        if len(earlier.branches) != 1 or earlier.branches[0].cond is None:
            continue
        pat = _simple_pattern(earlier.branches[0].cond.tree, norm)
        if pat is None or not _body_always_decides(earlier.branches[0]):
            continue
        literal = literal_prefix(pat[1])
        for j in range(i + 1, len(rules)):
            later = rules[j]
            for name, inner, lit in required[j]:
                if name != pat[0]:
                    continue
                if inner.startswith(literal) and pattern_contains(pat[1], inner):
                    problems.append(
                        Problem(
                            later.file,
                            later.line,
                            f"shadowed: every {name} matching '{inner}' also matches "
                            f"'{pat[1]}' of rule '{earlier.name}' (line {earlier.line}), "
                            "which always decides first",
                            later.name,
                        )
                    )
                    break
                if (
                    (lit.startswith(literal) or literal.startswith(lit))
                    and _is_wildcard(pat[1])
                    and _is_wildcard(inner)
                    and not pattern_contains(inner, pat[1])  # general after specific: fine
                    and patterns_overlap(pat[1], inner)
                ):
                    problems.append(
                        Problem(
                            later.file,
                            later.line,
                            f"partly shadowed: a {name} matching both '{inner}' and "
                            f"'{pat[1]}' is decided by rule '{earlier.name}' "
                            f"(line {earlier.line}) first, never by this rule",
                            later.name,
                            "warning",
                        )
                    )
                    break
    return problems


def _always_true(br: Branch) -> bool:
    return br.cond is None or (br.cond.constant and bool(br.cond.value))


def _body_always_decides(br: Branch) -> bool:
    if br.action is not None:
        return br.action.agent_of is None or br.action.decision.fallback is not None
    return any(_rule_always_decides(r) for r in br.rules)


def _rule_always_decides(rule: Rule) -> bool:
    for br in rule.branches:
        if br.cond is not None and br.cond.constant and not br.cond.value:
            continue  # never taken
        if not _body_always_decides(br):
            return False
        if _always_true(br):
            return True
    return False


def _simple_pattern(tree: ast.expr, norm: Callable[[str], str]) -> tuple[str, str] | None:
    """``matches(name, 'pat')`` or ``name == 'const'`` on a number name -> (name, pattern)."""
    if (
        isinstance(tree, ast.Call)
        and isinstance(tree.func, ast.Name)
        and tree.func.id == "matches"
        and len(tree.args) == 2
        and isinstance(tree.args[0], ast.Name)
        and tree.args[0].id in NUMBER_NAMES
        and isinstance(tree.args[1], ast.Constant)
        and isinstance(tree.args[1].value, str)
    ):
        pat = tree.args[1].value
        return tree.args[0].id, "+" + pat[2:] if pat.startswith("00") else pat
    if (
        isinstance(tree, ast.Compare)
        and len(tree.ops) == 1
        and isinstance(tree.ops[0], ast.Eq)
        and isinstance(tree.left, ast.Name)
        and tree.left.id in NUMBER_NAMES
        and isinstance(tree.comparators[0], ast.Constant)
        and isinstance(tree.comparators[0].value, str)
    ):
        value = norm(tree.comparators[0].value).replace("*", "").replace("?", "")
        return tree.left.id, value
    return None


def _is_wildcard(pattern: str) -> bool:
    return "*" in pattern or "?" in pattern


def _required_patterns(tree: ast.expr, norm: Callable[[str], str]) -> list[tuple[str, str]]:
    parts = tree.values if isinstance(tree, ast.BoolOp) and isinstance(tree.op, ast.And) else [tree]
    return [p for p in (_simple_pattern(t, norm) for t in parts) if p is not None]
