"""Telling systemd how the daemon is (sd_notify(3)): ready, status, watchdog, stopping.

The protocol is one datagram of ``KEY=value`` lines sent to the AF_UNIX socket named by
``$NOTIFY_SOCKET``: a path, or ``@name`` for a socket in the abstract namespace. When the
variable is unset (not started by systemd, or not ``Type=notify``) nothing is sent and
nothing fails. ``$WATCHDOG_USEC`` (and ``$WATCHDOG_PID``, when set, naming this process)
say how often systemd wants ``WATCHDOG=1`` (sd_watchdog_enabled(3)).

Written here, not taken from PyPI: ``sdnotify`` was last released in 2017;
``systemd-watchdog`` cannot send ``STOPPING=1`` nor tell "no watchdog" from a 24-hour one;
``cysystemd`` wraps libsystemd in 2.4 MB of bundled libraries with wheels for glibc 2.34 or
later only (it compiles on Debian 11 or RHEL 8); ``systemd-python`` always compiles.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger("ctiserver.systemd")


def notify_address(value: str) -> str | None:
    """The socket address ``$NOTIFY_SOCKET`` names, or None (unset, or not a unix socket)."""
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]  # the abstract namespace
    if value.startswith("/"):
        return value
    return None


def watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """Seconds within which systemd expects ``WATCHDOG=1`` from process ``pid``, or None."""
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    owner = env.get("WATCHDOG_PID", "")
    if owner and owner != str(pid):  # meant for another process (ours started it)
        return None
    return int(usec) / 1_000_000


class SdNotify:
    """sd_notify(3) for one process. Never raises: a notification that cannot be sent is
    logged once (until one goes through again); a datagram never blocks the event loop."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        raw = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
        self.address = notify_address(raw)
        if raw and self.address is None:
            log.warning("NOTIFY_SOCKET=%r is not a unix socket: systemd not told", raw)
        self._sock: socket.socket | None = None
        self._failing = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *assignments: str) -> bool:
        """Send ``KEY=value`` assignments in one datagram; True when systemd got it."""
        if self.address is None:
            return False
        data = "\n".join(a.replace("\n", " ") for a in assignments).encode("utf-8", "replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.setblocking(False)
            self._sock.sendto(data, self.address)
        except OSError as exc:
            if not self._failing:
                log.warning("systemd notification not sent (%s): %s", exc,
                            data.decode(errors="replace").replace("\n", ", "))
                self._failing = True
            return False
        self._failing = False
        return True

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}")

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self, status: str = "stopping") -> bool:
        return self.send("STOPPING=1", f"STATUS={status}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
