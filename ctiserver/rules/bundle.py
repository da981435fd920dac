"""Rule and IVR flow files, read from a directory and compiled together into a :class:`Bundle`."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ctiserver.core.ivr.flow import Flow, check_flow_refs, load_flows
from ctiserver.core.problems import Problem
from ctiserver.core.rules.loader import load_ruleset
from ctiserver.core.rules.model import Known, RuleSet

SUFFIXES = (".yaml", ".yml")
MAX_FILE_BYTES = 1_000_000


@dataclass(frozen=True)
class Bundle:
    """Rules and flows compiled together (or the problems that stop them)."""

    ruleset: RuleSet | None
    flows: dict[str, Flow]
    problems: tuple[Problem, ...]
    version: str

    @property
    def ok(self) -> bool:
        return self.ruleset is not None and not any(p.severity == "error" for p in self.problems)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]


def read_dir(path: Path, label: str | None = None) -> list[tuple[str, str]]:
    """``(display name, text)`` of each YAML file in ``path``, sorted by name."""
    if not path.is_dir():
        return []
    out = []
    for entry in sorted(path.iterdir()):
        if entry.suffix in SUFFIXES and entry.is_file():
            if entry.stat().st_size > MAX_FILE_BYTES:
                raise OSError(f"{entry}: larger than {MAX_FILE_BYTES} bytes")
            out.append((f"{label or path}/{entry.name}", entry.read_text(encoding="utf-8")))
    return out


def content_hash(rules: Iterable[tuple[str, str]], flows: Iterable[tuple[str, str]]) -> str:
    digest = hashlib.sha256()
    for kind, items in (("rules", rules), ("flows", flows)):
        for name, text in items:
            for part in (kind, name.rsplit("/", 1)[-1], text):
                digest.update(part.encode())
                digest.update(b"\0")
    return digest.hexdigest()[:12]


def compile_sources(
    rules: list[tuple[str, str]], flows: list[tuple[str, str]], known: Known | None = None
) -> Bundle:
    """Parse and cross-check rule files and IVR flow files (pure: text in)."""
    known = known or Known()
    flow_map, flow_problems = load_flows(flows)
    answers = frozenset().union(*(f.variables for f in flow_map.values())) | known.answers
    # flows that failed to parse still count as existing for the rules' check
    flow_names = frozenset(flow_map) | {n.rsplit("/", 1)[-1].rsplit(".", 1)[0] for n, _ in flows}
    result = load_ruleset(rules, Known(known.queues, known.agents, flow_names, answers))
    problems = list(result.problems) + flow_problems
    if result.ruleset is not None:
        for flow in flow_map.values():
            problems += check_flow_refs(
                flow, result.ruleset.queues, result.ruleset.agents, frozenset(flow_map)
            )
    if not rules:
        problems.append(Problem("(rules)", None, "no rule files (*.yaml) found"))
    return Bundle(result.ruleset, flow_map, tuple(problems), content_hash(rules, flows))
