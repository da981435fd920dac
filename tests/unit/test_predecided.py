"""The pre-decided ring (docs/fast-path.md): which numbers qualify, the engine's peek and
claimed joins, and the calls feature's tokens and publications as AMI actions. The engine
is the real one; the AMI side records the actions that would be sent."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from ctiserver.asterisk.ami_calls import AmiCallEvents, groups_available
from ctiserver.calls import adoption
from ctiserver.calls.model import Call, CallInfo, InboundCall
from ctiserver.calls.predecided import FixedRoute, PreDecided, token_key
from ctiserver.calls.routing import Routing
from ctiserver.core.acd import events as ev
from ctiserver.core.acd.engine import Engine
from ctiserver.core.acd.model import AcdConfig, AgentConfig, QueueConfig, Strategy
from ctiserver.core.rules import Known, load_ruleset
from ctiserver.core.rules.fixed import fixed_decisions
from tests.unit.acd_helpers import Harness, agent, config, rung
from tests.unit.test_calls_tracker import Actions, adapter_for, ami

NOW = datetime(2026, 12, 7, 11, 0, tzinfo=ZoneInfo("Europe/Madrid"))
KNOWN = Known(queues=frozenset({"support", "sales", "vip"}), agents=frozenset({"1001"}))


# ---------------------------------------------------------------- which numbers qualify


def fixed(body: str) -> dict[str, str]:
    result = load_ruleset({"r.yaml": "config: {timezone: Europe/Madrid, region: ES, "
                                     "default: {queue: support}}\nrules:\n" + body}, KNOWN)
    assert result.ruleset is not None, result.problems
    return {n: d.queue or "" for n, d in fixed_decisions(result.ruleset, NOW).items()}


def test_a_number_routed_by_the_number_alone_is_pre_decided() -> None:
    assert fixed("""
  - name: sales line
    if: dnis == '900100200'
    then: {queue: sales}
  - name: support lines
    if: dnis in ['900100300', '900100301']
    then: {queue: support}
""") == {"900100200": "sales", "900100300": "support", "900100301": "support"}


def test_anything_read_before_the_deciding_rule_rules_the_number_out() -> None:
    # a VIP rule on the caller comes first: every call to the sales line depends on it
    assert fixed("""
  - name: vip
    if: caller_id == '+34600000001'
    then: {queue: vip}
  - name: sales line
    if: dnis == '900100200'
    then: {queue: sales}
""") == {}
    # after the deciding rule, it does not matter; a rule on the time does
    assert fixed("""
  - name: sales line
    if: dnis == '900100200'
    then: {queue: sales}
  - name: night
    if: dnis == '900100300' and hour >= 20
    then: {queue: support}
""") == {"900100200": "sales"}


def test_only_plain_queues_are_pre_decided() -> None:
    assert fixed("""
  - name: closed line
    if: dnis == '900100400'
    then: {message: [closed]}
  - name: nested
    if: dnis == '900100500'
    then:
      - name: inner
        if: dnis == '900100500'
        then: {queue: vip}
""") == {}


# ---------------------------------------------------------------- the engine


def two_agents(strategy: Strategy = Strategy.LONGEST_IDLE) -> Harness:
    h = Harness(config([QueueConfig("support", strategy=strategy, ring_timeout=12)],
                       [agent("1001", "support"), agent("1002", "support")]))
    h.login("1001", "1002")
    return h


def test_peek_names_the_agent_the_next_caller_gets_and_changes_nothing() -> None:
    h = two_agents()
    before = h.engine.snapshot(h.t)
    assert h.engine.peek("support", 0, {}, h.t) == "1001"  # idle longest
    assert h.engine.snapshot(h.t) == before
    assert rung(h.after(1, ev.CallerJoined("c1", "support"))) == [("c1", ("1001",))]
    assert h.engine.peek("support", 0, {}, h.t) == "1002"
    h.after(1, ev.CallerJoined("c2", "support"))
    assert h.engine.peek("support", 0, {}, h.t) is None  # nobody free


def test_peek_is_none_when_a_caller_waits_or_the_queue_rings_several() -> None:
    h = two_agents()
    h.after(1, ev.AgentPaused("1001", "lunch"))
    h.after(1, ev.AgentPaused("1002", "lunch"))
    h.after(1, ev.CallerJoined("w1", "support"))
    h.after(1, ev.AgentReady("1001"))  # offered to the waiting caller
    h.after(1, ev.RingFailed("w1", "1001", "noanswer"))
    assert h.engine.peek("support", 0, {}, h.t) is None
    assert two_agents(Strategy.RING_ALL).engine.peek("support", 0, {}, 2000) is None


def test_a_claimed_join_rings_the_claimed_agent() -> None:
    h = two_agents()
    out = h.after(1, ev.CallerJoined("c1", "support", claimed="1002"))
    assert rung(out) == [("c1", ("1002",))]
    assert h.state("1002") == "offered"


def test_a_claim_takes_the_agent_back_from_an_offer_not_rung_yet() -> None:
    h = two_agents()
    assert rung(h.after(1, ev.CallerJoined("slow", "support"))) == [("slow", ("1001",))]
    out = h.after(0.001, ev.CallerJoined("fast", "support", claimed="1001"))
    cancels = [e for e in out if isinstance(e, ev.CancelRing)]
    assert [(c.call_id, c.agent_ids) for c in cancels] == [("slow", ("1001",))]
    # the caller who lost the agent goes first again, to the other agent
    assert sorted(rung(out)) == [("fast", ("1001",)), ("slow", ("1002",))]


def test_a_claim_of_an_agent_no_longer_available_leaves_the_caller_waiting() -> None:
    h = two_agents()
    h.after(1, ev.AgentPaused("1001", "lunch"))
    h.after(1, ev.AgentPaused("1002", "lunch"))
    out = h.after(1, ev.CallerJoined("c1", "support", claimed="1001"))
    assert rung(out) == [] and h.engine.position("c1") == 1


# ---------------------------------------------------------------- tokens and publications


class World:
    """Engine, tracker, AMI adapter and the pre-decided ring, wired as the daemon does."""

    def __init__(self, strategy: Strategy = Strategy.LONGEST_IDLE) -> None:
        cfg = AcdConfig({"support": QueueConfig("support", strategy=strategy,
                                                ring_timeout=12)},
                        {a: AgentConfig(a, a, f"PJSIP/{a}", queues=("support",))
                         for a in ("1001", "1002")})
        self.engine = Engine(cfg)
        self.actions = Actions()
        self.t = 1000.0
        self.adapter: AmiCallEvents = adapter_for(self.actions, self.submit, None, cfg)
        self.tracker = self.adapter.tracker
        self.pd = PreDecided(self.adapter.tracker.telephony, self.tracker,  # type: ignore[attr-defined]
                             self.engine.peek, {a: f"PJSIP/{a}" for a in ("1001", "1002")},
                             clock=lambda: self.t)
        self.tracker.claims = self.pd  # type: ignore[attr-defined]
        for a in ("1001", "1002"):
            self.submit(ev.AgentLoggedIn(a), None)
        self.pd.set_routes({"900100999": FixedRoute("900100999", "support", ring_timeout=12,
                                                    described="queue support (rule line)")})
        self.pd.refresh()

    def submit(self, event: ev.Event, at: float | None) -> None:
        self.t += 0.001
        self.tracker.carry_out(event, self.engine.handle(event, self.t))  # type: ignore[attr-defined]

    def globals_set(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for a in self.actions.sent:
            if a["Action"] == "Setvar" and "Channel" not in a:
                out[a["Variable"]] = a["Value"]
        return out

    def take(self) -> list[dict[str, str]]:
        sent, self.actions.sent = self.actions.sent, []
        return sent

    def fast_dial(self, uid: str, agent: str, number: str = "900100999") -> None:
        self.adapter.on_ami_event(ami(f"""
            Event: DialBegin
            Timestamp: {self.t}
            Channel: PJSIP/trunk-{uid}
            CallerIDNum: 915551234
            CallerIDName: Ana
            Context: ctiserver-inbound
            Exten: {number}
            Uniqueid: {uid}
            Linkedid: {uid}
            DestChannel: PJSIP/{agent}-9{uid}
            DestUniqueid: 9{uid}"""))
        self.pd.refresh()


def test_the_longest_idle_agent_is_published_with_its_token_first() -> None:
    w = World()
    sent = w.take()
    names = [a["Variable"] for a in sent if a["Action"] == "Setvar"]
    assert names.index(f"CTI_FREE_{token_key('PJSIP/1001')}") < names.index("CTI_NEXT_900100999")
    g = {a["Variable"]: a["Value"] for a in sent}
    assert g["CTI_NEXT_900100999"] == "PJSIP/1001" and g["CTI_RT_900100999"] == "12"
    assert g["CTI_FREE_PJSIP1001"].isdigit()
    w.pd.refresh()
    assert w.take() == []  # nothing changed: nothing written


def test_a_caller_who_dialled_the_published_agent_is_taken_over_without_redirect() -> None:
    w = World()
    w.take()
    w.fast_dial("1795.1", "1001")
    sent = w.take()
    assert not [a for a in sent if a["Action"] == "Redirect"]
    assert w.engine.agent_state("1001") == "offered"
    call = w.tracker.calls["1795.1"]
    assert call.info.caller_id == "+34915551234" and call.info.dnis == "900100999"
    assert call.info.queue == "support" and "pre-decided" in call.route
    # the next caller's agent, with a token of its own
    g = {a["Variable"]: a["Value"] for a in sent}
    assert g["CTI_NEXT_900100999"] == "PJSIP/1002" and g["CTI_FREE_PJSIP1002"].isdigit()


async def test_an_offer_of_a_published_agent_must_take_its_token() -> None:
    w = World()
    w.take()
    call = Call("1795.5", "PJSIP/trunk-5", CallInfo("1795.5", "+34600111222"))
    action, variables = await asyncio.wait_for(
        w.tracker.join(call, ev.CallerJoined("1795.5", "support")), 1)
    assert (action, variables["CTI_DIAL"]) == ("claim", "PJSIP/1001")
    # 1002 was never published: its offers need no token
    call2 = Call("1795.6", "PJSIP/trunk-6", CallInfo("1795.6", "+34600111223"))
    w.pd.published.clear()
    w.pd.live.clear()
    action, _ = await asyncio.wait_for(
        w.tracker.join(call2, ev.CallerJoined("1795.6", "support")), 1)
    assert action == "connect"


async def test_an_offer_that_lost_the_token_yields_to_the_caller_who_took_it() -> None:
    w = World()
    w.take()
    slow = Call("1795.5", "PJSIP/trunk-5", CallInfo("1795.5", "+34600111222"))
    assert (await w.tracker.join(slow, ev.CallerJoined("1795.5", "support")))[0] == "claim"
    # the dialplan says the slow caller's claim found the token taken ...
    w.adapter.on_ami_event(ami("""
        Event: UserEvent
        UserEvent: CtiClaimLost
        CallId: 1795.5
        Dial: PJSIP/1001"""))
    assert w.tracker.claims_lost == {"1001": "1795.5"}
    w.pd.refresh()
    assert "CTI_NEXT_900100999" not in w.globals_set() or \
        w.globals_set()["CTI_NEXT_900100999"] != "PJSIP/1001"
    w.take()
    # ... by a caller who dialled 1001 on its own: it gets 1001, the slow one 1002
    w.fast_dial("1795.7", "1001")
    assert w.tracker.claims_lost == {}
    assert w.engine.agent_state("1001") == "offered"
    assert w.engine.calls["1795.7"].offered_to == {"1001"}
    assert w.engine.calls["1795.5"].offered_to == {"1002"}
    redirects = [a for a in w.take() if a["Action"] == "Redirect"]
    # (1002 was published meanwhile: its offer takes the token too)
    assert [r["Context"] for r in redirects] == ["ctiserver-hold", "ctiserver-claim"]


async def test_a_lost_token_nobody_used_is_given_up_after_a_while(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ctiserver.calls.tracker.CLAIM_LOST_WAIT", 0.01)
    w = World()
    slow = Call("1795.5", "PJSIP/trunk-5", CallInfo("1795.5", "+34600111222"))
    await w.tracker.join(slow, ev.CallerJoined("1795.5", "support"))
    expired = asyncio.Event()
    original = w.tracker._claim_lost_expired

    def expire(*args: object) -> None:
        original(*args)  # type: ignore[arg-type]
        expired.set()

    w.tracker._claim_lost_expired = expire  # type: ignore[method-assign]
    w.adapter.on_ami_event(ami("""
        Event: UserEvent
        UserEvent: CtiClaimLost
        CallId: 1795.5
        Dial: PJSIP/1001"""))
    await asyncio.wait_for(expired.wait(), 2)
    assert w.tracker.claims_lost == {}
    # offered again, to the longest idle, without a token to take (its token is gone)
    assert w.engine.calls["1795.5"].offered_to == {"1001"}
    assert [a["Context"] for a in w.actions.sent if a["Action"] == "Redirect"] == [
        "ctiserver-connect"]


def test_a_paused_agent_loses_its_token_and_its_publication() -> None:
    w = World()
    w.take()
    w.submit(ev.AgentPaused("1001", "lunch"), None)
    w.pd.refresh()
    g = w.globals_set()
    assert g["CTI_FREE_PJSIP1001"] == ""
    assert g["CTI_NEXT_900100999"] == "PJSIP/1002"


def test_no_publication_for_ring_all_queues() -> None:
    w = World(Strategy.RING_ALL)
    assert w.globals_set().get("CTI_NEXT_900100999", "") == ""
    assert not any(k.startswith("CTI_FREE_") for k in w.globals_set())


class Channel:
    """The dialplan's side of a FastAGI request: what routing answered."""

    def __init__(self) -> None:
        self.answers: list[tuple[str, dict[str, str]]] = []

    async def run_ivr(self, session: object) -> dict[str, object]:
        raise AssertionError("no IVR for a caller already queued")

    async def answer(self, action: str, variables: Mapping[str, str]) -> None:
        self.answers.append((action, dict(variables)))


async def test_a_pre_decided_ring_not_answered_asks_and_is_held() -> None:
    w = World()
    w.fast_dial("1795.1", "1001")
    routing = Routing(w.tracker, rules=None, acd=lambda: None,  # type: ignore[arg-type]
                      request_acd=None)  # type: ignore[arg-type]
    channel = Channel()
    await routing.route(InboundCall("1795.1", "PJSIP/trunk-1795.1", "915551234", "Ana",
                                    "900100999"), channel)
    [(action, variables)] = channel.answers
    assert action == "hold"
    # what a restarted ctiserver needs to take the caller back, from the pre-decided join
    assert adoption.decode(variables["CTI_ADOPT"]).queue == w.engine.calls["1795.1"].queue
    assert w.engine.calls["1795.1"].offered_to == {"1001"}  # nothing else changed


async def test_a_new_call_goes_to_the_fallback_while_the_ami_link_is_down() -> None:
    # ctiserver would not hear the agent answer, nor be able to move the caller on hold
    w = World()
    routing = Routing(w.tracker, rules=None, acd=lambda: None,  # type: ignore[arg-type]
                      request_acd=None, linked=lambda: False)  # type: ignore[arg-type]
    channel = Channel()
    await routing.route(InboundCall("1795.2", "PJSIP/trunk-1795.2", "915551234", "Ana",
                                    "900100999"), channel)
    assert channel.answers == [("fallback", {})]
    assert "1795.2" not in w.engine.calls and "1795.2" not in w.tracker.calls


class Asks:
    """An AMI connection that answers Getvar as Asterisk does, with or without the
    function."""

    def __init__(self, value: str | None) -> None:
        self.value = value

    async def call(self, action: dict[str, str], timeout: float = 5.0) -> dict[str, str]:
        assert action["Action"] == "Getvar"
        if self.value is None:
            raise ConnectionError("AMI not connected")
        return {"Response": "Success", "Variable": action["Variable"], "Value": self.value}


async def test_without_asterisk_groups_nothing_is_pre_decided() -> None:
    assert await groups_available(Asks("0")) is True  # type: ignore[arg-type]
    assert await groups_available(Asks("")) is False  # type: ignore[arg-type]
    assert await groups_available(Asks(None)) is None  # type: ignore[arg-type]
    w = World()
    w.take()
    w.pd.disable("no GROUP_COUNT")
    g = w.globals_set()
    assert g["CTI_NEXT_900100999"] == "" and g["CTI_FREE_PJSIP1001"] == ""
    w.pd.set_routes({"900100999": FixedRoute("900100999", "support")})
    w.pd.refresh()
    assert w.pd.routes == {} and not w.pd.published


OTHER = "  - name: other\n    if: caller_id == '+34600000001'\n    then: {queue: support}\n"


class RulesInForce:
    def __init__(self, version: str, body: str) -> None:
        self.version = version
        result = load_ruleset({"r.yaml": "config: {timezone: Europe/Madrid, region: ES, "
                                         "default: {queue: support}}\nrules:\n" + body},
                              Known(queues=frozenset({"support"})))
        assert result.ruleset is not None, result.problems
        self.ruleset = result.ruleset


def test_the_routes_follow_the_rules_in_force() -> None:
    w = World()
    w.pd.set_routes({})
    w.take()
    acd = w.engine.config
    zone = ZoneInfo("Europe/Madrid")
    w.pd.follow(RulesInForce("v1", "  - name: line\n    if: dnis == '900100111'\n"
                                   "    then: {queue: support}\n"), acd, zone)
    w.pd.refresh()
    g = w.globals_set()
    assert g["CTI_NEXT_900100111"] == "PJSIP/1001" and g["CTI_RT_900100111"] == "12"
    w.take()
    # the same version again: nothing worked out, nothing written
    w.pd.follow(RulesInForce("v1", OTHER), acd, zone)
    w.pd.refresh()
    assert w.take() == []
    # a new version without the number: withdrawn
    w.pd.follow(RulesInForce("v2", OTHER), acd, zone)
    w.pd.refresh()
    assert w.globals_set() == {"CTI_NEXT_900100111": ""}


def test_a_pre_decided_caller_gets_its_adoption_with_its_first_move_only() -> None:
    """It never asked over FastAGI, so its channel has no CTI_ADOPT: found on hold by a
    restarted ctiserver it could not be taken back (a bench run found one left to
    CTI_MAXHOLD). The first Redirect carries it; later moves do not repeat it."""
    w = World()
    w.fast_dial("1795.1", "1001")
    w.take()
    w.adapter.on_ami_event(ami("""
        Event: DialEnd
        Timestamp: 1001.0
        Uniqueid: 1795.1
        DestChannel: PJSIP/1001-91795.1
        DestUniqueid: 91795.1
        DialStatus: NOANSWER"""))
    first = [a for a in w.take() if a.get("Channel") == "PJSIP/trunk-1795.1"]
    adopt = [a["Value"] for a in first if a.get("Variable") == "CTI_ADOPT"]
    assert len(adopt) == 1 and adoption.decode(adopt[0]).queue == "support"
    assert [a["Action"] for a in first][-1] == "Redirect"
    w.submit(ev.RingFailed("1795.1", "1002", "noanswer"), None)  # the next offer fails too
    later = [a for a in w.take() if a.get("Channel") == "PJSIP/trunk-1795.1"]
    assert not [a for a in later if a.get("Variable") == "CTI_ADOPT"]
