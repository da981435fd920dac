"""What ctiserver reads from the real sandbox Asterisk, as Asterisk writes it: the dialplan's
hold-expired marker names its call (CDR is off in the sandbox), and a caller's name with
quotes reaches the log as the caller sent it, by either way ctiserver hears of a call."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.integration.harness import (
    LOOPBACK,
    SIPP_DIR,
    AgentPhones,
    CtiServer,
    Observer,
    free_port,
)
from tests.integration.test_acd_asterisk import agents_toml, ami_action, queue_toml, rules_yaml

pytestmark = pytest.mark.integration


def test_a_caller_held_too_long_is_marked_with_its_call_id(
        asterisk: None, observer: Observer, tmp_path: Path) -> None:
    cti = CtiServer(tmp_path).start()
    try:
        # a Local channel stands for a caller on hold for 1 s (CTI_MAXHOLD), whose fallback
        # queue does not exist (it hangs up at once)
        ami_action(observer, {
            "Action": "Originate", "Channel": "Local/s@ctiserver-hold", "Application": "Wait",
            "Data": "5", "Timeout": "6000", "Async": "true",
            "Variable": "CTI_MAXHOLD=1,CTI_FALLBACK_QUEUE=ctiserver-none"})
        marker = observer.wait_for(lambda e: e.event == "UserEvent"
                                   and e.UserEvent == "CtiHoldExpired", 10,
                                   "the hold-expired marker")[0]
        cti.wait_log("caller held too long", 5)
    finally:
        assert cti.stop() == 0
    assert marker.CallId and marker.CallId == marker.Linkedid, dict(marker)
    assert f"[{marker.CallId}] caller held too long without ctiserver" in cti.log()


def test_a_name_with_quotes_is_logged_as_the_caller_sent_it(
        asterisk: None, observer: Observer, tmp_path: Path) -> None:
    # two callers a moment apart to the one agent: the first rings it pre-decided (its name
    # read from AMI's DialBegin), the second asks over FastAGI (the AGI environment)
    callers = tmp_path / "quoted.csv"  # sipp's own format: fields as they go on the wire
    callers.write_text('SEQUENTIAL\n+34600000081;Ana \\"La Jefa\\" Lopez\n'
                       "+34600000082;O'Brien \\\\ Co\n")
    cti = CtiServer(tmp_path, queues=queue_toml("q", ("1001",), ring_timeout=10),
                    agents=agents_toml(("1001",)), rules=rules_yaml("q")).start()
    try:
        with AgentPhones(tmp_path, answer_ms=100, talk_ms=(1500, 1500)):
            proc = subprocess.run(
                ["sipp", "-sf", str(SIPP_DIR / "caller.xml"), "-inf", str(callers), *LOOPBACK,
                 "-p", str(free_port()), "-m", "2", "-r", "2", "-timeout", "30",
                 "-set", "maxwait", "20000", "-s", "900100999", "-nostdin",
                 "127.0.0.1:5060"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
            assert "Successful call" in proc.stdout, proc.stdout + proc.stderr
            cti.wait_log("caller hung up", 15, count=2)
    finally:
        assert cti.stop() == 0
    observer.wait_for(lambda e: e.event == "DialBegin", 5, "the two rings", count=2)
    contexts = {e.CallerIDNum: e.Context for e in observer.named("DialBegin")}
    assert contexts == {"+34600000081": "ctiserver-inbound",
                        "+34600000082": "ctiserver-connect"}, contexts
    log = cti.log()
    assert '+34600000081 (Ana "La Jefa" Lopez) -> 900100999' in log, log
    assert "+34600000082 (O'Brien \\ Co) -> 900100999" in log, log
