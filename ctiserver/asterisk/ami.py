"""The AMI connection: panoramisk's Manager with exponential reconnect backoff,
loud-but-not-fatal behaviour while Asterisk is absent, and never a secret in a log.

Events are handed, in arrival order, to one synchronous callback; actions are sent
without waiting for their responses (AMI processes one session's actions in order,
so ``Setvar`` then ``Redirect`` is safe to pipeline). The calls feature's actions
(``send_nowait``) skip panoramisk altogether: written as text with our own ActionID
(``cti-<n>``), their responses recognised in ``EventProtocol.data_received`` and only
an error logged. Login, ping and the actions whose answer we read (``call``) go through
panoramisk.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from typing import Any

from panoramisk import Manager
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message

from ctiserver.config import AmiConfig

log = logging.getLogger("ctiserver.ami")

ACTION_ID_PREFIX = "cti-"
# what a standby may still ask (it reads; it never changes a call, a queue or a variable)
READ_ONLY_ACTIONS = frozenset({"Ping", "CoreShowChannels", "DeviceStateList", "Getvar",
                               "QueueStatus", "QueueSummary", "CoreStatus", "CoreSettings"})
MAX_PENDING = 4096  # actions sent by send_nowait awaiting their response, oldest dropped
_action_ids = itertools.count(1)  # process-wide: an ID is never reused after a reconnect
_OUR_ACTION_ID = "\r\nActionID: " + ACTION_ID_PREFIX  # in a response to send_nowait


class AmiConnection:
    def __init__(self, cfg: AmiConfig, on_event: Callable[[Any], None],
                 on_login: Callable[[], None] | None = None,
                 on_lost: Callable[[], None] | None = None) -> None:
        self.cfg = cfg
        self._on_event = on_event
        self._on_login_cb = on_login
        self._on_lost_cb = on_lost  # the link dropped (not at our own close)
        self.connected = asyncio.Event()
        # False on the standby of an active/standby pair: only the leader acts on Asterisk,
        # so two ctiservers never both redirect a caller (reads stay allowed)
        self.acting = True
        self._delay = 0.5
        self._closing = False
        self.logins = 0
        self.manager = _Manager(
            self._event, host=cfg.host, port=cfg.port, username=cfg.username, secret=cfg.secret,
            ping_delay=5, ping_interval=5, reconnect_timeout=1,
            on_login=self._logged_in, on_disconnect=self._disconnected,
            log=logging.getLogger("ctiserver.ami.panoramisk"), protocol_factory=EventProtocol,
        )
        logging.getLogger("ctiserver.ami.panoramisk").addFilter(_Redact(cfg.secret))
        # panoramisk retries at a fixed interval; wrap its connect for a backoff
        original_connection_made = self.manager.connection_made

        def connection_made(f: Any) -> None:
            if f.exception() is not None:
                if self._closing:
                    return
                log.warning("AMI %s:%d not reachable (%s); retrying in %.1f s",
                            cfg.host, cfg.port, f.exception(), self._delay)
                self.manager.reconnect_timeout = self._delay
                self._delay = min(self._delay * 2, cfg.reconnect_max)
                self.manager.loop.call_later(self.manager.reconnect_timeout, self._connect)
                return
            original_connection_made(f)

        self.manager.connection_made = connection_made

    def _connect(self) -> None:
        if not self._closing:
            self.manager.connect()

    async def start(self) -> None:
        self.manager.loop = asyncio.get_running_loop()
        self._connect()

    def close(self) -> None:
        self._closing = True
        self.manager.close()

    def _logged_in(self, _manager: Any) -> None:
        self._delay = 0.5
        self.logins += 1
        log.info("AMI logged in to %s:%d as %s", self.cfg.host, self.cfg.port, self.cfg.username)
        self.connected.set()
        if self._on_login_cb is not None:
            self._on_login_cb()

    def _disconnected(self, _manager: Any, exc: Exception | None) -> None:
        self.connected.clear()
        if self._closing:
            return
        log.warning("AMI connection to %s:%d lost (%s); reconnecting", self.cfg.host,
                    self.cfg.port, exc or "closed by Asterisk")
        self.manager.reconnect_timeout = self._delay
        self._delay = min(self._delay * 2, self.cfg.reconnect_max)
        if self._on_lost_cb is not None:
            self._on_lost_cb()

    def _event(self, event: Any) -> None:
        try:
            self._on_event(event)
        except Exception:
            log.exception("AMI event %s could not be handled; ignored",
                          getattr(event, "event", "?"))

    def send(self, action: dict[str, str], as_list: bool | None = None,
             quiet: bool = False) -> asyncio.Future[Any] | None:
        """Send an action; returns its response future, or None when not connected (or
        a standby asked for more than a read). ``as_list=False``: one response, whatever
        its text (panoramisk would otherwise wait for a list after QueueAdd's "Added
        interface to queue"); ``quiet``: an error response is the caller's to report, not
        logged here."""
        if not self.acting and action.get("Action") not in READ_ONLY_ACTIONS:
            log.debug("standby: AMI %s not sent", action.get("Action"))
            return None
        if not self.connected.is_set() or self.manager.protocol is None:
            log.warning("AMI not connected: %s %s not sent", action.get("Action"),
                        action.get("Channel", ""))
            return None
        fut: asyncio.Future[Any] = self.manager.send_action(dict(action), as_list=as_list)
        if not quiet:
            fut.add_done_callback(_log_failure(action))
        return fut

    def send_nowait(self, *actions: dict[str, str]) -> bool:
        """Send actions whose only answer is Success or Error (Setvar, Redirect), in order
        and in one write, without panoramisk's future and ActionID machinery: a failure is
        logged when its response comes back. All or none: nothing is sent when not
        connected or when a value would break the framing (CR/LF). Returns whether sent."""
        protocol = self.manager.protocol
        if not self.acting:
            log.debug("standby: %d AMI actions not sent", len(actions))
            return False
        if not self.connected.is_set() or protocol is None or protocol.closed:
            for action in actions:
                log.warning("AMI not connected: %s %s not sent", action.get("Action"),
                            action.get("Channel", ""))
            return False
        return protocol.send_nowait(actions)  # type: ignore[no-any-return]

    async def call(self, action: dict[str, str], timeout: float = 5.0,
                   as_list: bool | None = None, quiet: bool = False) -> Any:
        fut = self.send(action, as_list, quiet)
        if fut is None:
            raise ConnectionError("AMI not connected" if self.acting else
                                  f"standby: AMI {action.get('Action')} not sent")
        return await asyncio.wait_for(fut, timeout)


class _Manager(Manager):  # type: ignore[misc]
    """panoramisk's Manager handing every event straight to one callback. Its own
    ``dispatch`` matches each event name against fnmatch patterns and checks every
    callback's return for a coroutine: a tenth of the event path, at several events per
    call. panoramisk's own subscription (FullyBooted: send the actions held while
    Asterisk was booting) still goes through it."""

    def __init__(self, on_event: Callable[[Any], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.on_event = on_event

    def dispatch(self, event: Any) -> list[str]:
        self.on_event(event)
        if event.event == "FullyBooted":
            return super().dispatch(event)  # type: ignore[no-any-return]
        return []


class AmiEvent(dict[str, str]):
    """An AMI event: its headers under Asterisk's exact names; ``e.Uniqueid`` reads a
    header and is ``""`` when absent (as panoramisk's messages), ``e.event`` its name."""

    __slots__ = ("manager", "event")  # ``event`` set once by parse_event: read several times
    event: str

    def __getattr__(self, name: str) -> str:
        try:  # a header: the common case first (several per event)
            return self[name]
        except KeyError:
            pass
        if name.startswith("__"):
            raise AttributeError(name) from None
        if name == "event":  # built some other way than parse_event
            return self.get("Event", "")
        return ""


def parse_event(text: str) -> AmiEvent:
    """``Header: value`` lines (CRLF) -> AmiEvent; lines without ``": "`` are skipped, a
    repeated header keeps its last value."""
    event = AmiEvent()
    for line in text.split("\r\n"):
        key, sep, value = line.partition(": ")
        if sep:
            event[key] = value
    event.event = event.get("Event", "")
    return event


class EventProtocol(AMIProtocol):  # type: ignore[misc]
    """panoramisk's protocol with a lighter path for plain events, the bulk of the
    traffic (several per call): a dict instead of a case-insensitive message, about a
    fifth of the parsing time; and for the responses to ``send_nowait``'s actions (two per
    offer), recognised by their ActionID. Other responses and list events (with an
    ActionID) go through panoramisk as before."""

    version: str | None  # set by panoramisk's connection_made; ours reads the greeting

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        # our ActionID -> (action, channel) for the log; a new connection starts empty
        self.pending: dict[str, tuple[str, str]] = {}

    def send_nowait(self, actions: tuple[dict[str, str], ...]) -> bool:
        for action in actions:  # all or none: a Redirect without its Setvar is wrong
            if any("\r" in text or "\n" in text for item in action.items() for text in item):
                log.error("AMI %s on %r not sent%s: a header or value contains CR/LF, which "
                          "would inject AMI headers", action.get("Action"),
                          action.get("Channel", "-"),
                          f" (nor the {len(actions) - 1} other actions with it)"
                          if len(actions) > 1 else "")
                return False
        pending = self.pending
        chunks = []
        for action in actions:
            action_id = f"{ACTION_ID_PREFIX}{next(_action_ids)}"
            name = action.get("Action", "")
            chunks.append(f"Action: {name}\r\nActionID: {action_id}\r\n")
            chunks.extend(f"{k}: {v}\r\n" for k, v in action.items()
                          if k != "Action" and k != "ActionID")
            chunks.append("\r\n")
            pending[action_id] = (name, action.get("Channel") or action.get("Interface", "-"))
            if len(pending) > MAX_PENDING:  # a response lost: do not grow for ever
                del pending[next(iter(pending))]
        self.transport.write("".join(chunks).encode("utf-8"))
        return True

    def _our_response(self, part: str) -> None:
        """A response to an action of ``send_nowait``: forget it; an error is logged."""
        start = part.index(_OUR_ACTION_ID) + len(_OUR_ACTION_ID) - len(ACTION_ID_PREFIX)
        end = part.find("\r\n", start)
        action_id = part[start:] if end < 0 else part[start:end]
        sent = self.pending.pop(action_id, None)
        if part.startswith("Response: Success\r\n"):
            return
        response = parse_event(part)
        name, channel = sent if sent is not None else ("action " + action_id, "-")
        log.info("AMI %s on %s: %s", name, channel,
                 response.get("Message") or response.get("Response") or "error")

    def data_received(self, data: bytes) -> None:
        text = data.decode("utf-8", "replace")
        if self.queue:
            text = self.queue.popleft() + text
        if self.version is None:  # the greeting line comes first, alone
            first, sep, rest = text.partition("\r\n")
            if not sep:
                self.queue.append(text)
                return
            if first.startswith("Asterisk Call Manager/"):
                self.version = first.partition("/")[2].strip()
                self.log.info("protocol version: '%s'", self.version)
                text = rest
            else:
                self.version = ""
        parts = text.split("\r\n\r\n")
        self.queue.append(parts.pop())
        for part in parts:
            part = part.strip()
            if part.startswith("Event: ") and "\r\nActionID: " not in part:
                event = parse_event(part)
                if event.event.lower() == "shutdown":
                    self.connection_lost(event)
                self.factory.dispatch(event)
            elif part.startswith("Response: ") and _OUR_ACTION_ID in part:
                self._our_response(part)
            elif part:
                message = Message.from_line(part)
                if message is not None:
                    self.handle_message(message)


class _Redact(logging.Filter):
    """panoramisk logs whole actions on some errors, Login (with its Secret) included."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secret and self.secret in record.getMessage():
            record.msg = record.getMessage().replace(self.secret, "********")
            record.args = ()
        return True


def _log_failure(action: dict[str, str]) -> Callable[[asyncio.Future[Any]], None]:
    def done(fut: asyncio.Future[Any]) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        resp = None if exc else fut.result()
        if exc is not None:
            log.warning("AMI %s failed: %s", action.get("Action"), exc)
        elif isinstance(resp, list):
            return
        elif resp is not None and getattr(resp, "response", "") == "Error":
            log.info("AMI %s on %s: %s", action.get("Action"), action.get("Channel", "-"),
                     getattr(resp, "message", "error"))

    return done
