"""Rule files (text + file name) -> a checked, compiled :class:`RuleSet`.

Every problem is reported with ``file:line`` and the rule's name. Errors make
the whole set unusable (the runtime keeps the previous one); warnings do not.
Files are read in the order given (the runtime sorts them by name); rules run
in file order, first decision wins.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from ctiserver.core.numbers import normalize
from ctiserver.core.problems import Problem
from ctiserver.core.rules.actions import ActionError, ActionSpec, is_action, parse_action
from ctiserver.core.rules.checks import branch_problems, reachability_problems
from ctiserver.core.rules.decision import HANGUP
from ctiserver.core.rules.expr import (
    Compiled,
    Env,
    ExprError,
    compile_expr,
    shared_subexpressions,
)
from ctiserver.core.rules.functions import (
    BASE_NAMES,
    INT_NAMES,
    NUMBER_NAMES,
    RECORD_NAMES,
    TEXT_NAMES,
    make_functions,
)
from ctiserver.core.rules.index import build_index
from ctiserver.core.rules.model import Branch, Known, LoadResult, Rule, RuleSet
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
NOTHING_KNOWN = Known()


def load_ruleset(
    sources: Iterable[tuple[str, str]] | Mapping[str, str], known: Known = NOTHING_KNOWN
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
    builder.finish_env(
        shared_subexpressions(
            (text for _fname, doc in docs if "rules" in doc for text in _conditions(doc["rules"])),
            RECORD_NAMES,
        )
    )
    for fname, doc in docs:
        if "rules" in doc:
            builder.rules_file(fname, doc["rules"], doc.line_of("rules"))
    ruleset = builder.build()
    if any(p.severity == "error" for p in problems):
        return LoadResult(None, problems)
    return LoadResult(ruleset, problems)


def rules_env(
    schedules: Mapping[str, Schedule],
    tables: frozenset[str],
    zone_name: str,
    region: str,
    answers: frozenset[str] = frozenset(),
    shared: frozenset[str] = frozenset(),
) -> Env:
    """What the conditions of a rule set may use (``answers``: the IVR variables;
    ``shared``: the sub-expressions to compute once per call)."""
    functions = make_functions(schedules, tables, zone_name)
    soft = frozenset(n for n in answers - BASE_NAMES if n not in functions and n.isidentifier())
    return Env(
        names=BASE_NAMES,
        functions=functions,
        soft_names=soft,
        number_names=NUMBER_NAMES,
        text_names=TEXT_NAMES,
        int_names=INT_NAMES,
        shared=shared,
        normalize=lambda s: normalize(s, region),
    )


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

    def finish_env(self, shared: frozenset[str] = frozenset()) -> None:
        self.env = rules_env(
            self.schedule_map,
            frozenset(self.tables),
            self.zone_name,
            self.region,
            self.known.answers,
            shared,
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
        self.problems.extend(reachability_problems(out, self.norm))
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
        self.problems.extend(branch_problems(fname, rule))
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

    def norm(self, text: str) -> str:
        """A number as the compiler normalises it (the rules' region)."""
        return _normalize(text, self.region)

    def build(self) -> RuleSet:
        zone = ZoneInfo(self.zone_name)
        norm = self.norm

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


def _conditions(node: Any) -> Iterator[Any]:
    """The text under every ``if`` key of a rules section, nested rules and elifs included
    (for :func:`shared_subexpressions`: anything else found there only costs a look)."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "if":
                yield value
            else:
                yield from _conditions(value)
    elif isinstance(node, list):
        for item in node:
            yield from _conditions(item)


@lru_cache(maxsize=4096)
def _normalize(text: str, region: str) -> str:
    return normalize(text, region)
