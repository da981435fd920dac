"""IVR flows: YAML text -> a checked :class:`Flow` (steps by name, with line numbers).

The file format is described for supervisors in ``routing_rules/README.md`` (IVR
flows); the step kinds are summed up in :meth:`_FlowParser.step`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ctiserver.core.problems import Problem
from ctiserver.core.rules.actions import (
    ActionError,
    ActionSpec,
    Refs,
    is_action,
    parse_action,
    sounds,
)
from ctiserver.core.rules.decision import Decision
from ctiserver.core.rules.yamlsrc import LineDict, YamlError, load_yaml

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,39}$")
_DIGITS = re.compile(r"^[0-9*#]{1,4}$")
STEP_KINDS = ("play", "say_digits", "menu", "collect")
GOODBYE = Decision("message", message=("goodbye",))


@dataclass(frozen=True)
class Target:
    line: int
    set: Mapping[str, str] = field(default_factory=dict)
    goto: str | None = None
    route: bool = False
    decision: Decision | None = None


@dataclass(frozen=True)
class Step:
    name: str
    kind: str  # play | say_digits | menu | collect
    line: int
    sounds: tuple[str, ...] = ()  # play: the sounds; menu/collect: the prompt
    var: str | None = None
    next: Target | None = None  # play, say_digits, collect
    options: Mapping[str, Target] = field(default_factory=dict)
    timeout: float = 5.0
    retries: int = 2
    invalid: tuple[str, ...] = ("option-is-invalid",)
    retry_prompt: tuple[str, ...] = ("please-try-again",)
    on_timeout: Target | None = None
    on_invalid: Target | None = None
    on_fail: Target | None = None
    min_len: int = 1
    max_len: int = 1
    terminator: str = "#"


@dataclass(frozen=True)
class Flow:
    name: str
    file: str
    start: str
    steps: Mapping[str, Step]
    language: str = "en"
    variables: frozenset[str] = frozenset()
    refs: Refs = field(default_factory=Refs)


class _Fail(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def _num(node: LineDict, key: str, default: float, lo: float, hi: float) -> float:
    value = node.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise _Fail(node.line_of(key), f"{key} must be a number from {lo:g} to {hi:g}")
    return float(value)


class _FlowParser:
    def __init__(self, fname: str) -> None:
        self.fname = fname
        self.vars: set[str] = set()
        self.gotos: list[tuple[str, int]] = []
        self.queues: list[tuple[str, int]] = []
        self.flows: list[tuple[str, int]] = []
        self.agents: list[tuple[str, int]] = []

    def var(self, value: Any, line: int) -> str:
        if not isinstance(value, str) or not _NAME.match(value):
            raise _Fail(line, f"bad variable name {value!r} (letters, digits, _)")
        self.vars.add(value)
        return value

    def target(self, node: Any, line: int) -> Target:
        if not isinstance(node, LineDict):
            raise _Fail(line, "a target is a mapping: {goto: step}, {route: true} or an action")
        line = node.line
        values: dict[str, str] = {}
        if "set" in node:
            setn = node["set"]
            if not isinstance(setn, Mapping):
                raise _Fail(node.line_of("set"), "set must map names to values")
            for k, v in setn.items():
                values[self.var(k, node.line_of("set"))] = str(v)
        rest = LineDict({k: v for k, v in node.items() if k != "set"})
        rest.line, rest.key_lines = node.line, node.key_lines
        if "goto" in rest:
            if len(rest) != 1:
                raise _Fail(line, "goto cannot be combined with an action or route")
            self.gotos.append((str(rest["goto"]), rest.line_of("goto")))
            return Target(line, values, goto=str(rest["goto"]))
        if "route" in rest:
            if len(rest) != 1 or rest["route"] is not True:
                raise _Fail(line, "write route: true (alone) to continue with the routing rules")
            return Target(line, values, route=True)
        if not is_action(rest):
            raise _Fail(line, "a target needs goto, route: true, or an action (queue, …)")
        try:
            spec: ActionSpec = parse_action(rest, None, line=line)
        except ActionError as exc:
            raise _Fail(exc.line, exc.message) from None
        self.queues += spec.refs.queues
        self.flows += spec.refs.flows
        self.agents += spec.refs.agents
        return Target(line, values, decision=spec.decision)

    def opt_target(self, node: LineDict, key: str) -> Target | None:
        return self.target(node[key], node.line_of(key)) if key in node else None

    def step(self, name: str, node: Any, line: int) -> Step:
        """One named step; ``start`` names the first. Step kinds::

            play:    {sounds: [..], next: <target>}
            say_digits: {var: customer_number, next: <target>}
            menu:    {prompt: [..], options: {"1": <target>, …}, timeout: 5, retries: 2,
                      invalid: [option-is-invalid], on_timeout: <target>?, on_invalid: <target>?,
                      on_fail: <target>, var: choice?}
            collect: {prompt: [..], var: name, min: 1, max: 10, terminator: "#", timeout: 5,
                      retries: 2, invalid: [..], next: <target>, on_fail: <target>}

        A target is ``{goto: step}``, ``{route: true}`` (back to the routing rules,
        with the answers), or an action as in the rules (``{queue: sales}``), each
        optionally with ``set: {name: value}`` to record an answer.
        """
        if not isinstance(node, LineDict) or len(node) != 1 or next(iter(node)) not in STEP_KINDS:
            raise _Fail(line, f"step '{name}' must be one of {', '.join(STEP_KINDS)}")
        kind = next(iter(node))
        body = node[kind]
        if not isinstance(body, LineDict):
            raise _Fail(node.line_of(kind), f"{kind} needs a mapping")
        allowed = {
            "play": {"sounds", "next"},
            "say_digits": {"var", "next"},
            "menu": {
                "prompt",
                "options",
                "timeout",
                "retries",
                "invalid",
                "retry_prompt",
                "on_timeout",
                "on_invalid",
                "on_fail",
                "var",
            },
            "collect": {
                "prompt",
                "var",
                "min",
                "max",
                "terminator",
                "timeout",
                "retries",
                "invalid",
                "retry_prompt",
                "next",
                "on_fail",
            },
        }[kind]
        for key in body:
            if key not in allowed:
                raise _Fail(body.line_of(key), f"unknown key '{key}' in {kind} ({sorted(allowed)})")
        common: dict[str, Any] = {}
        for key in ("invalid", "retry_prompt"):
            if key in body:
                common[key] = (
                    () if body[key] in (None, []) else sounds(body[key], body.line_of(key))
                )
        if kind == "play":
            if "next" not in body:
                raise _Fail(body.line, "play needs next")
            return Step(
                name,
                kind,
                line,
                sounds(body.get("sounds"), body.line_of("sounds")),
                next=self.target(body["next"], body.line_of("next")),
            )
        if kind == "say_digits":
            if "next" not in body or "var" not in body:
                raise _Fail(body.line, "say_digits needs var and next")
            return Step(
                name,
                kind,
                line,
                var=self.var(body["var"], body.line_of("var")),
                next=self.target(body["next"], body.line_of("next")),
            )
        prompt = sounds(body.get("prompt"), body.line_of("prompt"))
        timeout = _num(body, "timeout", 5, 1, 60)
        retries = int(_num(body, "retries", 2, 0, 9))
        on_fail = self.opt_target(body, "on_fail") or Target(body.line, decision=GOODBYE)
        if kind == "menu":
            options_node = body.get("options")
            if not isinstance(options_node, LineDict) or not options_node:
                raise _Fail(body.line_of("options"), 'a menu needs options: {"1": target, …}')
            options: dict[str, Target] = {}
            for key, value in options_node.items():
                digit = str(key)
                if not _DIGITS.match(digit):
                    raise _Fail(options_node.line_of(key), f"option {key!r}: use digits, * or #")
                options[digit] = self.target(value, options_node.line_of(key))
            var = self.var(body["var"], body.line_of("var")) if "var" in body else None
            lengths = {len(k) for k in options}
            return Step(
                name,
                kind,
                line,
                prompt,
                var=var,
                options=options,
                timeout=timeout,
                retries=retries,
                on_timeout=self.opt_target(body, "on_timeout"),
                on_invalid=self.opt_target(body, "on_invalid"),
                on_fail=on_fail,
                min_len=min(lengths),
                max_len=max(lengths),
                terminator="",
                **common,
            )
        if "var" not in body or "next" not in body:
            raise _Fail(body.line, "collect needs var and next")
        min_len = int(_num(body, "min", 1, 1, 32))
        max_len = int(_num(body, "max", 16, min_len, 32))
        term = str(body.get("terminator", "#"))
        if term not in ("#", "*", ""):
            raise _Fail(body.line_of("terminator"), "terminator must be '#', '*' or ''")
        return Step(
            name,
            kind,
            line,
            prompt,
            var=self.var(body["var"], body.line_of("var")),
            next=self.target(body["next"], body.line_of("next")),
            timeout=timeout,
            retries=retries,
            on_fail=on_fail,
            min_len=min_len,
            max_len=max_len,
            terminator=term,
            **common,
        )


def parse_flow(fname: str, text: str, default_name: str) -> tuple[Flow | None, list[Problem]]:
    """Parse one flow file; the name defaults to the file's stem."""
    try:
        doc = load_yaml(text)
    except YamlError as exc:
        return None, [Problem(fname, exc.line, exc.message)]
    if not isinstance(doc, LineDict):
        return None, [Problem(fname, 1, "a flow file is a mapping with name, start and steps")]
    parser = _FlowParser(fname)
    problems: list[Problem] = []
    name = str(doc.get("name", default_name))
    try:
        for key in doc:
            if key not in ("name", "language", "start", "steps", "description"):
                raise _Fail(doc.line_of(key), f"unknown key '{key}' (name, language, start, steps)")
        steps_node = doc.get("steps")
        if not isinstance(steps_node, LineDict) or not steps_node:
            raise _Fail(doc.line_of("steps"), "steps must map step names to steps")
        steps: dict[str, Step] = {}
        for step_name, node in steps_node.items():
            try:
                steps[str(step_name)] = parser.step(
                    str(step_name), node, steps_node.line_of(step_name)
                )
            except (_Fail, ActionError) as exc:
                problems.append(Problem(fname, exc.line, exc.message, f"{name}/{step_name}"))
        start = str(doc.get("start", next(iter(steps_node))))
        if start not in steps_node:
            raise _Fail(doc.line_of("start"), f"start step '{start}' does not exist")
        for target, line in parser.gotos:
            if target not in steps_node:
                problems.append(
                    Problem(
                        fname,
                        line,
                        f"goto '{target}': no such step ({', '.join(steps_node)})",
                        name,
                    )
                )
        language = str(doc.get("language", "en"))
    except _Fail as exc:
        problems.append(Problem(fname, exc.line, exc.message, name))
        return None, problems
    if problems:
        return None, problems
    reachable = _reachable(steps, start)
    for step in steps.values():
        if step.name not in reachable:
            problems.append(
                Problem(fname, step.line, f"step '{step.name}' is never reached", name, "warning")
            )
    refs = Refs(tuple(parser.queues), tuple(parser.flows), tuple(parser.agents))
    return Flow(name, fname, start, steps, language, frozenset(parser.vars), refs), problems


def _targets(step: Step) -> list[Target]:
    out = [t for t in (step.next, step.on_timeout, step.on_invalid, step.on_fail) if t is not None]
    return out + list(step.options.values())


def _reachable(steps: Mapping[str, Step], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        name = todo.pop()
        if name in seen or name not in steps:
            continue
        seen.add(name)
        todo.extend(t.goto for t in _targets(steps[name]) if t.goto)
    return seen


def check_flow_refs(
    flow: Flow, queues: frozenset[str], agents: frozenset[str], flows: frozenset[str]
) -> list[Problem]:
    """References from a flow to queues / agents / other flows that do not exist."""
    out: list[Problem] = []
    for name, line in flow.refs.queues:
        if queues and name not in queues:
            out.append(Problem(flow.file, line, f"unknown queue '{name}'", flow.name))
    for name, line in flow.refs.agents:
        if agents and name not in agents:
            out.append(Problem(flow.file, line, f"unknown agent '{name}'", flow.name))
    for name, line in flow.refs.flows:
        if name not in flows:
            out.append(Problem(flow.file, line, f"unknown IVR flow '{name}'", flow.name))
    return out


def load_flows(
    sources: Mapping[str, str] | list[tuple[str, str]],
) -> tuple[dict[str, Flow], list[Problem]]:
    """Parse flow files given as (file name, text); names default to the file stem."""
    items = list(sources.items()) if isinstance(sources, Mapping) else list(sources)
    flows: dict[str, Flow] = {}
    problems: list[Problem] = []
    for fname, text in items:
        stem = fname.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        flow, found = parse_flow(fname, text, stem)
        problems += found
        if flow is None:
            continue
        if flow.name in flows:
            problems.append(
                Problem(fname, 1, f"flow '{flow.name}' is also defined in {flows[flow.name].file}")
            )
            continue
        flows[flow.name] = flow
    return flows, problems
