"""Configuration loading: a good file, and each kind of bad file with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctiserver.cli import main
from ctiserver.config import ConfigError, load
from ctiserver.core.acd.model import Strategy

REPO = Path(__file__).resolve().parents[2]
GOOD = """
[ami]
host = "127.0.0.1"
username = "ctiserver"
secret = "s3cret-in-file"
[agi]
bind = "127.0.0.1:4573"
[web]
bind = "127.0.0.1:8081"
[[queues]]
name = "support"
strategy = "round_robin"
ring_timeout = 12
skill_relax = [{ after = 30, min_level = 3 }]
[[agents]]
id = "1001"
queues = ["support"]
skills = { spanish = 7 }
auto_login = true
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "ctiserver.toml"
    p.write_text(text)
    return p


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, text), env=env or {})
    return info.value.problems


def test_the_shipped_example_is_valid() -> None:
    cfg = load(REPO / "ctiserver.example.toml", env={})
    assert set(cfg.acd.queues) == {"sales", "support", "billing", "technical", "vip"}
    assert cfg.acd.agents["1002"].device == "PJSIP/1002"
    assert cfg.mqtt_url is None


def test_good_file(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, GOOD), env={})
    assert (cfg.agi_host, cfg.agi_port, cfg.web_port) == ("127.0.0.1", 4573, 8081)
    q = cfg.acd.queues["support"]
    assert q.strategy is Strategy.ROUND_ROBIN and q.ring_timeout == 12.0
    assert q.skill_relax[0].min_level == 3
    assert cfg.acd.agents["1001"].skills == {"spanish": 7}
    assert cfg.auto_login == ("1001",)
    assert cfg.rules_dir == tmp_path / "routing_rules"  # relative to the file
    assert cfg.pre_decided is True  # docs/fast-path.md


def test_the_pre_decided_ring_can_be_turned_off(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, GOOD + '[rules]\npre_decided = false\n'), env={})
    assert cfg.pre_decided is False
    assert any("pre_decided" in p for p in problems(
        tmp_path, GOOD + '[rules]\npre_decided = "sometimes"\n'))


def test_environment_overrides_secrets(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, GOOD), env={"CTISERVER_AMI_SECRET": "from-env",
                                           "CTISERVER_DATABASE_URL": "postgresql+asyncpg://u:p@h/db"})
    assert cfg.ami.secret == "from-env"
    assert cfg.database_url.startswith("postgresql+asyncpg://")
    assert "from-env" not in repr(cfg) and "u:p@" not in repr(cfg)  # secrets never printed


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load(tmp_path / "nope.toml", env={})


def test_not_toml(tmp_path: Path) -> None:
    assert "not valid TOML" in problems(tmp_path, "[ami\nhost=")[0]


def test_missing_secret_is_explained(tmp_path: Path) -> None:
    text = GOOD.replace('secret = "s3cret-in-file"\n', "")
    assert problems(tmp_path, text) == [
        "[ami] secret: missing (set it here or in CTISERVER_AMI_SECRET)"]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = GOOD.replace('host = "127.0.0.1"', "host = 5").replace(
        'bind = "127.0.0.1:4573"', 'bind = "4573"').replace(
        '"round_robin"', '"fastest"').replace("spanish = 7", "spanish = 11") + "\n[bogus]\n"
    found = problems(tmp_path, text)
    assert "[ami] host: expected str, got int" in found
    assert "[agi] bind: expected HOST:PORT, got '4573'" in found
    assert any(p.startswith("[[queues]] support: strategy: 'fastest' is not one of") for p in found)
    assert "[[agents]] 1001: skills spanish: level must be a whole number 0..10" in found
    assert " bogus: unknown setting" in found
    assert len(found) == 5


def test_references_between_queues_and_agents_are_checked(tmp_path: Path) -> None:
    text = GOOD.replace('queues = ["support"]', 'queues = ["support", "sales"]') + (
        '\n[[queues]]\nname = "vip"\noverflow = "queue:nowhere"\nmembers = ["9999"]\n')
    found = problems(tmp_path, text)
    assert "[[agents]] 1001: queues: no queue 'sales'" in found
    assert "[[queues]] vip: overflow: no queue 'nowhere'" in found
    assert "[[queues]] vip: members: no agent with id '9999'" in found


def test_bad_database_and_mqtt_urls(tmp_path: Path) -> None:
    text = GOOD + '\n[database]\nurl = "mysql://x"\n[mqtt]\nurl = "http://broker"\n'
    found = problems(tmp_path, text)
    assert any(p.startswith("[database] url:") for p in found)
    assert any(p.startswith("[mqtt] url:") for p in found)


def test_mqtt_over_tls_with_a_ca_file_next_to_the_configuration(tmp_path: Path) -> None:
    (tmp_path / "broker-ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    cfg = load(write(tmp_path, GOOD + '\n[mqtt]\nurl = "mqtts://broker.example"\n'
                                      'ca_file = "broker-ca.pem"\n'), env={})
    assert cfg.mqtt_ca_file == str(tmp_path / "broker-ca.pem")
    found = problems(tmp_path, GOOD + '\n[mqtt]\nurl = "mqtt://broker"\nca_file = "x.pem"\n')
    assert found == ["[mqtt] ca_file: only used with an mqtts:// url"]
    found = problems(tmp_path, GOOD + '\n[mqtt]\nurl = "mqtts://broker"\nca_file = "x.pem"\n')
    assert found == [f"[mqtt] ca_file: no such file {tmp_path / 'x.pem'}"]


def test_check_config_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--config", str(write(tmp_path, GOOD))]) == 0
    assert "OK" in capsys.readouterr().out
    bad = write(tmp_path, GOOD.replace("ring_timeout = 12", "ring_timeout = -1"))
    with pytest.raises(SystemExit) as exit_info:
        main(["check-config", "--config", str(bad)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "ring_timeout: must be more than 0 seconds" in err
    assert "s3cret-in-file" not in err


def test_an_active_standby_pair_needs_postgresql_and_sane_timers(tmp_path: Path) -> None:
    pg = '[database]\nurl = "postgresql+asyncpg://cti@db.example/cti"\n'
    cfg = load(write(tmp_path, GOOD + pg + '[ha]\nenabled = true\nname = "cti-a"\n'), env={})
    assert (cfg.ha.enabled, cfg.ha.name, cfg.ha.interval) == (True, "cti-a", 0.5)
    assert load(write(tmp_path, GOOD), env={}).ha.enabled is False
    found = problems(tmp_path, GOOD + '[ha]\nenabled = true\ninterval = 1\nfence_after = 2\n'
                     'peer_url = "cti-b:8080"\n')
    assert any("[ha] enabled" in p and "PostgreSQL" in p for p in found)
    assert any("[ha] fence_after" in p for p in found)
    assert any("[ha] peer_url" in p for p in found)
