"""A caller's name reaches the log, the rules and the pop as the caller sent it: quotes
and backslashes kept, control characters never. The inputs are what Asterisk 22 handed
over on the sandbox for a SIP caller `"Ana \\"La Jefa\\" Lopez"` (FastAGI environment and
AMI DialBegin)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ctiserver.asterisk import callerid
from ctiserver.asterisk.agi_calls import AgiRoutes
from ctiserver.asterisk.ami import parse_event
from ctiserver.asterisk.ami_calls import HANDLERS
from ctiserver.asterisk.fastagi import FastAgiServer
from ctiserver.calls.model import CallerLeg, InboundCall
from ctiserver.calls.routing import clean_name, who_called

TRUNK = "PJSIP/trunk-00000000"


class Router:
    """The calls feature's ``Router`` port, recording what the adapter hands it."""

    def __init__(self) -> None:
        self.calls: list[InboundCall] = []

    async def route(self, inbound: InboundCall, channel: Any) -> None:
        self.calls.append(inbound)
        await channel.answer("hold", {})

    async def phone_command(self, device: str, command: str) -> str:
        return "ok"


async def agi_request(environment: bytes) -> InboundCall:
    router = Router()
    server = FastAgiServer("127.0.0.1", 0)
    server.add_route("route", AgiRoutes(router).route)
    await server.start()
    assert server._server is not None
    port = server._server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"agi_network_script: route\nagi_uniqueid: 1796685949.0\n" + environment
                 + b"agi_callerid: +34600000001\nagi_arg_1: 900100999\n\n")
    await asyncio.wait_for(reader.read(), 2)  # the answer, then the end of the stream
    writer.close()
    await server.close()
    return router.calls[0]


@pytest.mark.parametrize("sent, channel, expected", [
    # as measured: Asterisk keeps the SIP quoted-pairs of the display name
    (rb'Ana \"La Jefa\" Lopez', TRUNK, 'Ana "La Jefa" Lopez'),
    (rb"O'Brien \\ Co", TRUNK, "O'Brien \\ Co"),
    ("José Ñú".encode(), TRUNK, "José Ñú"),
    # another technology's name has no SIP escaping to undo
    (rb"C:\temp", "IAX2/branch-1234", "C:\\temp"),
])
async def test_the_fastagi_name_is_the_one_the_caller_sent(sent: bytes, channel: str,
                                                           expected: str) -> None:
    call = await agi_request(b"agi_calleridname: " + sent + b"\nagi_channel: "
                             + channel.encode() + b"\n")
    assert call.caller_name == expected
    assert who_called(call.caller_id, call.caller_name, call.dnis, "ES")[1] == expected


class Heard:
    """The calls feature's ``CallEvents`` port, recording the pre-decided ring's caller."""

    def __init__(self) -> None:
        self.callers: list[CallerLeg | None] = []

    def dial_began(self, call_id: str, device: str, leg: str, at: float | None,
                   caller: CallerLeg | None = None) -> None:
        self.callers.append(caller)


@pytest.mark.parametrize("header, expected", [
    (r'Ana \\\"La Jefa\\\" Lopez', 'Ana "La Jefa" Lopez'),  # as AMI wrote it
    (r"O'Brien \\\\ Co", "O'Brien \\ Co"),
    ("<unknown>", ""),  # AMI's word for no name
    (r"Ana\nLopez", "AnaLopez"),  # an escaped newline: dropped, never a line break
])
def test_the_ami_name_of_a_pre_decided_caller_is_the_one_the_caller_sent(
        header: str, expected: str) -> None:
    heard = Heard()
    HANDLERS["DialBegin"](heard, parse_event(  # type: ignore[arg-type]
        "Event: DialBegin\r\nChannel: PJSIP/trunk-00000000\r\nCallerIDNum: +34600000001\r\n"
        f"CallerIDName: {header}\r\nContext: ctiserver-inbound\r\nExten: 900100999\r\n"
        "Uniqueid: 1796685949.0\r\nDestChannel: PJSIP/1005-00000001\r\n"
        "DestUniqueid: 1796685949.1"))
    leg = heard.callers[0]
    assert leg is not None
    assert who_called(leg.caller_id, leg.caller_name, leg.exten, "ES")[1] == expected


def test_control_characters_never_survive_and_quotes_always_do() -> None:
    hostile = 'Ana "x"\r\nINFO forged line\x1b[31m\x85\u2028\u202e\x00 \\ <b>'
    name = clean_name(hostile)
    assert name == 'Ana "x"INFO forged line[31m \\ <b>'
    assert not any(ch in name for ch in "\r\n\x1b\x85\u2028\u202e\x00")
    assert clean_name("Anonymous") == "" and clean_name(" unknown ") == ""
    assert len(clean_name("A" * 200)) == 80


def test_an_ami_escape_asterisk_does_not_write_is_left_as_it_is() -> None:
    assert callerid.from_ami(r"50\% \q", "IAX2/x-1") == r"50\% \q"
    assert callerid.from_agi("plain", TRUNK) == "plain"
