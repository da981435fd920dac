"""Importing an app_queue setup (queues.conf) into the ACD configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctiserver.asterisk.queues_import import QueuesConfError, read_queues_conf
from ctiserver.core.acd.model import Strategy

FIXTURE = Path(__file__).parent / "fixtures" / "queues.conf"


def test_queues_and_their_options() -> None:
    cfg = read_queues_conf(FIXTURE).config
    assert set(cfg.queues) == {"sales", "support", "billing", "legacy"}
    sales = cfg.queues["sales"]
    assert sales.strategy == Strategy.RING_ALL
    assert sales.ring_timeout == 25.0
    assert sales.wrapup == 5.0
    assert sales.announce_frequency == 45.0
    assert sales.service_level == 30.0
    assert sales.priority == 2  # weight
    assert cfg.queues["billing"].strategy == Strategy.ROUND_ROBIN
    assert cfg.queues["legacy"].strategy == Strategy.FIRST_AVAILABLE


def test_template_options_are_inherited_and_templates_are_not_queues() -> None:
    cfg = read_queues_conf(FIXTURE).config
    support = cfg.queues["support"]
    assert support.strategy == Strategy.LONGEST_IDLE
    assert support.ring_timeout == 20.0 and support.wrapup == 15.0
    assert support.announce_frequency == 60.0
    assert "support-tpl" not in cfg.queues and "general" not in cfg.queues


def test_members_become_agents_ordered_by_penalty() -> None:
    cfg = read_queues_conf(FIXTURE).config
    assert cfg.queues["sales"].members == ("1001", "1002", "1003")
    assert cfg.queues["support"].members == ("1004", "1002", "1003")
    a = cfg.agents["1003"]
    assert a.name == "Night Shift" and a.device == "PJSIP/1003"
    assert set(a.queues) == {"sales", "support"}
    assert a.skills == {"queue:sales": 5, "queue:support": 8}
    assert cfg.agents["1002"].name == "Luis Perez"
    assert cfg.queue_members("support") == ("1004", "1002", "1003")


def test_same_extension_on_two_technologies_keeps_both_agents() -> None:
    cfg = read_queues_conf(FIXTURE).config
    assert cfg.queues["billing"].members == ("PJSIP/1005", "SIP/1005")
    assert cfg.agents["SIP/1005"].device == "SIP/1005"
    remote = cfg.agents["2001@agents/n"]
    assert remote.name == "Remote Agent" and remote.device == "Local/2001@agents/n"


def test_unsupported_options_are_reported() -> None:
    warnings = read_queues_conf(FIXTURE).warnings
    assert any("maxlen ignored" in w and "[sales]" in w for w in warnings)
    assert any("musicclass ignored" in w for w in warnings)


def test_unknown_strategy_names_the_line(tmp_path: Path) -> None:
    p = tmp_path / "queues.conf"
    p.write_text("[q]\nstrategy = bogus\n")
    with pytest.raises(QueuesConfError, match=r"queues.conf:2 \[q\].*bogus"):
        read_queues_conf(p)


def test_imported_config_drives_the_engine() -> None:
    from ctiserver.core.acd.engine import Engine
    from ctiserver.core.acd.events import AgentLoggedIn, CallerJoined, Ring

    eng = Engine(read_queues_conf(FIXTURE).config)
    for i, aid in enumerate(("1001", "1002", "1003")):
        eng.handle(AgentLoggedIn(aid), 10.0 + i)
    out = eng.handle(CallerJoined("c1", "sales"), 20.0)
    rings = [e for e in out if isinstance(e, Ring)]
    assert rings == [
        Ring("c1", ("1001", "1002", "1003"), ("PJSIP/1001", "PJSIP/1002", "PJSIP/1003"), 25.0)
    ]


def test_the_daemons_configuration_imports_queues_conf_beside_its_own_queues(
        tmp_path: Path) -> None:
    from ctiserver.app import load_config
    from ctiserver.config import ConfigError, load

    (tmp_path / "queues.conf").write_text(FIXTURE.read_text())
    toml = tmp_path / "ctiserver.toml"
    toml.write_text('[ami]\nsecret = "s3cret"\n\n[acd]\nimport_queues_conf = "queues.conf"\n\n'
                    '[[queues]]\nname = "vip"\n')
    cfg = load_config(toml)  # relative to the configuration file
    assert set(cfg.acd.queues) == {"sales", "support", "billing", "legacy", "vip"}
    assert cfg.acd.queues["sales"].members == ("1001", "1002", "1003")
    # a broken queues.conf is one of the file's problems, not a traceback
    (tmp_path / "queues.conf").write_text("[sales]\nstrategy = nonsense-strategy\n")
    with pytest.raises(ConfigError) as err:
        load_config(toml)
    assert any("import_queues_conf" in p for p in err.value.problems)
    # config.py itself does not read Asterisk files: without a reader it says so
    with pytest.raises(ConfigError) as err:
        load(toml, env={})
    assert any("import_queues_conf" in p for p in err.value.problems)
