"""What a waiting caller carries on its own channel so that a ctiserver that was not there
when it joined can take it back: after a crash, a restart or a deploy (re-adoption).

Asterisk keeps the caller on hold whatever happens to ctiserver, so the channel is the one
place that survives it. Routing hands the value to the dialplan with its answer (in the
same ``MSet``, no extra round trip) as the channel variable ``CTI_ADOPT``; a starting
ctiserver reads it back from every channel in its hold, announce and connect contexts and
rebuilds the waiting lines in their original order (``CallTracker.readopt``).

The value is one line of fields separated by ``/``, each percent-encoded, version first:
``1/<queue>/<joined at>/<priority>/<skills>/<preferred agent>/<preferred timeout>/<caller>/
<name>/<dialled>/<route>``; skills are ``name:level`` joined by ``&``. It contains only
letters, digits and ``%._~-/`` (the AGI answer's plain MSet). Anything else decodes to a
``ValueError`` that says what is wrong: such a caller is left to the dialplan's
``CTI_MAXHOLD`` fallback, never guessed at.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from ctiserver.calls.model import ADOPT_VARIABLE

VARIABLE = ADOPT_VARIABLE
VERSION = "1"
MAX_LENGTH = 1024  # longer than any honest value; a bound on what a restart reads back
_FIELDS = 11


@dataclass(frozen=True, slots=True)
class Adoption:
    queue: str
    joined_at: float  # epoch seconds of the first join
    priority: int = 0
    skills: Mapping[str, int] = field(default_factory=dict)
    preferred_agent: str | None = None
    preferred_timeout: float | None = None
    caller_id: str = ""  # E.164, as routing normalised it
    caller_name: str = ""
    dnis: str = ""
    route: str = ""  # the routing decision, for the hang-up line

    def encode(self) -> str:
        skills = "&".join(f"{name}:{level}" for name, level in self.skills.items())
        fields = (VERSION, self.queue, f"{self.joined_at:.3f}", str(self.priority), skills,
                  self.preferred_agent or "",
                  "" if self.preferred_timeout is None else f"{self.preferred_timeout:g}",
                  self.caller_id, self.caller_name, self.dnis, self.route)
        value = "/".join(quote(f, safe="") for f in fields)
        if len(value) > MAX_LENGTH:  # a long route text is the only thing worth dropping
            value = value.rsplit("/", 1)[0] + "/"
        return value


def decode(value: str) -> Adoption:
    """The adoption a channel carries; ``ValueError`` (with the reason) if it is not one."""
    if not value:
        raise ValueError(f"no {VARIABLE} on the channel")
    if len(value) > MAX_LENGTH:
        raise ValueError(f"{VARIABLE} longer than {MAX_LENGTH} characters")
    parts = [unquote(p, errors="strict") for p in value.split("/")]
    if parts[0] != VERSION:
        raise ValueError(f"{VARIABLE} version {parts[0][:8]!r}, expected {VERSION}")
    if len(parts) != _FIELDS:
        raise ValueError(f"{VARIABLE} has {len(parts)} fields, expected {_FIELDS}")
    (_v, queue, joined, priority, skills, preferred, timeout, caller, name, dnis,
     route) = parts
    if not queue:
        raise ValueError(f"{VARIABLE} names no queue")
    joined_at = _number(joined, "join time")
    pref_timeout = _number(timeout, "preferred timeout") if timeout else None
    levels: dict[str, int] = {}
    for item in filter(None, skills.split("&")):
        skill, sep, level = item.rpartition(":")
        if not sep or not skill or not level.isdigit():
            raise ValueError(f"{VARIABLE} skill {item[:40]!r} is not name:level")
        levels[skill] = int(level)
    try:
        prio = int(priority)
    except ValueError:
        raise ValueError(f"{VARIABLE} priority {priority[:20]!r} is not a number") from None
    return Adoption(queue=queue, joined_at=joined_at, priority=prio, skills=levels,
                    preferred_agent=preferred or None, preferred_timeout=pref_timeout,
                    caller_id=caller, caller_name=name, dnis=dnis, route=route)


def _number(text: str, what: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise ValueError(f"{VARIABLE} {what} {text[:20]!r} is not a number") from None
    if not math.isfinite(x) or x < 0:
        raise ValueError(f"{VARIABLE} {what} {text[:20]!r} is out of range")
    return x
