"""The live rule set: load from disk, hot reload, keep every good version, roll back.

The daemon builds one :class:`RulesRuntime` and calls :meth:`RulesRuntime.decide`
for each call. ``reload()`` is called by the file watcher (:meth:`watch`) and by
the SIGHUP handler; it never replaces a good rule set with a broken one.

Every rule set that loaded is stored (:mod:`ctiserver.rules.versions`) and can
be rolled back to; at start-up, broken files fall back to the last good one.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ctiserver.core.ivr.flow import Flow
from ctiserver.core.ivr.session import IvrSession
from ctiserver.core.problems import Problem
from ctiserver.core.rules.context import CallContext
from ctiserver.core.rules.decision import Decision
from ctiserver.core.rules.model import Known, RuleSet
from ctiserver.rules.bundle import SUFFIXES, Bundle, compile_sources, content_hash, read_dir
from ctiserver.rules.versions import VersionInfo, VersionStore

log = logging.getLogger("ctiserver.rules_runtime")  # the name the daemon's log has always shown


def freeze_heap() -> None:
    """Keep the cyclic GC from walking the rule set (tens of thousands of closures).

    After a load, everything alive is moved to the permanent generation
    (``gc.freeze()``), so a full collection during a call decision does not
    traverse the rules again and again (pauses of several ms otherwise). The
    previous freeze is undone and a collection run first, so rule sets that
    were replaced are still reclaimed; this costs one full collection per
    reload (rare: a supervisor saving a file).
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


@dataclass(frozen=True)
class ReloadResult:
    ok: bool  # the files on disk are now the current rule set
    version: str | None  # the current version after the call
    reason: str = ""
    problems: tuple[Problem, ...] = ()
    changed: bool = False

    def __str__(self) -> str:
        if self.ok:
            return f"version {self.version} " + ("loaded" if self.changed else "unchanged")
        return f"refused, still using {self.version or 'nothing'}: {self.reason}"


class RulesRuntime:
    def __init__(
        self,
        rules_dir: str | os.PathLike[str],
        flows_dir: str | os.PathLike[str],
        state_dir: str | os.PathLike[str],
        known: Known | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.rules_dir = Path(rules_dir)
        self.flows_dir = Path(flows_dir)
        self.store = Path(state_dir) / "rules"
        self.versions = VersionStore(self.store)
        self.known = known or Known()
        self.clock = clock
        self.bundle: Bundle | None = None
        self.last_refusal: ReloadResult | None = None
        self.watching = asyncio.Event()

    # ------------------------------------------------------------- queries

    @property
    def version(self) -> str | None:
        return self.bundle.version if self.bundle else None

    @property
    def ruleset(self) -> RuleSet:
        if self.bundle is None or self.bundle.ruleset is None:
            raise RuntimeError("no routing rules loaded")
        return self.bundle.ruleset

    def decide(self, ctx: CallContext) -> Decision:
        """Route a call with the current rule set."""
        return self.ruleset.decide(ctx)

    def flow(self, name: str) -> Flow | None:
        return self.bundle.flows.get(name) if self.bundle else None

    def ivr_session(self, name: str, answers: dict[str, str] | None = None) -> IvrSession:
        flow = self.flow(name)
        if flow is None:
            raise KeyError(f"no IVR flow {name!r}")
        return IvrSession(flow, answers)

    # ------------------------------------------------------------- loading

    def _read(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        return read_dir(self.rules_dir), read_dir(self.flows_dir)

    def start(self) -> ReloadResult:
        """First load; if the files are broken, fall back to the last good stored version."""
        result = self.reload()
        if result.ok or self.bundle is not None:
            return result
        history = self.history()
        if history:
            bundle = self._compile_stored(history[-1].id)
            if bundle is not None and bundle.ok:
                self.bundle = bundle
                freeze_heap()
                log.warning(
                    "rules: files refused (%s); using stored version %s",
                    result.reason,
                    bundle.version,
                )
                return ReloadResult(False, bundle.version, result.reason, result.problems, True)
        return result

    def reload(self) -> ReloadResult:
        """Load the files on disk; keep the current set if they are broken."""
        try:
            rules, flows = self._read()
        except (OSError, UnicodeDecodeError) as exc:
            return self._refuse(f"cannot read rule files: {exc}", ())
        version = content_hash(rules, flows)
        if self.bundle is not None and version == self.bundle.version:
            return ReloadResult(True, version)
        bundle = compile_sources(rules, flows, self.known)
        if not bundle.ok:
            errors = bundle.errors
            reason = f"{len(errors)} error(s); first: {errors[0]}" if errors else "no rule set"
            return self._refuse(reason, bundle.problems)
        for p in bundle.problems:
            log.warning("rules %s: %s", version, p)
        self._activate(bundle, rules, flows)
        return ReloadResult(True, version, "", bundle.problems, True)

    def _refuse(self, reason: str, problems: tuple[Problem, ...]) -> ReloadResult:
        result = ReloadResult(False, self.version, reason, problems)
        self.last_refusal = result
        log.error("rules: new files refused, still using version %s: %s", self.version, reason)
        return result

    def _activate(
        self, bundle: Bundle, rules: list[tuple[str, str]], flows: list[tuple[str, str]]
    ) -> None:
        previous = self.version
        self.bundle = bundle
        self.last_refusal = None
        self._store(bundle.version, rules, flows)
        freeze_heap()
        log.info("rules: version %s active (was %s)", bundle.version, previous)

    # ------------------------------------------------------------- history

    def history(self) -> list[VersionInfo]:
        return self.versions.history()

    def _store(
        self, version: str, rules: list[tuple[str, str]], flows: list[tuple[str, str]]
    ) -> None:
        self.versions.save(version, rules, flows, self.clock())

    def _stored_sources(self, version: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        return self.versions.sources(version, str(self.rules_dir), str(self.flows_dir))

    def _compile_stored(self, version: str) -> Bundle | None:
        try:
            rules, flows = self._stored_sources(version)
        except OSError:
            return None
        return compile_sources(rules, flows, self.known)

    def resolve_version(self, prefix: str | None) -> str:
        return self.versions.resolve(prefix, self.version)

    def rollback(self, version: str | None = None) -> ReloadResult:
        """Make a stored version current again and write its files back to disk.

        Files the version did not have are renamed ``*.rolled-back``, so a running
        daemon and a later restart agree with what is on disk.
        """
        try:
            vid = self.resolve_version(version)
        except KeyError as exc:
            return ReloadResult(False, self.version, str(exc.args[0]))
        bundle = self._compile_stored(vid)
        if bundle is None or not bundle.ok:
            errors = bundle.errors if bundle else []
            return ReloadResult(
                False, self.version, f"stored version {vid} does not load: {errors[:1]}"
            )
        rules, flows = self._stored_sources(vid)
        for target, items in ((self.rules_dir, rules), (self.flows_dir, flows)):
            target.mkdir(parents=True, exist_ok=True)
            keep = {name.rsplit("/", 1)[-1] for name, _ in items}
            for entry in target.iterdir():
                if entry.suffix in SUFFIXES and entry.name not in keep:
                    entry.rename(entry.with_name(entry.name + ".rolled-back"))
            for name, text in items:
                path = target / name.rsplit("/", 1)[-1]
                tmp = path.with_name("." + path.name + ".tmp")
                tmp.write_text(text, encoding="utf-8")
                tmp.replace(path)
        self._activate(bundle, rules, flows)
        return ReloadResult(True, vid, f"rolled back to {vid}", bundle.problems, True)

    # ------------------------------------------------------------- watching

    async def watch(
        self,
        stop: asyncio.Event | None = None,
        on_reload: Callable[[ReloadResult], None] | None = None,
        debounce_ms: int = 300,
        ready_ms: int = 5000,
        step_ms: int = 200,
    ) -> None:
        """Reload whenever a YAML file in the rule or flow directory changes.

        ``self.watching`` is set once the OS watcher runs, at most ``ready_ms`` after the
        start: the watcher's thread comes back to the event loop that often even with no
        change (a thread round trip each time: 200 ms tripled the daemon's idle CPU).
        ``step_ms``: how often that thread looks at what the OS reported (watchfiles'
        default, 50 ms, wakes it 20 times a second for nothing); a change is reloaded
        ``debounce_ms`` to ``step_ms`` after the file is written.
        """
        from watchfiles import Change, awatch

        def yaml_only(change: Change, path: str) -> bool:
            return path.endswith(SUFFIXES) and not os.path.basename(path).startswith(".")

        paths = [p for p in (self.rules_dir, self.flows_dir) if p.is_dir()]
        async for changes in awatch(
            *paths,
            watch_filter=yaml_only,
            debounce=debounce_ms,
            step=step_ms,
            stop_event=stop,
            rust_timeout=ready_ms,
            yield_on_timeout=True,
        ):
            self.watching.set()
            if not changes:
                continue
            result = self.reload()
            log.info("rules: files changed: %s", result)
            if on_reload is not None:
                on_reload(result)
