"""The dialplan's markers (UserEvent) name their call by what is always there: the
channel's linkedid, never a CDR field (empty where CDR is off, as in the sandbox)."""

from __future__ import annotations

import re
from pathlib import Path

DIALPLAN = Path(__file__).resolve().parents[2] / "asterisk_conf" / "etc" / \
    "extensions_ctiserver.conf"


def code_lines() -> list[str]:
    return [line.split(";", 1)[0] for line in DIALPLAN.read_text().splitlines()
            if line.split(";", 1)[0].strip()]


def test_every_marker_carries_the_channels_linkedid_as_its_call_id() -> None:
    markers = [line for line in code_lines() if "UserEvent(" in line]
    names = {re.search(r"UserEvent\((\w+)", line).group(1) for line in markers}  # type: ignore[union-attr]
    assert {"CtiHoldExpired", "CtiAnnounce", "CtiClaimLost", "CtiFallback"} <= names
    for line in markers:
        if "UserEvent(CtiRemoteLeg" in line:
            # on the agent's server: the call is the caller's server's, named by the
            # X-CTI-Call header that server's dialplan set from its own linkedid
            assert "CallId: ${PJSIP_HEADER(read,X-CTI-Call)}" in line, line
            continue
        assert "CallId: ${CHANNEL(linkedid)}" in line, line
    header = [line for line in code_lines() if "X-CTI-Call" in line and "add" in line]
    assert header and all("${CHANNEL(linkedid)}" in line for line in header), header


def test_the_dialplan_reads_nothing_from_the_cdr() -> None:
    assert [line for line in code_lines() if "CDR(" in line] == []
