"""The one asyncio task that owns the ACD engine.

Everything that changes the engine goes through ``submit()`` / ``request()``: AMI
events, FastAGI joins, agent commands from the web page. The task takes them from one
queue in order, feeds the engine, fires its timers (``Tick``) when they are due, and
hands the effects to one synchronous sink that must not block (it schedules I/O).
No locks: nothing else mutates the engine. Reads (snapshot, position) happen on the
same event loop between steps, so they always see a consistent state.

Once the events queued before the task started are taken (agents restored or logged in
at start), everything alive is frozen out of the cyclic garbage collector
(``freeze_state``): the engine's state then costs no collection during a decision, as
in ``bench/acd_micro.py``, which freezes after building its state.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ctiserver.core.acd.engine import AcdError, Engine
from ctiserver.core.acd.events import Effect, Event, Tick

log = logging.getLogger("ctiserver.acd")

EffectSink = Callable[[Event, list[Effect]], None]


def freeze_state() -> None:
    """A full collection, then everything alive goes to the permanent generation: the
    engine's state (thousands of long-lived objects per thousand agents) is no longer
    walked by a collection that happens during a decision. What is frozen is still freed
    by reference counting when dropped (the engine's records hold no cycles). The rule
    sets are frozen the same way at each load (ctiserver.rules.runtime.freeze_heap)."""
    gc.collect()
    gc.freeze()


class AcdRunner:
    def __init__(self, engine: Engine, sink: EffectSink,
                 clock: Callable[[], float] = time.time, *,
                 freeze_at_start: bool = True) -> None:
        self.engine = engine
        self._sink = sink
        self._clock = clock
        self._freeze_at_start = freeze_at_start
        # (event, when it happened, who waits for the engine's answer)
        self._queue: deque[tuple[Event, float | None, asyncio.Future[Any] | None]] = deque()
        self._wakeup: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0  # the engine clock time it is set for
        self._hooks: list[Callable[[], None]] = []

    def submit(self, event: Event, at: float | None = None) -> None:
        """Queue an event; ``at`` is when it happened (e.g. Asterisk's Timestamp)."""
        self._queue.append((event, at, None))
        self._wake()

    async def request(self, event: Event) -> list[Effect]:
        """Queue an event and wait until the engine has taken it; AcdError is raised here
        when the engine refuses it (unknown agent, pause while logged out …)."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((event, None, fut))
        self._wake()
        result: list[Effect] = await fut
        return result

    def after_steps(self, hook: Callable[[], None]) -> None:
        """``hook`` runs each time the task has taken everything queued, before it sleeps:
        work that must not delay the engine's decisions on the events queued with it (the
        call tracker's screen-pop notes)."""
        self._hooks.append(hook)

    def poke(self) -> None:
        """Wake the task with nothing to take: its ``after_steps`` hooks run."""
        self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def run(self) -> None:
        # One future per sleep and one timer for the engine's earliest deadline, kept
        # across sleeps: this runs for every AMI event, so no wait_for (a task and a timer
        # each time) and no timer made and cancelled per event. A timer that fires before
        # the deadline it was set for (that one was met or moved) just wakes the loop,
        # which sets the next one.
        loop = asyncio.get_running_loop()
        frozen = not self._freeze_at_start
        try:
            while True:
                while self._queue:  # everything already queued, without yielding in between
                    self._step(*self._queue.popleft())
                for hook in self._hooks:
                    try:
                        hook()
                    except Exception:  # noqa: BLE001 - the task that routes calls goes on
                        log.exception("ACD after-steps hook %r failed", hook)
                if not frozen:  # the state built from the events queued at start
                    frozen = True
                    freeze_state()
                    log.info("ACD: start-up state frozen out of the garbage collector")
                deadline = self.engine.next_deadline()
                if deadline is not None:
                    delay = deadline - self._clock()
                    if delay <= 0:
                        self._step(Tick(), None, None)
                        await asyncio.sleep(0)  # let the loop breathe between timer batches
                        continue
                    if self._timer is None or self._timer_at > deadline:
                        if self._timer is not None:
                            self._timer.cancel()
                        self._timer = loop.call_later(delay, self._on_timer)
                        self._timer_at = deadline
                self._wakeup = loop.create_future()
                try:
                    await self._wakeup
                finally:
                    self._wakeup = None
        finally:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _on_timer(self) -> None:
        self._timer = None  # fired: the next sleep sets one for the next deadline
        self._wake()

    def _step(self, event: Event, at: float | None, fut: asyncio.Future[Any] | None) -> None:
        # The engine's time is the moment it takes the event, not the event's own timestamp:
        # events reach it in Asterisk's order, so this keeps their order and never makes two
        # agents freed one after the other look freed at the same instant (the engine does
        # not let time go backwards, so mixing AMI timestamps with the clock of FastAGI joins
        # would collapse them into ties under load). ``at`` is kept for the record.
        when = self._clock()
        try:
            effects = self.engine.handle(event, when)
        except AcdError as exc:
            if fut is not None and not fut.done():
                fut.set_exception(exc)
            else:
                log.warning("ACD refused %s: %s", event, exc)
            return
        except Exception:  # a bug must not kill the only task that routes calls
            log.exception("ACD engine failed on %s; event dropped", event)
            if fut is not None and not fut.done():
                fut.set_exception(AcdError("internal error"))
            return
        try:
            self._sink(event, effects)
        except Exception:
            log.exception("carrying out effects of %s failed", event)
        if fut is not None and not fut.done():
            fut.set_result(effects)
