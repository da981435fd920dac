from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from tests.integration.harness import Observer, sandbox


def _require(condition: bool, message: str) -> None:
    # integration tests must run for real: a missing component is a failure, not a skip
    if not condition:
        pytest.fail(message, pytrace=False)


@pytest.fixture(scope="session")
def asterisk() -> Iterator[None]:
    _require(os.geteuid() == 0, "integration tests need root (the Asterisk sandbox chroot)")
    _require(shutil.which("sipp") is not None, "sipp missing: apt-get install sip-tester")
    sandbox("up")
    yield
    sandbox("down")


@pytest.fixture
def observer(asterisk: None) -> Iterator[Observer]:
    obs = Observer()
    obs.start()
    yield obs
    obs.close()
