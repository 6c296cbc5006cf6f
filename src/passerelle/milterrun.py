"""Running a pymilter milter the same way for every Passerelle daemon.

- socket spec as sendmail writes it (``unix:/run/x.sock``, ``inet:8890@127.0.0.1``);
- exception policy TEMPFAIL: a bug delays mail, never loses it or rejects it permanently;
- logs to syslog's mail facility (and stderr when run in the foreground): the daemon sets it up
  with ``passerelle.logsetup.setup_logging`` before it calls ``run_milter``;
- one binding to pymilter for every milter: ``bind(MilterClass, context)``. pymilter makes one
  ``MilterClass(context)`` per SMTP connection; ``context`` is what the connections share (the
  greylist engine, the spam scanner, ...); the actions the milter may use are the class's
  ``ACTIONS``; the protocol steps it negotiates come from the class itself, pymilter's way:
  a callback it does not define is not sent (``P_NO*``), a callback decorated with
  ``@Milter.noreply`` is sent without waiting for a reply (``P_NR_*``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

Ctx = TypeVar("Ctx")


def prepare_socket(spec: str) -> None:
    """Remove a stale unix socket and make sure its directory exists."""
    if spec.startswith(("unix:", "local:")):
        path = Path(spec.split(":", 1)[1])
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_socket():
            path.unlink()


class MilterBinding(Generic[Ctx]):
    """pymilter's factory for one milter class: ``binding()`` is a new connection object."""

    __slots__ = ("context", "milter_class")

    def __init__(self, milter_class: Callable[[Ctx], Any], context: Ctx) -> None:
        self.milter_class = milter_class
        self.context = context

    def __call__(self) -> Any:
        return self.milter_class(self.context)

    @property
    def actions(self) -> int:
        """The actions the milter may use (``Milter.ADDHDRS | ...``), from ``ACTIONS``."""
        return int(self.milter_class.ACTIONS)  # type: ignore[attr-defined]


def bind(milter_class: Callable[[Ctx], Any], context: Ctx) -> MilterBinding[Ctx]:
    """The one way a Passerelle milter is bound to pymilter (see the module docstring):
    ``milter_class`` is a ``Milter.Base`` subclass whose ``__init__`` takes ``context`` and
    whose ``ACTIONS`` lists its actions."""
    return MilterBinding(milter_class, context)


def run_milter(name: str, binding: MilterBinding[Any], socket: str, timeout: int = 600) -> None:
    """Register ``binding`` (from ``bind``) with libmilter, with the actions of its class
    (``ACTIONS``), and serve until stopped."""
    import Milter  # the C binding is only needed by the daemon

    prepare_socket(socket)
    Milter.factory = binding
    Milter.set_exception_policy(Milter.TEMPFAIL)
    Milter.set_flags(binding.actions)
    logging.getLogger("passerelle").info("%s milter starting on %s", name, socket)
    # libmilter creates the unix socket with the process umask: let sendmail (smmsp/mail
    # group) connect through the group bit.
    os.umask(0o007)
    Milter.runmilter(f"passerelle-{name}", socket, timeout)
    logging.getLogger("passerelle").info("%s milter stopped", name)
