"""What ctiserver reads from the real sandbox Asterisk, as Asterisk writes it: the dialplan's
hold-expired marker names its call (CDR is off in the sandbox)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.harness import CtiServer, Observer
from tests.integration.test_acd_asterisk import ami_action

pytestmark = pytest.mark.integration


def test_a_caller_held_too_long_is_marked_with_its_call_id(
        asterisk: None, observer: Observer, tmp_path: Path) -> None:
    cti = CtiServer(tmp_path).start()
    try:
        # a Local channel stands for a caller on hold for 1 s (CTI_MAXHOLD), whose fallback
        # queue does not exist (it hangs up at once)
        ami_action(observer, {
            "Action": "Originate", "Channel": "Local/s@ctiserver-hold", "Application": "Wait",
            "Data": "5", "Timeout": "6000", "Async": "true",
            "Variable": "CTI_MAXHOLD=1,CTI_FALLBACK_QUEUE=ctiserver-none"})
        marker = observer.wait_for(lambda e: e.event == "UserEvent"
                                   and e.UserEvent == "CtiHoldExpired", 10,
                                   "the hold-expired marker")[0]
        cti.wait_log("caller held too long", 5)
    finally:
        assert cti.stop() == 0
    assert marker.CallId and marker.CallId == marker.Linkedid, dict(marker)
    assert f"[{marker.CallId}] caller held too long without ctiserver" in cti.log()

