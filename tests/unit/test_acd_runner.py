"""The task that owns the engine: order, timers, refusals, and time as it sees it."""

from __future__ import annotations

import asyncio
import gc
import itertools

import pytest

from ctiserver.acd.runner import AcdRunner
from ctiserver.core.acd import events as ev
from ctiserver.core.acd.engine import AcdError, Engine
from ctiserver.core.acd.model import AcdConfig, AgentConfig, QueueConfig


def engine(wrapup: float = 0.0) -> Engine:
    return Engine(AcdConfig(
        {"q": QueueConfig("q", wrapup=wrapup)},
        {a: AgentConfig(a, a, f"PJSIP/{a}", queues=("q",)) for a in ("a1", "a2", "a3")}))


async def run_with(runner: AcdRunner) -> asyncio.Task[None]:
    return asyncio.get_running_loop().create_task(runner.run())


async def test_agents_freed_one_after_another_keep_their_order_despite_old_timestamps() -> None:
    ticks = itertools.count(1000.0, 0.001)  # a clock that moves 1 ms per reading
    rings: list[tuple[str, ...]] = []

    def sink(_event: ev.Event, effects: list[ev.Effect]) -> None:
        rings.extend(e.agent_ids for e in effects if isinstance(e, ev.Ring))

    runner = AcdRunner(engine(), sink, clock=lambda: next(ticks))
    task = await run_with(runner)
    for a in ("a1", "a2", "a3"):
        await runner.request(ev.AgentLoggedIn(a))
    for i, a in enumerate(("a1", "a2", "a3")):
        await runner.request(ev.CallerJoined(f"c{i}", "q"))
        runner.submit(ev.RingAnswered(f"c{i}", a), at=500.0)
    # calls end in the order a3, a1, a2; AMI timestamps older than the joins' clock
    for call, at in (("c2", 900.0), ("c0", 900.5), ("c1", 901.0)):
        runner.submit(ev.CallEnded(call), at=at)
    await runner.request(ev.CallerJoined("next", "q"))
    task.cancel()
    # a3 has been idle longest: it must get the next call, not a tie broken by member order
    assert rings[-1] == ("a3",)


async def test_refusals_reach_the_requester_and_the_task_survives() -> None:
    runner = AcdRunner(engine(), lambda _e, _f: None)
    task = await run_with(runner)
    with pytest.raises(AcdError):
        await runner.request(ev.AgentPaused("nobody", "lunch"))
    assert await runner.request(ev.AgentLoggedIn("a1")) != []
    task.cancel()


async def test_timers_fire_without_events() -> None:
    states: list[str] = []
    seen = asyncio.Event()

    def sink(_event: ev.Event, effects: list[ev.Effect]) -> None:
        for e in effects:
            if isinstance(e, ev.AgentStateChanged):
                states.append(e.state)
                if e.state == "ready" and "wrap_up" in states:
                    seen.set()

    runner = AcdRunner(engine(wrapup=0.05), sink)
    task = await run_with(runner)
    await runner.request(ev.AgentLoggedIn("a1"))
    await runner.request(ev.CallerJoined("c1", "q"))
    await runner.request(ev.RingAnswered("c1", "a1"))
    await runner.request(ev.CallEnded("c1"))
    await asyncio.wait_for(seen.wait(), 2)  # wrap-up ends by the runner's own Tick
    task.cancel()
    assert states[-2:] == ["wrap_up", "ready"]


async def test_the_state_built_from_the_start_up_events_is_frozen_out_of_the_gc() -> None:
    gc.unfreeze()
    runner = AcdRunner(engine(), lambda _e, _f: None)
    runner.submit(ev.AgentLoggedIn("a1"))  # queued before the task runs, as at start
    state = runner.engine.agents["a1"]
    task = await run_with(runner)
    await runner.request(ev.AgentLoggedIn("a2"))
    task.cancel()
    assert gc.get_freeze_count() > 0
    assert not any(o is state for o in gc.get_objects())  # not in a collected generation


async def test_an_earlier_deadline_after_a_later_one_fires_first_and_the_later_one_still_fires(
) -> None:
    """The runner keeps one timer across sleeps: a deadline earlier than the one it is
    set for must re-arm it, and the later one must not be forgotten once it fires."""
    ready: list[str] = []
    at: dict[str, float] = {}
    both = asyncio.Event()
    loop = asyncio.get_running_loop()

    def sink(_event: ev.Event, effects: list[ev.Effect]) -> None:
        for e in effects:
            if isinstance(e, ev.AgentStateChanged) and e.state == "ready":
                ready.append(e.agent_id)
                at[e.agent_id] = loop.time()
        if len(ready) == 4:  # each logged in, then each back from wrap-up
            both.set()

    eng = Engine(AcdConfig(
        {"slow": QueueConfig("slow", wrapup=0.4), "fast": QueueConfig("fast", wrapup=0.05)},
        {"a1": AgentConfig("a1", "a1", "PJSIP/a1", queues=("slow",)),
         "a2": AgentConfig("a2", "a2", "PJSIP/a2", queues=("fast",))}))
    runner = AcdRunner(eng, sink)
    task = await run_with(runner)
    for agent, queue in (("a1", "slow"), ("a2", "fast")):
        await runner.request(ev.AgentLoggedIn(agent))
        await runner.request(ev.CallerJoined(f"call-{agent}", queue))
        await runner.request(ev.RingAnswered(f"call-{agent}", agent))
    await runner.request(ev.CallEnded("call-a1"))  # a1 ready again in 0.4 s
    await runner.request(ev.CallEnded("call-a2"))  # a2 in 0.05 s: sooner
    ended = loop.time()
    await asyncio.wait_for(both.wait(), 2)
    task.cancel()
    assert ready[2:] == ["a2", "a1"]
    assert at["a2"] - ended < 0.25 < at["a1"] - ended  # not held until a1's deadline


async def test_after_steps_hooks_run_once_everything_queued_is_taken_and_a_poke_runs_them(
) -> None:
    seen: list[str] = []

    def sink(event: ev.Event, _effects: list[ev.Effect]) -> None:
        seen.append(type(event).__name__)

    def broken() -> None:
        raise RuntimeError("a broken hook")

    runner = AcdRunner(engine(), sink, freeze_at_start=False)
    runner.after_steps(broken)  # logged; the task and the next hook go on
    hooked = asyncio.Event()
    runner.after_steps(lambda: (seen.append("hook"), hooked.set()))
    task = await run_with(runner)
    await asyncio.wait_for(hooked.wait(), 1)  # the first pass, nothing queued
    seen.clear()
    hooked.clear()
    for a in ("a1", "a2", "a3"):  # queued in one go: taken before the hooks run
        runner.submit(ev.AgentLoggedIn(a))
    await asyncio.wait_for(hooked.wait(), 1)
    assert seen == ["AgentLoggedIn"] * 3 + ["hook"]
    hooked.clear()
    runner.poke()
    await asyncio.wait_for(hooked.wait(), 1)
    assert seen[-1] == "hook" and not task.done()
    task.cancel()
