"""The outcome of routing: what to do with a call, and why."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field

ACTIONS = frozenset(
    {"queue", "ivr", "agent", "extension", "voicemail", "message", "callback", "hangup"}
)


@dataclass(frozen=True)
class Decision:
    """Where a call goes.

    ``message`` is played before the action (for ``message`` it is the whole
    action: play, then hang up). ``fallback`` is used by the adapter when the
    primary target cannot take the call (e.g. the agent is not ready within
    ``agent_timeout`` seconds). ``trace`` explains the decision, one line per
    condition evaluated, each with ``file:line``.
    """

    action: str  # queue | ivr | agent | extension | voicemail | message | callback | hangup
    queue: str | None = None
    priority: int = 0
    skills: Mapping[str, int] = field(default_factory=dict)
    flow: str | None = None
    agent: str | None = None
    extension: str | None = None
    mailbox: str | None = None
    message: tuple[str, ...] = ()  # sound names to play
    fallback: Decision | None = None
    agent_timeout: float = 0.0
    rule: str | None = None  # name of the rule that decided
    trace: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown action {self.action!r}")

    def explained(self, rule: str | None, trace: tuple[str, ...]) -> Decision:
        """A copy carrying the deciding rule and the trace (not validated again: once per
        call, ``dataclasses.replace`` would run ``__init__`` and the checks)."""
        decision = copy.copy(self)
        object.__setattr__(decision, "rule", rule)
        object.__setattr__(decision, "trace", trace)
        return decision

    def describe(self) -> str:
        """One line for people: ``queue sales (priority 5, skills spanish>=3)``."""
        if self.action == "queue":
            extra = []
            if self.priority:
                extra.append(f"priority {self.priority}")
            if self.skills:
                extra.append("skills " + ", ".join(f"{k}>={v}" for k, v in self.skills.items()))
            text = f"queue {self.queue}" + (f" ({'; '.join(extra)})" if extra else "")
        elif self.action == "ivr":
            text = f"ivr {self.flow}"
        elif self.action == "agent":
            text = f"agent {self.agent}"
            if self.agent_timeout:
                text += f" (ring {self.agent_timeout:g} s)"
        elif self.action == "extension":
            text = f"extension {self.extension}"
        elif self.action == "voicemail":
            text = f"voicemail {self.mailbox}"
        elif self.action == "callback":
            text = f"offer callback for queue {self.queue}"
        elif self.action == "message":
            text = "play " + " ".join(self.message) + ", then hang up"
        else:
            text = "hang up"
        if self.message and self.action != "message":
            text = "play " + " ".join(self.message) + ", then " + text
        if self.fallback is not None:
            text += f"; if not possible: {self.fallback.describe()}"
        return text


HANGUP = Decision("hangup")
