"""FastAGI routes: ``route`` (every inbound call) and ``agent`` (agents' feature codes).

Reads the AGI environment into an ``InboundCall`` for ``ctiserver.calls.routing`` and
answers the dialplan through channel variables (CTI_ACTION and friends, see
asterisk_conf/etc/extensions_ctiserver.conf).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from ctiserver.asterisk import callerid
from ctiserver.asterisk.ami_calls import device_of
from ctiserver.asterisk.fastagi import AgiRequest, agi_ok, agi_quote
from ctiserver.asterisk.ivr_agi import run_ivr
from ctiserver.calls.model import InboundCall
from ctiserver.calls.ports import Router
from ctiserver.core.ivr.session import IvrSession

log = logging.getLogger("ctiserver.route")

# values MSet takes as they are: no separators, quotes, brackets or ${...}
_PLAIN = re.compile(r"[\w@&/.:+*#%~-]*", re.ASCII)


class AgiChannel:
    """The caller's channel as routing sees it (``ctiserver.calls.ports.DialplanChannel``)."""

    def __init__(self, request: AgiRequest, uid: str) -> None:
        self.request = request
        self.uid = uid

    async def run_ivr(self, session: IvrSession) -> dict[str, Any]:
        return await run_ivr(self.request, session)

    async def answer(self, action: str, variables: Mapping[str, str]) -> None:
        """Plain values (the usual case) go in one ``EXEC MSet``; anything else one ``SET
        VARIABLE`` each. The last command ends the AGI (``send_last``): CTI_ACTION is set
        last, and the dialplan goes on from there."""
        values = {**variables, "CTI_ACTION": action}
        if all(_PLAIN.fullmatch(v) for v in values.values()):
            pairs = ",".join(f"{k}={v}" for k, v in values.items())
            commands = [f'EXEC MSet "{pairs}"']
        else:
            commands = [f"SET VARIABLE {k} {agi_quote(v)}" for k, v in values.items()]
        *first, last = commands
        for command in first:
            reply = await self.request.send_command(command)
            if not agi_ok(reply):
                log.info("[%s] channel left while answering the dialplan", self.uid)
                return
        self.request.send_last(last)


class AgiRoutes:
    def __init__(self, routing: Router) -> None:
        self.routing = routing

    async def route(self, request: AgiRequest) -> None:
        h = request.headers
        uid = h.get("agi_uniqueid", "")
        channel = h.get("agi_channel", "")
        inbound = InboundCall(call_id=uid, channel=channel,
                              caller_id=h.get("agi_callerid", ""),
                              caller_name=callerid.from_agi(h.get("agi_calleridname", ""),
                                                            channel),
                              dnis=h.get("agi_arg_1") or h.get("agi_extension", ""))
        await self.routing.route(inbound, AgiChannel(request, uid))

    async def agent(self, request: AgiRequest) -> None:
        h = request.headers
        result = await self.routing.phone_command(device_of(h.get("agi_channel", "")),
                                                  h.get("agi_arg_1", ""))
        await request.send_command(f"SET VARIABLE CTI_RESULT {agi_quote(result)}")
