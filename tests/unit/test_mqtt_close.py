"""The MQTT publisher stops when asked, even in the middle of connecting to a broker that
never answers (aiomqtt reports that cancellation as a connection error)."""

from __future__ import annotations

import asyncio

from ctiserver.mqtt.publisher import MqttNotifier


async def test_close_while_connecting_to_a_silent_broker_stops_the_publisher() -> None:
    accepted = asyncio.Event()

    async def silent(_reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
        accepted.set()  # and never a CONNACK

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pub = MqttNotifier(f"mqtt://127.0.0.1:{port}", client_id="close-test")
    await pub.publish("agent.state", {"state": "ready"}, agent_id="1001")
    await asyncio.wait_for(accepted.wait(), 5)
    await asyncio.sleep(0.1)  # into the wait for CONNACK (not synchronisation of a result)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await pub.close(within=3)
    assert loop.time() - started < 1.0
    assert pub._task is not None and pub._task.done()
    server.close()
    await server.wait_closed()

