"""Routing rules, IVR flows and schedules on the real Asterisk: sipp callers press keys
(DTMF as SIP INFO), the daemon's rules choose a queue, and an agent's phone rings.

Each queue below has a single agent, so the phone that rang tells which queue the call
reached. Rules are written exactly as a supervisor writes them; the IVR is the shipped
ivr_flows/main_menu.yaml.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from ctiserver.rules.bundle import content_hash, read_dir
from ctiserver.store import Store
from tests.integration.harness import (
    REPO,
    AgentPhones,
    CtiServer,
    Observer,
    SippResult,
    dialed_agents,
    place_calls,
    place_dtmf_call,
)

pytestmark = pytest.mark.integration

AGENTS = textwrap.dedent("""
    [[agents]]
    id = "1001"
    name = "Lucia Martin"
    queues = ["support"]
    auto_login = true

    [[agents]]
    id = "1002"
    name = "Javier Romero"
    queues = ["technical"]
    auto_login = true

    [[agents]]
    id = "1003"
    name = "Marta Navarro"
    queues = ["sales"]
    auto_login = true
""")

QUEUES = "".join(
    f'\n[[queues]]\nname = "{q}"\nstrategy = "longest_idle"\nring_timeout = 10\n'
    for q in ("support", "technical", "sales"))

PHONE_OF = {"support": "PJSIP/1001", "technical": "PJSIP/1002", "sales": "PJSIP/1003"}

MENU_RULES = textwrap.dedent("""
    config:
      timezone: Europe/Madrid
      region: ES
      default: {queue: support}
    schedules:
      night_only:
        timezone: Europe/Madrid
        hours:
          daily: closed
    rules:
      - name: closed line
        if: dnis == '900100500' and not open('night_only')
        then:
          message: [vm-nobodyavail, goodbye]
      - name: own agent
        if: customer.assigned_agent
        then:
          agent_of: customer.assigned_agent
          fallback: {queue: support}
      - name: technical after the menu
        if: dnis == '900100200' and department == 'technical'
        then: {queue: technical}
      - name: sales after the menu
        if: dnis == '900100200' and department == 'sales'
        then: {queue: sales}
      - name: main line menu
        if: dnis == '900100200'
        then: {ivr: main_menu}
""")


def caller_hangups(obs: Observer) -> list[object]:
    return [e for e in obs.events
            if e.event == "Hangup" and str(e.Channel).startswith("PJSIP/trunk")]


def wait_calls_done(obs: Observer, count: int) -> None:
    obs.wait_for(lambda e: e.event == "Hangup" and str(e.Channel).startswith("PJSIP/trunk"),
                 15, "the callers' hangups", count=count)


def menu_call(tmp_path: Path, observer: Observer, place: Callable[[], SippResult], *,
              completes: bool = True, wait_log: str | None = None) -> str:
    """One sipp call (``place``) to the daemon with MENU_RULES, the agents' phones
    answering; returns the daemon's log once the call is over and the daemon stopped."""
    cti = CtiServer(tmp_path, queues=QUEUES, agents=AGENTS, rules=MENU_RULES).start()
    try:
        with AgentPhones(tmp_path, talk_ms=(300, 400)):
            result = place()
            if completes:
                assert result.successful == 1, result.output
            wait_calls_done(observer, 1)
            if wait_log is not None:
                cti.wait_log(wait_log, 10)
    finally:
        assert cti.stop() == 0
    return cti.log()


@pytest.mark.parametrize(("menus", "queue"), [(["2", "2"], "technical"), (["1"], "sales")])
def test_dtmf_through_the_menu_reaches_the_queue_the_rules_choose(
        asterisk: None, observer: Observer, tmp_path: Path, menus: list[str],
        queue: str) -> None:
    log = menu_call(tmp_path, observer,
                    lambda: place_dtmf_call(tmp_path, "900100200", menus, gap_ms=2000))
    assert dialed_agents(observer) == [PHONE_OF[queue]]
    assert [e.DialStatus for e in observer.named("DialEnd")] == ["ANSWER"]
    digits = [e.Digit for e in observer.named("DTMFEnd", Direction="Received")]
    assert digits == [d for m in menus for d in m], "Asterisk got the keys as sent"
    assert f"queue {queue} (rule" in log  # in the caller's hang-up line
    assert "caller left during" not in log
    assert observer.named("UserEvent", UserEvent="CtiFallback") == []


def test_a_caller_who_hangs_up_in_the_menu_is_let_go_cleanly(
        asterisk: None, observer: Observer, tmp_path: Path) -> None:
    # "2" in the first menu, then the caller hangs up while the second menu plays: Asterisk
    # answers ctiserver's AGI command with a "HANGUP" line (the shipped dialplan leaves
    # AGISIGHUP at its default) and ctiserver lets the call go; no agent rings, the app_queue
    # fallback is not used, nothing is logged as an error
    log = menu_call(tmp_path, observer,
                    lambda: place_dtmf_call(tmp_path, "900100200", ["2"], gap_ms=2000,
                                            maxwait_ms=1500),
                    completes=False, wait_log="caller left during the IVR")
    assert [e.Digit for e in observer.named("DTMFEnd", Direction="Received")] == ["2"]
    assert dialed_agents(observer) == []
    assert observer.named("UserEvent", UserEvent="CtiFallback") == []
    assert " ERROR " not in log and "Traceback" not in log, log


def test_a_call_at_a_closed_hour_hears_the_closed_message_and_rings_nobody(
        asterisk: None, observer: Observer, tmp_path: Path) -> None:
    # the call completes: Asterisk hangs up after the message
    log = menu_call(tmp_path, observer,
                    lambda: place_calls(tmp_path, "900100500", maxwait_ms=20000, timeout=30))
    played = [e.AppData for e in observer.named("Newexten", Context="ctiserver-message",
                                                Application="Playback")]
    assert played == ["vm-nobodyavail&goodbye"]
    assert dialed_agents(observer) == []
    assert "(rule closed line)" in log


def test_a_call_without_a_dialled_number_takes_the_rules_default(
        asterisk: None, observer: Observer, tmp_path: Path) -> None:
    # a trunk that sends no number (INVITE sip:s@...) lands on `s` in ctiserver-inbound: the
    # rules see an empty DNIS, no rule on the DNIS matches, the default queue takes the call
    log = menu_call(tmp_path, observer,
                    lambda: place_calls(tmp_path, "s", maxwait_ms=20000, timeout=30))
    assert dialed_agents(observer) == [PHONE_OF["support"]]
    assert [e.DialStatus for e in observer.named("DialEnd")] == ["ANSWER"]
    assert "-> no number, queue support (rule -)" in log, log


def test_a_known_caller_goes_to_the_agent_assigned_in_the_crm(
        asterisk: None, observer: Observer, tmp_path: Path) -> None:
    cti = CtiServer(tmp_path, queues=QUEUES, agents=AGENTS, rules=MENU_RULES)
    cti.write()  # makes the workdir; the daemon creates the tables on start

    async def add_customer() -> None:
        store = Store(f"sqlite+aiosqlite:///{tmp_path}/ctiserver.db")
        try:
            await store.migrate()
            await store.upsert_agent("1003", "Marta Navarro")
            await store.create_customer("Ana Lopez", ["+34 915 55 12 34"], tier="gold",
                                        assigned_agent="1003")
        finally:
            await store.close()

    asyncio.run(add_customer())
    cti.start()
    try:
        with AgentPhones(tmp_path, talk_ms=(300, 400)):
            for number in ("+34915551234", "+34600999888"):  # known, then unknown
                result = place_calls(tmp_path, "900100999", callers=[(number, "Caller")],
                                     maxwait_ms=20000, timeout=30)
                assert result.successful == 1, result.output
            wait_calls_done(observer, 2)
    finally:
        assert cti.stop() == 0
    # 1003 serves only "sales": nothing but the customer's assignment sends a call there
    assert dialed_agents(observer) == ["PJSIP/1003", "PJSIP/1001"]
    log = cti.log()
    assert "(rule own agent)" in log


def _rules_for(dnis_queue: str) -> str:
    return textwrap.dedent(f"""
        config:
          timezone: Europe/Madrid
          region: ES
          default: {{queue: support}}
        rules:
          - name: test line
            if: dnis == '900100999'
            then: {{queue: {dnis_queue}}}
    """)


def _replace(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_rules_reload_on_the_running_daemon(
        asterisk: None, observer: Observer, tmp_path: Path) -> None:
    cti = CtiServer(tmp_path, queues=QUEUES, agents=AGENTS, rules=_rules_for("sales")).start()
    rules_file = tmp_path / "rules" / "main.yaml"

    def version() -> str:
        return content_hash(read_dir(tmp_path / "rules"), read_dir(tmp_path / "flows"))

    def call(expect: str, n: int) -> None:
        result = place_calls(tmp_path, "900100999", maxwait_ms=20000, timeout=30)
        assert result.successful == 1, result.output
        wait_calls_done(observer, n)
        assert dialed_agents(observer)[-1] == PHONE_OF[expect]

    try:
        cti.wait_log("routing rules version", 10)
        with AgentPhones(tmp_path, talk_ms=(300, 400)):
            call("sales", 1)
            # a supervisor edits the file: the next call follows the new rule
            _replace(rules_file, _rules_for("technical"))
            new = version()
            cti.wait_log(f"version {new}", 15)
            call("technical", 2)
            # a broken file is refused, with the reason, and routing goes on unchanged
            _replace(rules_file, _rules_for("technical").replace("queue: technical",
                                                                  "queue: nosuchqueue"))
            cti.wait_log("routing rules NOT reloaded", 15)
            assert "nosuchqueue" in cti.log()
            call("technical", 3)
            # SIGHUP reloads too (and reports the version now in force)
            _replace(rules_file, _rules_for("support"))
            assert cti.proc is not None
            cti.proc.send_signal(signal.SIGHUP)
            cti.wait_log(f"SIGHUP: routing rules version {version()}", 15)
            call("support", 4)
    finally:
        assert cti.stop() == 0
    assert dialed_agents(observer) == ["PJSIP/1003", "PJSIP/1002", "PJSIP/1002", "PJSIP/1001"]


SPANISH_FLOW = textwrap.dedent("""
    name: saludo
    language: es
    start: hola
    steps:
      hola:
        play:
          sounds: [digits/1F]        # "una": recorded only in Spanish
          next: {set: {greeted: "yes"}, route: true}
""")


def test_ivr_language_es_plays_the_spanish_prompts(
        asterisk: None, observer: Observer, tmp_path: Path) -> None:
    flows = tmp_path / "flows-src"
    flows.mkdir()
    shutil.copy(REPO / "ivr_flows" / "main_menu.yaml", flows)
    (flows / "saludo.yaml").write_text(SPANISH_FLOW)
    rules = textwrap.dedent("""
        config:
          timezone: Europe/Madrid
          region: ES
          default: {queue: support}
        rules:
          - name: greet first
            if: dnis == '900100600' and greeted == ''
            then: {ivr: saludo}
    """)
    cti = CtiServer(tmp_path, queues=QUEUES, agents=AGENTS, rules=rules,
                    flows_from=flows).start()
    try:
        with AgentPhones(tmp_path, talk_ms=(300, 400)):
            result = place_calls(tmp_path, "900100600", maxwait_ms=20000, timeout=30)
            assert result.successful == 1, result.output
            wait_calls_done(observer, 1)
    finally:
        assert cti.stop() == 0
    ends = {e.Command: e.Result for e in observer.named("AGIExecEnd")}
    assert ends.get('SET VARIABLE CHANNEL(language) "es"') == "Success"
    assert ends.get('STREAM FILE digits/1F ""') == "Success", ends
    assert dialed_agents(observer) == ["PJSIP/1001"]


def test_rules_lookup_reads_the_database_table_listed_in_the_config(
        asterisk: None, observer: Observer, tmp_path: Path) -> None:
    rules = textwrap.dedent("""
        config:
          timezone: Europe/Madrid
          region: ES
          lookup_tables: [blocked_numbers]
          default: {queue: support}
        rules:
          - name: blocked callers
            if: lookup('blocked_numbers', caller_id) is not None
            then: {message: [goodbye]}
    """)
    cti = CtiServer(tmp_path, queues=QUEUES, agents=AGENTS, rules=rules,
                    extra='[crm]\nlookup_tables = ["blocked_numbers"]\nlookup_timeout = 0.5\n')
    cti.write()

    async def add_table() -> None:
        store = Store(f"sqlite+aiosqlite:///{tmp_path}/ctiserver.db")
        try:
            async with store.engine.begin() as conn:
                await conn.exec_driver_sql(
                    "CREATE TABLE blocked_numbers (number TEXT PRIMARY KEY, reason TEXT)")
                await conn.exec_driver_sql(
                    "INSERT INTO blocked_numbers VALUES ('+34600666666', 'abuse')")
        finally:
            await store.close()

    asyncio.run(add_table())
    cti.start()
    try:
        with AgentPhones(tmp_path, talk_ms=(300, 400)):
            for number in ("+34600666666", "+34600777777"):  # blocked, then not
                result = place_calls(tmp_path, "900100999", callers=[(number, "Caller")],
                                     maxwait_ms=20000, timeout=30)
                assert result.successful == 1, result.output
            wait_calls_done(observer, 2)
    finally:
        assert cti.stop() == 0
    played = [e.AppData for e in observer.named("Newexten", Context="ctiserver-message",
                                                Application="Playback")]
    assert played == ["goodbye"]
    assert dialed_agents(observer) == ["PJSIP/1001"]
    assert "(rule blocked callers)" in cti.log()
