"""Configuration of the ACD: agents, queues and their strategies (pure data)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Strategy(StrEnum):
    FIRST_AVAILABLE = "first_available"  # fixed order: the queue's member order
    ROUND_ROBIN = "round_robin"  # next available after the last one rung
    RING_ALL = "ring_all"
    LONGEST_IDLE = "longest_idle"
    HIGHEST_AVERAGE_IDLE = "highest_average_idle"
    LEAST_TALK_TIME = "least_talk_time"
    LEAST_AVERAGE_TALK_TIME = "least_average_talk_time"
    FEWEST_CALLS = "fewest_calls"
    BEST_SKILL = "best_skill"
    RANDOM = "random"


@dataclass(frozen=True)
class SkillRelax:
    """After ``after`` seconds of waiting, required skill levels drop to ``min_level``
    (0 means: any agent who has the skill at all)."""

    after: float
    min_level: int


@dataclass(frozen=True)
class AgentConfig:
    id: str
    name: str
    device: str  # e.g. PJSIP/1001
    skills: dict[str, int] = field(default_factory=dict)  # skill -> level 1..10
    queues: tuple[str, ...] = ()


@dataclass(frozen=True)
class QueueConfig:
    name: str
    strategy: Strategy = Strategy.LONGEST_IDLE
    required_skills: dict[str, int] = field(default_factory=dict)
    priority: int = 0  # added to every caller's priority in this queue
    ring_timeout: float = 15.0
    wrapup: float = 0.0
    max_wait: float | None = None
    overflow: str | None = None  # queue:NAME | voicemail:BOX | message:SOUND | extension:X
    announce_frequency: float = 0.0  # seconds; 0 = no position announcements
    announce_first_after: float = 5.0  # first announcement after this wait
    service_level: float = 20.0  # answered within this many seconds counts as in SLA
    when_no_agents: str = "wait"  # wait | overflow (no agent logged in who could serve)
    preferred_agent_timeout: float = 0.0  # "assigned agent first": wait this long for them
    skill_relax: tuple[SkillRelax, ...] = ()
    # members in order (for first_available / round_robin); agents may also list queues
    members: tuple[str, ...] = ()


@dataclass(frozen=True)
class AcdConfig:
    queues: dict[str, QueueConfig] = field(default_factory=dict)
    agents: dict[str, AgentConfig] = field(default_factory=dict)

    def queue_members(self, queue: str) -> tuple[str, ...]:
        """Agents serving ``queue``: the queue's ordered members, then agents that
        list the queue themselves, in configuration order."""
        q = self.queues[queue]
        seen = list(q.members)
        for agent in self.agents.values():
            if queue in agent.queues and agent.id not in seen:
                seen.append(agent.id)
        return tuple(seen)


# skill requirements as the engine keeps them: (skill, minimum level >= 1), sorted
Needs = tuple[tuple[str, int], ...]
# cumulative skill_relax steps: (after seconds, level cap)
Relax = tuple[tuple[float, int], ...]
