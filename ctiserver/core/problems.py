"""A mistake found in a rule or IVR flow file, reported as ``file:line``."""

from __future__ import annotations

from dataclasses import dataclass


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
