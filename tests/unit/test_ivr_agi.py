"""run_ivr over a real panoramisk FastAGI Request and a real socket.

The peer plays Asterisk: it reads each AGI command and answers with the line
Asterisk would send (``200 result=49``, ``200 result=123 (timeout)``,
``200 result=-1``, ``HANGUP``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from panoramisk.fast_agi import Request

from ctiserver.asterisk.ivr_agi import ChannelGone, parse_reply, run_ivr
from ctiserver.core.ivr import IvrSession, load_flows
from ctiserver.core.rules.decision import Decision

ROOT = Path(__file__).resolve().parents[2]


def main_menu():
    flows, _ = load_flows({"main_menu.yaml": (ROOT / "ivr_flows/main_menu.yaml").read_text()})
    return flows["main_menu"]


async def over_socket(replies: dict[str, list[str]]):
    """Run the main menu against a scripted peer; return (result, commands seen)."""
    seen: list[str] = []

    async def asterisk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            command = line.decode().rstrip("\n")
            seen.append(command)
            verb = " ".join(command.split()[:2])
            queue = replies.get(verb) or ["200 result=0"]
            answer = queue.pop(0) if len(queue) > 1 else queue[0]
            writer.write((answer + "\n").encode())
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(asterisk, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = Request(None, {"agi_uniqueid": "1700000000.1"}, reader, writer)
    try:
        result = await asyncio.wait_for(run_ivr(request, IvrSession(main_menu())), 10)
    finally:
        writer.close()
        server.close()
        await server.wait_closed()
    return result, seen


async def test_menu_and_collection_over_fastagi():
    result, seen = await over_socket(
        {
            "GET DATA": ["200 result=2", "200 result=1", "200 result=556677"],
        }
    )
    assert result["hungup"] is False
    assert result["decision"] is None
    assert result["answers"] == {"department": "billing", "customer_number": "556677"}
    assert seen == [
        'SET VARIABLE CHANNEL(language) "es"',
        'STREAM FILE custom/welcome ""',
        "GET DATA custom/main-menu 5000 1",
        "GET DATA custom/support-menu 5000 1",
        "GET DATA vm-enter-num-to-call 6000 10",
        'SAY DIGITS 556677 ""',
    ]


async def test_timeout_reprompts_with_joined_prompt():
    result, seen = await over_socket(
        {
            "GET DATA": ["200 result= (timeout)", "200 result=0"],
        }
    )
    assert result["decision"] == Decision("extension", extension="1001")
    assert "GET DATA please-try-again&custom/main-menu 5000 1" in seen


@pytest.mark.parametrize("reply", ["200 result=-1", "HANGUP"])
async def test_hangup_stops_at_once(reply):
    # after a -1 the channel is asked once; a dead channel answers 511 (Asterisk 22)
    result, seen = await over_socket(
        {"GET DATA": ["200 result=2", reply],
         "CHANNEL STATUS": ["511 Command Not Permitted on a dead channel or intercept routine"]})
    assert result["hungup"] is True
    assert result["decision"] is None
    assert result["answers"] == {}
    assert seen[-2:] == ["GET DATA custom/support-menu 5000 1", "CHANNEL STATUS"]


def test_parse_reply_shapes():
    assert parse_reply({"status_code": 200, "result": ("5", ""), "msg": ""}) == ("5", "")
    assert parse_reply({"status_code": 200, "result": ("12", "timeout")}) == ("12", "timeout")
    assert parse_reply({"200": {"result": ("1", "")}}) == ("1", "")
    for bad in (
        {"error": "AGIAppError", "msg": "hangup"},
        {"200": {"result": ("-1", "")}},
        {"status_code": 510, "result": ("", ""), "msg": "Invalid"},
        {"510": {}},
        None,
    ):
        with pytest.raises(ChannelGone):
            parse_reply(bad)


async def test_missing_sound_is_skipped_not_taken_for_a_hangup():
    # the real Asterisk 22 answers STREAM FILE of a file it cannot find with result=-1
    result, seen = await over_socket(
        {
            "STREAM FILE": ["200 result=-1 endpos=0"],
            "CHANNEL STATUS": ["200 result=6"],
            "GET DATA": ["200 result=1"],
        }
    )
    assert result["hungup"] is False
    assert result["answers"] == {"department": "sales"}
    assert seen[1:4] == ['STREAM FILE custom/welcome ""', "CHANNEL STATUS",
                         "GET DATA custom/main-menu 5000 1"]


async def test_stream_file_failure_on_a_gone_channel_is_a_hangup():
    result, seen = await over_socket(
        {"STREAM FILE": ["200 result=-1 endpos=0"], "CHANNEL STATUS": ["HANGUP"]}
    )
    assert result["hungup"] is True
    assert seen[-1] == "CHANNEL STATUS"


async def test_missing_menu_prompt_still_collects_the_digits():
    # the real Asterisk 22 answers GET DATA with result=-1 when the prompt file is missing
    result, seen = await over_socket(
        {
            "GET DATA": ["200 result=-1", "200 result=1"],
            "CHANNEL STATUS": ["200 result=6"],
        }
    )
    assert result["hungup"] is False
    assert result["answers"] == {"department": "sales"}
    assert seen[2:5] == ["GET DATA custom/main-menu 5000 1", "CHANNEL STATUS",
                         "GET DATA silence/1 5000 1"]
