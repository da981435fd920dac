"""Running ctiserver as a service: what systemd hears on its notification socket (READY=1,
WATCHDOG=1, STATUS=, STOPPING=1), what /healthz answers while Asterisk goes down and comes
back, and where new calls go while the AMI link is down. The real daemon, the real
sandbox Asterisk, a unix datagram socket in place of systemd's."""

from __future__ import annotations

import calendar
import json
import signal
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import (
    AGI_PORT,
    AgentPhones,
    CtiServer,
    Observer,
    place_calls,
    port_open,
    sandbox,
    wait_until,
)

pytestmark = pytest.mark.integration

_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, no proxy


def healthz(cti: CtiServer) -> tuple[int, dict[str, Any]]:
    try:
        with _HTTP.open(f"http://127.0.0.1:{cti.web_port}/healthz", timeout=5) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


class SystemdSocket:
    """systemd's side of sd_notify: a unix datagram socket named by NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[tuple[float, str]] = []  # (arrival, datagram), all of them
        self._read = 0

    def wait_for(self, text: str, timeout: float) -> tuple[float, str]:
        """The next datagram (after those already waited for) that contains ``text``."""
        deadline = time.monotonic() + timeout
        while True:
            for i in range(self._read, len(self.messages)):
                if text in self.messages[i][1]:
                    self._read = i + 1
                    return self.messages[i]
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {text!r} from ctiserver within {timeout:.0f} s; "
                                     f"got {[m for _, m in self.messages[self._read:]]}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data.decode()))

    def close(self) -> None:
        self.sock.close()


def test_systemd_is_told_ready_pinged_at_half_the_watchdog_and_told_stopping(
        asterisk: None, tmp_path: Path) -> None:
    systemd = SystemdSocket(tmp_path / "notify.sock")
    cti = CtiServer(tmp_path, env={"NOTIFY_SOCKET": str(systemd.path),
                                   "WATCHDOG_USEC": "2000000"})
    try:
        cti.start(wait=False)
        systemd.wait_for("READY=1", 30)
        # ready means serving: FastAGI and the web answer the moment systemd hears it
        assert port_open(AGI_PORT) and port_open(cti.web_port)
        systemd.wait_for("STATUS=routing, AMI connected, 3 agents logged in", 30)
        # WatchdogSec=2: a ping every second, from the event loop
        pings = [systemd.wait_for("WATCHDOG=1", 3)[0] for _ in range(6)]
        gaps = [b - a for a, b in zip(pings, pings[1:], strict=False)]
        assert all(0.9 <= g <= 1.4 for g in gaps), gaps
        assert cti.proc is not None
        cti.proc.send_signal(signal.SIGTERM)
        stopping = systemd.wait_for("STOPPING=1", 10)[1]
        assert cti.proc.wait(15) == 0
        assert stopping == "STOPPING=1\nSTATUS=stopping"
    finally:
        cti.stop()
        systemd.close()


def test_healthz_and_status_follow_asterisk_going_down_and_coming_back(
        asterisk: None, tmp_path: Path) -> None:
    systemd = SystemdSocket(tmp_path / "notify.sock")
    cti = CtiServer(tmp_path, env={"NOTIFY_SOCKET": str(systemd.path)})
    sandbox("down")
    try:
        # Asterisk down at start: ctiserver is up all the same, and says why it does not route
        cti.start(wait=False)
        ready = systemd.wait_for("READY=1", 30)[1]
        assert "NOT routing; AMI link down since" in ready
        status, body = healthz(cti)
        assert (status, body["status"], body["role"], body["routing"]) == (
            503, "degraded", "leader", False)
        assert body["checks"]["ami"] == "down"
        assert body["reasons"][0].startswith("AMI link down since")

        sandbox("up")
        wait_until(lambda: healthz(cti)[0] == 200, 30, "/healthz 200 once Asterisk is up")
        assert healthz(cti)[1]["status"] == "ok" and healthz(cti)[1]["reasons"] == []
        systemd.wait_for("STATUS=routing, AMI connected", 10)

        down_at = time.time()
        sandbox("down")
        wait_until(lambda: healthz(cti)[0] == 503, 30, "/healthz 503 once Asterisk is down")
        body = healthz(cti)[1]
        assert body["status"] == "degraded" and body["checks"]["ami"] == "down"
        since = body["reasons"][0].split("since ")[1].split(",")[0]
        assert down_at - 2 <= calendar.timegm(time.strptime(since, "%Y-%m-%dT%H:%M:%SZ")) \
            <= time.time() + 1
        systemd.wait_for("STATUS=NOT routing; AMI link down since", 10)
        # nothing wrong inside ctiserver: database, rules and the ACD carry on
        assert body["checks"]["database"] == "up" and body["checks"]["rules"] == "ok"
        assert body["checks"]["acd"] == "running"

        sandbox("up")
        wait_until(lambda: healthz(cti)[0] == 200, 30, "/healthz 200 once Asterisk is back")
        assert healthz(cti)[1]["status"] == "ok"
        systemd.wait_for("STATUS=routing, AMI connected", 10)
    finally:
        try:
            assert cti.stop() == 0
        finally:
            sandbox("up")  # the other tests share it
            systemd.close()
    # no WatchdogSec, no pings
    assert not any("WATCHDOG=1" in m for _, m in systemd.messages)


def test_new_calls_go_to_the_fallback_while_the_ami_link_is_down(
        asterisk: None, observer: Observer, tmp_path: Path) -> None:
    # Asterisk up, but the AMI login refused: ctiserver would not hear the agent answer
    cti = CtiServer(tmp_path, env={"CTISERVER_AMI_SECRET": "not-the-secret"})
    try:
        cti.start(wait=False)
        wait_until(lambda: port_open(AGI_PORT), 30, "FastAGI listening")
        wait_until(lambda: port_open(cti.web_port), 10, "the web listening")
        assert healthz(cti)[0] == 503
        with AgentPhones(tmp_path, talk_ms=(300, 400)):
            result = place_calls(tmp_path, "900100999", maxwait_ms=30000, timeout=40)
        assert result.successful == 1, result.output
        fallback = observer.wait_for(
            lambda e: e.event == "UserEvent" and e.UserEvent == "CtiFallback", 10,
            "the dialplan's fallback marker")
        assert fallback[0].AgiStatus == "SUCCESS"  # ctiserver answered: "fallback"
        observer.wait_for(lambda e: e.event == "DialEnd" and e.DialStatus == "ANSWER", 10,
                          "an agent answering through app_queue")
        assert "AMI link down: call sent to the fallback queue" in cti.log()
    finally:
        assert cti.stop() == 0
