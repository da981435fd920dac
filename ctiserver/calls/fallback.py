"""The app_queue fallback queue follows ctiserver's agents.

When ctiserver is down, does not answer, or left a caller on hold longer than CTI_MAXHOLD,
the dialplan sends the caller to a plain app_queue queue (the global CTI_FALLBACK_QUEUE,
``ctiserver-fallback``; extensions_ctiserver.conf). Its members are ctiserver's: while
ctiserver runs, every logged-in agent is a member (the agent's device, MemberName the
agent's id), paused with the reason while not ready, and a logged-out agent is removed.
Offered, on a call and wrap-up change nothing: app_queue sees the phone busy itself
(``ringinuse = no``), and a ctiserver that dies mid-wrap-up must not leave the agent
paused for ever. A pause, ready or log-out the agent asks for during a call (which the
engine carries out when the call ends) counts at once: app_queue would not ring the busy
phone anyway.

Nothing here waits on the ACD's path: ``follow`` updates a dict; the changes go out a
moment later (``COALESCE``: an agent who flips pause / ready fast costs one action or
none), fire-and-forget. At every AMI login the whole list is reconciled (QueueStatus,
then add / remove / pause what differs): after ctiserver's restart, after Asterisk's. A
queue missing from queues.conf, or an AMI user that may not change members, is one ERROR
(after a few quick looks: an Asterisk just started may still be loading app_queue); the
queue is then left alone, and looked at again every ``RECHECK`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from ctiserver.calls.model import MemberChange, QueueMember
from ctiserver.calls.ports import PbxRefused, QueueMembers
from ctiserver.core.acd import events as ev

log = logging.getLogger("ctiserver.fallback")

COALESCE = 0.2  # seconds between an agent's change and the action that follows it
RECHECK = 60.0  # seconds between two looks at a queue Asterisk lacks or refuses to change
# a queue missing or not listed right after an AMI login (Asterisk still loading its
# modules): looked at again SOON seconds later, SOON_TRIES times, before the ERROR
SOON, SOON_TRIES = 2.0, 5
REASON_MAX = 79  # app_queue keeps a pause reason in 80 bytes
# a member written in queues.conf cannot be removed over AMI: logged out, it is paused
LOGGED_OUT = "logged out of ctiserver"
_REQUESTS = (ev.AgentPaused, ev.AgentReady, ev.AgentLoggedOut)
_REQUEST_TYPES = frozenset(_REQUESTS)
_STATE_CHANGED = ev.AgentStateChanged


@dataclass(frozen=True, slots=True)
class Seat:
    """What the fallback queue holds for one agent."""

    paused: bool = False
    reason: str = ""  # "" when not paused


READY = Seat()


def pause_reason(reason: str | None) -> str:
    """A reason as app_queue will keep and list it: one line, at most REASON_MAX bytes."""
    text = " ".join((reason or "").split()) or "not ready"
    while len(text.encode()) > REASON_MAX:
        text = text[:-1]
    return text


class FallbackFollower:
    """Keeps app_queue's ``queue`` in step with the engine's agents (``devices``: agent id
    -> the device rung)."""

    def __init__(self, members: QueueMembers, queue: str, devices: Mapping[str, str],
                 *, coalesce: float = COALESCE, recheck: float = RECHECK,
                 soon: float = SOON, soon_tries: int = SOON_TRIES) -> None:
        self.members = members
        self.queue = queue
        self.devices = dict(devices)
        self.agent_of = {device: agent for agent, device in self.devices.items()}
        self.coalesce = coalesce
        self.recheck = recheck
        self.soon, self.soon_tries = soon, soon_tries
        self.want: dict[str, Seat] = {}  # the logged-in agents, from the engine's word
        # what the queue holds, as far as ctiserver knows (absent: not a member); None
        # from an AMI login until its reconcile is done: meanwhile nothing is sent
        self.held: dict[str, Seat] | None = None
        self.static: set[str] = set()  # agents whose member is written in queues.conf
        self.dirty: dict[str, None] = {}  # agents changed since the last flush, in order
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._login = 0  # AMI logins seen: a reconcile of an earlier one gives way
        self._tries = 0  # looks at the queue that found it missing, this login
        self._said: set[str] = set()  # the problems logged this login

    # ------------------------------------------------------------------ the engine's word

    def follow(self, event: ev.Event, effects: list[ev.Effect]) -> None:
        """After each engine step (on the ACD task: a dict update, no I/O)."""
        if type(event) in _REQUEST_TYPES:
            # taken at once, also when the engine defers it to the end of the agent's call
            if isinstance(event, ev.AgentPaused):
                self._seat(event.agent_id, Seat(True, pause_reason(event.reason)))
            elif isinstance(event, ev.AgentReady):
                self._seat(event.agent_id, READY)
            elif isinstance(event, ev.AgentLoggedOut):
                self._seat(event.agent_id, None)
        for effect in effects:
            if type(effect) is _STATE_CHANGED:
                state = effect.state
                if state == "ready":
                    self._seat(effect.agent_id, READY)
                elif state == "not_ready":
                    self._seat(effect.agent_id, Seat(True, pause_reason(effect.reason)))
                elif state == "logged_out":
                    self._seat(effect.agent_id, None)
                # offered, on_call, wrap_up: the phone is busy, app_queue sees it

    def _seat(self, agent: str, seat: Seat | None) -> None:
        if agent not in self.devices:
            return
        if seat is None:
            if self.want.pop(agent, None) is None:
                return
        else:
            held = self.want.get(agent)
            if held is seat or held == seat:  # READY is one object: the usual case is cheap
                return
            self.want[agent] = seat
        self.dirty[agent] = None
        if self._timer is None and self.held is not None:
            self._timer = asyncio.get_running_loop().call_later(self.coalesce, self.flush)

    def _target(self, agent: str) -> Seat | None:
        seat = self.want.get(agent)
        if seat is None and agent in self.static:
            return Seat(True, LOGGED_OUT)
        return seat

    def _changes(self, agent: str, have: Seat | None, want: Seat | None) -> list[MemberChange]:
        device = self.devices[agent]
        if want is None:
            return [] if have is None else [MemberChange("remove", device)]
        if have is None:
            return [MemberChange("add", device, agent, want.paused, want.reason)]
        if have != want:
            return [MemberChange("pause", device, paused=want.paused, reason=want.reason)]
        return []

    def flush(self) -> None:
        """Send what changed since the last flush (nothing while not reconciled)."""
        self._timer = None
        held = self.held
        if held is None or not self.dirty:
            return
        dirty, self.dirty = self.dirty, {}
        changes: list[MemberChange] = []
        targets: dict[str, Seat | None] = {}
        for agent in dirty:
            targets[agent] = target = self._target(agent)
            changes += self._changes(agent, held.get(agent), target)
        if not changes:
            return
        if not self.members.change_members_nowait(self.queue, changes):
            self.held = None  # not connected: the next AMI login reconciles everything
            return
        for agent, target in targets.items():
            if target is None:
                held.pop(agent, None)
            else:
                held[agent] = target

    # ------------------------------------------------------------------ AMI logins

    def logged_in(self) -> None:
        """ctiserver (re)connected to Asterisk: reconcile the whole list."""
        self._login += 1
        self._tries = 0
        self._said.clear()
        self._start()

    def _start(self) -> None:
        self.held = None
        for handle in (self._timer, self._retry):
            if handle is not None:
                handle.cancel()
        self._timer = self._retry = None
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._task = asyncio.get_running_loop().create_task(
            self.reconcile(self._login), name="fallback-reconcile")

    def _again(self) -> None:
        self._retry = None
        self._start()

    async def reconcile(self, login: int) -> None:
        """List the queue's members and change what differs from the agents' states."""
        queue = self.queue
        try:
            dialplan = await self.members.dialplan_global("CTI_FALLBACK_QUEUE")
            listed = await self.members.queue_members(queue)
        except ConnectionError as exc:  # the next AMI login reconciles
            log.warning("fallback queue %s: members not listed (%s); again at the next AMI "
                        "login", queue, exc or type(exc).__name__)
            return
        except (TimeoutError, PbxRefused) as exc:
            if login == self._login:
                self._trouble(f"fallback queue {queue!r}: Asterisk did not list its members "
                              f"({exc or type(exc).__name__}); is app_queue loaded?")
            return
        if login != self._login:
            return
        if dialplan and dialplan != queue:
            self._say("dialplan", f"the dialplan sends fallback callers to {dialplan!r} "
                      f"(global CTI_FALLBACK_QUEUE) but ctiserver keeps the members of "
                      f"{queue!r} ([acd] fallback_queue): set the same name in both")
        if listed is None:
            self._trouble(f"fallback queue {queue!r} does not exist in Asterisk: callers sent "
                          f"to the fallback (ctiserver down, CTI_MAXHOLD) reach no agent. Add "
                          f"a [{queue}] section without members to queues.conf (autofill = "
                          f"yes, ringinuse = no; see asterisk_conf/etc/queues.conf) and reload "
                          f"app_queue: ctiserver fills it within {self.recheck:.0f} s")
            return
        target, changes = self.diff(listed)
        refused = await self.members.change_members(queue, changes) if changes else []
        if login != self._login:
            return
        if refused:
            hint = ""
            if any("Permission denied" in r for r in refused):
                hint = (": the AMI user needs the agent class in its write = line "
                        "(manager_ctiserver.conf: write = call,originate,reporting,agent)")
            elif any("No such queue" in r for r in refused):
                hint = f": add a [{queue}] section to queues.conf and reload app_queue"
            self._fail(f"fallback queue {queue!r}: Asterisk refused {len(refused)} of "
                       f"{len(changes)} member changes (first: {refused[0]}){hint}; the "
                       f"queue is left as it is, looked at again every "
                       f"{self.recheck:.0f} s")
            return
        self.held = target
        paused = sum(1 for seat in target.values() if seat.paused)
        log.info("fallback queue %s follows the agents: %d member(s), %d paused; %d "
                 "change(s) at login", queue, len(target), paused, len(changes))
        # what changed while Asterisk was being asked goes out now
        self.dirty.update(dict.fromkeys(self.devices))
        self.flush()

    def _trouble(self, message: str) -> None:
        """The queue could not be listed, or is missing: an Asterisk that has just started
        may not have loaded app_queue yet, so a few quick looks first, then the ERROR."""
        self._tries += 1
        if self._tries < self.soon_tries:
            self._retry = asyncio.get_running_loop().call_later(self.soon, self._again)
        else:
            self._fail(message)

    def _fail(self, message: str) -> None:
        self._say("fail", message)
        self._retry = asyncio.get_running_loop().call_later(self.recheck, self._again)

    def _say(self, key: str, message: str, level: int = logging.ERROR) -> None:
        """Log ``message`` once per AMI login."""
        if key not in self._said:
            self._said.add(key)
            log.log(level, "%s", message)

    def diff(self, listed: list[QueueMember]) -> tuple[dict[str, Seat], list[MemberChange]]:
        """The queue's members as ctiserver wants them, and the changes that get there
        from ``listed`` (Asterisk's members): members that are no agent's are removed
        (ctiserver owns the queue), those written in queues.conf only paused."""
        changes: list[MemberChange] = []
        static: set[str] = set()
        foreign: list[str] = []  # in queues.conf, none of ctiserver's agents
        mine: dict[str, QueueMember] = {}
        for m in listed:
            agent = self.agent_of.get(m.device)
            if agent is None:
                if m.dynamic:
                    changes.append(MemberChange("remove", m.device))
                else:
                    foreign.append(m.device)
                continue
            mine[agent] = m
            if not m.dynamic:
                static.add(agent)
        if static or foreign:
            written = ", ".join(sorted([*foreign, *(self.devices[a] for a in static)]))
            strangers = " (those that are none of its agents are rung whatever it knows)"
            self._say("static", f"fallback queue {self.queue}: member(s) written in "
                      f"queues.conf ({written}): ctiserver can pause them but not remove "
                      f"them{strangers if foreign else ''}; delete their member lines",
                      logging.WARNING)
        self.static = static
        target: dict[str, Seat] = {}
        for agent, device in self.devices.items():
            seat = self._target(agent)
            member = mine.get(agent)
            if seat is not None:
                target[agent] = seat
            if member is None:
                changes += self._changes(agent, None, seat)
            elif member.dynamic and seat is not None and (member.name != agent
                                                          or member.state_device != device):
                # added by hand or otherwise: written again as ctiserver writes members
                changes += [MemberChange("remove", device),
                            *self._changes(agent, None, seat)]
            else:
                have = Seat(member.paused, member.reason if member.paused else "")
                changes += self._changes(agent, have, seat)
        return target, changes

    async def close(self, timeout: float = 2.0) -> None:
        """ctiserver stops: a reconcile under way may finish (``timeout``: 0 when Asterisk
        is not connected), pending changes go out. The members stay: the fallback then
        rings the agents as they were."""
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        task = self._task
        if task is not None and not task.done():
            done = (await asyncio.wait({task}, timeout=timeout))[0] if timeout > 0 else set()
            if not done:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._timer is not None:
            self._timer.cancel()
            self.flush()
