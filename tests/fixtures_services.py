"""Real PostgreSQL 15 and mosquitto servers for integration tests, on loopback.

Use them from a test module with a small fixture::

    @pytest.fixture(scope="module")
    def postgres():
        with PostgresServer() as server:
            yield server

Both wait for readiness by polling with a deadline, and stop what they started.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")
MOSQUITTO = Path("/usr/sbin/mosquitto")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, within: float = 15.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {host}:{port} after {within}s") from None
            time.sleep(0.05)  # poll interval, bounded by the deadline


class PostgresServer:
    """A throwaway PostgreSQL cluster owned by user ``postgres`` in a temp dir."""

    def __init__(self) -> None:
        if not (PG_BIN / "initdb").exists():
            raise RuntimeError(f"PostgreSQL 15 not found in {PG_BIN}")
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="ctiserver-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self.running = False

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        cmd = [*(["runuser", "-u", "postgres", "--"] if self._as_postgres else []), *args]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)

    def init(self) -> PostgresServer:
        self._run(
            str(PG_BIN / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )
        return self

    def start(self) -> None:
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off"
        self._run(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            opts,
            "-l",
            str(self.log),
            "-w",
            "-t",
            "30",
            "start",
        )
        self.running = True
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.running:
            self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
            self.running = False

    def __enter__(self) -> PostgresServer:
        self.init()
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


class MosquittoServer:
    """mosquitto on 127.0.0.1:port with a temp config (anonymous, or ACL + passwords)."""

    def __init__(self, *, acl_file: Path | None = None, passwords: dict[str, str] | None = None):
        if not MOSQUITTO.exists():
            raise RuntimeError(f"mosquitto not found at {MOSQUITTO}")
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="ctiserver-mqtt-"))
        self.log = self.root / "mosquitto.log"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "persistence false",
            f"log_dest file {self.log}",
            "log_type all",
        ]
        if passwords:
            pwfile = self.root / "passwd"
            pwfile.touch()
            for user, password in passwords.items():
                subprocess.run(
                    ["mosquitto_passwd", "-b", str(pwfile), user, password],
                    check=True,
                    capture_output=True,
                    timeout=30,
                )
            os.chmod(pwfile, 0o644)
            lines += ["allow_anonymous false", f"password_file {pwfile}"]
        else:
            lines += ["allow_anonymous true"]
        if acl_file is not None:
            lines.append(f"acl_file {acl_file}")
        self.config = self.root / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")
        os.chmod(self.root, 0o755)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [str(MOSQUITTO), "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def __enter__(self) -> MosquittoServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
