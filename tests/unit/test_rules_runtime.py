"""Hot reload, refusal of broken files, version history and rollback — real files, real watcher."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from ctiserver.core.rules import CallContext
from ctiserver.rules.cli import main as cli_main
from ctiserver.rules.runtime import ReloadResult, RulesRuntime

NOW = datetime(2026, 12, 22, 11, 0, tzinfo=ZoneInfo("Europe/Madrid"))
RULES = (
    "config: {{known_queues: [sales, support, billing]}}\nrules:\n  - name: r\n    queue: {queue}\n"
)
FLOW = "steps:\n  a: {play: {sounds: [beep], next: {route: true}}}\n"


def setup(tmp_path: Path, queue: str = "sales") -> RulesRuntime:
    (tmp_path / "rules").mkdir()
    (tmp_path / "flows").mkdir()
    write(tmp_path, RULES.format(queue=queue))
    (tmp_path / "flows" / "menu.yaml").write_text(FLOW)
    clock = iter(range(1_800_000_000, 1_900_000_000, 60))
    return RulesRuntime(
        tmp_path / "rules", tmp_path / "flows", tmp_path / "state", clock=lambda: float(next(clock))
    )


def write(tmp_path: Path, text: str, name: str = "main.yaml") -> None:
    path = tmp_path / "rules" / name
    tmp = path.with_name("." + name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def queue_of(runtime: RulesRuntime) -> str | None:
    return runtime.decide(
        CallContext.create(caller_id="600123456", dnis="900100200", now=NOW)
    ).queue


def test_reload_refuses_broken_file_and_keeps_routing(tmp_path):
    runtime = setup(tmp_path)
    first = runtime.start()
    assert first.ok and first.changed
    assert queue_of(runtime) == "sales"
    assert runtime.flow("menu") is not None

    write(tmp_path, RULES.format(queue="support"))
    second = runtime.reload()
    assert second.ok and second.changed and second.version != first.version
    assert queue_of(runtime) == "support"

    write(tmp_path, RULES.format(queue="suport"))
    refused = runtime.reload()
    assert not refused.ok
    assert refused.version == second.version
    assert "main.yaml:4: error: rule 'r': unknown queue 'suport'" in refused.reason
    assert queue_of(runtime) == "support"
    assert runtime.last_refusal == refused

    assert runtime.reload().ok is False  # still broken, still refused
    assert [v.id for v in runtime.history()] == [first.version, second.version]


def test_unchanged_files_are_not_reloaded(tmp_path):
    runtime = setup(tmp_path)
    runtime.start()
    again = runtime.reload()
    assert again.ok and not again.changed


def test_broken_ivr_flow_refuses_the_whole_set(tmp_path):
    runtime = setup(tmp_path)
    good = runtime.start()
    (tmp_path / "flows" / "menu.yaml").write_text(
        "steps:\n  a: {play: {sounds: [x], next: {goto: b}}}\n"
    )
    refused = runtime.reload()
    assert not refused.ok and refused.version == good.version
    assert "goto 'b'" in refused.reason


def test_rollback_writes_files_back_and_history_lists_versions(tmp_path, capsys):
    runtime = setup(tmp_path)
    v1 = runtime.start().version
    write(tmp_path, RULES.format(queue="billing"))
    write(tmp_path, "rules: []\n", name="zz_extra.yaml")
    v2 = runtime.reload().version
    assert queue_of(runtime) == "billing"

    result = runtime.rollback()  # default: the previous version
    assert result.ok and result.version == v1
    assert queue_of(runtime) == "sales"
    assert (tmp_path / "rules" / "main.yaml").read_text() == RULES.format(queue="sales")
    assert not (tmp_path / "rules" / "zz_extra.yaml").exists()
    assert (tmp_path / "rules" / "zz_extra.yaml.rolled-back").exists()
    assert runtime.reload().changed is False  # disk and memory agree

    assert v2 is not None
    assert runtime.rollback(v2[:6]).version == v2
    assert queue_of(runtime) == "billing"
    assert not runtime.rollback("ffffffffffff").ok

    args = [
        "--rules",
        str(tmp_path / "rules"),
        "--flows",
        str(tmp_path / "flows"),
        "--state-dir",
        str(tmp_path / "state"),
    ]
    assert cli_main(["rules", "history", *args]) == 0
    out = capsys.readouterr().out
    assert v1 in out and f"{v2}" in out and "<- files on disk" in out
    assert cli_main(["rules", "rollback", str(v1), *args]) == 0
    assert "rolled back" in capsys.readouterr().out
    assert (tmp_path / "rules" / "main.yaml").read_text() == RULES.format(queue="sales")


def test_start_with_broken_files_uses_last_stored_version(tmp_path):
    runtime = setup(tmp_path)
    good = runtime.start().version
    write(tmp_path, "rules: [\n")
    restarted = RulesRuntime(tmp_path / "rules", tmp_path / "flows", tmp_path / "state")
    result = restarted.start()
    assert not result.ok
    assert result.version == good
    assert "YAML" in result.reason
    assert queue_of(restarted) == "sales"


async def test_watch_reloads_on_change_and_refuses_broken_file(tmp_path):
    runtime = setup(tmp_path)
    runtime.start()
    results: asyncio.Queue[ReloadResult] = asyncio.Queue()
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.watch(stop, results.put_nowait, debounce_ms=50,
                                             ready_ms=200))
    try:
        await asyncio.wait_for(runtime.watching.wait(), 10)

        write(tmp_path, RULES.format(queue="billing"))
        result = await asyncio.wait_for(results.get(), 10)
        assert result.ok and result.changed
        assert queue_of(runtime) == "billing"

        write(tmp_path, RULES.format(queue="nonexistent"))
        result = await asyncio.wait_for(results.get(), 10)
        assert not result.ok and "unknown queue 'nonexistent'" in result.reason
        assert queue_of(runtime) == "billing"

        # non-YAML files are ignored; the next YAML change is picked up
        (tmp_path / "rules" / "notes.txt").write_text("hello")
        write(tmp_path, RULES.format(queue="support"))
        result = await asyncio.wait_for(results.get(), 10)
        assert result.ok and queue_of(runtime) == "support"
    finally:
        stop.set()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(task, 5)
    assert task.done()
