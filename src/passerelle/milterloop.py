"""The milter protocol served in one thread, without libmilter: the greylist milter's transport.

libmilter gives each SMTP connection a worker thread, and pymilter's callbacks take the GIL in
each of them: on a 2-core VM a one-recipient greylisted session cost about 400 µs of milter CPU,
most of it in the kernel (context switches: about 20 futex calls and 20 ``poll`` per session).
Here one thread reads every connection through ``selectors`` (epoll) and calls the same
connection objects (``milterrun.bind``: a ``Milter.Base`` subclass per connection, its
no-reply steps guarded) through a context that offers what pymilter's ``milterContext`` does
(``getsymval``, ``setreply``, ``addheader``, ``chgheader``). Measured with
``bench/greylist_bench.py --mode one-rcpt`` (docs/benchmarks.md).

The protocol is sendmail's (version 6, ``include/libmilter/mfdef.h``): a packet is a 4-byte
length, a command byte and its data. Option negotiation offers the steps the class uses and
the no-reply ones (as ``Milter.Base.negotiate`` works them out); macros are kept per stage and
looked up the way libmilter does (connection first, then HELO, MAIL, RCPT, DATA, end of
message, end of headers); a message's macros are forgotten at the next MAIL, at abort and
after end of message. Replies: ``continue``, ``tempfail``, ``reject``, ``accept``, ``discard``,
a ``setreply`` text for a tempfail or reject, and at end of message the header edits first.

Every callback runs in the loop, so this transport is for a milter whose steps take
microseconds: the greylist milter on its serial SQLite store (each call bounded by the store's
own deadline). With the MariaDB store a decision is a network round trip that may wait up to
``store_timeout``, and the greylist milter stays on libmilter there (``greylist.daemon``).

Hostile or broken input from the MTA side never stops the loop: a packet longer than
``MAX_PACKET`` or of length 0, an unknown command, a malformed connect or option packet
closes that connection (logged; sendmail then applies the milter's ``F=`` flag to the
message), an exception in an answered step answers ``451`` (TEMPFAIL, as pymilter's exception
policy does), one in a no-reply step is handled by ``milterrun.bind``'s guard, and a
connection idle longer than ``timeout`` seconds is closed.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import selectors
import signal
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from passerelle import sdnotify
from passerelle.milterrun import MilterBinding, prepare_socket

log = logging.getLogger("passerelle")

VERSION = 6  # the milter protocol version spoken (sendmail 8.14 and later)
MAX_PACKET = 1024 * 1024  # longest packet accepted (sendmail sends at most 64 KiB of body)
READ_SIZE = 65536
# a connection whose answers pile up unread past this breaks the protocol (sendmail reads each
# answer before it sends the next step that has one): it is closed
MAX_BUFFERED = 2 * MAX_PACKET

# pymilter's return codes (Milter.CONTINUE, ...) and protocol bits, as numbers so that this
# module's logic needs no pymilter import (the same values as libmilter's mfapi.h).
CONTINUE, REJECT, DISCARD, ACCEPT, TEMPFAIL, NOREPLY, SKIP = 0, 1, 2, 3, 4, 7, 8
P_NR = {
    b"C": 0x1000,  # connect
    b"H": 0x2000,  # helo
    b"M": 0x4000,  # mail
    b"R": 0x8000,  # rcpt
    b"T": 0x10000,  # data
    b"U": 0x20000,  # unknown
    b"N": 0x40000,  # end of headers
    b"B": 0x80000,  # body
    b"L": 0x80,  # header
}
REPLY = {
    CONTINUE: b"c",
    REJECT: b"r",
    DISCARD: b"d",
    ACCEPT: b"a",
    TEMPFAIL: b"t",
    SKIP: b"s",
}
# macro stages in libmilter's lookup order (the command whose macros they are)
STAGES = (b"C", b"H", b"M", b"R", b"T", b"E", b"N")
MESSAGE_STAGES = (b"M", b"R", b"T", b"E", b"N")

ADDHDRS, CHGHDRS = 0x01, 0x10


class ProtocolError(Exception):
    """The MTA side broke the protocol: the connection is closed."""


def packet(cmd: bytes, data: bytes = b"") -> bytes:
    return struct.pack("!I", len(data) + 1) + cmd + data


def _text(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def _cstrings(data: bytes) -> list[bytes]:
    """NUL-terminated strings (the last NUL optional)."""
    if data.endswith(b"\0"):
        data = data[:-1]
    return data.split(b"\0") if data else []


def reply_text(rcode: str, xcode: str | None, msg: str | None, *more: str) -> bytes:
    """A ``setreply`` as sendmail reads it (``451 4.7.1 text``, lines joined by CRLF)."""
    if len(rcode) != 3 or not rcode.isdigit() or rcode[0] not in "45":
        raise ValueError(f"reply code {rcode!r}: a 4xx or 5xx code")
    if xcode and (xcode[0] != rcode[0] or not all(p.isdigit() for p in xcode.split("."))):
        raise ValueError(f"enhanced status code {xcode!r} does not go with {rcode}")
    lines = [m for m in (msg, *more) if m is not None] or [""]
    for line in lines:
        if "\r" in line or "\n" in line or "\0" in line:
            raise ValueError("reply text with a line break or NUL")
    head = f"{xcode} " if xcode else ""
    out = [
        f"{rcode}{'-' if i < len(lines) - 1 else ' '}{head}{line}" for i, line in enumerate(lines)
    ]
    return "\r\n".join(out).encode("utf-8", "surrogateescape")


class MilterContext:
    """What a connection object may ask of the MTA (pymilter's ``milterContext``)."""

    __slots__ = ("actions", "edits", "macros", "priv", "reply")

    def __init__(self, actions: int) -> None:
        self.priv: Any = None
        self.actions = actions
        self.macros: dict[bytes, dict[str, str]] = {}
        self.reply: bytes | None = None
        self.edits: list[bytes] = []

    def getpriv(self) -> Any:
        return self.priv

    def setpriv(self, priv: Any) -> None:
        self.priv = priv

    def getsymval(self, name: str) -> str | None:
        alt = name[1:-1] if name.startswith("{") and name.endswith("}") else "{" + name + "}"
        for stage in STAGES:
            macros = self.macros.get(stage)
            if macros:
                v = macros.get(name)
                if v is None:
                    v = macros.get(alt)
                if v is not None:
                    return v
        return None

    def setreply(
        self, rcode: str, xcode: str | None = None, msg: str | None = None, *ml: str
    ) -> None:
        self.reply = reply_text(rcode, xcode, msg, *ml)

    def addheader(self, field: str, value: str, idx: int = -1) -> None:
        if not self.actions & ADDHDRS:
            raise RuntimeError("addheader: action not negotiated")
        data = _cstr(field) + _cstr(value)
        if idx < 0:
            self.edits.append(packet(b"h", data))
        else:
            self.edits.append(packet(b"i", struct.pack("!I", idx) + data))

    def chgheader(self, field: str, idx: int, value: str | None) -> None:
        if not self.actions & CHGHDRS:
            raise RuntimeError("chgheader: action not negotiated")
        data = struct.pack("!I", max(idx, 1)) + _cstr(field) + _cstr(value or "")
        self.edits.append(packet(b"m", data))


def _cstr(s: str) -> bytes:
    b = s.encode("utf-8", "surrogateescape")
    if b"\0" in b:
        raise ValueError("NUL in a header")
    return b + b"\0"


class Connection:
    """One MTA connection: its buffers, negotiated flags and connection object."""

    __slots__ = ("ctx", "inbuf", "last", "outbuf", "protocol", "sock")

    def __init__(self, sock: socket.socket, actions: int, now: float) -> None:
        self.sock = sock
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.ctx = MilterContext(actions)
        self.protocol = 0
        self.last = now


def _family(fam: bytes, rest: bytes) -> tuple[int, Any]:
    """The connect packet's address as pymilter gives it: (family, hostaddr)."""
    if fam in (b"4", b"6"):
        if len(rest) < 2:
            raise ProtocolError("connect packet without a port")
        (port,) = struct.unpack("!H", rest[:2])
        addr = _text(rest[2:].split(b"\0", 1)[0])
        if fam == b"4":
            return socket.AF_INET, (addr, port)
        return socket.AF_INET6, (addr, port, 0, 0)
    if fam == b"L":
        return socket.AF_UNIX, _text(rest[2:].split(b"\0", 1)[0]) if len(rest) > 2 else ""
    return socket.AF_UNSPEC, None


class MilterLoop:
    """Serve ``binding`` on ``spec`` (``unix:/path``, ``inet:port@host``) in this thread."""

    def __init__(
        self,
        name: str,
        binding: MilterBinding[Any],
        spec: str,
        timeout: float = 600,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.binding = binding
        self.spec = spec
        self.timeout = timeout
        self.clock = clock
        self.actions = binding.actions
        self.sel = selectors.DefaultSelector()
        self.conns: dict[int, Connection] = {}
        self.stopping = False
        self.listener: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    # -- set-up --------------------------------------------------------------------------
    def listen(self) -> socket.socket:
        prepare_socket(self.spec)
        kind, _, where = self.spec.partition(":")
        if kind in ("unix", "local"):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            old = os.umask(0o007)  # sendmail (smmsp/mail group) connects through the group bit
            try:
                s.bind(where)
            finally:
                os.umask(old)
        elif kind in ("inet", "inet6"):
            port, _, host = where.partition("@")
            fam = socket.AF_INET6 if kind == "inet6" else socket.AF_INET
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host or ("::" if kind == "inet6" else "0.0.0.0"), int(port)))  # noqa: S104
        else:
            raise ValueError(f"milter socket {self.spec!r}: unix:, local:, inet: or inet6:")
        s.listen(128)
        s.setblocking(False)
        self.listener = s
        return s

    def stop(self, *_args: object) -> None:
        self.stopping = True
        with contextlib.suppress(OSError):  # a full pipe wakes the loop as well
            self._wake_w.send(b"x")

    def serve(self, install_signals: bool = True) -> None:
        """Listen, tell systemd READY=1, and serve until ``stop`` (SIGTERM, SIGINT, SIGHUP)."""
        if self.listener is None:
            self.listen()
        assert self.listener is not None
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, self.stop)
        self.sel.register(self.listener, selectors.EVENT_READ, "listen")
        self.sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        log.info("%s milter starting on %s", self.name, self.spec)
        sdnotify.ready()
        next_sweep = self.clock() + 1.0
        try:
            while not self.stopping:
                for key, events in self.sel.select(timeout=1.0):
                    if key.data == "listen":
                        self._accept()
                    elif key.data == "wake":
                        self._drain_wake()
                    else:
                        self._serve_connection(key.data, events)
                now = self.clock()
                if now >= next_sweep:
                    self._sweep(now)
                    next_sweep = now + 1.0
        finally:
            self._shutdown()
        log.info("%s milter stopped", self.name)

    def _shutdown(self) -> None:
        for conn in list(self.conns.values()):
            self._close(conn)
        if self.listener is not None:
            self.sel.unregister(self.listener)
            self.listener.close()
            if self.spec.startswith(("unix:", "local:")):
                with contextlib.suppress(OSError):
                    os.unlink(self.spec.split(":", 1)[1])
        self.sel.close()

    # -- connections ---------------------------------------------------------------------
    def _accept(self) -> None:
        assert self.listener is not None
        for _ in range(64):
            try:
                s, _addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: the loop goes on
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.error("%s milter: cannot accept a connection: %s", self.name, exc)
                    time.sleep(0.01)
                return
            s.setblocking(False)
            conn = Connection(s, self.actions, self.clock())
            self.conns[s.fileno()] = conn
            self.sel.register(s, selectors.EVENT_READ, conn)

    def _close(self, conn: Connection) -> None:
        fd = conn.sock.fileno()
        if fd < 0:
            return
        self.conns.pop(fd, None)
        with contextlib.suppress(KeyError, ValueError):  # never registered (accept failed)
            self.sel.unregister(conn.sock)
        conn.sock.close()
        self._end_connection(conn)

    def _end_connection(self, conn: Connection) -> None:
        m = conn.ctx.priv
        conn.ctx.priv = None
        conn.ctx.macros.clear()
        if m is not None:
            try:
                m.close()
            except Exception:
                log.exception("%s milter: close failed", self.name)
            m._setctx(None)

    def _sweep(self, now: float) -> None:
        for conn in list(self.conns.values()):
            if now - conn.last > self.timeout:
                log.warning("%s milter: connection idle for %g s, closed", self.name, self.timeout)
                self._close(conn)

    def _serve_connection(self, conn: Connection, events: int) -> None:
        try:
            if events & selectors.EVENT_WRITE:
                self._flush(conn)
            if events & selectors.EVENT_READ and conn.sock.fileno() >= 0:
                self._read(conn)
        except Exception:  # never let one connection stop the loop: that one is closed
            log.exception("%s milter: unexpected error on a connection, closed", self.name)
            self._close(conn)

    def _read(self, conn: Connection) -> None:
        try:
            data = conn.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(conn)
            return
        conn.last = self.clock()
        conn.inbuf += data
        self._process(conn)
        if conn.sock.fileno() >= 0 and len(conn.outbuf) > MAX_BUFFERED:
            log.warning(
                "%s milter: the MTA leaves %d bytes of answers unread, closed",
                self.name,
                len(conn.outbuf),
            )
            self._close(conn)

    def _process(self, conn: Connection) -> None:
        """Handle the complete packets in ``conn.inbuf``."""
        while True:
            try:
                got = take_packet(conn.inbuf)
                if got is None:
                    break
                out, keep = self._step(conn, *got)
            except ProtocolError as exc:
                log.warning("%s milter: protocol error from the MTA (%s), closed", self.name, exc)
                self._close(conn)
                return
            conn.outbuf += b"".join(out)
            if not keep:
                self._flush(conn)
                self._close(conn)
                return
        self._flush(conn)

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _flush(self, conn: Connection) -> None:
        if conn.sock.fileno() < 0:
            return
        if conn.outbuf:
            try:
                n = conn.sock.send(conn.outbuf)
                del conn.outbuf[:n]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                conn.outbuf.clear()
                self._close(conn)
                return
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.outbuf else 0)
        key = self.sel.get_key(conn.sock)
        if key.events != want:
            self.sel.modify(conn.sock, want, conn)

    # -- one protocol step ---------------------------------------------------------------
    def _step(self, conn: Connection, cmd: bytes, data: bytes) -> tuple[list[bytes], bool]:
        """Answer one packet: (the packets to send, keep the connection open)."""
        ctx = conn.ctx
        if cmd == b"O":
            return [self._negotiate(conn, data)], True
        if cmd == b"D":
            if data:
                stage = data[:1]
                values = _cstrings(data[1:])
                ctx.macros[stage] = {
                    _text(values[i]): _text(values[i + 1]) for i in range(0, len(values) - 1, 2)
                }
            return [], True
        if cmd == b"Q":
            return [], False
        if cmd == b"K":  # QUIT_NC: this SMTP connection ended, another one follows
            self._end_connection(conn)
            return [], True
        m = ctx.priv
        if m is None:
            if conn.protocol == 0 and cmd != b"C":
                raise ProtocolError(f"command {cmd!r} before the option negotiation")
            m = self._new_object(conn)
        if cmd == b"A":
            self._call(m.abort)
            self._forget_message(ctx)
            return [], True
        if cmd == b"C":
            if b"\0" not in data:
                raise ProtocolError("connect packet without a host name")
            host, rest = data.split(b"\0", 1)
            family, addr = _family(rest[:1], rest[1:])
            return self._answer(conn, cmd, m.connect, _text(host), family, addr), True
        if cmd == b"H":
            helo = _cstrings(data)
            return self._answer(conn, cmd, m.hello, _text(helo[0] if helo else b"")), True
        if cmd == b"M":
            self._forget_message(ctx, keep=b"M")
            return self._answer(conn, cmd, m.envfrom_bytes, *_cstrings(data)), True
        if cmd == b"R":
            return self._answer(conn, cmd, m.envrcpt_bytes, *_cstrings(data)), True
        if cmd == b"T":
            return self._answer(conn, cmd, m.data), True
        if cmd == b"L":
            parts = data.split(b"\0")
            if len(parts) < 2:
                raise ProtocolError("header packet without a value")
            return self._answer(conn, cmd, m.header_bytes, _text(parts[0]), parts[1]), True
        if cmd == b"N":
            return self._answer(conn, cmd, m.eoh), True
        if cmd == b"B":
            return self._answer(conn, cmd, m.body, data), True
        if cmd == b"E":
            if data:  # the last body chunk, sent with end of message
                body = self._answer(conn, b"B", m.body, data)
                if body and body[0][4:5] != b"c":  # the body's answer ends the message
                    self._forget_message(ctx)
                    return body, True
            ctx.edits = []
            out = self._answer(conn, cmd, m.eom)
            if out and out[-1][4:5] in (b"a", b"c"):
                out = ctx.edits + out
            ctx.edits = []
            self._forget_message(ctx)
            return out, True
        if cmd == b"U":
            return self._answer(conn, cmd, m.unknown, _text(data.rstrip(b"\0"))), True
        raise ProtocolError(f"unknown command {cmd!r}")

    def _negotiate(self, conn: Connection, data: bytes) -> bytes:
        if len(data) < 12:
            raise ProtocolError("option negotiation packet too short")
        version, actions, protocol = struct.unpack("!III", data[:12])
        if version < 2:
            raise ProtocolError(f"MTA milter protocol version {version}")
        if self.actions & ~actions:
            raise ProtocolError(f"the MTA does not offer the actions 0x{self.actions:x}")
        m = self._new_object(conn)
        opts = [actions, protocol, 0, 0]
        m.negotiate(opts)
        conn.protocol = int(opts[1]) & protocol
        m._protocol = conn.protocol
        return packet(b"O", struct.pack("!III", min(version, VERSION), self.actions, conn.protocol))

    def _new_object(self, conn: Connection) -> Any:
        m = self.binding()
        m._setctx(conn.ctx)
        m._actions = self.actions
        m._protocol = conn.protocol
        return m

    @staticmethod
    def _forget_message(ctx: MilterContext, keep: bytes = b"") -> None:
        for stage in MESSAGE_STAGES:
            if stage != keep:
                ctx.macros.pop(stage, None)
        ctx.reply = None

    def _call(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("%s milter: %s failed", self.name, getattr(fn, "__name__", fn))

    def _answer(
        self, conn: Connection, cmd: bytes, fn: Callable[..., Any], *args: Any
    ) -> list[bytes]:
        """Run one callback; its answer, none for a step negotiated without a reply."""
        ctx = conn.ctx
        ctx.reply = None
        no_reply = bool(conn.protocol & P_NR.get(cmd, 0))
        try:
            rc = fn(*args)
        except Exception:
            log.exception("%s milter: %s failed, answered TEMPFAIL", self.name, fn.__name__)
            return [] if no_reply else [packet(b"t")]
        if no_reply or rc == NOREPLY:
            return [] if no_reply else [packet(b"c")]
        if (
            rc in (REJECT, TEMPFAIL)
            and ctx.reply is not None
            and ctx.reply[:1] == (b"4" if rc == TEMPFAIL else b"5")
        ):
            return [packet(b"y", ctx.reply + b"\0")]
        code = REPLY.get(rc)
        if code is None:
            log.error("%s milter: %s returned %r, answered TEMPFAIL", self.name, fn.__name__, rc)
            code = b"t"
        return [packet(code)]


def take_packet(buf: bytearray) -> tuple[bytes, bytes] | None:
    """Take one complete packet off the front of ``buf``; None when it is not all there."""
    if len(buf) < 4:
        return None
    (n,) = struct.unpack_from("!I", buf, 0)
    if n == 0 or n > MAX_PACKET:
        raise ProtocolError(f"packet length {n}")
    if len(buf) - 4 < n:
        return None
    cmd, data = bytes(buf[4:5]), bytes(buf[5 : 4 + n])
    del buf[: 4 + n]
    return cmd, data
