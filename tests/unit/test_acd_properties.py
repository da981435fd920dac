"""ACD invariants under random sequences of events (hypothesis stateful testing).

A fake telephone network answers, fails and hangs up at random; after every step the
engine's public snapshot must satisfy the invariants:
- an agent never has two calls, a call is never ringing two agents except under
  ring-all;
- no available agent stays idle while a waiting caller it could serve is in line;
- longest idle always rings the true maximum;
- no caller is lost: every call that joined is answered, abandoned, overflowed, or
  still in line.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from ctiserver.core.acd.engine import AcdError, Engine
from ctiserver.core.acd.events import (
    AgentLoggedIn,
    AgentLoggedOut,
    AgentPaused,
    AgentReady,
    AgentStateChanged,
    CallAbandoned,
    CallEnded,
    CallerJoined,
    CallerLeft,
    DeviceStateChanged,
    Effect,
    Event,
    Overflow,
    Ring,
    RingAnswered,
    RingFailed,
    Tick,
)
from ctiserver.core.acd.model import AcdConfig, QueueConfig, SkillRelax, Strategy

from .acd_helpers import agent, config

AGENTS = ["a1", "a2", "a3", "a4", "a5", "a6"]
SKILLS = {
    "a1": {"es": 9, "en": 3},
    "a2": {"es": 4},
    "a3": {"en": 8},
    "a4": {"en": 2, "es": 2},
    "a5": {"de": 6},
    "a6": {"es": 1, "en": 1, "de": 1},
}
MEMBERS = {
    "li": ("a1", "a2", "a3", "a4"),
    "ra": ("a3", "a4", "a5"),
    "x": ("a1", "a5", "a6", "a2"),
}
CALL_SKILLS = [{}, {"es": 5}, {"en": 3}, {"de": 2}, {"es": 2, "en": 2}]


def build_config(x_strategy: Strategy) -> AcdConfig:
    relax = (SkillRelax(20, 2), SkillRelax(45, 0))
    queues = [
        QueueConfig(
            "li",
            Strategy.LONGEST_IDLE,
            wrapup=3,
            members=MEMBERS["li"],
            skill_relax=relax,
            announce_frequency=7,
            max_wait=120,
            overflow="queue:x",
        ),
        QueueConfig(
            "ra",
            Strategy.RING_ALL,
            ring_timeout=8,
            members=MEMBERS["ra"],
            priority=2,
            when_no_agents="overflow",
            overflow="queue:li",
        ),
        QueueConfig(
            "x",
            x_strategy,
            members=MEMBERS["x"],
            skill_relax=relax,
            max_wait=90,
            overflow="voicemail:1",
            preferred_agent_timeout=15,
            required_skills={"es": 1},
        ),
    ]
    return config(queues, [agent(a, skills=SKILLS[a]) for a in AGENTS])


def fits(
    cfg: AcdConfig, agent_id: str, queue: str, call_skills: dict[str, int], waited: float
) -> bool:
    q = cfg.queues[queue]
    req = dict(q.required_skills)
    for k, v in call_skills.items():
        req[k] = max(req.get(k, 0), v)
    cap = None
    for step in sorted(q.skill_relax, key=lambda s: s.after):
        if waited >= step.after:
            cap = step.min_level if cap is None else min(cap, step.min_level)
    have = cfg.agents[agent_id].skills
    for k, v in req.items():
        need = v if cap is None else min(v, cap)
        if have.get(k, 0) < max(need, 1):
            return False
    return True


class AcdMachine(RuleBasedStateMachine):
    @initialize(strategy=st.sampled_from(list(Strategy)), seed=st.integers(0, 2**16))
    def setup(self, strategy: Strategy, seed: int) -> None:
        self.cfg = build_config(strategy)
        self.engine = Engine(self.cfg, rng=random.Random(seed))
        self.t = 1000.0
        self.n = 0
        self.call_skills: dict[str, dict[str, int]] = {}
        self.live: set[str] = set()  # joined, not yet finished
        self.connected: set[str] = set()
        self.finished: set[str] = set()

    # ------------------------------------------------------------- driving

    def send(self, event: Event, dt: float = 0.0) -> list[Effect]:
        self.t += dt
        try:
            out = self.engine.handle(event, self.t)
        except AcdError:
            # refused, nothing changed, not even the timers due by now: the runner's own
            # Tick at next_deadline() would fire them, so does this one
            return [] if isinstance(event, Tick) else self.send(Tick())
        for e in out:
            if isinstance(e, CallAbandoned | Overflow):
                assert e.call_id in self.live, f"{e} for a call not in line"
                self.live.discard(e.call_id)
                self.finished.add(e.call_id)
            elif isinstance(e, AgentStateChanged) and e.state == "on_call":
                assert e.call_id in self.live
                self.live.discard(e.call_id)
                self.connected.add(e.call_id or "")
            elif isinstance(e, Ring):
                assert e.agent_ids and len(set(e.agent_ids)) == len(e.agent_ids)
        return out

    def snap(self) -> dict:  # type: ignore[type-arg]
        return self.engine.snapshot(self.t)

    def ringing(self) -> list[tuple[str, str]]:
        return sorted(
            (a["call_id"], a["id"]) for a in self.snap()["agents"] if a["state"] == "offered"
        )

    @rule(
        queue=st.sampled_from(["li", "ra", "x"]),
        priority=st.integers(0, 2),
        skills=st.sampled_from(CALL_SKILLS),
        preferred=st.sampled_from([None, None, None, "a1", "a6"]),
        dt=st.sampled_from([0.0, 0.5, 2.0]),
    )
    def join(
        self, queue: str, priority: int, skills: dict[str, int], preferred: str | None, dt: float
    ) -> None:
        self.n += 1
        cid = f"c{self.n}"
        self.send(Tick(), dt)
        before = {a["id"]: a for a in self.snap()["agents"]}
        self.call_skills[cid] = skills
        self.live.add(cid)
        out = self.send(CallerJoined(cid, queue, priority, skills, preferred))
        mine = [r for r in out if isinstance(r, Ring) and r.call_id == cid]
        if queue == "li" and preferred is None and not any(isinstance(e, Overflow) for e in out):
            pool = [
                a
                for a in MEMBERS["li"]
                if before[a]["offerable"]
                and before[a]["state"] == "ready"
                and fits(self.cfg, a, queue, skills, 0.0)
            ]
            if pool:
                best = max(pool, key=lambda a: (before[a]["idle_ms"], -MEMBERS["li"].index(a)))
                assert [r.agent_ids for r in mine] == [(best,)], (pool, before)
            else:
                assert mine == []

    @rule(dt=st.sampled_from([0.5, 1.0, 3.0, 10.0, 30.0]))
    def tick(self, dt: float) -> None:
        self.send(Tick(), dt)

    @rule(data=st.data(), dt=st.sampled_from([0.0, 1.0, 4.0]))
    def answer(self, data: st.DataObject, dt: float) -> None:
        r = self.ringing()
        if r:
            call, agent_id = data.draw(st.sampled_from(r))
            self.send(RingAnswered(call, agent_id), dt)

    @rule(
        data=st.data(),
        reason=st.sampled_from(["noanswer", "busy", "unavailable", "cancel"]),
        dt=st.sampled_from([0.0, 5.0, 15.0]),
    )
    def fail(self, data: st.DataObject, reason: str, dt: float) -> None:
        r = self.ringing()
        if r:
            call, agent_id = data.draw(st.sampled_from(r))
            self.send(RingFailed(call, agent_id, reason), dt)

    @rule(data=st.data(), dt=st.sampled_from([0.0, 2.0, 20.0]))
    def caller_hangs_up(self, data: st.DataObject, dt: float) -> None:
        calls = sorted(self.live | self.connected)
        if calls:
            cid = data.draw(st.sampled_from(calls))
            was_connected = cid in self.connected
            self.send(CallerLeft(cid), dt)
            if was_connected:
                self.connected.discard(cid)
                self.finished.add(cid)

    @rule(data=st.data(), dt=st.sampled_from([1.0, 30.0]))
    def call_ends(self, data: st.DataObject, dt: float) -> None:
        if self.connected:
            cid = data.draw(st.sampled_from(sorted(self.connected)))
            self.send(CallEnded(cid), dt)
            self.connected.discard(cid)
            self.finished.add(cid)

    @rule(order=st.permutations(AGENTS))
    def everyone_ready(self, order: list[str]) -> None:
        """Agents log in or come back one by one (distinct idle clocks)."""
        for aid in order:
            self.send(AgentLoggedIn(aid), 0.25)
            self.send(AgentReady(aid), 0.0)

    @rule(
        agent_id=st.sampled_from(AGENTS),
        action=st.sampled_from(["login", "login", "ready", "pause", "logout", "login_nr"]),
        dt=st.sampled_from([0.0, 0.25, 1.0]),
    )
    def agent_action(self, agent_id: str, action: str, dt: float) -> None:
        event: Event = {
            "login": AgentLoggedIn(agent_id),
            "login_nr": AgentLoggedIn(agent_id, ready=False),
            "ready": AgentReady(agent_id),
            "pause": AgentPaused(agent_id, "break"),
            "logout": AgentLoggedOut(agent_id),
        }[action]
        self.send(event, dt)

    @rule(
        agent_id=st.sampled_from(AGENTS),
        state=st.sampled_from(["NOT_INUSE", "NOT_INUSE", "INUSE", "UNAVAILABLE", "RINGING"]),
    )
    def device(self, agent_id: str, state: str) -> None:
        self.send(DeviceStateChanged(f"PJSIP/{agent_id}", state))

    # ------------------------------------------------------------- invariants

    @invariant()
    def invariants(self) -> None:
        if not hasattr(self, "engine"):
            return
        snap = self.snap()
        agents = {a["id"]: a for a in snap["agents"]}
        # one call per agent, one agent per call (ring-all excepted)
        holders: dict[str, list[dict]] = {}  # type: ignore[type-arg]
        for a in agents.values():
            if a["state"] in ("offered", "on_call"):
                assert a["call_id"]
                holders.setdefault(a["call_id"], []).append(a)
        for held in holders.values():
            assert len(held) == 1 or all(a["state"] == "offered" for a in held)
        on_call = [a["call_id"] for a in agents.values() if a["state"] == "on_call"]
        assert len(on_call) == len(set(on_call))
        assert set(on_call) == self.connected
        in_line: set[str] = set()
        for q in snap["queues"]:
            for w in q["waiting"]:
                in_line.add(w["call_id"])
                if w["state"] == "offered":
                    assert w["offered_to"]
                    if q["strategy"] != "ring_all":
                        assert len(w["offered_to"]) == 1
                    for aid in w["offered_to"]:
                        assert agents[aid]["state"] == "offered"
                        assert agents[aid]["call_id"] == w["call_id"]
                elif w["state"] == "waiting":
                    # nobody available who could take this caller
                    for aid in MEMBERS[q["name"]]:
                        a = agents[aid]
                        if a["state"] == "ready" and a["offerable"]:
                            assert not fits(
                                self.cfg,
                                aid,
                                q["name"],
                                self.call_skills[w["call_id"]],
                                w["total_wait"],
                            ), (aid, w, q["name"])
                elif w["state"] == "reserved":
                    p = agents[w["preferred_agent"]]
                    assert not (p["state"] == "ready" and p["offerable"])
        # no caller lost
        assert in_line == self.live
        assert not (self.live & self.finished)
        for cid in self.live:
            assert self.engine.position(cid) is not None


TestAcdInvariants = AcdMachine.TestCase
TestAcdInvariants.settings = settings(
    max_examples=60,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# ---------------------------------------------------------------- longest idle


OPS = st.lists(
    st.tuples(
        st.sampled_from(["ready", "pause", "call", "call", "busy"]),
        st.integers(0, 7),
        st.sampled_from([0.0, 0.0005, 0.25, 3.0]),
        st.sampled_from([0.0, 2.0, 40.0]),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(ops=OPS, wrapup=st.sampled_from([0.0, 5.0]))
def test_longest_idle_rings_the_true_maximum(
    ops: list[tuple[str, int, float, float]], wrapup: float
) -> None:
    names = tuple(f"a{i}" for i in range(8))
    cfg = config(
        [QueueConfig("q", Strategy.LONGEST_IDLE, wrapup=wrapup, members=names)],
        [agent(a) for a in names],
    )
    eng = Engine(cfg)
    t = 0.0
    n = 0
    for name in names:
        t += 0.001
        eng.handle(AgentLoggedIn(name), t)
    for op, i, dt, talk in ops:
        t += dt
        aid = names[i]
        if op == "ready":
            eng.handle(AgentReady(aid), t)
        elif op == "pause":
            eng.handle(AgentPaused(aid), t)
        elif op == "busy":
            state = "INUSE" if eng.snapshot(t)["agents"][i]["offerable"] else "NOT_INUSE"
            eng.handle(DeviceStateChanged(f"PJSIP/{aid}", state), t)
        else:
            eng.handle(Tick(), t)
            before = eng.snapshot(t)["agents"]
            pool = [a for a in before if a["state"] == "ready" and a["offerable"]]
            n += 1
            out = eng.handle(CallerJoined(f"c{n}", "q"), t)
            rung = [r.agent_ids for r in out if isinstance(r, Ring)]
            if not pool:
                eng.handle(CallerLeft(f"c{n}"), t)
                assert rung == []
                continue
            best = max(pool, key=lambda a: (a["idle_ms"], -names.index(a["id"])))
            assert rung == [(best["id"],)]
            eng.handle(RingAnswered(f"c{n}", best["id"]), t)
            eng.handle(CallEnded(f"c{n}"), t + talk)
            t += talk
