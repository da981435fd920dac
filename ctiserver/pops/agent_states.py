"""The agents' states that survive a restart (ready, not ready, logged out), saved when
they change: an agent back to ready after each call is not a change. One writer task per
agent coalesces the states that change while it writes; a state the database refused is
saved again by ``flush()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ctiserver.pops.ports import AgentStateStore

log = logging.getLogger(__name__)

PERSISTED_STATES = ("ready", "not_ready", "logged_out")

State = tuple[str, str | None]  # (state, reason)


class AgentStateKeeper:
    def __init__(self, store: AgentStateStore, *, save_timeout: float = 5.0) -> None:
        self.store = store
        self.save_timeout = save_timeout
        self._wanted: dict[str, State] = {}  # the last state asked for, per agent
        self._saved: dict[str, State] = {}  # the last one the database took
        self._writers: dict[str, asyncio.Task[None]] = {}

    def want(self, agent_id: str, state: str, reason: str | None) -> None:
        """The agent is in this persisted state now: saved unless the database has it
        (a writer under way rechecks before it stops)."""
        self._wanted[agent_id] = (state, reason)
        self._writer(agent_id)

    async def settled(self, agent_id: str) -> None:
        """Wait (up to ``save_timeout``) for the agent's writer under way, if any."""
        writer = self._writers.get(agent_id)
        if writer is not None and not writer.done():
            with contextlib.suppress(TimeoutError):  # the writer logs its own failure
                await asyncio.wait_for(asyncio.shield(writer), self.save_timeout)

    def unsaved(self) -> bool:
        """True when some agent's wanted state is not the one the database has."""
        return bool(self._wanted.items() - self._saved.items())

    async def flush(self) -> None:
        """Save every wanted state the database does not have (a writer per agent)."""
        writers = [w for w in map(self._writer, list(self._wanted)) if w]
        await asyncio.gather(*(asyncio.shield(w) for w in writers), return_exceptions=True)

    async def close(self) -> None:
        """The last states, if they can be saved within ``save_timeout``."""
        for writer in list(self._writers.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(writer, self.save_timeout)

    def _writer(self, agent_id: str) -> asyncio.Task[None] | None:
        """The task saving this agent's wanted state (one per agent: states that change
        while it writes are coalesced into its next write); None if nothing to save."""
        writer = self._writers.get(agent_id)
        if writer is None or writer.done():
            if self._saved.get(agent_id) == self._wanted.get(agent_id):
                return None
            writer = asyncio.get_running_loop().create_task(
                self._save(agent_id), name=f"agent-state-{agent_id}"
            )
            self._writers[agent_id] = writer
        return writer

    async def _save(self, agent_id: str) -> None:
        wanted = self._wanted[agent_id]
        try:
            while (wanted := self._wanted[agent_id]) != self._saved.get(agent_id):
                await asyncio.wait_for(
                    self.store.save_agent_state(agent_id, *wanted), self.save_timeout
                )
                self._saved[agent_id] = wanted
        except Exception as exc:  # noqa: BLE001 - saved again by flush()
            log.warning("agent=%s state %s not persisted yet: %r", agent_id, wanted[0], exc)
