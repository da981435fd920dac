"""Run an IVR session over a panoramisk FastAGI request.

Translates the interpreter's instructions into AGI commands and nothing more:

* ``Play``      -> ``STREAM FILE <sound> ""`` per sound (``"0123456789*#"`` if interruptible)
* ``SayDigits`` -> ``SAY DIGITS <digits> ""``
* ``Collect``   -> ``GET DATA <sound&sound> <timeout ms> <max digits>``

panoramisk 1.4 parses each reply into ``{'status_code': 200, 'result': ('5', '')}``
(``result`` data is ``'timeout'`` after a GET DATA timeout), and turns
``result=-1`` into ``{'error': 'AGIAppError', …}`` and a hang-up into
``{'error': 'AGIResultHangup', …}``. Older or hand-made replies may look like
``{'200': {'result': ('1', '')}}``; both shapes are accepted. Any error or
``-1`` means the caller hung up or the channel was redirected: we stop at once.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any, Protocol

from ctiserver.core.ivr.session import Collect, Done, Instruction, IvrSession, Play, SayDigits
from ctiserver.core.rules.decision import Decision

log = logging.getLogger(__name__)

_SAFE_SOUND = re.compile(r"^[A-Za-z0-9_\-./]{1,128}$")


class AgiRequest(Protocol):
    @property
    def headers(self) -> Mapping[str, str]: ...

    async def send_command(self, command: str) -> Any: ...


class ChannelGone(Exception):
    """The caller hung up or the channel left the AGI (result -1)."""


def parse_reply(reply: Any) -> tuple[str, str]:
    """``(result, data)`` of an AGI reply; raises :class:`ChannelGone` on hang-up / -1."""
    if not isinstance(reply, Mapping):
        raise ChannelGone(f"unexpected AGI reply {reply!r}")
    if "error" in reply:
        raise ChannelGone(f"{reply.get('error')}: {reply.get('msg', '')}".strip())
    body: Mapping[str, Any] = reply
    if "result" not in reply:
        nested = reply.get("200", reply.get(200))
        if not isinstance(nested, Mapping):
            raise ChannelGone(f"AGI command failed: {reply!r}")
        body = nested
    elif reply.get("status_code", 200) != 200:
        raise ChannelGone(f"AGI status {reply.get('status_code')}: {reply.get('msg', '')}")
    result = body.get("result", ("", ""))
    if isinstance(result, tuple | list):
        value = str(result[0]) if len(result) > 0 else ""
        data = str(result[1]) if len(result) > 1 else ""
    else:
        value, data = str(result), ""
    if value.strip() == "-1" or data == "hangup":
        raise ChannelGone("result -1")
    return value.strip(), data.strip().strip("()")


def _sound(name: str) -> str:
    if not _SAFE_SOUND.match(name) or ".." in name:
        raise ValueError(f"unsafe sound name {name!r}")
    return name


async def _still_there(request: AgiRequest) -> None:
    """Raise :class:`ChannelGone` unless the channel still answers AGI commands."""
    parse_reply(await request.send_command("CHANNEL STATUS"))


async def _execute(request: AgiRequest, step: Instruction, uid: str) -> str | None:
    if isinstance(step, Play):
        escape = '"0123456789*#"' if step.interruptible else '""'
        for sound in step.sounds:
            reply = await request.send_command(f"STREAM FILE {_sound(sound)} {escape}")
            try:
                value, _ = parse_reply(reply)
            except ChannelGone:
                # Asterisk answers a sound file it cannot find (e.g. not recorded in the
                # channel's language) with result=-1, exactly like a hang-up: ask the
                # channel before giving the caller up for gone.
                await _still_there(request)
                log.warning("ivr %s: sound %r could not be played (missing for this "
                            "channel's language?): skipped", uid, sound)
                continue
            if step.interruptible and value not in ("", "0"):
                return chr(int(value)) if value.isdigit() else None
        return None
    if isinstance(step, SayDigits):
        digits = "".join(ch for ch in step.digits if ch.isdigit())
        if digits:
            parse_reply(await request.send_command(f'SAY DIGITS {digits} ""'))
        return None
    if isinstance(step, Collect):
        prompt = "&".join(_sound(s) for s in step.sounds) or "silence/1"
        timeout_ms = int(step.timeout * 1000)
        command = f"GET DATA {prompt} {timeout_ms} {step.max_len}"
        try:
            value, data = parse_reply(await request.send_command(command))
        except ChannelGone:
            # Asterisk 22 answers GET DATA with result=-1 when a prompt file is missing:
            # if the caller is still there, collect the digits without the prompt
            await _still_there(request)
            log.warning("ivr %s: prompt %r could not be played (missing for this channel's "
                        "language?): collecting without it", uid, prompt)
            value, data = parse_reply(await request.send_command(
                f"GET DATA silence/1 {timeout_ms} {step.max_len}"))
        log.debug("ivr %s: GET DATA -> %r (%s)", uid, value, data)
        return value
    raise TypeError(f"cannot execute {step!r}")


async def run_ivr(request: AgiRequest, session: IvrSession) -> dict[str, Any]:
    """Drive ``session`` on the channel until it is done or the caller leaves.

    Returns ``{"answers": {...}, "decision": Decision | None, "hungup": bool,
    "trace": (...)}``. ``decision`` None with ``hungup`` False means: route the
    call with the answers (``runtime.decide(ctx with answers)``).
    """
    uid = str(request.headers.get("agi_uniqueid", "?")) if hasattr(request, "headers") else "?"
    language = session.flow.language
    step: Instruction
    try:
        if language:
            parse_reply(await request.send_command(f'SET VARIABLE CHANNEL(language) "{language}"'))
        step = session.start()
        while not isinstance(step, Done):
            result = await _execute(request, step, uid)
            step = session.feed(result)
    except ChannelGone as exc:
        log.info("ivr %s: caller left during %s: %s", uid, session.flow.name, exc)
        return {
            "answers": dict(session.answers),
            "decision": None,
            "hungup": True,
            "trace": tuple(session.trace),
        }
    decision: Decision | None = step.decision
    log.info(
        "ivr %s: %s done: %s",
        uid,
        session.flow.name,
        decision.describe() if decision else "route with answers",
    )
    return {
        "answers": dict(step.answers),
        "decision": decision,
        "hungup": False,
        "trace": step.trace,
    }
