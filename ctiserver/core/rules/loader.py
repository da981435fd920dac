"""Rule files (text + file name) -> a checked, compiled :class:`RuleSet`.

Every problem is reported with ``file:line`` and the rule's name. Errors make
the whole set unusable (the runtime keeps the previous one); warnings do not.
Files are read in the order given (the runtime sorts them by name); rules run
in file order, first decision wins.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from ctiserver.core.numbers import normalize
from ctiserver.core.rules.actions import ActionError, ActionSpec, is_action, parse_action
from ctiserver.core.rules.context import CallContext
from ctiserver.core.rules.decision import HANGUP, Decision
from ctiserver.core.rules.expr import Compiled, Env, ExprError, compile_expr
from ctiserver.core.rules.functions import (
    BASE_NAMES,
    NUMBER_NAMES,
    TEXT_NAMES,
    make_functions,
    make_scope,
    pattern_contains,
    patterns_overlap,
)
from ctiserver.core.rules.index import RuleIndex, build_index
from ctiserver.core.rules.yamlsrc import LineDict, LineList, YamlError, load_yaml
from ctiserver.core.schedules import Schedule, ScheduleError, build_schedule, get_zone

RULE_KEYS = {"name", "if", "then", "elif", "else", "description"}
CONFIG_KEYS = {
    "timezone",
    "region",
    "known_queues",
    "known_agents",
    "lookup_tables",
    "default",
    "description",
}
MAX_DEPTH = 16


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    message: str
    rule: str | None = None
    severity: str = "error"  # error | warning

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        who = f" rule '{self.rule}':" if self.rule else ""
        return f"{where}: {self.severity}:{who} {self.message}"


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

    def decide(self, ctx: CallContext, *, use_index: bool = True) -> Decision:
        """Route one call. Never raises for bad call data: errors are traced as false.

        ``use_index=False`` evaluates every condition in order (the reference
        semantics); the index only skips rules that are provably false for the
        call, so the result, trace included, is the same.
        """
        scope = make_scope(ctx, self.zone, self.soft_names)
        trace: list[str] = []
        found = _run(self.rules, self.index, scope, trace, use_index)
        if found is None:
            trace.append(f"no rule decided: default → {self.default.describe()}")
            return self.default.explained(None, tuple(trace))
        decision, rule = found
        trace.append(f"→ {decision.describe()} (rule '{rule}')")
        return decision.explained(rule, tuple(trace))


def _run(
    rules: tuple[Rule, ...],
    index: RuleIndex | None,
    scope: Mapping[str, Any],
    trace: list[str],
    use_index: bool = True,
) -> tuple[Decision, str] | None:
    """The first rule that decides, in order. With ``use_index``, only the rules the index
    cannot rule out are evaluated; the others get the trace lines they would have written.
    Without it, every condition is evaluated (the reference semantics)."""
    if not use_index:
        index = None
    order: Iterable[int] | None = None if index is None else index.candidates(scope)
    if order is None:
        order = range(len(rules))
        index = None
    append = trace.append
    pos = 0
    for i in order:
        if i < pos:
            continue  # a rule found through two atoms
        if i > pos and index is not None:
            # the rules in between are false without side effects: copy their trace
            trace.extend(index.false_lines[index.starts[pos] : index.starts[i]])
        pos = i + 1
        rule = rules[i]
        for cond, br in rule.steps:
            if cond is not None:
                try:
                    ok = cond(scope)
                except Exception as exc:
                    trace.append(f"{br.on_error}{exc}")
                    continue
                if not ok:
                    append(br.on_false)
                    continue
            append(br.on_true)
            if br.action is not None:
                decision, why = br.action.resolve(scope)
                if why:
                    trace.append(f"{br.indent}    {why}")
                if decision is not None:
                    return decision, rule.name
            else:
                found = _run(br.rules, br.index, scope, trace, use_index)
                if found is not None:
                    return found
                trace.append(br.fell_through)
            break
    if index is not None:
        trace.extend(index.false_lines[index.starts[pos] :])
    return None


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


class _Fail(Exception):
    def __init__(self, line: int | None, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def load_ruleset(
    sources: Iterable[tuple[str, str]] | Mapping[str, str], known: Known = Known()
) -> LoadResult:
    """Parse and check rule files given as ``(file name, text)`` pairs."""
    items = list(sources.items()) if isinstance(sources, Mapping) else list(sources)
    problems: list[Problem] = []
    docs: list[tuple[str, LineDict]] = []
    for fname, text in items:
        try:
            doc = load_yaml(text)
        except YamlError as exc:
            problems.append(Problem(fname, exc.line, exc.message))
            continue
        if doc is None:
            continue
        if not isinstance(doc, LineDict):
            problems.append(
                Problem(fname, 1, "a rules file is a mapping with config, schedules, rules")
            )
            continue
        for key in doc:
            if key not in ("config", "schedules", "rules"):
                problems.append(
                    Problem(
                        fname,
                        doc.line_of(key),
                        f"unknown section '{key}' (config, schedules, rules)",
                    )
                )
        docs.append((fname, doc))

    builder = _Builder(known, problems)
    for fname, doc in docs:
        if "config" in doc:
            builder.config(fname, doc["config"], doc.line_of("config"))
    for fname, doc in docs:
        if "schedules" in doc:
            builder.schedules(fname, doc["schedules"], doc.line_of("schedules"))
    builder.finish_env()
    for fname, doc in docs:
        if "rules" in doc:
            builder.rules_file(fname, doc["rules"], doc.line_of("rules"))
    ruleset = builder.build()
    if any(p.severity == "error" for p in problems):
        return LoadResult(None, problems)
    return LoadResult(ruleset, problems)


class _Builder:
    def __init__(self, known: Known, problems: list[Problem]) -> None:
        self.known = known
        self.problems = problems
        self.config_file: str | None = None
        self.zone_name = "Europe/Madrid"
        self.region = "ES"
        self.queues = set(known.queues)
        self.agents = set(known.agents)
        self.tables: set[str] = set()
        self.default_node: tuple[str, Any, int] | None = None
        self.schedule_map: dict[str, Schedule] = {}
        self.rules: list[Rule] = []
        self.default = HANGUP
        self.env: Env | None = None

    def error(self, fname: str, line: int | None, message: str, rule: str | None = None) -> None:
        self.problems.append(Problem(fname, line, message, rule))

    def warn(self, fname: str, line: int | None, message: str, rule: str | None = None) -> None:
        self.problems.append(Problem(fname, line, message, rule, "warning"))

    # ---------------------------------------------------------------- config

    def config(self, fname: str, node: Any, line: int) -> None:
        if self.config_file is not None:
            self.error(fname, line, f"config is already given in {self.config_file}")
            return
        self.config_file = fname
        if not isinstance(node, LineDict):
            self.error(fname, line, "config must be a mapping")
            return
        for key in node:
            if key not in CONFIG_KEYS:
                self.error(
                    fname, node.line_of(key), f"unknown config key '{key}' ({sorted(CONFIG_KEYS)})"
                )
        if "timezone" in node:
            try:
                get_zone(str(node["timezone"]))
                self.zone_name = str(node["timezone"])
            except ScheduleError as exc:
                self.error(fname, node.line_of("timezone"), str(exc))
        if "region" in node:
            self.region = str(node["region"]).upper()
        for key, target in (
            ("known_queues", self.queues),
            ("known_agents", self.agents),
            ("lookup_tables", self.tables),
        ):
            if key in node:
                value = node[key]
                if not isinstance(value, list):
                    self.error(fname, node.line_of(key), f"{key} must be a list")
                    continue
                target.update(str(v) for v in value)
        if "default" in node:
            self.default_node = (fname, node["default"], node.line_of("default"))

    def schedules(self, fname: str, node: Any, line: int) -> None:
        if not isinstance(node, LineDict):
            self.error(fname, line, "schedules must map names to schedules")
            return
        for name, spec in node.items():
            sline = node.line_of(name)
            if name in self.schedule_map:
                self.error(fname, sline, f"schedule '{name}' is defined twice")
                continue
            if not isinstance(spec, Mapping):
                self.error(
                    fname, sline, f"schedule '{name}' must be a mapping (timezone, hours, …)"
                )
                continue
            try:
                self.schedule_map[str(name)] = build_schedule(str(name), spec, self.zone_name)
            except ScheduleError as exc:
                self.error(fname, sline, f"schedule '{name}': {exc}")

    def finish_env(self) -> None:
        soft = self.known.answers - BASE_NAMES
        functions = make_functions(self.schedule_map, frozenset(self.tables), self.zone_name)
        soft = frozenset(n for n in soft if n not in functions and n.isidentifier())
        region = self.region
        self.env = Env(
            names=BASE_NAMES,
            functions=functions,
            soft_names=soft,
            number_names=NUMBER_NAMES,
            text_names=TEXT_NAMES,
            normalize=lambda s: normalize(s, region),
        )
        if self.default_node is not None:
            fname, node, line = self.default_node
            spec = self.action(fname, node, line, None)
            if spec is not None:
                self.default = spec.decision

    # ---------------------------------------------------------------- rules

    def rules_file(self, fname: str, node: Any, line: int) -> None:
        if not isinstance(node, LineList):
            self.error(fname, line, "rules must be a list of rules (each starting with '- name:')")
            return
        self.rules.extend(self.rule_list(fname, node, 0, ""))

    def rule_list(self, fname: str, node: LineList, depth: int, parent: str) -> list[Rule]:
        out: list[Rule] = []
        for index, item in enumerate(node):
            rule = self.rule(fname, item, node.line_of(index), depth, parent, index)
            if rule is not None:
                out.append(rule)
        self.check_reachability(fname, out)
        return out

    def rule(
        self, fname: str, node: Any, line: int, depth: int, parent: str, index: int
    ) -> Rule | None:
        if not isinstance(node, LineDict):
            self.error(fname, line, "a rule must be a mapping with name and if/then or an action")
            return None
        line = node.line
        name = str(node.get("name") or f"{parent}#{index + 1}")
        if depth > MAX_DEPTH:
            self.error(fname, line, f"rules nested deeper than {MAX_DEPTH} levels", name)
            return None
        indent = "  " * depth
        branches: list[Branch] = []
        conditional = "if" in node
        if conditional:
            for key in node:
                if key not in RULE_KEYS:
                    self.error(
                        fname,
                        node.line_of(key),
                        f"unknown key '{key}' in a rule ({sorted(RULE_KEYS)})",
                        name,
                    )
            if "then" not in node:
                self.error(fname, line, "'if' without 'then'", name)
                return None
            br = self.branch(
                fname,
                name,
                "if",
                node["if"],
                node.line_of("if"),
                node["then"],
                node.line_of("then"),
                depth,
                indent,
            )
            if br is None:
                return None
            branches.append(br)
            elifs = node.get("elif", LineList())
            if not isinstance(elifs, LineList):
                self.error(
                    fname, node.line_of("elif"), "elif must be a list of {if: …, then: …}", name
                )
                return None
            for i, item in enumerate(elifs):
                iline = elifs.line_of(i)
                if not isinstance(item, LineDict) or set(item) != {"if", "then"}:
                    self.error(
                        fname, iline, "each elif is a mapping with exactly 'if' and 'then'", name
                    )
                    return None
                br = self.branch(
                    fname,
                    name,
                    "elif",
                    item["if"],
                    item.line_of("if"),
                    item["then"],
                    item.line_of("then"),
                    depth,
                    indent,
                )
                if br is None:
                    return None
                branches.append(br)
            if "else" in node:
                br = self.branch(
                    fname,
                    name,
                    "else",
                    None,
                    node.line_of("else"),
                    node["else"],
                    node.line_of("else"),
                    depth,
                    indent,
                )
                if br is None:
                    return None
                branches.append(br)
        else:
            if "then" in node or "elif" in node or "else" in node:
                self.error(fname, line, "then/elif/else need an 'if' first", name)
                return None
            body = {k: v for k, v in node.items() if k not in ("name", "description")}
            body_node = LineDict(body)
            body_node.line = line
            body_node.key_lines = {k: node.line_of(k) for k in body}
            br = self.branch(fname, name, "always", None, line, body_node, line, depth, indent)
            if br is None:
                return None
            branches.append(br)
        rule = Rule(name, fname, line, tuple(branches))
        self.check_branches(fname, rule)
        return rule

    def branch(
        self,
        fname: str,
        rule: str,
        kind: str,
        cond_src: Any,
        cond_line: int,
        body: Any,
        body_line: int,
        depth: int,
        indent: str,
    ) -> Branch | None:
        assert self.env is not None
        cond: Compiled | None = None
        if kind in ("if", "elif"):
            if isinstance(cond_src, bool):
                cond_src = str(cond_src)
            try:
                cond = compile_expr(cond_src, self.env)
            except ExprError as exc:
                col = f" (column {exc.col})" if exc.col and exc.col > 0 else ""
                self.error(fname, cond_line, f"{kind}: {exc.message}{col}", rule)
                return None
        loc = f"{indent}{fname}:{cond_line} [{rule}]"
        head = f"{loc} {kind} {cond.source}" if cond is not None else f"{loc} {kind}"
        action: ActionSpec | None = None
        rules: tuple[Rule, ...] = ()
        if isinstance(body, LineList):
            rules = tuple(self.rule_list(fname, body, depth + 1, rule))
            if not rules and not any(p.severity == "error" for p in self.problems):
                self.warn(fname, body_line, "empty list of rules", rule)
        elif is_action(body):
            action = self.action(fname, body, body_line, rule)
            if action is None:
                return None
        else:
            self.error(
                fname,
                body_line,
                f"{'then' if kind != 'always' else 'the rule'} needs an action "
                "(queue, ivr, agent, agent_of, extension, voicemail, message, callback, hangup) "
                "or a list of nested rules",
                rule,
            )
            return None
        true_word = "taken" if cond is None else "true"
        return Branch(
            cond,
            cond_line,
            action,
            rules,
            on_true=f"{head}: {true_word}",
            on_false=f"{head}: false",
            on_error=f"{head}: error (counts as false): ",
            fell_through=f"{loc} no nested rule decided: next rule",
            indent=indent,
        )

    def action(self, fname: str, node: Any, line: int, rule: str | None) -> ActionSpec | None:
        try:
            spec = parse_action(node, self.env, line=line)
        except ActionError as exc:
            self.error(fname, exc.line, exc.message, rule)
            return None
        for qname, qline in spec.refs.queues:
            if self.queues and qname not in self.queues:
                self.error(
                    fname,
                    qline,
                    f"unknown queue '{qname}' (known: {', '.join(sorted(self.queues))})",
                    rule,
                )
        for aname, aline in spec.refs.agents:
            if self.agents and aname not in self.agents:
                self.error(
                    fname,
                    aline,
                    f"unknown agent '{aname}' (known: {', '.join(sorted(self.agents))})",
                    rule,
                )
        flows = self.known.flows
        for flow, fline in spec.refs.flows:
            if flows is not None and flow not in flows:
                self.error(
                    fname,
                    fline,
                    f"unknown IVR flow '{flow}' (known: {', '.join(sorted(flows)) or 'none'})",
                    rule,
                )
        return spec

    # ---------------------------------------------------------------- checks

    def check_branches(self, fname: str, rule: Rule) -> None:
        """elif/else after an always-true condition can never run."""
        for i, br in enumerate(rule.branches):
            if br.cond is not None and br.cond.constant and not br.cond.value:
                self.warn(
                    fname, br.line, f"condition '{br.cond.source}' is always false", rule.name
                )
            if _always_true(br) and i + 1 < len(rule.branches):
                nxt = rule.branches[i + 1]
                self.error(
                    fname,
                    nxt.line,
                    f"this branch can never be taken: the condition at line {br.line} "
                    "is always true",
                    rule.name,
                )
                break

    def check_reachability(self, fname: str, rules: list[Rule]) -> None:
        for i, rule in enumerate(rules):
            if _rule_always_decides(rule) and i + 1 < len(rules):
                nxt = rules[i + 1]
                self.error(
                    nxt.file,
                    nxt.line,
                    f"unreachable: rule '{rule.name}' (line {rule.line}) always decides before it",
                    nxt.name,
                )
                break
        # wildcard shadowing: an earlier single-pattern rule that always decides
        required = [
            [
                (name, inner, _literal_prefix(inner))
                for name, inner in _required_patterns(r.branches[0].cond.tree, self.region)
            ]
            if r.branches[0].cond is not None
            else []
            for r in rules
        ]
        for i, earlier in enumerate(rules):
            if len(earlier.branches) != 1 or earlier.branches[0].cond is None:
                continue
            pat = _simple_pattern(earlier.branches[0].cond.tree, self.region)
            if pat is None or not _body_always_decides(earlier.branches[0]):
                continue
            literal = _literal_prefix(pat[1])
            for j in range(i + 1, len(rules)):
                later = rules[j]
                for name, inner, lit in required[j]:
                    if name != pat[0]:
                        continue
                    if inner.startswith(literal) and pattern_contains(pat[1], inner):
                        self.error(
                            later.file,
                            later.line,
                            f"shadowed: every {name} matching '{inner}' also matches "
                            f"'{pat[1]}' of rule '{earlier.name}' (line {earlier.line}), "
                            "which always decides first",
                            later.name,
                        )
                        break
                    if (
                        (lit.startswith(literal) or literal.startswith(lit))
                        and _is_wildcard(pat[1])
                        and _is_wildcard(inner)
                        and not pattern_contains(inner, pat[1])  # general after specific: fine
                        and patterns_overlap(pat[1], inner)
                    ):
                        self.warn(
                            later.file,
                            later.line,
                            f"partly shadowed: a {name} matching both '{inner}' and "
                            f"'{pat[1]}' is decided by rule '{earlier.name}' "
                            f"(line {earlier.line}) first, never by this rule",
                            later.name,
                        )
                        break

    def build(self) -> RuleSet:
        zone = ZoneInfo(self.zone_name)
        region = self.region

        def norm(text: str) -> str:
            return _normalize(text, region)

        def index_nested(rules: Iterable[Rule]) -> None:
            for rule in rules:
                for br in rule.branches:
                    if br.rules:
                        object.__setattr__(br, "index", build_index(br.rules, norm))
                        index_nested(br.rules)

        index_nested(self.rules)
        return RuleSet(
            tuple(self.rules),
            dict(self.schedule_map),
            zone,
            self.region,
            self.default,
            self.env.soft_names if self.env else frozenset(),
            frozenset(self.tables),
            frozenset(self.queues),
            frozenset(self.agents),
            build_index(self.rules, norm),
        )


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


@lru_cache(maxsize=4096)
def _normalize(text: str, region: str) -> str:
    return normalize(text, region)


def _simple_pattern(tree: ast.expr, region: str) -> tuple[str, str] | None:
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
        value = _normalize(tree.comparators[0].value, region).replace("*", "").replace("?", "")
        return tree.left.id, value
    return None


def _is_wildcard(pattern: str) -> bool:
    return "*" in pattern or "?" in pattern


def _literal_prefix(pattern: str) -> str:
    for i, ch in enumerate(pattern):
        if ch in "*?":
            return pattern[:i]
    return pattern


def _required_patterns(tree: ast.expr, region: str) -> list[tuple[str, str]]:
    parts = tree.values if isinstance(tree, ast.BoolOp) and isinstance(tree.op, ast.And) else [tree]
    return [p for p in (_simple_pattern(t, region) for t in parts) if p is not None]
