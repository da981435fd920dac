"""``ctiserver rules check|test|history|rollback``: the supervisor's tools for routing rules.

Registered on the main ``ctiserver`` command by :mod:`ctiserver.cli`; also runs as
``python -m ctiserver.rules.cli rules check``.
Exit status: 0 ok, 1 problems found / refused, 2 usage error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from ctiserver.core.ivr.session import Collect, Done, IvrSession
from ctiserver.core.rules.context import CallContext
from ctiserver.core.rules.decision import Decision
from ctiserver.core.rules.model import Known
from ctiserver.rules.bundle import Bundle, compile_sources, read_dir
from ctiserver.rules.runtime import RulesRuntime

DEFAULT_RULES = "routing_rules"
DEFAULT_FLOWS = "ivr_flows"
DEFAULT_STATE = os.environ.get("CTISERVER_STATE_DIR", "state")


def add_subcommands(subparsers: Any) -> None:
    """Register ``rules`` with its sub-commands on an argparse subparsers object."""
    rules = subparsers.add_parser("rules", help="check, test and roll back routing rules")
    sub = rules.add_subparsers(dest="rules_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--flows", default=None, help=f"IVR flow directory (default {DEFAULT_FLOWS})"
        )
        p.add_argument("--config", help="ctiserver.toml: its queues and agents are the known names")
        p.add_argument("--queues", help="comma-separated known queue names (added to the config's)")
        p.add_argument("--agents", help="comma-separated known agent ids")

    check = sub.add_parser("check", help="check rule and IVR files; errors point at file:line")
    check.add_argument("path", nargs="?", default=DEFAULT_RULES, help="rules directory or one file")
    common(check)
    check.set_defaults(rules_func=cmd_check)

    test = sub.add_parser("test", help="where would this call go, and why?")
    test.add_argument("path", nargs="?", default=DEFAULT_RULES)
    common(test)
    test.add_argument("--caller", required=True, help="calling number, any format")
    test.add_argument("--dnis", required=True, help="dialled number, any format")
    test.add_argument("--caller-name", default="")
    test.add_argument("--digits", default="", help="digits the caller keyed in")
    test.add_argument(
        "--answer",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an IVR answer, e.g. department=billing (repeatable)",
    )
    test.add_argument(
        "--customer",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="CRM record of the caller, e.g. tier=gold assigned_agent=1002",
    )
    test.add_argument(
        "--lookup",
        action="append",
        default=[],
        metavar="TABLE:KEY",
        help="make lookup(TABLE, KEY) find a record (repeatable)",
    )
    test.add_argument(
        "--press",
        default=None,
        help="run the IVR too, with these key presses, comma-separated: 2,1,12345#",
    )
    test.add_argument("--at", help='local time in the rules\' time zone, "2026-12-24 21:30"')
    test.set_defaults(rules_func=cmd_test)

    for name, func, helptext in (
        ("history", cmd_history, "list the stored rule versions"),
        ("rollback", cmd_rollback, "make an earlier version current (default: the previous one)"),
    ):
        p = sub.add_parser(name, help=helptext)
        if name == "rollback":
            p.add_argument("version", nargs="?", help="version id or its first characters")
        p.add_argument("--rules", default=DEFAULT_RULES)
        p.add_argument("--flows", default=DEFAULT_FLOWS)
        p.add_argument("--state-dir", default=DEFAULT_STATE)
        p.set_defaults(rules_func=func)


# ---------------------------------------------------------------- helpers


def _names(value: Any, *keys: str) -> set[str]:
    """Queue/agent names from a config value: list of names, list of tables, or a table."""
    out: set[str] = set()
    if isinstance(value, dict):
        for k, v in value.items():
            out |= {str(v[key]) for key in keys if isinstance(v, dict) and key in v} or {str(k)}
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict):
                out |= {str(item[key]) for key in keys[:1] if key in item}
            else:
                out.add(str(item))
    return out


def known_from(args: argparse.Namespace) -> Known:
    queues: set[str] = set()
    agents: set[str] = set()
    if getattr(args, "config", None):
        with open(args.config, "rb") as fh:
            cfg = tomllib.load(fh)
        for section in (cfg, cfg.get("acd", {})):
            queues |= _names(section.get("queues"), "name")
            agents |= _names(section.get("agents"), "id", "extension")
    if getattr(args, "queues", None):
        queues |= {q.strip() for q in args.queues.split(",") if q.strip()}
    if getattr(args, "agents", None):
        agents |= {a.strip() for a in args.agents.split(",") if a.strip()}
    return Known(frozenset(queues), frozenset(agents))


def _sources(args: argparse.Namespace) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    path = Path(args.path)
    if path.is_file():
        rules = [(str(path), path.read_text(encoding="utf-8"))]
        flows_default = path.parent.parent / DEFAULT_FLOWS
    else:
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: no such file or directory")
        rules = read_dir(path)
        flows_default = path.parent / DEFAULT_FLOWS
    flows_dir = Path(args.flows) if args.flows else flows_default
    return rules, read_dir(flows_dir)


def _load(args: argparse.Namespace, out: TextIO) -> Bundle | None:
    try:
        rules, flows = _sources(args)
        known = known_from(args)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=out)
        return None
    return compile_sources(rules, flows, known)


# ---------------------------------------------------------------- commands


def cmd_check(args: argparse.Namespace, out: TextIO) -> int:
    bundle = _load(args, out)
    if bundle is None:
        return 2
    for problem in bundle.problems:
        print(problem, file=out)
    if not bundle.ok:
        print(f"{len(bundle.errors)} error(s): these files would be refused", file=out)
        return 1
    assert bundle.ruleset is not None
    print(
        f"ok: version {bundle.version}, {_count(bundle.ruleset.rules)} rules, "
        f"{len(bundle.ruleset.schedules)} schedules, {len(bundle.flows)} IVR flows"
        + (f", {len(bundle.problems)} warning(s)" if bundle.problems else ""),
        file=out,
    )
    return 0


def _count(rules: Sequence[Any]) -> int:
    return sum(1 + sum(_count(b.rules) for b in r.branches) for r in rules)


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"{what} {item!r}: write NAME=VALUE")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def cmd_test(args: argparse.Namespace, out: TextIO) -> int:
    bundle = _load(args, out)
    if bundle is None:
        return 2
    if not bundle.ok or bundle.ruleset is None:
        for problem in bundle.errors:
            print(problem, file=out)
        print("the rules do not load; fix them first (ctiserver rules check)", file=out)
        return 1
    ruleset = bundle.ruleset
    try:
        if args.at:
            naive = dt.datetime.fromisoformat(args.at.strip())
            now = naive if naive.tzinfo else naive.replace(tzinfo=ruleset.zone)
        else:
            now = dt.datetime.now(ZoneInfo("UTC"))
        answers = _pairs(args.answer, "--answer")
        customer: dict[str, Any] | None = _pairs(args.customer, "--customer") or None
    except ValueError as exc:
        print(f"error: {exc}", file=out)
        return 2
    found = {tuple(x.split(":", 1)) for x in args.lookup if ":" in x}

    def lookup(table: str, key: str) -> dict[str, Any] | None:
        return {"table": table, "key": key} if (table, key) in found else None

    def context(answers: dict[str, str]) -> CallContext:
        return CallContext.create(
            caller_id=args.caller,
            dnis=args.dnis,
            now=now,
            region=ruleset.region,
            caller_name=args.caller_name,
            digits=args.digits,
            answers=answers,
            customer=customer,
            lookup=lookup,
        )

    ctx = context(answers)
    local = now.astimezone(ruleset.zone)
    print(f"call from {ctx.caller_id} to {ctx.dnis} at {local:%a %Y-%m-%d %H:%M %Z}", file=out)
    decision = ruleset.decide(ctx)
    _show(decision, out)
    if args.press is not None and decision.action == "ivr" and decision.flow in bundle.flows:
        presses = [p.strip() for p in args.press.split(",")] if args.press else []
        session = IvrSession(bundle.flows[decision.flow], answers)
        step = session.start()
        while not isinstance(step, Done):
            step = session.feed(presses.pop(0) if presses and isinstance(step, Collect) else None)
        print(f"\nIVR {decision.flow}:", file=out)
        for line in step.trace:
            print(f"  {line}", file=out)
        print(f"answers: {dict(step.answers)}", file=out)
        if step.decision is not None:
            print(f"decision: {step.decision.describe()}", file=out)
        else:
            print("\nback to the routing rules with the answers:", file=out)
            _show(ruleset.decide(context(dict(step.answers))), out)
    return 0


def _show(decision: Decision, out: TextIO) -> None:
    print("trace:", file=out)
    for line in decision.trace:
        print(f"  {line}", file=out)
    print(
        f"decision: {decision.describe()}"
        + (f"  [rule '{decision.rule}']" if decision.rule else ""),
        file=out,
    )


def _runtime(args: argparse.Namespace) -> RulesRuntime:
    return RulesRuntime(args.rules, args.flows, args.state_dir)


def cmd_history(args: argparse.Namespace, out: TextIO) -> int:
    runtime = _runtime(args)
    current = compile_sources(read_dir(Path(args.rules)), read_dir(Path(args.flows))).version
    history = runtime.history()
    if not history:
        print(f"no stored versions in {runtime.store}", file=out)
        return 0
    for v in history:
        when = dt.datetime.fromtimestamp(v.loaded_at).strftime("%Y-%m-%d %H:%M:%S")
        mark = "  <- files on disk" if v.id == current else ""
        print(f"{v.id}  {when}  {', '.join(v.files)}{mark}", file=out)
    return 0


def cmd_rollback(args: argparse.Namespace, out: TextIO) -> int:
    runtime = _runtime(args)
    runtime.reload()  # the files on disk, if good, are the "current" version
    result = runtime.rollback(args.version)
    print(result.reason if result.ok else f"rollback refused: {result.reason}", file=out)
    if result.ok:
        print("the files are written back; a running server reloads them now", file=out)
    return 0 if result.ok else 1


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run a parsed ``rules …`` command; the main CLI calls this after parse_args."""
    return int(args.rules_func(args, out or sys.stdout))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ctiserver")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
