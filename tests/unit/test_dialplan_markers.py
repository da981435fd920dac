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
        assert "CallId: ${CHANNEL(linkedid)}" in line, line


def test_the_dialplan_reads_nothing_from_the_cdr() -> None:
    assert [line for line in code_lines() if "CDR(" in line] == []
