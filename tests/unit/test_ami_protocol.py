"""The AMI protocol's event path: bytes as Asterisk writes them, cut anywhere by TCP, become
events in order; responses and list events still reach panoramisk's own handling."""

from __future__ import annotations

from typing import Any

from ctiserver.asterisk.ami import EventProtocol, parse_event

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
    p.connection_made(None)
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
