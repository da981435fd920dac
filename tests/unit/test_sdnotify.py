"""sd_notify(3) as ctiserver speaks it: one datagram on $NOTIFY_SOCKET (a path or an
abstract '@name'), nothing at all when it is unset; the watchdog interval from
$WATCHDOG_USEC and $WATCHDOG_PID. Real unix datagram sockets."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from ctiserver.sdnotify import SdNotify, notify_address, watchdog_interval


def test_nothing_is_sent_and_nothing_fails_when_notify_socket_is_unset() -> None:
    sd = SdNotify({})
    assert not sd.enabled
    assert not sd.ready("routing") and not sd.watchdog() and not sd.stopping()
    assert sd._sock is None  # not even a socket was made


def test_a_path_socket_gets_one_datagram_per_notification(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(str(path))
        systemd.settimeout(2)
        sd = SdNotify({"NOTIFY_SOCKET": str(path)})
        assert sd.ready("routing, AMI connected, 3 agents logged in")
        assert sd.status("line one\nline two")  # a status is one line
        assert sd.watchdog()
        assert sd.stopping()
        got = [systemd.recv(4096).decode() for _ in range(4)]
        sd.close()
    assert got == ["READY=1\nSTATUS=routing, AMI connected, 3 agents logged in",
                   "STATUS=line one line two", "WATCHDOG=1", "STOPPING=1\nSTATUS=stopping"]


def test_an_abstract_socket_is_named_with_an_at_sign() -> None:
    name = f"ctiserver-test-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind("\0" + name)
        systemd.settimeout(2)
        assert SdNotify({"NOTIFY_SOCKET": "@" + name}).watchdog()
        assert systemd.recv(4096) == b"WATCHDOG=1"


def test_a_socket_that_is_gone_is_not_an_error_for_the_daemon(tmp_path: Path) -> None:
    sd = SdNotify({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert sd.enabled
    assert not sd.watchdog()  # logged once, never raised
    assert not sd.watchdog()


def test_only_unix_socket_addresses_are_used() -> None:
    assert notify_address("/run/systemd/notify") == "/run/systemd/notify"
    assert notify_address("@abstract") == "\0abstract"
    assert notify_address("") is None and notify_address("@") is None
    assert notify_address("vsock:2:1234") is None  # a VM's host: not ours to reach


def test_the_watchdog_interval_is_for_this_process_only() -> None:
    me = os.getpid()
    assert watchdog_interval({}, me) is None
    assert watchdog_interval({"WATCHDOG_USEC": "20000000"}, me) == 20.0
    assert watchdog_interval({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(me)}, me) == 20.0
    assert watchdog_interval({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"}, me) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}, me) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}, me) is None
