"""passerelle.logsetup: the lines keep their format; records are made without the caller
lookup (no format shows it)."""

from __future__ import annotations

import io
import logging

import pytest

from passerelle import logsetup


@pytest.fixture
def restore_logging():
    logger = logging.getLogger("passerelle")
    handlers, level, srcfile = list(logger.handlers), logger.level, logging._srcfile
    yield logger
    logger.handlers[:] = handlers
    logger.setLevel(level)
    logging._srcfile = srcfile


def test_lines_without_caller_lookup(restore_logging, monkeypatch):
    monkeypatch.setattr(logsetup.os.path, "exists", lambda p: False)  # no /dev/log
    logger = logsetup.setup_logging("greylist", "info", stderr=True)
    out = io.StringIO()
    handler = logger.handlers[-1]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    logger.addHandler(Keep())
    logging.getLogger("passerelle.greylist").info("%s", "accepted client=192.0.2.1")
    assert out.getvalue().endswith(" greylist INFO accepted client=192.0.2.1\n")
    assert (seen[0].pathname, seen[0].lineno) == ("(unknown file)", 0)  # not looked up


def test_syslog_format(restore_logging, monkeypatch):
    sent: list[bytes] = []
    monkeypatch.setattr(logsetup.os.path, "exists", lambda p: p == "/dev/log")
    monkeypatch.setattr(
        logging.handlers.SysLogHandler, "_connect_unixsocket", lambda self, address: None
    )
    monkeypatch.setattr(logging.handlers.SysLogHandler, "emit", lambda self, r: sent.append(r))
    logger = logsetup.setup_logging("greylist", "info", stderr=False)
    (sh,) = logger.handlers
    logging.getLogger("passerelle.greylist").info("greylisted client=%s", "192.0.2.1")
    assert (
        sh.format(sent[0])
        == f"passerelle-greylist[{logsetup.os.getpid()}]: greylisted client=192.0.2.1"
    )
