"""Every rule set that loaded, stored on disk so that it can be listed and rolled back to.

A version is stored under ``<root>/versions/<id>/{rules,flows}/`` (``id`` = first
12 hex digits of the SHA-256 of all file names and contents, see
:func:`~ctiserver.rules.bundle.content_hash`) and listed in ``<root>/history.json``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctiserver.rules.bundle import read_dir

log = logging.getLogger("ctiserver.rules_runtime")


@dataclass(frozen=True)
class VersionInfo:
    id: str
    loaded_at: float
    files: tuple[str, ...] = field(default_factory=tuple)


class VersionStore:
    """The versions under ``root`` (``<state_dir>/rules``), oldest first."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _history_file(self) -> Path:
        return self.root / "history.json"

    def history(self) -> list[VersionInfo]:
        try:
            data: list[dict[str, Any]] = json.loads(self._history_file().read_text())
        except (OSError, ValueError):
            return []
        return [
            VersionInfo(d["id"], float(d["loaded_at"]), tuple(d.get("files", ()))) for d in data
        ]

    def save(
        self,
        version: str,
        rules: list[tuple[str, str]],
        flows: list[tuple[str, str]],
        loaded_at: float,
    ) -> None:
        """Store a version's files (once) and list it last in the history."""
        vdir = self.root / "versions" / version
        try:
            if not vdir.exists():
                tmp = vdir.with_name(version + ".tmp")
                for sub, items in (("rules", rules), ("flows", flows)):
                    (tmp / sub).mkdir(parents=True, exist_ok=True)
                    for name, text in items:
                        (tmp / sub / name.rsplit("/", 1)[-1]).write_text(text, encoding="utf-8")
                tmp.rename(vdir)
            entries = [
                e.__dict__ | {"files": list(e.files)} for e in self.history() if e.id != version
            ]
            files = [n.rsplit("/", 1)[-1] for n, _ in rules] + [
                n.rsplit("/", 1)[-1] for n, _ in flows
            ]
            entries.append({"id": version, "loaded_at": loaded_at, "files": files})
            tmpf = self._history_file().with_suffix(".tmp")
            tmpf.write_text(json.dumps(entries, indent=1))
            tmpf.replace(self._history_file())
        except OSError as exc:  # history is a convenience: routing goes on
            log.error("rules: cannot store version %s: %s", version, exc)

    def sources(
        self, version: str, rules_label: str, flows_label: str
    ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """A stored version's ``(name, text)`` rule and flow files, named as if in the labels."""
        vdir = self.root / "versions" / version
        return read_dir(vdir / "rules", rules_label), read_dir(vdir / "flows", flows_label)

    def resolve(self, prefix: str | None, current: str | None) -> str:
        """The stored version ``prefix`` names; None: the newest one that is not ``current``."""
        ids = [v.id for v in self.history()]
        if prefix is None:
            older = [i for i in ids if i != current]
            if not older:
                raise KeyError("no earlier version to roll back to")
            return older[-1]
        matches = [i for i in ids if i.startswith(prefix)]
        if len(matches) != 1:
            raise KeyError(f"version {prefix!r} " + ("is ambiguous" if matches else "not found"))
        return matches[0]
