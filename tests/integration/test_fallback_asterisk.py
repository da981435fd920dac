"""The app_queue fallback queue follows ctiserver's agents (calls/fallback.py), on the real
sandbox Asterisk: with ctiserver killed, callers reach the agents who were ready and never
one who had paused; a restarted ctiserver, or ctiserver after an Asterisk restart, makes
the queue's members what its agents are. Every assertion comes from Asterisk itself (AMI
QueueStatus and DialBegin on the observer) or the daemon's log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import (
    FALLBACK_QUEUE,
    AgentPhones,
    CtiServer,
    Observer,
    ami_call,
    fallback_members,
    place_calls,
    sandbox,
    wait_until,
)
from tests.integration.test_acd_asterisk import agents_toml, queue_toml, rules_yaml

pytestmark = pytest.mark.integration

IDS = ("1001", "1002", "1003")
DEVICES = tuple(f"PJSIP/{a}" for a in IDS)


def ctiserver(workdir: Path, logged_in: tuple[str, ...] = IDS,
              restore_agents: bool = True) -> CtiServer:
    # no pre-decided ring: after a kill its last published agent would take the first
    # caller straight from the dialplan; here every caller is to reach the fallback
    return CtiServer(workdir, queues=queue_toml("q", IDS, ring_timeout=10),
                     agents=agents_toml(IDS, logged_in=logged_in), rules=rules_yaml("q"),
                     pre_decided=False, restore_agents=restore_agents)


def seats(obs: Observer) -> dict[str, tuple[str, bool, str]]:
    """device -> (MemberName, paused, reason) of the fallback queue's members."""
    return {d: (m.name, m.paused, m.reason) for d, m in fallback_members(obs).items()}


def wait_seats(obs: Observer, want: dict[str, tuple[str, bool, str]], what: str) -> None:
    wait_until(lambda: seats(obs) == want, 10, f"{what}: {want}; last {seats(obs)}", 0.1)


def phone_code(obs: Observer, device: str, code: str) -> None:
    """The agent dials a feature code (*72 log out, *73 not ready) from the phone."""
    reply = ami_call(obs, {"Action": "Originate", "Channel": device,
                           "Context": "ctiserver-agents", "Exten": code, "Priority": "1",
                           "Async": "true"})
    first = reply[0] if isinstance(reply, list) else reply  # then its OriginateResponse
    assert first.response == "Success", reply


def test_with_ctiserver_killed_callers_reach_ready_agents_never_a_paused_one(
        asterisk: None, observer: Observer, tmp_path: Path) -> None:
    cti = ctiserver(tmp_path).start()
    try:
        cti.wait_log(f"fallback queue {FALLBACK_QUEUE} follows the agents: 3 member(s)", 15)
        wait_seats(observer, {d: (d[6:], False, "") for d in DEVICES}, "every agent ready")
        assert {m.membership for m in fallback_members(observer).values()} == {"dynamic"}
        with AgentPhones(tmp_path, answer_ms=100, talk_ms=(300, 300)):
            phone_code(observer, "PJSIP/1002", "*73")  # 1002 goes not ready
            cti.wait_log("agent 1002: not_ready (phone)", 15)
            wait_seats(observer, {"PJSIP/1001": ("1001", False, ""),
                                  "PJSIP/1002": ("1002", True, "phone"),
                                  "PJSIP/1003": ("1003", False, "")}, "1002 paused")
    finally:
        cti.kill()
    start = len(observer.events)
    with AgentPhones(tmp_path, answer_ms=200, talk_ms=(1500, 1500)):
        # four callers at once, two ready agents: autofill rings both for the first two
        result = place_calls(tmp_path, "900100999", calls=4, rate=20, maxwait_ms=30000,
                             timeout=60)
    assert result.successful == 4, result.output
    def caller_hangup(e: Any) -> bool:
        return e.event == "Hangup" and e.Channel.startswith("PJSIP/trunk-")

    before = len([e for e in observer.events[:start] if caller_hangup(e)])
    observer.wait_for(caller_hangup, 10, "the four callers' hang-ups", count=before + 4)
    after = observer.events[start:]  # everything below comes before a caller's hang-up
    assert len([e for e in after if e.event == "UserEvent" and e.UserEvent == "CtiFallback"
                and e.AgiStatus == "FAILURE"]) == 4
    answers = [e for e in after if e.event == "DialEnd" and e.DialStatus == "ANSWER"]
    assert len(answers) == 4
    rung = [e.DestChannel.rsplit("-", 1)[0] for e in after if e.event == "DialBegin"]
    assert set(rung) == {"PJSIP/1001", "PJSIP/1003"}, rung  # both ready ones; never 1002


def test_members_follow_a_restart_and_an_asterisk_restart(
        asterisk: None, observer: Observer, tmp_path: Path) -> None:
    cti = ctiserver(tmp_path).start()
    try:
        cti.wait_log("follows the agents: 3 member(s)", 15)
    finally:
        cti.kill()
    # while ctiserver is down someone pauses 1001 by hand and adds a phone of their own
    assert ami_call(observer, {"Action": "QueuePause", "Queue": FALLBACK_QUEUE,
                               "Interface": "PJSIP/1001", "Paused": "true",
                               "Reason": "by hand"}, as_list=False).response == "Success"
    assert ami_call(observer, {"Action": "QueueAdd", "Queue": FALLBACK_QUEUE,
                               "Interface": "PJSIP/1004", "MemberName": "Agent 1004",
                               "Paused": "false"}, as_list=False).response == "Success"
    assert seats(observer)["PJSIP/1001"] == ("1001", True, "by hand")
    # ctiserver restarted without 1003 (not restored as it was, not logged in at start):
    # at its login 1003 and the stranger go, and 1001 is ready again
    cti = ctiserver(tmp_path, logged_in=("1001", "1002"), restore_agents=False).start()
    try:
        cti.wait_log("follows the agents: 2 member(s), 0 paused; 3 change(s) at login", 15)
        ready = {"PJSIP/1001": ("1001", False, ""), "PJSIP/1002": ("1002", False, "")}
        assert seats(observer) == ready
        # Asterisk restarts with its saved members gone: the reconcile at ctiserver's next
        # AMI login puts them back
        sandbox("cli", "database deltree Queue/PersistentMembers")
        sandbox("restart")
        cti.wait_log("AMI logged in", 30, count=2)
        cti.wait_log("follows the agents: 2 member(s), 0 paused; 2 change(s) at login", 15)
        obs = Observer()  # the fixture's lost its connection with the old Asterisk
        obs.start()
        try:
            assert seats(obs) == ready
            with AgentPhones(tmp_path, answer_ms=100, talk_ms=(300, 300)):
                phone_code(obs, "PJSIP/1002", "*72")  # the list follows live: 1002 leaves
                wait_seats(obs, {"PJSIP/1001": ("1001", False, "")}, "1002 removed")
        finally:
            obs.close()
    finally:
        assert cti.stop() == 0
