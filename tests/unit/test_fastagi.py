"""The FastAGI server over a real loopback socket: garbage and silent clients are dropped,
a real AGI environment reaches its route."""

from __future__ import annotations

import asyncio
import logging

import pytest

from ctiserver.asterisk import fastagi
from ctiserver.asterisk.fastagi import FastAgiServer, agi_ok, agi_quote


async def serve() -> tuple[FastAgiServer, list[dict[str, str]]]:
    seen: list[dict[str, str]] = []
    server = FastAgiServer("127.0.0.1", 0)

    async def route(request: object) -> None:
        seen.append(dict(request.headers))  # type: ignore[attr-defined]
        reply = await request.send_command("SET VARIABLE CTI_ACTION \"hold\"")  # type: ignore[attr-defined]
        seen.append({"reply_ok": str(agi_ok(reply))})

    server.add_route("route", route)
    await server.start()
    assert server._server is not None
    server.port = server._server.sockets[0].getsockname()[1]
    return server, seen


async def test_a_real_request_reaches_its_route() -> None:
    server, seen = await serve()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"agi_network_script: route\nagi_uniqueid: 1795.1\nagi_callerid: +34915551234\n"
                 b"agi_arg_1: 900100200\n\n")
    line = await asyncio.wait_for(reader.readline(), 2)
    assert line == b'SET VARIABLE CTI_ACTION "hold"\n'
    writer.write(b"200 result=1\n")
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 2) == b""  # route done: connection closed
    assert seen[0]["agi_callerid"] == "+34915551234"
    assert seen[1] == {"reply_ok": "True"}
    await server.close()


async def test_the_last_command_ends_the_conversation_without_waiting_for_its_reply() -> None:
    server = FastAgiServer("127.0.0.1", 0)
    server.add_route("route", lambda request: _last(request))
    await server.start()
    assert server._server is not None
    port = server._server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"agi_network_script: route\nagi_uniqueid: 1795.1\n\n")
    # Asterisk's side: the command, then the end of the stream, before it has replied
    assert await asyncio.wait_for(reader.read(), 2) == b'EXEC MSet "CTI_ACTION=hold"\n'
    writer.close()
    await asyncio.wait_for(server.close(), 2)


async def _last(request: object) -> None:
    request.send_last('EXEC MSet "CTI_ACTION=hold"')  # type: ignore[attr-defined]


async def test_garbage_and_early_close_are_dropped_not_spun_on() -> None:
    server, seen = await serve()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET / HTTP/1.1\r\n\r\n")
    assert await asyncio.wait_for(reader.read(), 2) == b""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"agi_network_script: route\n")
    writer.close()  # closed before the blank line: panoramisk 1.4 would loop forever here
    await asyncio.sleep(0)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"agi_network_script: nosuchroute\n\n")
    assert await asyncio.wait_for(reader.read(), 2) == b""
    assert seen == []
    await asyncio.wait_for(server.close(), 2)


async def test_an_environment_cut_anywhere_and_a_trying_reply_are_read_whole() -> None:
    server, seen = await serve()
    env = (b"agi_network_script: route\r\nagi_uniqueid: 1795.2\r\nagi_callerid: 600\r\n"
           b"\r\n")
    for cut in (1, 20, len(env) - 2, len(env) - 1):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(env[:cut])
        await writer.drain()
        await asyncio.sleep(0.01)  # let the first part arrive alone (not synchronisation)
        writer.write(env[cut:])
        assert await asyncio.wait_for(reader.readline(), 2) == b'SET VARIABLE CTI_ACTION "hold"\n'
        writer.write(b"100 result=0 Trying...\n200 re")  # the reply itself cut too
        await writer.drain()
        writer.write(b"sult=1\n")
        assert await asyncio.wait_for(reader.read(), 2) == b""
    assert [s for s in seen if "agi_callerid" in s] == [
        {"agi_network_script": "route", "agi_uniqueid": "1795.2", "agi_callerid": "600"}] * 4
    assert [s for s in seen if "reply_ok" in s] == [{"reply_ok": "True"}] * 4
    await server.close()


async def test_silent_oversized_and_vanishing_clients_are_dropped(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(fastagi, "HEADER_TIMEOUT", 0.2)
    caplog.set_level(logging.INFO, "ctiserver.agi")
    server, seen = await serve()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"agi_network_script: route\n")  # and then nothing
    assert await asyncio.wait_for(reader.read(), 2) == b""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"agi_x: " + b"y" * (fastagi.MAX_HEADER_BYTES + 10))
    assert await asyncio.wait_for(reader.read(), 2) == b""
    # the route waits for a reply that never comes: Asterisk hangs up
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"agi_network_script: route\nagi_uniqueid: 1795.3\n\n")
    assert await asyncio.wait_for(reader.readline(), 2) != b""
    writer.close()
    # the route ends on its own when the connection goes
    await asyncio.wait_for(asyncio.gather(*server._tasks), 2)
    await asyncio.wait_for(server.close(), 2)
    assert seen == [{"agi_network_script": "route", "agi_uniqueid": "1795.3"}]
    text = caplog.text
    assert "dropped: timed out" in text and "dropped: AGI environment too large" in text
    assert "[1795.3] FastAGI connection closed by Asterisk" in text


def test_quoting_strips_what_would_break_the_command() -> None:
    assert agi_quote('PJSIP/1001&PJSIP/1002') == '"PJSIP/1001&PJSIP/1002"'
    assert agi_quote('a"b\\c\nSTREAM FILE x') == '"abcSTREAM FILE x"'
    assert agi_ok({"status_code": 200, "result": ("0", "")})
    assert not agi_ok({"error": "AGIResultHangup"})


class Channel:
    """The AGI side of one call: records the commands, answers each with ``200 result=0``;
    ``closed``: the last command ended the conversation."""

    def __init__(self) -> None:
        self.commands: list[str] = []
        self.closed = False

    async def send_command(self, command: str) -> dict[str, object]:
        assert not self.closed
        self.commands.append(command)
        return {"status_code": 200, "result": ("0", "")}

    def send_last(self, command: str) -> None:
        assert not self.closed
        self.commands.append(command)
        self.closed = True


async def test_the_decision_reaches_the_dialplan_in_one_round_trip_when_values_are_plain() -> None:
    from ctiserver.asterisk.agi_calls import AgiChannel

    chan = Channel()
    await AgiChannel(chan, "1795.1").answer(  # type: ignore[arg-type]
        "connect", {"CTI_DIAL": "PJSIP/1001&PJSIP/1002", "CTI_RINGTIMEOUT": "15"})
    assert chan.commands == [
        'EXEC MSet "CTI_DIAL=PJSIP/1001&PJSIP/1002,CTI_RINGTIMEOUT=15,CTI_ACTION=connect"']
    assert chan.closed
    # a value MSet would split or unquote: one SET VARIABLE each, quoted
    chan = Channel()
    await AgiChannel(chan, "1795.2").answer(  # type: ignore[arg-type]
        "message", {"CTI_MESSAGE": 'closed,"x" ${EVIL}'})
    assert chan.commands == ['SET VARIABLE CTI_MESSAGE "closed,x ${EVIL}"',
                             'SET VARIABLE CTI_ACTION "message"']
    assert chan.closed
