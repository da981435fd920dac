"""The systemd unit shipped in asterisk_conf/systemd/: what it promises an admin (notify,
restart, watchdog, its own user, hardening, Asterisk wanted but not required), checked by
`systemd-analyze verify`; and the env file names every secret config.py reads."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ctiserver.health import TICK

SYSTEMD = Path(__file__).resolve().parents[2] / "asterisk_conf" / "systemd"
CONFIG_PY = Path(__file__).resolve().parents[2] / "ctiserver" / "config.py"


def unit() -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in (SYSTEMD / "ctiserver.service").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key, []).append(value)
    return sections


def seconds(value: str) -> float:
    number, unit_ = re.fullmatch(r"(\d+)(ms|s|min)?", value).groups()  # type: ignore[union-attr]
    return int(number) * {"ms": 0.001, "s": 1, "min": 60, None: 1}[unit_]


def test_the_unit_is_notify_restarted_watched_and_wants_asterisk_without_requiring_it(
) -> None:
    u = unit()
    unit_, service = u["Unit"], u["Service"]
    assert service["Type"] == ["notify"]
    assert service["Restart"] == ["always"] and seconds(service["RestartSec"][0]) <= 5
    # a watchdog our probe can keep: pings every half of it, from TICK-long sleeps
    assert seconds(service["WatchdogSec"][0]) / 2 >= 4 * TICK
    for name in ("asterisk.service", "network-online.target"):
        assert name in unit_["After"][0].split() and name in unit_["Wants"][0].split()
    assert "Requires" not in unit_ and "BindsTo" not in unit_ and "PartOf" not in unit_
    assert service["User"] == ["ctiserver"] and service["StateDirectory"] == ["ctiserver"]
    assert service["EnvironmentFile"] == ["-/etc/ctiserver/ctiserver.env"]
    for option in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices",
                   "RestrictSUIDSGID", "LockPersonality"):
        assert service[option] == ["yes"], option
    assert service["ProtectSystem"] == ["strict"] and service["CapabilityBoundingSet"] == [""]


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.fail("systemd-analyze missing: apt-get install systemd", pytrace=False)
    # as installed, with ExecStart pointing at this venv's ctiserver (verify checks it)
    text = (SYSTEMD / "ctiserver.service").read_text().replace(
        "/opt/ctiserver/bin/ctiserver", str(Path(sys.executable).parent / "ctiserver"))
    (tmp_path / "ctiserver.service").write_text(text)
    proc = subprocess.run([tool, "verify", str(tmp_path / "ctiserver.service")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "ctiserver.service" not in proc.stderr, proc.stderr
    security = subprocess.run([tool, "security", "--offline=yes", "--threshold=25",
                               str(tmp_path / "ctiserver.service")],
                              capture_output=True, text=True, timeout=60)
    exposure = re.search(r"Overall exposure level for ctiserver.service: ([\d.]+)",
                         security.stdout)
    assert exposure is not None and float(exposure.group(1)) <= 2.0, security.stdout[-300:]


def test_the_env_file_names_every_secret_the_configuration_reads() -> None:
    read = set(re.findall(r'env\.get\("(CTISERVER_\w+)"\)', CONFIG_PY.read_text()))
    assert read == {"CTISERVER_AMI_SECRET", "CTISERVER_DATABASE_URL", "CTISERVER_MQTT_URL"}
    example = (SYSTEMD / "ctiserver.env.example").read_text()
    named = set(re.findall(r"^#?(CTISERVER_\w+)=", example, re.MULTILINE))
    assert read <= named
    assert "CTISERVER_AMI_SECRET=change-me" in example  # the one a deployment must set


def test_the_service_user_is_declared_for_systemd_sysusers() -> None:
    line = (SYSTEMD / "ctiserver.sysusers").read_text().splitlines()[-1].split()
    assert line[:3] == ["u", "ctiserver", "-"] and "/var/lib/ctiserver" in line
