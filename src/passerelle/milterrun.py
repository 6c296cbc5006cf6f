"""Running a pymilter milter the same way for every Passerelle daemon.

Two transports serve the same binding (``bind``, below): ``run_milter`` through libmilter
(a thread per connection: the antivirus and spam milters, whose steps wait on clamd and
spamd, and the greylist milter on MariaDB), and ``passerelle.milterloop.MilterLoop`` in one
thread without libmilter (the greylist milter on SQLite, whose steps take microseconds).

- socket spec as sendmail writes it (``unix:/run/x.sock``, ``inet:8890@127.0.0.1``);
- exception policy TEMPFAIL: a bug delays mail, never loses it or rejects it permanently (it
  applies to the answered steps; a no-reply step is handled by ``bind``, below);
- systemd is told ``READY=1`` once libmilter listens on the socket (``Type=notify`` units:
  sendmail, ordered after the milters, starts when they answer);
- logs to syslog's mail facility (and stderr when run in the foreground): the daemon sets it up
  with ``passerelle.logsetup.setup_logging`` before it calls ``run_milter``;
- one binding to pymilter for every milter: ``bind(MilterClass, context, name)``. pymilter makes
  one ``MilterClass(context)`` per SMTP connection; ``context`` is what the connections share (the
  greylist engine, the spam scanner, ...); the actions the milter may use are the class's
  ``ACTIONS``; the protocol steps it negotiates come from the class itself, pymilter's way:
  a callback it does not define is not sent (``P_NO*``), a callback decorated with
  ``@Milter.noreply`` is sent without waiting for a reply (``P_NR_*``);
- a failing no-reply callback never answers: ``bind`` wraps every callback of a step the class
  marks no-reply so that an exception is logged once, recorded on the connection object
  (``nr_error``) and the step goes on unanswered, as negotiated; the next step the MTA waits on
  (RCPT for the greylist milter, end of message otherwise) is answered ``451 4.3.0`` instead of
  the milter's decision. A reply on a no-reply step would be read by the MTA as the answer to a
  later step (the protocol out of step), and an escaped exception leaves the MTA without an
  answer: either way a message could be lost or accepted unfiltered. An error in a message's
  step is forgotten at the next MAIL, at ``abort`` and once end of message has answered it;
  one in the connection's steps (connect, HELO) tempfails every message until ``close``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

from passerelle import sdnotify

Ctx = TypeVar("Ctx")
log = logging.getLogger("passerelle")

# The answer to a message whose no-reply step failed (``setreply``: code, xcode, text).
ERROR_REPLY = ("451", "4.3.0", "Temporary error in the mail filter, try again later")
# Steps of the connection itself: an error there lasts until the connection closes.
CONNECTION_STEPS = frozenset({"connect", "hello"})


def prepare_socket(spec: str) -> None:
    """Remove a stale unix socket and make sure its directory exists."""
    if spec.startswith(("unix:", "local:")):
        path = Path(spec.split(":", 1)[1])
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_socket():
            path.unlink()


def _record(m: Any, name: str, step: str, exc: Exception) -> None:
    """Remember a failed no-reply step on the connection object; log it once."""
    attr = "nr_connection_error" if step in CONNECTION_STEPS else "nr_error"
    if getattr(m, attr, None) is not None:
        return  # already failed (every later body chunk, say): logged once
    setattr(m, attr, f"{step}: {type(exc).__name__}")
    log.error(
        "%s milter: the no-reply %s step failed (%s: %.200r); %s will be answered 451 4.3.0",
        name,
        step,
        type(exc).__name__,
        str(exc),
        "every message of this connection" if step in CONNECTION_STEPS else "the message",
        exc_info=exc,
    )


def _forget_message(m: Any) -> None:
    m.nr_error = None


def _noreply_guard(name: str, step: str, nr_bit: int, func: Callable[..., Any]) -> Any:
    @functools.wraps(func)  # keeps milter_protocol: the same steps are negotiated
    def guarded(self: Any, *args: Any) -> Any:
        if step == "envfrom":
            _forget_message(self)
        try:
            return func(self, *args)
        except Exception as exc:
            import Milter

            _record(self, name, step, exc)
            # What the @noreply wrapper returns: NOREPLY when the MTA agreed not to wait.
            return Milter.NOREPLY if getattr(self, "_protocol", 0) & nr_bit else Milter.CONTINUE

    return guarded


def _reply_guard(name: str, step: str, func: Callable[..., Any]) -> Any:
    @functools.wraps(func)
    def guarded(self: Any, *args: Any) -> Any:
        import Milter

        if step == "envfrom":
            _forget_message(self)
        failed = getattr(self, "nr_connection_error", None) or getattr(self, "nr_error", None)
        if failed is None:
            return func(self, *args)
        log.info("%s milter: %s answered 451 4.3.0 (earlier %s)", name, step, failed)
        try:
            self.setreply(*ERROR_REPLY)
        except Exception as exc:  # still a tempfail, with the MTA's own text
            log.warning("%s milter: setreply failed (%s)", name, type(exc).__name__)
        if step == "eom":  # the message is over: drop its state as abort does
            try:
                self.abort()
            except Exception:
                log.exception("%s milter: abort after a failed message failed", name)
            _forget_message(self)
        return Milter.TEMPFAIL

    return guarded


def _reset_guard(which: tuple[str, ...], func: Callable[..., Any]) -> Any:
    @functools.wraps(func)
    def guarded(self: Any) -> Any:
        for attr in which:
            setattr(self, attr, None)
        return func(self)

    return guarded


def guard_noreply_steps(milter_class: type, name: str) -> type:
    """A subclass of ``milter_class`` whose callbacks handle a failing no-reply step as the
    module docstring says; it negotiates exactly the steps ``milter_class`` does."""
    import Milter

    ns: dict[str, Any] = {
        "__module__": milter_class.__module__,
        "__qualname__": milter_class.__qualname__,
        "__doc__": milter_class.__doc__,
        "nr_error": None,
        "nr_connection_error": None,
    }
    # pymilter's optional callbacks (the steps a milter may skip or leave unanswered):
    # name -> (no-reply bit, not-sent bit)
    for step, (nr_bit, no_bit) in Milter.OPTIONAL_CALLBACKS.items():
        func = getattr(milter_class, step)
        marked = getattr(func, "milter_protocol", 0)
        if marked & nr_bit:
            ns[step] = _noreply_guard(name, step, nr_bit, func)
        elif not marked & no_bit:  # sent and answered (a step not sent needs nothing)
            ns[step] = _reply_guard(name, step, func)
    ns["eom"] = _reply_guard(name, "eom", milter_class.eom)
    ns["abort"] = _reset_guard(("nr_error",), milter_class.abort)
    ns["close"] = _reset_guard(("nr_error", "nr_connection_error"), milter_class.close)
    for step in ("envfrom", "envrcpt"):
        if _default_decoding(milter_class, step):
            ns[f"{step}_bytes"] = _envelope_decoder(step)
    cls = type(milter_class.__name__, (milter_class,), ns)
    if milter_class.negotiate is Milter.Base.negotiate and not any(
        getattr(getattr(cls, step), "_symlist", None) is not None for step in Milter.MACRO_CALLBACKS
    ):
        cls.negotiate = _fixed_negotiate(cls.protocol_mask())
    return cls


# Per-connection work pymilter repeats and the class already settles (a greylisted session is
# connect, MAIL, one RCPT, abort: these run as often as the callbacks themselves).
def _default_decoding(milter_class: type, step: str) -> bool:
    """The class leaves ``<step>_bytes`` and the decoding of ``step`` as pymilter has them."""
    import Milter

    return (
        getattr(milter_class, f"{step}_bytes") is getattr(Milter.Base, f"{step}_bytes")
        and getattr(getattr(milter_class, step), "error_strategy", "surrogateescape")
        == "surrogateescape"
    )


def _envelope_decoder(step: str) -> Callable[..., Any]:
    """pymilter's ``envfrom_bytes`` / ``envrcpt_bytes`` for the default strategy (UTF-8 with
    surrogateescape, which never fails), without looking the strategy up at every call."""

    def decode(self: Any, addr: bytes, *params: bytes) -> Any:
        callback = getattr(self, step)
        if params:
            return callback(
                addr.decode("utf-8", "surrogateescape"),
                *[p.decode("utf-8", "surrogateescape") for p in params],
            )
        return callback(addr.decode("utf-8", "surrogateescape"))

    decode.__name__ = decode.__qualname__ = f"{step}_bytes"
    return decode


def _fixed_negotiate(mask: int) -> Callable[[Any, list[int]], int]:
    """``Milter.Base.negotiate`` for a class without ``@symlist``: its protocol mask worked
    out once (pymilter looks at every callback of the class at each connection)."""
    import Milter

    def negotiate(self: Any, opts: list[int]) -> int:
        try:
            self._actions, p, _f1, _f2 = opts
            opts[1] = self._protocol = p & ~mask
            opts[2] = 0
            opts[3] = 0
        except Exception:  # as pymilter: change nothing when something went wrong
            return int(Milter.ALL_OPTS)
        return int(Milter.CONTINUE)

    return negotiate


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


def bind(milter_class: type, context: Ctx, name: str) -> MilterBinding[Ctx]:
    """The one way a Passerelle milter is bound to pymilter (see the module docstring):
    ``milter_class`` is a ``Milter.Base`` subclass whose ``__init__`` takes ``context`` and
    whose ``ACTIONS`` lists its actions; ``name`` (``spam``) is how its logs name it. The
    connection objects are of a subclass whose no-reply steps are guarded
    (``guard_noreply_steps``)."""
    return MilterBinding(guard_noreply_steps(milter_class, name), context)


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
    with _ready_once_listening():
        Milter.runmilter(f"passerelle-{name}", socket, timeout)
    logging.getLogger("passerelle").info("%s milter stopped", name)


@contextlib.contextmanager
def _ready_once_listening() -> Iterator[None]:
    """systemd is told READY=1 (``passerelle.sdnotify``) once libmilter listens.

    pymilter's ``runmilter`` registers the callbacks, calls its C module's ``opensocket``
    (libmilter creates, binds and listens on the socket; it raises when it cannot) and then
    serves in ``main``, which never returns while the milter runs. ``opensocket`` is wrapped
    for that call so that the notification comes between the two: after a failed
    ``opensocket`` none is sent, and systemd sees the process exit.
    """
    import milter  # pymilter's C module, whose opensocket Milter.runmilter calls

    open_socket = milter.opensocket

    def opensocket_then_ready(rmsock: bool) -> Any:
        opened = open_socket(rmsock)
        sdnotify.ready()
        return opened

    milter.opensocket = opensocket_then_ready
    try:
        yield
    finally:
        milter.opensocket = open_socket
