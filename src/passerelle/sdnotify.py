"""Telling systemd that a daemon answers (``Type=notify``).

Every Passerelle daemon that sendmail or Apache talks to (the three milters, the route daemon,
the console) runs under a ``Type=notify`` unit and calls ``ready()`` once its socket listens:
then "started" means "answering", so ``Before=sendmail.service`` really has sendmail start after
its milters and maps answer, and ``systemctl start``/``restart`` (a handler, an upgrade) returns
only when the daemon takes connections. A connection that arrives between the bind and
``accept`` waits in the listen backlog: nothing is refused.

``notify`` writes one datagram to ``$NOTIFY_SOCKET`` (a path, or ``@name`` in the abstract
namespace), as ``sd_notify(3)`` does, without linking libsystemd. Outside systemd (a developer's
shell, the tests) there is no ``$NOTIFY_SOCKET`` and it does nothing. A failure to write is
logged, never raised: the daemon serves anyway, and systemd reports the unit's start timeout.
After ``READY=1`` the variable is removed from the environment, so a command the daemon runs
(tesseract, say) never talks to systemd in its name.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import MutableMapping

log = logging.getLogger("passerelle")


def notify(state: str, environ: MutableMapping[str, str] | None = None) -> bool:
    """Send ``state`` (``READY=1``, ``STATUS=...``) to systemd; True when it was sent."""
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        log.warning("NOTIFY_SOCKET is neither a path nor @name (%.100r): not notified", address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
    except OSError as exc:
        log.warning("could not tell systemd %s (%s)", state.split("\n", 1)[0], exc)
        return False
    return True


def ready(environ: MutableMapping[str, str] | None = None) -> bool:
    """``READY=1``: the daemon's socket listens. Drops ``NOTIFY_SOCKET`` from the environment."""
    env = os.environ if environ is None else environ
    sent = notify("READY=1", env)
    env.pop("NOTIFY_SOCKET", None)
    return sent
