"""The AMI protocol's event path: bytes as Asterisk writes them, cut anywhere by TCP, become
events in order; responses and list events still reach panoramisk's own handling, except the
responses to ``send_nowait``'s actions, recognised by their ActionID and handled here."""

from __future__ import annotations

import itertools
import logging
from typing import Any

import pytest

from ctiserver.asterisk import ami as ami_module
from ctiserver.asterisk.ami import AmiConnection, EventProtocol, parse_event
from ctiserver.config import AmiConfig

GREETING = b"Asterisk Call Manager/11.0.0\r\n"
DIAL = (b"Event: DialBegin\r\nPrivilege: call,all\r\nTimestamp: 1763917000.123456\r\n"
        b"Uniqueid: 1763917000.1\r\nDestChannel: PJSIP/2001-00000002\r\n"
        b"DestUniqueid: 1763917000.2\r\nCallerIDName: Ana L\xc3\xb3pez\r\n\r\n")
HANGUP = (b"Event: Hangup\r\nUniqueid: 1763917000.2\r\nCause: 16\r\n"
          b"Cause-txt: Normal Clearing\r\n\r\n")
LISTED = b"Event: CoreShowChannel\r\nActionID: 42\r\nUniqueid: 1763917000.9\r\n\r\n"


class Factory:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def dispatch(self, event: Any) -> None:
        self.events.append(event)


class Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        pass


class Recording(EventProtocol):
    def __init__(self) -> None:
        self.handled: list[Any] = []
        self.lost: list[Any] = []

    def handle_message(self, message: Any) -> None:  # panoramisk's path
        self.handled.append(message)

    def connection_lost(self, exc: Any) -> None:
        self.lost.append(exc)


def protocol() -> tuple[Recording, Factory]:
    p = Recording()
    p.connection_made(Transport())
    factory = Factory()
    p.factory = factory
    p.data_received(GREETING)
    return p, factory


def test_events_cut_anywhere_arrive_whole_and_in_order() -> None:
    stream = DIAL + HANGUP + DIAL
    for cut in (1, 7, len(DIAL) - 2, len(DIAL), len(DIAL) + 3):
        p, factory = protocol()
        p.data_received(stream[:cut])
        p.data_received(stream[cut:])
        assert [e.event for e in factory.events] == ["DialBegin", "Hangup", "DialBegin"]
        first = factory.events[0]
        assert first.Uniqueid == "1763917000.1"
        assert first.DestChannel == "PJSIP/2001-00000002"
        assert first.CallerIDName == "Ana López"
        assert first.Nothing == ""  # an absent header reads as "", as panoramisk's
        assert factory.events[1]["Cause-txt"] == "Normal Clearing"


def test_responses_and_list_events_go_to_panoramisk() -> None:
    p, factory = protocol()
    p.data_received(b"Response: Success\r\nActionID: 42\r\nMessage: ok\r\n\r\n" + LISTED + DIAL)
    assert [m["ActionID"] for m in p.handled] == ["42", "42"]
    assert [e.event for e in factory.events] == ["DialBegin"]


def test_shutdown_closes_and_garbage_is_harmless() -> None:
    p, factory = protocol()
    p.data_received(b"garbage\r\n\r\nEvent: Shutdown\r\nShutdown: Uncleanly\r\n\r\n")
    assert [e.event for e in factory.events] == ["Shutdown"]
    assert len(p.lost) == 1
    assert parse_event("no colon here\r\nEvent: X\r\nBad:line").event == "X"


def test_the_greeting_is_read_whether_alone_split_or_glued_to_events() -> None:
    for chunks in ([GREETING + DIAL], [GREETING[:10], GREETING[10:] + DIAL[:5], DIAL[5:]]):
        p = Recording()
        p.connection_made(None)
        factory = Factory()
        p.factory = factory
        for chunk in chunks:
            p.data_received(chunk)
        assert p.version == "11.0.0"
        assert [e.event for e in factory.events] == ["DialBegin"]


async def test_every_event_reaches_the_callback_and_fully_booted_still_reaches_panoramisk(
) -> None:
    from ctiserver.asterisk.ami import _Manager

    seen: list[str] = []
    booted: list[str] = []
    manager = _Manager(lambda e: seen.append(e.event), host="127.0.0.1", port=1)
    # panoramisk subscribes to FullyBooted itself (to send actions held during boot)
    manager.register_event("FullyBooted", lambda _m, e: booted.append(e.event))
    manager.register_event("Dial*", lambda _m, e: booted.append(e.event))  # not ours: unused
    for text in ("Event: DialBegin\r\nUniqueid: 1", "Event: FullyBooted\r\nStatus: up",
                 "Event: Hangup\r\nUniqueid: 1"):
        manager.dispatch(parse_event(text))
    assert seen == ["DialBegin", "FullyBooted", "Hangup"]
    assert booted == ["FullyBooted"]


OFFER = ({"Action": "Setvar", "Channel": "PJSIP/trunk-00000001", "Variable": "CTI_DIAL",
          "Value": "PJSIP/2001&PJSIP/2002"},
         {"Action": "Redirect", "Channel": "PJSIP/trunk-00000001",
          "Context": "ctiserver-connect", "Exten": "15", "Priority": "1"})


@pytest.fixture
def ids(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ami_module, "_action_ids", itertools.count(1))


def test_send_nowait_writes_the_actions_as_ami_text_in_one_write(ids: None) -> None:
    p, _ = protocol()
    assert p.send_nowait(OFFER)
    assert p.transport.written == [
        b"Action: Setvar\r\nActionID: cti-1\r\nChannel: PJSIP/trunk-00000001\r\n"
        b"Variable: CTI_DIAL\r\nValue: PJSIP/2001&PJSIP/2002\r\n\r\n"
        b"Action: Redirect\r\nActionID: cti-2\r\nChannel: PJSIP/trunk-00000001\r\n"
        b"Context: ctiserver-connect\r\nExten: 15\r\nPriority: 1\r\n\r\n"]
    assert p.pending == {"cti-1": ("Setvar", "PJSIP/trunk-00000001"),
                         "cti-2": ("Redirect", "PJSIP/trunk-00000001")}


def test_our_responses_are_handled_here_and_an_error_is_logged_with_the_channel(
        ids: None, caplog: pytest.LogCaptureFixture) -> None:
    p, factory = protocol()
    p.send_nowait(OFFER)
    stream = (b"Response: Success\r\nActionID: cti-1\r\nMessage: Variable Set\r\n\r\n"
              + DIAL
              + b"Response: Error\r\nActionID: cti-2\r\nMessage: No such channel\r\n\r\n"
              + b"Response: Success\r\nActionID: 42\r\nMessage: ok\r\n\r\n" + LISTED
              + HANGUP)
    for cut in (0, 5, 40, 60, len(stream) - 3):
        p, factory = protocol()
        p.pending = {"cti-1": ("Setvar", "PJSIP/trunk-00000001"),
                     "cti-2": ("Redirect", "PJSIP/trunk-00000001")}
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="ctiserver.ami"):
            p.data_received(stream[:cut])
            p.data_received(stream[cut:])
        assert p.pending == {}
        # neither of ours reached panoramisk; the others went where they went before
        assert [m["ActionID"] for m in p.handled] == ["42", "42"]
        assert [e.event for e in factory.events] == ["DialBegin", "Hangup"]
        assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
            ("INFO", "AMI Redirect on PJSIP/trunk-00000001: No such channel")]


def test_a_response_to_a_forgotten_action_is_still_ours(caplog: pytest.LogCaptureFixture
                                                        ) -> None:
    p, _ = protocol()  # e.g. sent on the connection before a reconnect
    with caplog.at_level(logging.INFO, logger="ctiserver.ami"):
        p.data_received(b"Response: Success\r\nActionID: cti-7\r\n\r\n"
                        b"Response: Error\r\nActionID: cti-8\r\nMessage: Nope\r\n\r\n")
    assert p.handled == []
    assert [r.getMessage() for r in caplog.records] == ["AMI action cti-8 on -: Nope"]


def test_cr_or_lf_in_a_value_sends_nothing(caplog: pytest.LogCaptureFixture) -> None:
    p, _ = protocol()
    for bad in ("PJSIP/x\r\nAction: Hangup", "PJSIP/x\nAction: Hangup", "PJSIP/x\r"):
        redirect = dict(OFFER[1], Channel=bad)
        caplog.clear()
        assert not p.send_nowait((OFFER[0], redirect))
        assert p.transport.written == [] and p.pending == {}
        [record] = caplog.records
        assert record.levelname == "ERROR" and "CR/LF" in record.getMessage()
        assert repr(bad) in record.getMessage()  # the channel escaped, not a broken log line
    assert not p.send_nowait(({"Action": "Setvar", "Variable\n": "x", "Value": "1"},))


def test_the_pending_map_is_bounded(ids: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ami_module, "MAX_PENDING", 3)
    p, _ = protocol()
    for _ in range(3):
        p.send_nowait(OFFER)  # six actions, responses never came
    assert list(p.pending) == ["cti-4", "cti-5", "cti-6"]
    assert len(p.transport.written) == 3


async def test_the_connection_sends_only_while_logged_in_on_an_open_protocol(
        ids: None, caplog: pytest.LogCaptureFixture) -> None:
    conn = AmiConnection(AmiConfig(port=1), lambda e: None)
    with caplog.at_level(logging.WARNING, logger="ctiserver.ami"):
        assert not conn.send_nowait(*OFFER)  # no connection yet
    assert [r.getMessage() for r in caplog.records] == [
        "AMI not connected: Setvar PJSIP/trunk-00000001 not sent",
        "AMI not connected: Redirect PJSIP/trunk-00000001 not sent"]
    p, _ = protocol()
    conn.manager.protocol = p
    conn.connected.set()
    assert conn.send_nowait(*OFFER) and len(p.transport.written) == 1
    # after a reconnect the new protocol knows none of the old IDs
    fresh, _ = protocol()
    conn.manager.protocol = fresh
    assert fresh.pending == {}
    assert conn.send_nowait(OFFER[1]) and list(fresh.pending) == ["cti-3"]
    fresh.closed = True  # lost, the disconnect callback not yet run
    assert not conn.send_nowait(*OFFER)
