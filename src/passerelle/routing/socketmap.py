"""``passerelle route socketmap``: sendmail's ldap_routing maps, answered from a cache.

sendmail's ``FEATURE(ldap_routing)`` looks every recipient of an LDAP-routed domain up in two
maps, ``ldapmh`` (mail host) and ``ldapmra`` (routing address). The sendmail role declares
both as ``socket -T<TMPF> unix:/run/passerelle/route.sock`` (``socket`` is sendmail's map
class for socket maps): this daemon answers them from the directory (the same search as
``passerelle route``, ``directory.py``) through a short TTL cache (``cache.py``), so one
search serves both maps and a repeated recipient costs none.

Protocol (sendmail's socket map, one netstring each way, connections kept open)::

    request   <len>:<mapname> <key>,        e.g. "21:ldapmh ana@ldap-a.test,"
    answer    <len>:OK <value>,  |  <len>:NOTFOUND ,  |  <len>:TEMP <reason>,

* exactly one entry with the attribute: ``OK value``; no entry, several entries, or an
  entry without that attribute: ``NOTFOUND`` (ldap_routing then refuses the RCPT with 550);
* directory unreachable, timeout, bind refused, any unexpected error, a map name this daemon
  does not serve, a malformed request: ``TEMP`` (never cached). sendmail turns TEMP into the
  map's ``-T<TMPF>`` and ldap_routing accepts the recipient and queues the message: a fault
  here never refuses a real user and never bounces. ``PERM`` is never answered (sendmail
  would read it as "no entry", i.e. 550 for a real user).

``Answerer`` is the pure part (request bytes -> answer text); the server around it is one
thread per sendmail connection on a unix socket.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import socketserver
import stat
from pathlib import Path
from typing import Any

from passerelle.routing.netstring import NetstringError, NetstringReader, encode
from passerelle.routing.route import DirectoryUnavailable, Lookup

log = logging.getLogger("passerelle.route.socketmap")

# sendmail's map names (FEATURE ldap_routing: Kldapmh, Kldapmra) -> Entry attribute.
MAPS: dict[str, str] = {"ldapmh": "mail_host", "ldapmra": "routing_address"}
NOTFOUND = "NOTFOUND "


class Answerer:
    """One socket map request -> its answer (without the netstring framing)."""

    def __init__(self, lookup: Lookup, maps: dict[str, str] | None = None) -> None:
        self.lookup = lookup
        self.maps = dict(MAPS if maps is None else maps)

    def answer(self, request: bytes) -> str:
        try:
            text = request.decode("utf-8")
        except UnicodeDecodeError:
            return "TEMP request is not UTF-8"
        name, sep, key = text.partition(" ")
        key = key.strip()
        if not sep or not key:
            return "TEMP malformed request: expected '<mapname> <key>'"
        attribute = self.maps.get(name)
        if attribute is None:
            return f"TEMP unknown map {_clean(name)}"
        try:
            entries = self.lookup(key.lower())
        except DirectoryUnavailable as exc:
            log.warning("%s %s: directory unavailable: %s", name, key, exc)
            return f"TEMP directory unavailable: {_clean(str(exc))}"
        except Exception as exc:  # never let one lookup take the daemon down
            log.exception("%s %s: lookup failed", name, key)
            return f"TEMP lookup failed: {_clean(type(exc).__name__)}"
        if len(entries) != 1:
            return NOTFOUND
        value = getattr(entries[0], attribute)
        if not value:
            return NOTFOUND
        return f"OK {_clean(value)}"


def _clean(text: str) -> str:
    """One line of printable text (an answer is a single netstring of plain text)."""
    return " ".join(text.split())[:400]


class _Connection(socketserver.BaseRequestHandler):
    """One sendmail connection: requests answered in order until sendmail closes it."""

    server: SocketmapServer

    def handle(self) -> None:
        conn: socket.socket = self.request
        reader = NetstringReader()
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                try:
                    requests = reader.feed(data)
                except NetstringError as exc:
                    # The framing is lost: answer TEMP once and drop this connection only.
                    log.warning("bad request, connection closed: %s", exc)
                    conn.sendall(encode(f"TEMP bad request: {exc}"))
                    return
                for req in requests:
                    answer = self.server.answerer.answer(req)
                    log.debug("%r -> %r", req, answer)
                    conn.sendall(encode(answer))
        except OSError as exc:
            log.debug("connection ended: %s", exc)


class SocketmapServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """A thread per connection; sendmail keeps its connections open between lookups."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, path: str, answerer: Answerer, mode: int = 0o660) -> None:
        self.answerer = answerer
        self.path = path
        _remove_stale_socket(path)
        old = os.umask(0o007)
        try:
            super().__init__(path, _Connection)
        finally:
            os.umask(old)
        os.chmod(path, mode)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("socket map connection failed")

    def server_close(self) -> None:
        super().server_close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


def _remove_stale_socket(path: str) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    try:
        st = p.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(f"{path} exists and is not a socket")
    p.unlink()
