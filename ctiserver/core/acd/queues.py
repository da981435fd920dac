"""Run-time record of each queue: its line of callers, its ready index, its counts."""

from __future__ import annotations

from collections import deque

from .model import Needs, QueueConfig
from .ready_index import ReadyIndex
from .waiting import QueueLine

RECENT_HANDLE_SAMPLES = 20  # estimated wait: mean of the last N handle times
MIN_HANDLE_SAMPLES = 3  # below this the estimate is not honest: None


class QueueStats:
    __slots__ = (
        "abandoned",
        "abandoned_after_sl",
        "answered",
        "answered_in_sl",
        "handle_n",
        "handle_sum",
        "joined",
        "overflowed",
        "recent_handle",
        "wait_sum",
    )

    def __init__(self) -> None:
        self.joined = 0
        self.answered = 0
        self.answered_in_sl = 0
        self.abandoned = 0
        self.abandoned_after_sl = 0
        self.overflowed = 0
        self.wait_sum = 0.0  # of answered calls
        self.handle_sum = 0.0
        self.handle_n = 0
        self.recent_handle: deque[float] = deque(maxlen=RECENT_HANDLE_SAMPLES)

    def add_handle(self, seconds: float) -> None:
        self.handle_sum += seconds
        self.handle_n += 1
        self.recent_handle.append(seconds)

    def recent_aht(self) -> float | None:
        if len(self.recent_handle) < MIN_HANDLE_SAMPLES:
            return None
        return sum(self.recent_handle) / len(self.recent_handle)

    def service_level(self) -> float | None:
        """Percent answered within the threshold, of answered + abandoned after it
        (callers who hang up before the threshold do not count against the queue)."""
        base = self.answered + self.abandoned_after_sl
        return 100.0 * self.answered_in_sl / base if base else None


class QueueRt:
    """One queue's run-time record: its line of callers, its ready index, its counts."""

    __slots__ = (
        "cfg",
        "last_relax",
        "line",
        "logged_in",
        "members",
        "needs_memo",
        "ready",
        "relax",
        "req",
        "staffed",
        "stats",
    )

    def __init__(
        self,
        cfg: QueueConfig,
        members: tuple[str, ...],
        ready: ReadyIndex,
        stats: QueueStats,
    ) -> None:
        self.cfg = cfg
        self.members = members  # logged in or not, in the queue's member order
        self.ready = ready  # its available agents in strategy order
        self.line = QueueLine(cfg.required_skills)  # its callers not yet answered
        self.stats = stats  # kept across reconfigurations
        # the skill_relax steps, cumulative: (after, the lowest min_level so far)
        cum: list[tuple[float, int]] = []
        low: int | None = None
        for s in sorted(cfg.skill_relax, key=lambda s: s.after):
            low = s.min_level if low is None else min(low, s.min_level)
            cum.append((s.after, low))
        self.relax: tuple[tuple[float, int], ...] = tuple(cum)
        self.last_relax = low  # the cap at the last step (None: no step)
        # the queue's own requirements, sorted (a new tuple at each reconfiguration)
        self.req: Needs = tuple(sorted(cfg.required_skills.items()))
        # relax cap -> ``req`` relaxed to it, for the callers with no requirement of
        # their own (skills.needs_at): one tuple each, shared
        self.needs_memo: dict[int | None, Needs] = {}
        self.staffed = 0  # members ready, offered, on a call or in wrap-up
        self.logged_in: set[str] = set()  # members not logged out

    def estimate(self, position: int) -> float | None:
        """Estimated wait at ``position``: position x recent mean handle time / staffed."""
        aht = self.stats.recent_aht()
        if aht is None or self.staffed <= 0:
            return None
        return position * aht / self.staffed
