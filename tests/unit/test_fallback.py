"""The app_queue fallback queue follows ctiserver's agents (calls/fallback.py): which member
changes follow which agent states, the reconcile at each AMI login, and what a missing
queue or a refusing Asterisk costs. The engine is the real one; the queue is a fake of our
own port (``QueueMembers``) that answers as Asterisk 22's app_queue does (the refusals'
texts are Asterisk's). The AMI translation is tested on messages as Asterisk 22 writes
them, parsed by panoramisk as the daemon parses them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from panoramisk.message import Message

from ctiserver.asterisk.ami_calls import AmiTelephony
from ctiserver.calls.fallback import LOGGED_OUT, FallbackFollower, pause_reason
from ctiserver.calls.model import MemberChange, QueueMember
from ctiserver.calls.ports import PbxRefused
from ctiserver.config import ConfigError, load
from ctiserver.core.acd import events as ev
from ctiserver.core.acd.model import QueueConfig
from tests.unit.acd_helpers import Harness, agent, config

Q = "ctiserver-fallback"
AGENTS = ("1001", "1002", "1003")


class AppQueue:
    """One app_queue queue behind the ``QueueMembers`` port, refusing as Asterisk does."""

    def __init__(self, members: Sequence[QueueMember] = (), *, exists: bool = True) -> None:
        self.members = {m.device: m for m in members}
        self.exists = exists
        self.connected = True
        self.refuse: str | None = None  # e.g. "Permission denied": every change refused
        self.dialplan_queue = Q
        self.batches: list[list[MemberChange]] = []  # what was sent, one list per write
        self.listing: asyncio.Event | None = None  # set: QueueStatus answers only then
        self.listed = 0  # QueueStatus asked
        self.changed = asyncio.Event()  # set at each request

    async def until(self, done: Callable[[], bool]) -> None:
        async with asyncio.timeout(2):
            while not done():
                self.changed.clear()
                await self.changed.wait()

    async def queue_members(self, queue: str) -> list[QueueMember] | None:
        if not self.connected:
            raise ConnectionError("AMI not connected")
        self.listed += 1
        self.changed.set()
        if self.listing is not None:
            await self.listing.wait()
        return list(self.members.values()) if self.exists and queue == Q else None

    async def change_members(self, queue: str, changes: Sequence[MemberChange]) -> list[str]:
        self.batches.append(list(changes))
        self.changed.set()
        return [r for c in changes if (r := self._apply(queue, c))]

    def change_members_nowait(self, queue: str, changes: Sequence[MemberChange]) -> bool:
        if not self.connected:
            return False
        self.batches.append(list(changes))
        self.changed.set()
        for c in changes:
            self._apply(queue, c)
        return True

    async def dialplan_global(self, name: str) -> str | None:
        return self.dialplan_queue if name == "CTI_FALLBACK_QUEUE" else ""

    def _apply(self, queue: str, c: MemberChange) -> str:
        what = {"add": "QueueAdd", "remove": "QueueRemove", "pause": "QueuePause"}[c.action]
        if self.refuse:
            return f"{what} {c.device}: {self.refuse}"
        if not self.exists or queue != Q:
            return f"{what} {c.device}: Unable to add interface to queue: No such queue"
        m = self.members.get(c.device)
        if c.action == "add":
            if m is not None:
                return f"{what} {c.device}: Unable to add interface: Already there"
            self.members[c.device] = QueueMember(c.device, c.name, c.device, c.paused,
                                                 c.reason if c.paused else "")
        elif c.action == "remove":
            if m is None:
                return f"{what} {c.device}: Unable to remove interface: Not there"
            if not m.dynamic:
                return f"{what} {c.device}: Member not dynamic"
            del self.members[c.device]
        else:
            if m is None:
                return f"{what} {c.device}: Interface not found"
            self.members[c.device] = replace(m, paused=c.paused,
                                             reason=c.reason if c.paused else "")
        return ""

    def seats(self) -> dict[str, tuple[bool, str]]:
        """agent id -> (paused, reason) of every member, by its MemberName."""
        return {m.name: (m.paused, m.reason) for m in self.members.values()}

    def sent(self) -> list[tuple[str, str, bool, str]]:
        return [(c.action, c.device, c.paused, c.reason) for b in self.batches for c in b]


class World:
    """The real engine, the follower fed with its effects as the daemon feeds it."""

    def __init__(self, queue: AppQueue | None = None, agents: Sequence[str] = AGENTS,
                 soon_tries: int = 5) -> None:
        cfg = config([QueueConfig("support", ring_timeout=10, wrapup=5)],
                     [agent(a, "support") for a in agents])
        self.acd = Harness(cfg)
        self.queue = queue or AppQueue()
        # a long coalescing delay: the tests flush by hand, as the timer would
        self.follower = FallbackFollower(self.queue, Q, {a: f"PJSIP/{a}" for a in agents},
                                         coalesce=3600, recheck=3600, soon=0,
                                         soon_tries=soon_tries)

    def do(self, event: ev.Event, dt: float = 1.0) -> list[ev.Effect]:
        effects = self.acd.after(dt, event)
        self.follower.follow(event, effects)
        return effects

    async def login(self) -> None:
        self.follower.logged_in()
        task = self.follower._task
        assert task is not None
        await asyncio.wait_for(task, 2)

    def flush(self) -> list[tuple[str, str, bool, str]]:
        """What the coalescing timer sends when it fires."""
        before = len(self.queue.sent())
        self.follower.flush()
        return self.queue.sent()[before:]


async def ready_world() -> World:
    w = World()
    for a in AGENTS:
        w.do(ev.AgentLoggedIn(a))
    await w.login()
    return w


# ---------------------------------------------------------------- which changes follow


async def test_logged_in_agents_become_members_at_login() -> None:
    w = await ready_world()
    assert w.queue.sent() == [("add", f"PJSIP/{a}", False, "") for a in AGENTS]
    m = w.queue.members["PJSIP/1001"]
    # named by the agent's id; app_queue reads the phone's own state
    assert (m.name, m.state_device, m.dynamic) == ("1001", "PJSIP/1001", True)


async def test_an_agents_own_pause_pauses_the_member_with_the_reason() -> None:
    w = await ready_world()
    w.do(ev.AgentPaused("1002", "lunch"))
    assert w.flush() == [("pause", "PJSIP/1002", True, "lunch")]
    w.do(ev.AgentPaused("1002", "meeting"))  # a supervisor changes the reason
    assert w.flush() == [("pause", "PJSIP/1002", True, "meeting")]
    w.do(ev.AgentReady("1002"))
    assert w.flush() == [("pause", "PJSIP/1002", False, "")]
    assert w.queue.seats()["1002"] == (False, "")


async def test_offered_on_call_and_wrap_up_change_nothing() -> None:
    w = await ready_world()
    before = w.queue.sent()
    w.do(ev.CallerJoined("c1", "support"))
    assert w.acd.state("1001") == "offered"
    w.do(ev.RingAnswered("c1", "1001"))
    w.do(ev.CallEnded("c1"))
    assert w.acd.state("1001") == "wrap_up"
    assert w.flush() == []
    w.do(ev.Tick(), dt=10)  # wrap-up over
    assert w.acd.state("1001") == "ready"
    assert w.flush() == [] and w.queue.sent() == before
    assert w.queue.seats()["1001"] == (False, "")


async def test_a_pause_asked_during_a_call_counts_at_once() -> None:
    w = await ready_world()
    w.do(ev.CallerJoined("c1", "support"))
    w.do(ev.RingAnswered("c1", "1001"))
    w.do(ev.AgentPaused("1001", "break"))
    assert w.acd.state("1001") == "on_call"  # the engine waits for the call's end
    assert w.flush() == [("pause", "PJSIP/1001", True, "break")]
    w.do(ev.CallEnded("c1"))
    w.do(ev.Tick(), dt=10)
    assert w.acd.state("1001") == "not_ready"
    assert w.flush() == []  # already so
    # a log-out asked during a call removes the member at once too
    w.do(ev.CallerJoined("c2", "support"))
    w.do(ev.RingAnswered("c2", "1002"))
    w.do(ev.AgentLoggedOut("1002"))
    assert w.flush() == [("remove", "PJSIP/1002", False, "")]
    w.do(ev.CallEnded("c2"))  # wrap-up of a logged-out agent: no member again
    w.do(ev.Tick(), dt=10)
    assert w.acd.state("1002") == "logged_out"
    assert w.flush() == [] and "1002" not in w.queue.seats()


async def test_a_ring_not_answered_pauses_like_ctiserver_does() -> None:
    # ctiserver gives the agent no call until they are ready again: nor does app_queue
    w = await ready_world()
    w.do(ev.CallerJoined("c1", "support"))
    w.do(ev.RingFailed("c1", "1001", "noanswer"))
    assert w.acd.state("1001") == "not_ready"
    assert w.flush() == [("pause", "PJSIP/1001", True, "no answer")]


async def test_logging_out_removes_and_logging_in_paused_adds_paused() -> None:
    w = await ready_world()
    w.do(ev.AgentLoggedOut("1003"))
    assert w.flush() == [("remove", "PJSIP/1003", False, "")]
    w.do(ev.AgentLoggedIn("1003", ready=False))
    w.do(ev.AgentPaused("1003", "training"))
    assert w.flush() == [("add", "PJSIP/1003", True, "training")]


async def test_fast_flips_are_coalesced() -> None:
    w = await ready_world()
    w.do(ev.AgentPaused("1001", "x"))
    w.do(ev.AgentReady("1001"))
    assert w.flush() == []  # back where it was: nothing to send
    w.do(ev.AgentPaused("1001", "a"))
    w.do(ev.AgentReady("1001"))
    w.do(ev.AgentPaused("1001", "b"))
    assert w.flush() == [("pause", "PJSIP/1001", True, "b")]


async def test_the_changes_go_out_on_their_own_a_moment_later() -> None:
    q = AppQueue()
    f = FallbackFollower(q, Q, {"1001": "PJSIP/1001"}, coalesce=0.05)
    f.logged_in()
    await asyncio.wait_for(f._task, 2)  # type: ignore[arg-type]
    f.follow(ev.AgentLoggedIn("1001"), [ev.AgentStateChanged("1001", "ready")])
    f.follow(ev.AgentPaused("1001", "x"), [ev.AgentStateChanged("1001", "not_ready", "x")])
    assert q.batches == []  # nothing on the engine's step itself
    await q.until(lambda: bool(q.batches))
    assert q.sent() == [("add", "PJSIP/1001", True, "x")]  # both steps, one action


async def test_a_stopping_ctiserver_sends_what_is_pending_and_leaves_the_members() -> None:
    w = await ready_world()
    w.do(ev.AgentPaused("1003", "end of shift"))
    await w.follower.close()
    assert w.queue.seats() == {"1001": (False, ""), "1002": (False, ""),
                               "1003": (True, "end of shift")}


async def test_agents_unknown_to_the_follower_are_ignored() -> None:
    w = await ready_world()
    w.follower.follow(ev.AgentLoggedIn("9999"), [ev.AgentStateChanged("9999", "ready")])
    assert w.flush() == []


def test_a_pause_reason_is_one_line_app_queue_can_keep() -> None:
    assert pause_reason("lunch\r\nAction: Hangup") == "lunch Action: Hangup"
    assert pause_reason("") == "not ready" and pause_reason(None) == "not ready"
    long = pause_reason("ñ" * 100)
    assert len(long.encode()) <= 79 and long == "ñ" * 39


# ---------------------------------------------------------------- the reconcile at login


async def test_the_reconcile_makes_asterisks_list_what_ctiserver_says() -> None:
    agents = ("1001", "1002", "1003", "1004", "1005", "1006")
    queue = AppQueue([
        QueueMember("PJSIP/1001", "1001", "PJSIP/1001", paused=True, reason="old"),  # ready
        # 1002 missing although logged in and paused
        QueueMember("PJSIP/1003", "1003", "PJSIP/1003"),  # logged out meanwhile
        QueueMember("PJSIP/1004", "Agent 1004", "PJSIP/1004"),  # added by hand
        QueueMember("PJSIP/1005", "Agent 1005", "PJSIP/1005", dynamic=False),  # queues.conf
        QueueMember("PJSIP/1099", "someone", "PJSIP/1099"),  # nobody's: ctiserver's queue
        QueueMember("PJSIP/1006", "1006", "PJSIP/1006", paused=True, reason="lunch"),  # as is
    ])
    w = World(queue, agents)
    for a in ("1001", "1002", "1004", "1006"):
        w.do(ev.AgentLoggedIn(a))
    w.do(ev.AgentPaused("1002", "lunch"))
    w.do(ev.AgentPaused("1006", "lunch"))
    await w.login()
    assert sorted(queue.sent()) == sorted([
        ("remove", "PJSIP/1099", False, ""),
        ("pause", "PJSIP/1001", False, ""),
        ("add", "PJSIP/1002", True, "lunch"),
        ("remove", "PJSIP/1003", False, ""),
        ("remove", "PJSIP/1004", False, ""), ("add", "PJSIP/1004", False, ""),
        ("pause", "PJSIP/1005", True, LOGGED_OUT),  # cannot be removed over AMI
    ])
    assert queue.seats() == {"1001": (False, ""), "1002": (True, "lunch"),
                             "1004": (False, ""), "Agent 1005": (True, LOGGED_OUT),
                             "1006": (True, "lunch")}
    # the member in queues.conf follows its agent from then on, paused when logged out
    w.do(ev.AgentLoggedIn("1005"))
    assert w.flush() == [("pause", "PJSIP/1005", False, "")]
    w.do(ev.AgentLoggedOut("1005"))
    assert w.flush() == [("pause", "PJSIP/1005", True, LOGGED_OUT)]


async def test_a_second_login_changes_nothing_when_nothing_changed() -> None:
    w = await ready_world()
    before = w.queue.sent()
    await w.login()
    assert w.queue.sent() == before


async def test_changes_while_asterisk_is_asked_are_sent_after_the_reconcile() -> None:
    w = World()
    for a in AGENTS:
        w.do(ev.AgentLoggedIn(a))
    w.queue.listing = asyncio.Event()
    w.follower.logged_in()
    await asyncio.sleep(0)  # the reconcile now waits for QueueStatus's answer
    w.do(ev.AgentPaused("1003", "late"))
    assert w.flush() == []  # not reconciled: nothing is sent
    w.queue.listing.set()
    await asyncio.wait_for(w.follower._task, 2)  # type: ignore[arg-type]
    assert w.queue.seats()["1003"] == (True, "late")


async def test_without_the_connection_nothing_is_sent_until_the_next_login() -> None:
    w = await ready_world()
    w.queue.connected = False
    w.do(ev.AgentPaused("1001", "x"))
    assert w.flush() == []
    w.queue.connected = True
    w.do(ev.AgentPaused("1002", "y"))
    assert w.flush() == []  # the state Asterisk holds is not known any more
    await w.login()
    assert w.queue.seats() == {"1001": (True, "x"), "1002": (True, "y"), "1003": (False, "")}


# ---------------------------------------------------------------- a queue that is not there


async def test_a_missing_queue_is_one_error_at_login_and_nothing_after(
        caplog: pytest.LogCaptureFixture) -> None:
    w = World(AppQueue(exists=False), soon_tries=3)
    with caplog.at_level(logging.INFO, logger="ctiserver"):
        for a in AGENTS:
            w.do(ev.AgentLoggedIn(a))
        w.follower.logged_in()
        await w.queue.until(lambda: w.queue.listed == 3)  # a few quick looks, then it says
        await w.queue.until(lambda: any(r.levelno == logging.ERROR for r in caplog.records))
        for a in AGENTS:
            w.do(ev.AgentPaused(a, "x"))
            w.do(ev.AgentReady(a))
        w.flush()
    assert w.queue.batches == []
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert "'ctiserver-fallback' does not exist" in errors[0]
    assert "[ctiserver-fallback] section" in errors[0] and "reload app_queue" in errors[0]


async def test_an_asterisk_still_loading_its_modules_is_looked_at_again_soon(
        caplog: pytest.LogCaptureFixture) -> None:
    class Loading(AppQueue):
        """QueueStatus unknown at first, then the queue not yet read, then all there."""

        async def queue_members(self, queue: str) -> list[QueueMember] | None:
            if self.listed == 0:
                self.listed += 1
                raise PbxRefused("QueueStatus: Invalid/unknown command: QueueStatus")
            self.exists = self.listed > 1
            return await super().queue_members(queue)

    w = World(Loading())
    with caplog.at_level(logging.WARNING, logger="ctiserver"):
        w.do(ev.AgentLoggedIn("1001"))
        w.follower.logged_in()
        await w.queue.until(lambda: bool(w.queue.members))
    assert w.queue.listed == 3 and w.queue.seats() == {"1001": (False, "")}
    assert caplog.records == []  # nothing an admin must act on


async def test_a_queue_added_later_is_filled_without_a_restart(
        caplog: pytest.LogCaptureFixture) -> None:
    q = AppQueue(exists=False)
    f = FallbackFollower(q, Q, {"1001": "PJSIP/1001"}, recheck=0.02, soon=0, soon_tries=1)
    f.follow(ev.AgentLoggedIn("1001"), [ev.AgentStateChanged("1001", "ready")])
    with caplog.at_level(logging.ERROR, logger="ctiserver"):
        f.logged_in()
        await q.until(lambda: q.listed >= 3)  # looked at again, and again
        q.exists = True  # the admin added it and reloaded app_queue
        await q.until(lambda: bool(q.members))
    assert q.seats() == {"1001": (False, "")}
    assert len(caplog.records) == 1  # said once, not at every look
    await f.close()


async def test_an_ami_user_that_may_not_change_members_is_one_error(
        caplog: pytest.LogCaptureFixture) -> None:
    queue = AppQueue()
    queue.refuse = "Permission denied"
    w = World(queue)
    with caplog.at_level(logging.INFO, logger="ctiserver"):
        for a in AGENTS:
            w.do(ev.AgentLoggedIn(a))
        await w.login()
        w.do(ev.AgentPaused("1001", "x"))
        w.flush()
    assert len(queue.batches) == 1  # the reconcile's; nothing per event after it
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert "refused 3 of 3 member changes" in errors[0]
    assert "write = call,originate,reporting,agent" in errors[0]


async def test_a_dialplan_sending_callers_elsewhere_is_an_error(
        caplog: pytest.LogCaptureFixture) -> None:
    w = World()
    w.queue.dialplan_queue = "other-queue"
    with caplog.at_level(logging.ERROR, logger="ctiserver"):
        await w.login()
    assert any("'other-queue' (global CTI_FALLBACK_QUEUE)" in r.getMessage()
               for r in caplog.records)


# ---------------------------------------------------------------- the AMI side

# Asterisk 22.10's answers, as the sandbox wrote them
STATUS = [
    "Response: Success\r\nActionID: a1\r\nEventList: start\r\nMessage: Queue status will "
    "follow",
    "Event: QueueParams\r\nQueue: ctiserver-fallback\r\nMax: 0\r\nStrategy: leastrecent\r\n"
    "Calls: 0\r\nActionID: a1",
    "Event: QueueMember\r\nQueue: ctiserver-fallback\r\nName: 1005\r\nLocation: PJSIP/1005\r\n"
    "StateInterface: PJSIP/1005\r\nMembership: dynamic\r\nPenalty: 0\r\nCallsTaken: 0\r\n"
    "InCall: 0\r\nStatus: 1\r\nPaused: 1\r\nPausedReason: other\r\nWrapuptime: 0\r\n"
    "ActionID: a1",
    "Event: QueueMember\r\nQueue: ctiserver-fallback\r\nName: Agent 1001\r\nLocation: "
    "PJSIP/1001\r\nStateInterface: PJSIP/1001\r\nMembership: static\r\nPenalty: 0\r\n"
    "Paused: 0\r\nPausedReason: \r\nActionID: a1",
    "Event: QueueStatusComplete\r\nActionID: a1\r\nEventList: Complete\r\nListItems: 3",
]
NO_QUEUE = [STATUS[0], "Event: QueueStatusComplete\r\nActionID: a1\r\nEventList: Complete\r\n"
            "ListItems: 0"]


class Ami:
    """Stands where the AMI connection is: answers ``call`` with Asterisk's messages."""

    def __init__(self, answers: dict[str, list[str] | str]) -> None:
        self.answers = answers
        self.called: list[tuple[dict[str, str], bool | None]] = []
        self.nowait: list[dict[str, str]] = []
        self.connected = asyncio.Event()
        self.connected.set()

    async def call(self, action: dict[str, str], timeout: float = 5.0,
                   as_list: bool | None = None, quiet: bool = False) -> object:
        self.called.append((action, as_list))
        answer = self.answers[action["Action"]]
        if isinstance(answer, list):
            return [Message.from_line(text) for text in answer]
        return Message.from_line(answer)

    def send_nowait(self, *actions: dict[str, str]) -> bool:
        self.nowait.extend(actions)
        return True


async def test_queue_status_is_read_as_members() -> None:
    ami = Ami({"QueueStatus": STATUS})
    members = await AmiTelephony(ami).queue_members(Q)  # type: ignore[arg-type]
    assert members == [
        QueueMember("PJSIP/1005", "1005", "PJSIP/1005", paused=True, reason="other"),
        QueueMember("PJSIP/1001", "Agent 1001", "PJSIP/1001", dynamic=False)]
    ami.answers["QueueStatus"] = NO_QUEUE
    assert await AmiTelephony(ami).queue_members("nope") is None  # type: ignore[arg-type]
    # app_queue not loaded (yet)
    ami.answers["QueueStatus"] = ("Response: Error\r\nActionID: a1\r\nMessage: "
                                  "Invalid/unknown command: QueueStatus")
    with pytest.raises(PbxRefused, match="Invalid/unknown command"):
        await AmiTelephony(ami).queue_members(Q)  # type: ignore[arg-type]


async def test_member_changes_are_queue_actions_and_refusals_are_read() -> None:
    ami = Ami({
        "QueueAdd": "Response: Success\r\nActionID: a2\r\nMessage: Added interface to queue",
        "QueueRemove": "Response: Error\r\nActionID: a3\r\nMessage: Member not dynamic",
        "QueuePause": "Response: Error\r\nActionID: a4\r\nMessage: Permission denied",
    })
    tel = AmiTelephony(ami)  # type: ignore[arg-type]
    changes = [MemberChange("add", "PJSIP/1001", "1001", True, "lunch"),
               MemberChange("remove", "PJSIP/1002"),
               MemberChange("pause", "PJSIP/1003", paused=False)]
    refused = await tel.change_members(Q, changes)
    assert refused == ["QueueRemove PJSIP/1002: Member not dynamic",
                       "QueuePause PJSIP/1003: Permission denied"]
    sent = [a for a, _ in ami.called]
    assert sent[0] == {"Action": "QueueAdd", "Queue": Q, "Interface": "PJSIP/1001",
                       "Penalty": "0", "Paused": "true", "MemberName": "1001",
                       "StateInterface": "PJSIP/1001", "Reason": "lunch"}
    assert sent[1] == {"Action": "QueueRemove", "Queue": Q, "Interface": "PJSIP/1002"}
    assert sent[2] == {"Action": "QueuePause", "Queue": Q, "Interface": "PJSIP/1003",
                       "Paused": "false"}
    # one answer each, whatever its text ("Added interface to queue" is no list)
    assert {as_list for _, as_list in ami.called} == {False}
    assert tel.change_members_nowait(Q, changes[:1])
    assert ami.nowait == sent[:1]
    ami.connected.clear()  # AMI down: nothing sent, the next login reconciles
    assert not tel.change_members_nowait(Q, changes[:1]) and ami.nowait == sent[:1]


# ---------------------------------------------------------------- configuration

BASE = '[ami]\nsecret = "s"\n'


def test_the_fallback_queue_is_configurable(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(BASE)
    assert load(cfg, env={}).fallback_queue == "ctiserver-fallback"
    cfg.write_text(BASE + '[acd]\nfallback_queue = "backup-queue"\n')
    assert load(cfg, env={}).fallback_queue == "backup-queue"
    cfg.write_text(BASE + '[acd]\nfallback_queue = ""\n')  # left alone
    assert load(cfg, env={}).fallback_queue == ""
    cfg.write_text(BASE + '[acd]\nfallback_queue = "two words"\n')
    with pytest.raises(ConfigError) as err:
        load(cfg, env={})
    assert "[acd] fallback_queue: 'two words' is not an app_queue queue name" in str(err.value)
