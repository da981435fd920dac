"""The daemon's log lines: the same text as logging's standard format, made cheaper."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from ctiserver.cli import SecondCachingFormatter, log_formatter

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def record_at(created: float) -> logging.LogRecord:
    record = logging.LogRecord("ctiserver.calls", logging.INFO, "", 0, "[%s] caller hung up",
                               ("1796613605.1",), None)
    record.created = created
    record.msecs = int((created - int(created)) * 1000) + 0.0
    return record


def test_each_line_reads_as_the_standard_format_across_seconds_and_milliseconds() -> None:
    standard, cached = logging.Formatter(FORMAT), SecondCachingFormatter(FORMAT)
    # within one second, across a second, a minute and a day, and back in time (a clock
    # stepped back): the cache never shows a stale second
    for created in (1796613605.0004, 1796613605.5, 1796613605.999, 1796613606.0,
                    1796613659.999, 1796613660.001, 1796687999.999, 1796688000.0,
                    1796613605.25):
        line = cached.format(record_at(created))
        assert line == standard.format(record_at(created))
    assert line.endswith(",250 INFO ctiserver.calls: [1796613605.1] caller hung up")


def test_under_systemd_each_line_carries_its_priority_and_no_time_of_ours(
        tmp_path: Path) -> None:
    with (tmp_path / "journal").open("w") as stream:
        st = os.fstat(stream.fileno())
        ours = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        journal = log_formatter(ours, stream.fileno())
        # a JOURNAL_STREAM inherited from elsewhere (a terminal started by systemd): not ours
        assert isinstance(log_formatter({"JOURNAL_STREAM": "1:2"}, stream.fileno()),
                          SecondCachingFormatter)
        assert isinstance(log_formatter({}, stream.fileno()), SecondCachingFormatter)
    assert journal.format(record_at(1796613605.5)) == (
        "<6>INFO ctiserver.calls: [1796613605.1] caller hung up")
    try:
        raise ValueError("boom")
    except ValueError:
        failed = logging.LogRecord("ctiserver", logging.ERROR, "", 0, "start failed", (),
                                   sys.exc_info())
    lines = journal.format(failed).split("\n")
    assert lines[0] == "<3>ERROR ctiserver: start failed" and len(lines) > 3
    assert all(line.startswith("<3>") for line in lines)  # the traceback too
