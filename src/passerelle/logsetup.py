"""Logging set-up shared by every Passerelle daemon and tool (milters, connwatch, watch).

Logs go to syslog's mail facility as ``passerelle-<name>[pid]``, so they land in the mail log
beside sendmail's own lines (where the reports read them); also to stderr on a terminal.

No format here shows where a line was logged from, so the logging module's caller lookup
(a walk up the stack for each record: about a third of a greylist decision line's cost) is
switched off, the way the module's own source describes (``logging._srcfile = None``):
records carry no file, line or function.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys


def setup_logging(name: str, level: str = "info", stderr: bool | None = None) -> logging.Logger:
    """Log to syslog (facility mail) as ``passerelle-<name>``; also stderr on a terminal."""
    logging._srcfile = None  # no caller lookup: see the module docstring
    logger = logging.getLogger("passerelle")
    logger.setLevel(getattr(logging, level.upper(), logging.INFO))
    logger.handlers.clear()
    if os.path.exists("/dev/log"):
        sh = logging.handlers.SysLogHandler(
            address="/dev/log", facility=logging.handlers.SysLogHandler.LOG_MAIL
        )
        sh.setFormatter(logging.Formatter(f"passerelle-{name}[%(process)d]: %(message)s"))
        logger.addHandler(sh)
    if stderr if stderr is not None else (sys.stderr.isatty() or not logger.handlers):
        eh = logging.StreamHandler()
        eh.setFormatter(logging.Formatter(f"%(asctime)s {name} %(levelname)s %(message)s"))
        logger.addHandler(eh)
    return logger
