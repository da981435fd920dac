"""The FastAGI server over a real loopback socket: garbage and silent clients are dropped,
a real AGI environment reaches its route."""

from __future__ import annotations

import asyncio

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


def test_quoting_strips_what_would_break_the_command() -> None:
    assert agi_quote('PJSIP/1001&PJSIP/1002') == '"PJSIP/1001&PJSIP/1002"'
    assert agi_quote('a"b\\c\nSTREAM FILE x') == '"abcSTREAM FILE x"'
    assert agi_ok({"status_code": 200, "result": ("0", "")})
    assert not agi_ok({"error": "AGIResultHangup"})


class Channel:
    """The AGI side of one call: records the commands, answers each with ``200 result=0``."""

    def __init__(self) -> None:
        self.commands: list[str] = []

    async def send_command(self, command: str) -> dict[str, object]:
        self.commands.append(command)
        return {"status_code": 200, "result": ("0", "")}


async def test_the_decision_reaches_the_dialplan_in_one_round_trip_when_values_are_plain() -> None:
    from ctiserver.asterisk.routes import Routes

    answer = Routes._answer
    chan = Channel()
    await answer(None, chan, "1795.1", "connect",  # type: ignore[arg-type]
                 {"CTI_DIAL": "PJSIP/1001&PJSIP/1002", "CTI_RINGTIMEOUT": "15"})
    assert chan.commands == [
        'EXEC MSet "CTI_DIAL=PJSIP/1001&PJSIP/1002,CTI_RINGTIMEOUT=15,CTI_ACTION=connect"']
    # a value MSet would split or unquote: one SET VARIABLE each, quoted
    chan = Channel()
    await answer(None, chan, "1795.2", "message",  # type: ignore[arg-type]
                 {"CTI_MESSAGE": 'closed,"x" ${EVIL}'})
    assert chan.commands == ['SET VARIABLE CTI_MESSAGE "closed,x ${EVIL}"',
                             'SET VARIABLE CTI_ACTION "message"']
