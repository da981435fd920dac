"""Skip rules whose conditions are provably false for a call, without changing anything.

At load time each rule gets a *gate* (:class:`_Gates`): atoms such that, if none
holds for the call, the rule is false without raising or side effects. At run
time :meth:`RuleIndex.candidates` looks the call's fields up in tables built from
the gates; the rules it skips get the trace lines the plain loop would have written.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ctiserver.core.rules.expr import Compiled, get_attr
from ctiserver.core.rules.functions import INT_NAMES, NUMBER_NAMES, TEXT_NAMES, literal_prefix

Field = tuple[str, str | None]  # (scope name, record key or None)
Atom = tuple[Field, str, str]  # (field, "eq" | "prefix", text)
Gate = frozenset[Atom]

RECORD_NAMES = frozenset({"customer"})
PURE_CALLS = frozenset({"open", "holiday"})
LOW_CARDINALITY = frozenset({"weekday", "time", "date"})
_NO_MATCH_TYPES = (type(None), int, float, bool)  # can never equal a text


class IndexedBranch(Protocol):
    """What the index reads of a branch (:class:`ctiserver.core.rules.model.Branch`)."""

    @property
    def cond(self) -> Compiled | None: ...

    @property
    def on_false(self) -> str: ...


class IndexedRule(Protocol):
    """What the index reads of a rule (:class:`ctiserver.core.rules.model.Rule`)."""

    @property
    def branches(self) -> Sequence[IndexedBranch]: ...


class _Gates:
    """Derives gates from condition trees (the original, un-normalised AST).

    A rule list is evaluated top to bottom, first decision wins. With 1,000 rules
    most conditions are ``dnis == '…'``, ``caller_id == '…'``, ``matches(caller_id,
    '+3491*')`` or ``customer.tier == 'gold'``: one look-up in a table keyed by the
    call's DNIS (caller, tier …) tells which of them *can* be true. A rule's
    **gate** is a set of atoms

    * ``(field, "eq", value)``   — the field equals this text,
    * ``(field, "prefix", text)`` — the field starts with this text,

    such that if no atom holds for the call, every branch of the rule evaluates to
    false **without raising and without calling anything with side effects**
    (``lookup``) — i.e. exactly what the plain loop would have done, down to the
    trace lines it appends. A rule that has no such gate (an ``else``, an
    unconditional rule, ``open('support')`` …) is always evaluated.

    Soundness of a gate, by the shape of the condition (``region`` normalisation
    is the one the compiler applies):

    * ``f == 'c'`` / ``'c' == f`` / ``f in ['a', 'b']`` for a text name ``f``
      (always a ``str`` in the scope) or ``customer.x``: true only if ``f`` is one
      of the texts; never raises.
    * ``matches(f, 'pat')`` / ``startswith(f, 'pre')`` for a text name: true only
      if ``f`` starts with the literal prefix of the pattern; never raises on text.
    * ``a or b or …``: false without raising if every part is; gate = union.
    * ``a and b and …``: if ``a₁ … aₖ₋₁`` cannot raise (simple comparisons of
      names with constants, ``open('x')``, ``holiday('ES')``) and ``aₖ`` has a
      gate, that gate: evaluation stops at or before ``aₖ`` with a false value.
      The most selective such gate is used.
    * a rule: every branch has a condition with a gate; gate = union
      (:func:`rule_gate`).
    """

    def __init__(self, normalize: Callable[[str], str]) -> None:
        self.normalize = normalize

    def field(self, node: ast.expr) -> Field | None:
        if isinstance(node, ast.Name) and node.id in TEXT_NAMES:
            return (node.id, None)
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in RECORD_NAMES
            and not node.attr.startswith("_")
        ):
            return (node.value.id, node.attr)
        return None

    def text(self, f: Field, node: ast.expr) -> str | None:
        """The text a constant compares as (number names are normalised)."""
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
            return None
        if f[1] is None and f[0] in NUMBER_NAMES:
            return self.normalize(node.value)
        return node.value

    def gate(self, node: ast.expr) -> Gate | None:
        if isinstance(node, ast.BoolOp):
            if isinstance(node.op, ast.Or):
                atoms: set[Atom] = set()
                for value in node.values:
                    g = self.gate(value)
                    if g is None:
                        return None
                    atoms |= g
                return frozenset(atoms)
            best: Gate | None = None
            for value in node.values:
                g = self.gate(value)
                if g is not None and (best is None or _rank(g) < _rank(best)):
                    best = g
                if not self.safe(value):
                    break
            return best
        if isinstance(node, ast.Compare) and len(node.ops) == 1:
            left, right = node.left, node.comparators[0]
            cmp = node.ops[0]
            if isinstance(cmp, ast.Eq):
                for a, b in ((left, right), (right, left)):
                    f = self.field(a)
                    const = self.text(f, b) if f is not None else None
                    if f is not None and const is not None:
                        return frozenset({(f, "eq", const)})
                return None
            if isinstance(cmp, ast.In) and isinstance(right, ast.List | ast.Tuple):
                f = self.field(left)
                if f is None:
                    return None
                texts = [self.text(f, e) for e in right.elts]
                if any(t is None for t in texts):
                    return None
                return frozenset((f, "eq", t) for t in texts if t is not None)
            return None
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("matches", "startswith")
            and len(node.args) == 2
            and not node.keywords
            and isinstance(node.args[0], ast.Name)
            and node.args[0].id in TEXT_NAMES
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            name, pattern = node.args[0].id, node.args[1].value
            if name in NUMBER_NAMES and pattern.startswith("00"):
                pattern = "+" + pattern[2:]  # as the compiler reads it
            prefix = literal_prefix(pattern) if node.func.id == "matches" else pattern
            return frozenset({((name, None), "prefix", prefix)})
        return None

    def safe(self, node: ast.expr) -> bool:
        """The expression cannot raise and calls nothing with side effects."""
        if not isinstance(node, ast.BoolOp):
            g = self.gate(node)
            if g is not None and all(key is None for (_n, key), _k, _t in g):
                return True  # record fields are read with get_attr: not counted as safe
        if isinstance(node, ast.BoolOp):
            return all(self.safe(v) for v in node.values)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return self.safe(node.operand)
        if isinstance(node, ast.Constant):
            return isinstance(node.value, str | int | bool | type(None))
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in PURE_CALLS
            and all(isinstance(a, ast.Constant) for a in node.args)
        ):
            return True  # open('x'), holiday('ES'): checked at load, pure in `now`
        if isinstance(node, ast.Compare) and len(node.ops) == 1:
            left, right = node.left, node.comparators[0]
            cmp = node.ops[0]
            if isinstance(right, ast.Name) and not isinstance(left, ast.Name):
                left, right = right, left
            if not isinstance(right, ast.Constant):
                return False
            value = right.value
            if isinstance(cmp, ast.Eq | ast.NotEq):
                return (
                    isinstance(left, ast.Name)
                    and left.id in TEXT_NAMES
                    and isinstance(value, str | int | type(None))
                )
            if isinstance(cmp, ast.Lt | ast.LtE | ast.Gt | ast.GtE) and isinstance(left, ast.Name):
                if left.id in TEXT_NAMES:
                    return isinstance(value, str)
                if left.id in INT_NAMES:
                    return isinstance(value, int) and not isinstance(value, bool)
        return False


def _rank(gate: Gate) -> tuple[int, int]:
    """Smaller is more selective."""
    worst = 0
    for (name, _key), kind, text in gate:
        if kind == "eq":
            score = 2 if name in LOW_CARDINALITY else 0
        else:
            score = 1 if len(text) >= 4 else 3
        worst = max(worst, score)
    return (worst, len(gate))


def rule_gate(rule: IndexedRule, gates: _Gates) -> Gate | None:
    atoms: set[Atom] = set()
    for br in rule.branches:
        if br.cond is None or br.cond.constant:
            return None
        g = gates.gate(br.cond.tree)
        if g is None:
            return None
        atoms |= g
    return frozenset(atoms)


@dataclass(frozen=True)
class _FieldTable:
    name: str
    key: str | None
    exact: Mapping[str, tuple[int, ...]]
    prefixes: Mapping[str, tuple[int, ...]]
    lengths: tuple[int, ...]  # sorted lengths of the prefixes


class _Fallback(Exception):
    pass


@dataclass(frozen=True)
class RuleIndex:
    """Candidates of one rule list and the trace lines of the rules it skips.

    The candidates (ungated rules + rules whose gate holds) are evaluated in their
    original order by the same loop as the plain evaluation; the trace lines of the
    rules skipped in between are copied from ``false_lines``.
    :meth:`RuleSet.decide <ctiserver.core.rules.model.RuleSet.decide>` with
    ``use_index=False`` runs the plain loop; the tests compare both on generated
    rule sets and calls, trace included.

    The field values are checked at run time (text names must be ``str``; record
    fields ``str``/``None``/numbers); anything else makes the call use the plain
    loop (:meth:`candidates` returns None).
    """

    always: tuple[int, ...]
    tables: tuple[_FieldTable, ...]
    false_lines: tuple[str, ...]
    starts: tuple[int, ...]  # rule i's false lines: false_lines[starts[i]:starts[i+1]]
    gated: int  # how many rules have a gate

    def candidates(self, scope: Mapping[str, Any]) -> list[int] | None:
        """Indices of the rules that may decide, in order (duplicates possible), or None."""
        cands = list(self.always)
        for t in self.tables:
            value = scope[t.name]
            if t.key is not None:
                try:
                    value = get_attr(value, t.key)
                except Exception:
                    return None
                if type(value) is not str:
                    if isinstance(value, _NO_MATCH_TYPES):
                        continue
                    return None
            elif type(value) is not str:
                return None
            hit = t.exact.get(value)
            if hit is not None:
                cands += hit
            if t.lengths:
                get = t.prefixes.get
                n = len(value)
                for length in t.lengths:
                    if length > n:
                        break
                    hit = get(value[:length])
                    if hit is not None:
                        cands += hit
        cands.sort()
        return cands


def build_index(rules: Sequence[IndexedRule], normalize: Callable[[str], str]) -> RuleIndex | None:
    """The index of one rule list, or None when no rule has a gate."""
    gates = _Gates(normalize)
    always: list[int] = []
    exact: dict[tuple[str, str | None], dict[str, set[int]]] = {}
    prefixes: dict[tuple[str, str | None], dict[str, set[int]]] = {}
    false_lines: list[str] = []
    starts: list[int] = []
    gated = 0
    for i, rule in enumerate(rules):
        starts.append(len(false_lines))
        gate = rule_gate(rule, gates)
        if gate is None:
            always.append(i)
            continue
        gated += 1
        false_lines.extend(br.on_false for br in rule.branches)
        for f, kind, text in gate:
            target = exact if kind == "eq" else prefixes
            target.setdefault(f, {}).setdefault(text, set()).add(i)
    starts.append(len(false_lines))
    if not gated:
        return None
    tables = []
    for f in sorted(set(exact) | set(prefixes), key=lambda f: (f[0], f[1] or "")):
        ex = {k: tuple(sorted(v)) for k, v in exact.get(f, {}).items()}
        pre = {k: tuple(sorted(v)) for k, v in prefixes.get(f, {}).items()}
        tables.append(_FieldTable(f[0], f[1], ex, pre, tuple(sorted({len(k) for k in pre}))))
    return RuleIndex(tuple(always), tuple(tables), tuple(false_lines), tuple(starts), gated)


def gate_fields(gate: Gate) -> set[Field]:
    return {f for f, _kind, _text in gate}


def describe(index: RuleIndex | None, total: int) -> str:
    if index is None:
        return f"{total} rules, none indexed"
    fields = ", ".join(t.name if t.key is None else f"{t.name}.{t.key}" for t in index.tables)
    return f"{total} rules, {index.gated} indexed by {fields}, {len(index.always)} always evaluated"
