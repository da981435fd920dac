"""A caller's name as the caller sent it, from what Asterisk hands over.

Asterisk keeps a SIP display name as it came on the wire, less its enclosing quotes: the
quoted-pairs of RFC 3261 stay (``From: "Ana \\"La Jefa\\" Lopez" <sip:…>`` becomes
CALLERID(name) ``Ana \\"La Jefa\\" Lopez``; measured with PJSIP on Asterisk 22), and the
FastAGI environment passes that on as it is. AMI escapes it once more, as C does
(``ast_escape_c``: CallerIDName ``Ana \\\\\\"La Jefa\\\\\\" Lopez``), and writes an empty name
as ``<unknown>``. Both are undone here; control characters that undoing may bring back are
the calls feature's to drop (``calls.routing.clean_name``).
"""

from __future__ import annotations

import re

_ESCAPED = re.compile(r"\\(.)", re.DOTALL)
# ast_escape_c's sequences (main/utils.c), back to their characters
_C_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
              "\\": "\\", "'": "'", '"': '"', "?": "?"}
_SIP = ("PJSIP/", "SIP/")


def _c_unescape(match: re.Match[str]) -> str:
    return _C_ESCAPES.get(match.group(1), match.group(0))


def from_agi(name: str, channel: str) -> str:
    """The caller's name from the FastAGI environment (``agi_calleridname``) of
    ``channel``: a SIP channel's with its quoted-pairs undone (``\\"`` is ``"``, ``\\\\``
    is ``\\``); another technology's as it is."""
    if "\\" not in name or not channel.startswith(_SIP):
        return name
    return _ESCAPED.sub(r"\1", name)


def from_ami(name: str, channel: str) -> str:
    """The caller's name from an AMI event's ``CallerIDName`` about ``channel``."""
    if name == "<unknown>":
        return ""
    if "\\" in name:
        name = _ESCAPED.sub(_c_unescape, name)
    return from_agi(name, channel)
