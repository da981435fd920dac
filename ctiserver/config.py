"""ctiserver's configuration: one TOML file, secrets overridable from the environment.

Every problem is reported at once, as ``FILE: [section] key: what is wrong``, so an
admin fixes the file in one pass. Secrets never appear in an error message or a log.
Environment overrides: ``CTISERVER_AMI_SECRET``, ``CTISERVER_DATABASE_URL``,
``CTISERVER_MQTT_URL``.
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ctiserver.core.acd.model import AcdConfig, AgentConfig, QueueConfig, SkillRelax, Strategy


class ConfigError(Exception):
    """The configuration file is wrong; ``problems`` lists every mistake found."""

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = problems
        super().__init__("\n".join(f"{path}: {p}" for p in problems))


@dataclass(frozen=True)
class AmiConfig:
    host: str = "127.0.0.1"
    port: int = 5038
    username: str = "ctiserver"
    secret: str = field(default="", repr=False)
    reconnect_max: float = 10.0  # seconds between reconnect attempts at most (backoff)


@dataclass(frozen=True)
class HaConfig:
    """An active/standby pair sharing one PostgreSQL database (docs/failover.md)."""

    enabled: bool = False
    name: str = ""  # this member, in logs and /healthz (default: the host name)
    lock_key: int = 0x43544953  # the advisory lock both members contend for
    interval: float = 0.5  # seconds between lock attempts and leader checks
    fence_after: float = 8.0  # a leader that cannot reach PostgreSQL this long steps down
    peer_url: str | None = None  # the other member's web address, for agents' browsers


@dataclass(frozen=True)
class Config:
    path: str
    ami: AmiConfig
    agi_host: str
    agi_port: int
    web_host: str
    web_port: int
    database_url: str = field(repr=False)
    mqtt_url: str | None = field(default=None, repr=False)
    mqtt_ca_file: str | None = None  # mqtts: the CA that signed the broker's certificate
    crm_url_template: str | None = None
    rules_dir: Path = Path("routing_rules")
    flows_dir: Path = Path("ivr_flows")
    state_dir: Path = Path("var")
    region: str = "ES"
    timezone: str = "Europe/Madrid"
    lookup_timeout: float = 0.2
    lookup_tables: tuple[str, ...] = ()
    acd: AcdConfig = field(default_factory=AcdConfig)
    restore_agents: bool = True  # log agents back in as they were before a restart
    auto_login: tuple[str, ...] = ()  # agents logged in and ready at start
    # ring a free agent without a FastAGI round trip for numbers whose routing depends
    # on nothing but the number (docs/fast-path.md)
    pre_decided: bool = True
    ha: HaConfig = field(default_factory=HaConfig)
    # the app_queue queue the dialplan's fallback uses (global CTI_FALLBACK_QUEUE), whose
    # members ctiserver keeps in step with its agents; "" leaves it alone
    fallback_queue: str = "ctiserver-fallback"


_SECTIONS = {
    "ami", "agi", "web", "database", "mqtt", "crm", "rules", "state", "phone", "queues",
    "agents", "acd", "ha",
}
_QUEUE_KEYS = {
    "name", "strategy", "required_skills", "priority", "ring_timeout", "wrapup", "max_wait",
    "overflow", "announce_frequency", "announce_first_after", "service_level", "when_no_agents",
    "preferred_agent_timeout", "skill_relax", "members",
}
_AGENT_KEYS = {"id", "name", "device", "skills", "queues", "auto_login"}
_QUEUE_NAME = re.compile(r"[\w.@+-]*")


class _Reader:
    """Pulls typed values out of the parsed TOML, collecting problems instead of raising."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def get(self, table: dict[str, Any], where: str, key: str, kind: type | tuple[type, ...],
            default: Any) -> Any:
        if key not in table:
            return default
        value = table[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            want = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            self.problems.append(f"{where} {key}: expected {want}, got {type(value).__name__}")
            return default
        return value

    def bind(self, table: dict[str, Any], where: str, default: str) -> tuple[str, int]:
        text = self.get(table, where, "bind", str, default)
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            self.problems.append(f"{where} bind: expected HOST:PORT, got {text!r}")
            host, port = default.rsplit(":", 1)
        return host.strip("[]"), int(port)

    def unknown(self, table: dict[str, Any], where: str, known: set[str]) -> None:
        for key in sorted(set(table) - known):
            self.problems.append(f"{where} {key}: unknown setting")


# reads an app_queue queues.conf (``[acd] import_queues_conf``) into ACD settings; raises
# ValueError or OSError with a message for the admin. The composition root passes the
# Asterisk adapter's reader (``ctiserver.app.load_config``).
QueuesConfReader = Callable[[Path], AcdConfig]


def load(path: str | Path, env: dict[str, str] | None = None,
         read_queues_conf: QueuesConfReader | None = None) -> Config:
    """Read and validate the configuration file. Raises ConfigError listing every problem."""
    env = dict(os.environ) if env is None else env
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(str(p), ["file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(p), [f"cannot read: {exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(p), [f"not valid TOML: {exc}"]) from None
    return parse(raw, str(p), env, base=p.parent, read_queues_conf=read_queues_conf)


def parse(raw: dict[str, Any], path: str, env: dict[str, str], base: Path = Path("."),
          read_queues_conf: QueuesConfReader | None = None) -> Config:
    r = _Reader()
    r.unknown(raw, "", _SECTIONS)
    sec = {name: raw.get(name, {}) for name in _SECTIONS - {"queues", "agents"}}
    for name, table in sec.items():
        if not isinstance(table, dict):
            r.problems.append(f"[{name}]: expected a table")
            sec[name] = {}

    a = sec["ami"]
    r.unknown(a, "[ami]", {"host", "port", "username", "secret", "reconnect_max"})
    secret = env.get("CTISERVER_AMI_SECRET") or r.get(a, "[ami]", "secret", str, "")
    ami = AmiConfig(
        host=r.get(a, "[ami]", "host", str, "127.0.0.1"),
        port=r.get(a, "[ami]", "port", int, 5038),
        username=r.get(a, "[ami]", "username", str, "ctiserver"),
        secret=secret,
        reconnect_max=r.get(a, "[ami]", "reconnect_max", float, 10.0),
    )
    if not 0 < ami.port < 65536:
        r.problems.append(f"[ami] port: {ami.port} is not a TCP port")
    if not ami.secret:
        r.problems.append("[ami] secret: missing (set it here or in CTISERVER_AMI_SECRET)")
    r.unknown(sec["agi"], "[agi]", {"bind"})
    agi_host, agi_port = r.bind(sec["agi"], "[agi]", "127.0.0.1:4573")
    r.unknown(sec["web"], "[web]", {"bind"})
    web_host, web_port = r.bind(sec["web"], "[web]", "127.0.0.1:8080")

    r.unknown(sec["database"], "[database]", {"url"})
    db_url = env.get("CTISERVER_DATABASE_URL") or r.get(
        sec["database"], "[database]", "url", str, "sqlite+aiosqlite:///var/ctiserver.db")
    if not (db_url.startswith("sqlite+aiosqlite://") or db_url.startswith("postgresql+asyncpg://")):
        r.problems.append("[database] url: use sqlite+aiosqlite:///PATH or "
                          "postgresql+asyncpg://USER:PASSWORD@HOST/DB")
    r.unknown(sec["mqtt"], "[mqtt]", {"url", "ca_file"})
    mqtt_url = env.get("CTISERVER_MQTT_URL") or r.get(sec["mqtt"], "[mqtt]", "url", str, None)
    if mqtt_url and urlsplit(mqtt_url).scheme not in ("mqtt", "mqtts"):
        r.problems.append("[mqtt] url: use mqtt://[USER:PASSWORD@]HOST[:PORT] (mqtts:// for TLS)")
    mqtt_ca = r.get(sec["mqtt"], "[mqtt]", "ca_file", str, None)
    if mqtt_ca:
        mqtt_ca = str(base / mqtt_ca)  # relative to the configuration file, as other paths
    if mqtt_ca and not (mqtt_url and urlsplit(mqtt_url).scheme == "mqtts"):
        r.problems.append("[mqtt] ca_file: only used with an mqtts:// url")
    elif mqtt_ca and not Path(mqtt_ca).is_file():
        r.problems.append(f"[mqtt] ca_file: no such file {mqtt_ca}")
    r.unknown(sec["crm"], "[crm]", {"url_template", "lookup_timeout", "lookup_tables"})
    crm_t = r.get(sec["crm"], "[crm]", "url_template", str, None)
    lookup_timeout = r.get(sec["crm"], "[crm]", "lookup_timeout", float, 0.2)
    tables = r.get(sec["crm"], "[crm]", "lookup_tables", list, [])

    r.unknown(sec["rules"], "[rules]", {"dir", "flows_dir", "pre_decided"})
    r.unknown(sec["state"], "[state]", {"dir", "restore_agents"})
    r.unknown(sec["phone"], "[phone]", {"region", "timezone"})
    rules_dir = base / r.get(sec["rules"], "[rules]", "dir", str, "routing_rules")
    pre_decided = r.get(sec["rules"], "[rules]", "pre_decided", bool, True)
    flows_dir = base / r.get(sec["rules"], "[rules]", "flows_dir", str, "ivr_flows")
    state_dir = base / r.get(sec["state"], "[state]", "dir", str, "var")
    region = r.get(sec["phone"], "[phone]", "region", str, "ES")
    tz = r.get(sec["phone"], "[phone]", "timezone", str, "Europe/Madrid")
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(tz)
    except Exception:
        r.problems.append(f"[phone] timezone: {tz!r} is not an IANA time zone")

    ha = _ha(r, sec["ha"], db_url)
    acd = _acd(raw, r, sec["acd"], base, read_queues_conf)
    fallback_queue = r.get(sec["acd"], "[acd]", "fallback_queue", str, "ctiserver-fallback")
    if not _QUEUE_NAME.fullmatch(fallback_queue):
        r.problems.append(f"[acd] fallback_queue: {fallback_queue!r} is not an app_queue "
                          "queue name (letters, digits, _ . - + @), or \"\" to leave it alone")
    auto_login = tuple(
        str(a.get("id")) for a in raw.get("agents", []) if isinstance(a, dict)
        and r.get(a, f"[[agents]] {a.get('id')}:", "auto_login", bool, False))
    if r.problems:
        raise ConfigError(path, r.problems)
    return Config(
        path=path, ami=ami, agi_host=agi_host, agi_port=agi_port, web_host=web_host,
        web_port=web_port, database_url=db_url, mqtt_url=mqtt_url or None,
        mqtt_ca_file=mqtt_ca or None,
        crm_url_template=crm_t, rules_dir=rules_dir, flows_dir=flows_dir, state_dir=state_dir,
        region=region, timezone=tz, lookup_timeout=lookup_timeout,
        lookup_tables=tuple(str(t) for t in tables), acd=acd,
        restore_agents=r.get(sec["state"], "[state]", "restore_agents", bool, True),
        auto_login=auto_login,
        pre_decided=pre_decided,
        ha=ha,
        fallback_queue=fallback_queue,
    )


def _ha(r: _Reader, t: dict[str, Any], db_url: str) -> HaConfig:
    w = "[ha]"
    r.unknown(t, w, {"enabled", "name", "lock_key", "interval", "fence_after", "peer_url"})
    d = HaConfig()
    ha = HaConfig(enabled=r.get(t, w, "enabled", bool, False),
                  name=r.get(t, w, "name", str, "") or socket.gethostname(),
                  lock_key=r.get(t, w, "lock_key", int, d.lock_key),
                  interval=r.get(t, w, "interval", float, d.interval),
                  fence_after=r.get(t, w, "fence_after", float, d.fence_after),
                  peer_url=r.get(t, w, "peer_url", str, None))
    if ha.enabled and not db_url.startswith("postgresql"):
        r.problems.append(f"{w} enabled: an active/standby pair shares a PostgreSQL "
                          "database ([database] url = postgresql+asyncpg://...)")
    if not 0.05 <= ha.interval <= 10:
        r.problems.append(f"{w} interval: between 0.05 and 10 seconds")
    if ha.fence_after < 3 * ha.interval:
        r.problems.append(f"{w} fence_after: at least 3 x interval")
    if ha.peer_url and urlsplit(ha.peer_url).scheme not in ("http", "https"):
        r.problems.append(f"{w} peer_url: http://HOST:PORT or https://HOST:PORT")
    return ha


def _skills(r: _Reader, where: str, value: Any) -> dict[str, int]:
    if not isinstance(value, dict):
        r.problems.append(f"{where}: expected a table of skill = level")
        return {}
    out: dict[str, int] = {}
    for skill, level in value.items():
        if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 10:
            r.problems.append(f"{where} {skill}: level must be a whole number 0..10")
        else:
            out[str(skill)] = level
    return out


def _acd(raw: dict[str, Any], r: _Reader, acd_sec: dict[str, Any], base: Path,
         read_queues_conf: QueuesConfReader | None) -> AcdConfig:
    r.unknown(acd_sec, "[acd]", {"import_queues_conf", "fallback_queue"})
    queues: dict[str, QueueConfig] = {}
    agents: dict[str, AgentConfig] = {}
    imported = r.get(acd_sec, "[acd]", "import_queues_conf", str, None)
    if imported and read_queues_conf is None:
        r.problems.append("[acd] import_queues_conf: no queues.conf reader given to load()")
    elif imported and read_queues_conf is not None:
        try:
            result = read_queues_conf(base / imported)
            queues.update(result.queues)
            agents.update(result.agents)
        except (ValueError, OSError) as exc:
            r.problems.append(f"[acd] import_queues_conf: {exc}")

    for i, q in enumerate(_array(raw, "queues", r)):
        where = f"[[queues]] #{i + 1}"
        name = q.get("name")
        if not isinstance(name, str) or not name:
            r.problems.append(f"{where} name: missing")
            continue
        where = f"[[queues]] {name}:"
        r.unknown(q, where, _QUEUE_KEYS)
        strategy_text = r.get(q, where, "strategy", str, "longest_idle")
        try:
            strategy = Strategy(strategy_text)
        except ValueError:
            r.problems.append(f"{where} strategy: {strategy_text!r} is not one of "
                              + ", ".join(s.value for s in Strategy))
            strategy = Strategy.LONGEST_IDLE
        relax = []
        for step in r.get(q, where, "skill_relax", list, []):
            if isinstance(step, dict) and {"after", "min_level"} <= set(step):
                relax.append(SkillRelax(float(step["after"]), int(step["min_level"])))
            else:
                r.problems.append(f"{where} skill_relax: each step is {{after = S, min_level = N}}")
        when_no = r.get(q, where, "when_no_agents", str, "wait")
        if when_no not in ("wait", "overflow"):
            r.problems.append(f"{where} when_no_agents: 'wait' or 'overflow'")
        max_wait = r.get(q, where, "max_wait", float, None)
        queues[name] = QueueConfig(
            name=name, strategy=strategy,
            required_skills=_skills(r, f"{where} required_skills",
                                    q.get("required_skills", {})),
            priority=r.get(q, where, "priority", int, 0),
            ring_timeout=r.get(q, where, "ring_timeout", float, 15.0),
            wrapup=r.get(q, where, "wrapup", float, 0.0),
            max_wait=max_wait,
            overflow=r.get(q, where, "overflow", str, None),
            announce_frequency=r.get(q, where, "announce_frequency", float, 0.0),
            announce_first_after=r.get(q, where, "announce_first_after", float, 5.0),
            service_level=r.get(q, where, "service_level", float, 20.0),
            when_no_agents=when_no,
            preferred_agent_timeout=r.get(q, where, "preferred_agent_timeout", float, 0.0),
            skill_relax=tuple(relax),
            members=tuple(str(m) for m in r.get(q, where, "members", list, [])),
        )
        if queues[name].ring_timeout <= 0:
            r.problems.append(f"{where} ring_timeout: must be more than 0 seconds")

    for i, a in enumerate(_array(raw, "agents", r)):
        aid = a.get("id")
        if isinstance(aid, int) and not isinstance(aid, bool):
            aid = str(aid)
        if not isinstance(aid, str) or not aid:
            r.problems.append(f"[[agents]] #{i + 1} id: missing")
            continue
        where = f"[[agents]] {aid}:"
        r.unknown(a, where, _AGENT_KEYS)
        device = r.get(a, where, "device", str, f"PJSIP/{aid}")
        if "/" not in device:
            r.problems.append(f"{where} device: expected TECH/RESOURCE such as PJSIP/{aid}")
        agent_queues = tuple(str(x) for x in r.get(a, where, "queues", list, []))
        agents[aid] = AgentConfig(
            id=aid, name=r.get(a, where, "name", str, aid), device=device,
            skills=_skills(r, f"{where} skills", a.get("skills", {})), queues=agent_queues)

    for qname, qc in queues.items():
        for m in qc.members:
            if m not in agents:
                r.problems.append(f"[[queues]] {qname}: members: no agent with id {m!r}")
        if qc.overflow and qc.overflow.startswith("queue:") and qc.overflow[6:] not in queues:
            r.problems.append(f"[[queues]] {qname}: overflow: no queue {qc.overflow[6:]!r}")
    for aid, ag in agents.items():
        for qn in ag.queues:
            if qn not in queues:
                r.problems.append(f"[[agents]] {aid}: queues: no queue {qn!r}")
    return AcdConfig(queues=queues, agents=agents)


def _array(raw: dict[str, Any], key: str, r: _Reader) -> list[dict[str, Any]]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(x, dict) for x in value):
        r.problems.append(f"[[{key}]]: expected an array of tables ([[{key}]] blocks)")
        return []
    return value
