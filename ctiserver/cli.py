"""``ctiserver`` command line: run the daemon, check its configuration, manage rules and
the database."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence

from ctiserver import config as config_mod
from ctiserver.rules import cli as rules_cli

DEFAULT_CONFIG = os.environ.get("CTISERVER_CONFIG", "ctiserver.toml")


def _load(path: str) -> config_mod.Config:
    from ctiserver.app import load_config

    try:
        return load_config(path)
    except config_mod.ConfigError as exc:
        print(f"ctiserver: configuration has {len(exc.problems)} problem(s):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {exc.path}: {problem}", file=sys.stderr)
        raise SystemExit(2) from None


class SecondCachingFormatter(logging.Formatter):
    """The standard ``asctime`` (``2026-12-07 03:43:09,970``), its date and time formatted
    once per second instead of per line (time.strftime is a third of a line's cost)."""

    _second = -1
    _text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._text = time.strftime(self.default_time_format, self.converter(second))
            self._second = second
        return f"{self._text},{int(record.msecs):03d}"


class JournalFormatter(logging.Formatter):
    """Lines for systemd's journal: each line prefixed with its syslog priority (``<4>``),
    so that ``journalctl -p warning`` finds warnings and tracebacks alike; no time of
    ours (the journal stamps every line)."""

    PRIORITIES = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
                  logging.CRITICAL: 2}

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{self.PRIORITIES.get(record.levelno, 6)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


def log_formatter(environ: Mapping[str, str], stderr_fd: int = 2) -> logging.Formatter:
    """The journal's format when stderr is the journal stream systemd gave us
    ($JOURNAL_STREAM names its device and inode), the plain one otherwise."""
    text = "%(levelname)s %(name)s: %(message)s"
    try:
        st = os.fstat(stderr_fd)
    except OSError:
        st = None
    if st is not None and environ.get("JOURNAL_STREAM") == f"{st.st_dev}:{st.st_ino}":
        return JournalFormatter(text)
    return SecondCachingFormatter("%(asctime)s " + text)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["db"]:  # its own parser: ctiserver db [--url URL] upgrade|demo|adduser
        from ctiserver.store.__main__ import main as db_main

        db_main(argv[1:])
        return 0
    parser = argparse.ArgumentParser(prog="ctiserver", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--config", default=DEFAULT_CONFIG)
    run.add_argument("--log-level", default=os.environ.get("CTISERVER_LOG_LEVEL", "INFO"))
    check = sub.add_parser("check-config", help="validate the configuration file and exit")
    check.add_argument("--config", default=DEFAULT_CONFIG)
    rules_cli.add_subcommands(sub)
    sub.add_parser("db", help="database: [--url URL] upgrade | demo | adduser (ctiserver db -h)")
    args = parser.parse_args(argv)

    if args.command == "check-config":
        cfg = _load(args.config)
        print(f"{args.config}: OK — AMI {cfg.ami.username}@{cfg.ami.host}:{cfg.ami.port}, "
              f"FastAGI {cfg.agi_host}:{cfg.agi_port}, web {cfg.web_host}:{cfg.web_port}, "
              f"{len(cfg.acd.queues)} queues, {len(cfg.acd.agents)} agents, "
              f"MQTT {'on' if cfg.mqtt_url else 'off'}, fallback queue "
              f"{cfg.fallback_queue or 'left alone'}")
        return 0
    if args.command == "run":
        cfg = _load(args.config)
        handler = logging.StreamHandler()
        handler.setFormatter(log_formatter(os.environ))
        logging.basicConfig(level=args.log_level.upper(), handlers=[handler])
        # per call event: no caller frame, thread or process lookups (logging HOWTO,
        # "Optimization") — the format above uses none of them
        logging._srcfile = None
        logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
        from ctiserver.app import run as run_daemon

        run_daemon(cfg)
        return 0
    if args.command == "rules":
        return rules_cli.run(args)
    parser.error(f"unknown command {args.command}")  # exits


if __name__ == "__main__":
    raise SystemExit(main())
