"""Running a pymilter milter the same way for every Passerelle daemon.

- socket spec as sendmail writes it (``unix:/run/x.sock``, ``inet:8890@127.0.0.1``);
- exception policy TEMPFAIL: a bug delays mail, never loses it or rejects it permanently;
- logs to syslog's mail facility (and stderr when run in the foreground): the daemon sets it up
  with ``passerelle.logsetup.setup_logging`` before it calls ``run_milter``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def prepare_socket(spec: str) -> None:
    """Remove a stale unix socket and make sure its directory exists."""
    if spec.startswith(("unix:", "local:")):
        path = Path(spec.split(":", 1)[1])
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_socket():
            path.unlink()


def run_milter(
    name: str, factory: Callable[[], Any], socket: str, timeout: int = 600, flags: int = 0
) -> None:
    """Register ``factory`` with libmilter and serve until stopped."""
    import Milter  # the C binding is only needed by the daemon

    prepare_socket(socket)
    Milter.factory = factory
    Milter.set_exception_policy(Milter.TEMPFAIL)
    if flags:
        Milter.set_flags(flags)
    logging.getLogger("passerelle").info("%s milter starting on %s", name, socket)
    # libmilter creates the unix socket with the process umask: let sendmail (smmsp/mail
    # group) connect through the group bit.
    os.umask(0o007)
    Milter.runmilter(f"passerelle-{name}", socket, timeout)
    logging.getLogger("passerelle").info("%s milter stopped", name)
