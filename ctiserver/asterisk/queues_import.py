"""Import an existing app_queue setup (Asterisk ``queues.conf``) into an ``AcdConfig``.

Read with pyst2; templates are resolved here, ``#include`` / ``#exec`` not followed. How
each option and member maps to the ACD, and what is ignored: docs/queues-conf-import.md.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from asterisk.config import Config

from ctiserver.core.acd.model import AcdConfig, AgentConfig, QueueConfig, Strategy

STRATEGIES = {
    "ringall": Strategy.RING_ALL,
    "leastrecent": Strategy.LONGEST_IDLE,
    "fewestcalls": Strategy.FEWEST_CALLS,
    "random": Strategy.RANDOM,
    "wrandom": Strategy.RANDOM,
    "rrmemory": Strategy.ROUND_ROBIN,
    "rrordered": Strategy.ROUND_ROBIN,
    "linear": Strategy.FIRST_AVAILABLE,
}
_FLOATS = {
    "timeout": "ring_timeout",
    "wrapuptime": "wrapup",
    "announce-frequency": "announce_frequency",
    "servicelevel": "service_level",
}
_HEADER = re.compile(r"^\s*\[([^\]]+)\]\s*\(([^)]*)\)\s*(;.*)?$")


class QueuesConfError(ValueError):
    """queues.conf could not be imported; the message names the line."""


@dataclass
class ImportResult:
    config: AcdConfig
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Section:
    name: str
    is_template: bool
    parents: list[str]
    options: list[tuple[str, str, int]] = field(default_factory=list)  # name, value, line


def _read_sections(path: Path) -> dict[str, _Section]:
    raw = path.read_text(encoding="utf-8").splitlines(keepends=True)
    templates: dict[int, tuple[bool, list[str]]] = {}
    plain: list[str] = []
    for num, line in enumerate(raw, start=1):
        m = _HEADER.match(line)
        if m:
            opts = [o.strip() for o in m.group(2).split(",") if o.strip()]
            templates[num] = ("!" in opts, [o for o in opts if o != "!"])
            line = f"[{m.group(1).strip()}]\n"
        elif line.lstrip().startswith("#"):
            line = ";" + line  # #include / #exec: not followed
        plain.append(line)
    fd, tmp = tempfile.mkstemp(suffix=".conf", text=True)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.writelines(plain)
        try:
            conf = Config(tmp)
        except Exception as exc:  # pyst2's ParseError carries (line, message)
            raise QueuesConfError(f"{path}: cannot parse: {exc}") from exc
    finally:
        os.unlink(tmp)
    sections: dict[str, _Section] = {}
    for cat in conf.categories:
        is_tpl, parents = templates.get(cat.number, (False, []))
        sec = _Section(cat.name, is_tpl, parents)
        for item in cat.items:
            sec.options.append((item.name.strip().lower(), item.value.strip(), item.number))
        sections[cat.name] = sec
    return sections


def _options(
    sections: dict[str, _Section], sec: _Section, seen: tuple[str, ...] = ()
) -> list[tuple[str, str, int]]:
    if sec.name in seen:
        raise QueuesConfError(f"template loop through [{sec.name}]")
    out: list[tuple[str, str, int]] = []
    for parent in sec.parents:
        if parent not in sections:
            raise QueuesConfError(f"[{sec.name}] uses unknown template [{parent}]")
        out.extend(_options(sections, sections[parent], (*seen, sec.name)))
    out.extend(sec.options)
    return out


def read_queues_conf(path: str | Path) -> ImportResult:
    """Read ``queues.conf`` at ``path`` into an AcdConfig (plus what was ignored)."""
    path = Path(path)
    sections = _read_sections(path)
    warnings: list[str] = []
    queues: dict[str, QueueConfig] = {}
    members_by_queue: dict[str, list[tuple[int, int, str, str]]] = {}
    interfaces: dict[str, tuple[str, int]] = {}  # interface -> (membername, line)
    for sec in sections.values():
        if sec.is_template or sec.name.lower() == "general":
            continue
        kwargs: dict[str, object] = {}
        members: list[tuple[int, int, str, str]] = []
        for name, value, line in _options(sections, sec):
            where = f"{path.name}:{line} [{sec.name}]"
            if name == "strategy":
                if value.lower() not in STRATEGIES:
                    raise QueuesConfError(f"{where}: unknown strategy {value!r}")
                kwargs["strategy"] = STRATEGIES[value.lower()]
            elif name in _FLOATS:
                try:
                    kwargs[_FLOATS[name]] = float(value)
                except ValueError:
                    raise QueuesConfError(f"{where}: {name} is not a number: {value!r}") from None
            elif name == "weight":
                kwargs["priority"] = int(value)
            elif name == "member":
                fields = [f.strip() for f in value.split(",")]
                iface = fields[0]
                if "/" not in iface:
                    raise QueuesConfError(f"{where}: member interface {iface!r} lacks Tech/")
                penalty = int(fields[1]) if len(fields) > 1 and fields[1] else 0
                mname = fields[2] if len(fields) > 2 else ""
                members.append((penalty, len(members), iface, mname))
                interfaces.setdefault(iface, (mname, line))
            else:
                warnings.append(f"{where}: {name} ignored")
        queues[sec.name] = QueueConfig(sec.name, **kwargs)  # type: ignore[arg-type]
        members_by_queue[sec.name] = sorted(members)
    ids = _agent_ids(list(interfaces))
    skills: dict[str, dict[str, int]] = {aid: {} for aid in ids.values()}
    served: dict[str, list[str]] = {aid: [] for aid in ids.values()}
    final_queues: dict[str, QueueConfig] = {}
    for qname, q in queues.items():
        order: list[str] = []
        for penalty, _i, iface, _m in members_by_queue[qname]:
            aid = ids[iface]
            if aid in order:
                continue
            order.append(aid)
            skills[aid][f"queue:{qname}"] = max(1, 10 - penalty)
            served[aid].append(qname)
        final_queues[qname] = replace(q, members=tuple(order))
    agent_cfgs = {
        ids[iface]: AgentConfig(
            ids[iface], mname or ids[iface], iface, skills[ids[iface]], tuple(served[ids[iface]])
        )
        for iface, (mname, _line) in interfaces.items()
    }
    return ImportResult(AcdConfig(final_queues, agent_cfgs), warnings)


def _agent_ids(interfaces: list[str]) -> dict[str, str]:
    short = [i.split("/", 1)[1] for i in interfaces]
    return {
        iface: s if short.count(s) == 1 else iface
        for iface, s in zip(interfaces, short, strict=True)
    }
