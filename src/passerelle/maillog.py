"""Reading sendmail's mail log: line timestamps, the log's rotations, SMTP sessions per client.

Shared by the connection guard (``passerelle.connwatch``: sessions per client in its window)
and the reports (``passerelle.reports``: the decision lines are read with the same
``TimestampReader``, ``rotated_files`` and ``read_chunks``, and the daily report's busiest
clients come from ``scan_logs``).

Counting sessions (``SessionCounter``, ``scan_logs``) is pure and streaming: the input is
bytes (whole lines), the output a ``{ip: sessions}`` dict and statistics; memory is bounded by
the number of distinct clients in the window plus the sessions still open, never by the size
of the log.

Lines read
----------
Syslog lines from the programs ``sm-mta`` (Debian) and ``sendmail`` (RedHat family), with a
traditional timestamp (``Nov 27 10:00:01 gw1 sm-mta[1234]: ...``, local time, no year) or an
RFC 3339 / ISO timestamp as rsyslog's file format and journald exports write it
(``2026-11-27T10:00:01.123456+00:00 gw1 sm-mta[1234]: ...``).

What sendmail 8.17 logs that names the client of an SMTP session (the daemon child that
serves one connection logs every line of that session with its own pid):

- ``QID: from=<a@b>, size=N, class=0, nrcpts=1, msgid=<..>, proto=ESMTP, daemon=MTA,
  relay=host [192.0.2.1]`` once per message (also with ``nrcpts=0`` when every recipient
  was refused, e.g. greylisted);
- ``NOQUEUE: ruleset=check_relay, arg1=host, arg2=192.0.2.1, relay=host [192.0.2.1],
  reject=...`` and the other ``ruleset=check_*`` rejections (mail, rcpt, data, ...);
- ``STARTTLS=server, relay=host [192.0.2.1], version=TLSv1.3, ...`` and
  ``AUTH=server, relay=...``;
- ``QID: host [192.0.2.1] did not issue MAIL/EXPN/VRFY/ETRN during connection to MTA``;
- ``QID: lost input channel from host [192.0.2.1] to MTA after rcpt``.

(``host [192.0.2.1]: possible SMTP attack: command=AUTH, count=3`` is not read: the same
session also ends with one of the lines above, and skipping it saves a pass over the log.)

The address is ``[192.0.2.1]`` or ``[IPv6:2001:db8::1]``, after an optional host name and
before an optional ``(may be forged)``; IPv4-mapped IPv6 addresses count as IPv4.

Where the client is read
------------------------
The client chooses part of these lines: the envelope sender (``from=``, ``arg1=`` of
check_mail), the recipients (``arg1=`` of check_rcpt, quoted again in the ``reject=`` reply),
the Message-ID (``msgid=``), a VRFY argument. Any of them can hold ``relay=[198.51.100.7]``,
commas, brackets, 8-bit bytes (sendmail writes them as ``\\ooo``). So the kind of a line is
decided by its start only, and the client is read from sendmail's own field, ``relay=`` +
``$_`` (``[ident@][host ][addr][ (may be forged)]``, no client text in it: the host name comes
from the reverse DNS, the ident is cleaned by sendmail, the HELO name is not part of it):

- ``from=`` (and ``STARTTLS=server, error: ...``): ``relay=`` is the *last* field, written
  after every field the client chose, so it is the last ``, relay=`` and runs to the end of
  the line. A line sendmail cut in parts (over its syslog buffer, only with many escaped
  bytes) does not end with the address: skipped;
- ``STARTTLS=server, relay=``, ``AUTH=server, relay=``, ``... did not issue MAIL``,
  ``lost input channel from ...``: the field is at a fixed place, before any client text;
- ``ruleset=check_*, arg1=<client text>[, arg2=..], relay=$_, reject=<reply>`` (or
  ``quarantine=``, ``discard``): the client text before and the reply after can both hold
  ``, relay=.., reject=``. Every ``relay=`` so placed is a candidate; the real one is among
  them. One distinct address: it. Several: the client of the same connection already known
  from its other lines if it is one of them, else the line is not attributed and is counted
  in ``ScanStats.ambiguous``. A client thus never gets a third party counted; the price: a
  connection whose only client lines are such refusals (refused MAIL commands, nothing
  else) is not counted. Refused recipients do not hide a connection: they follow an accepted
  MAIL, whose ``from=`` line (``nrcpts=0`` if every recipient was refused) counts it.
``to=`` lines (their ``relay=`` is the *next hop*), ``STARTTLS=client``,
``ruleset=check_compat`` and ``ruleset=tls_*`` lines are about deliveries and are ignored, as
are local submissions (``relay=root@localhost``, no address).
``rejecting connections on daemon MTA: ...`` (logged by the listener, without a client) is
counted in ``ScanStats.refusing`` only.

Counting rule
-------------
One SMTP connection is one session of one daemon child (sendmail forks a child per
connection and every line of the connection carries its pid, with a queue id or
``NOQUEUE``), so a session is keyed by (syslog host, pid), not by queue id (a connection has
one queue id per message and ``NOQUEUE`` for refusals before one). A client event opens a
new session for its IP unless the previous event of the same (host, pid) had the same IP and
is at most ``session_gap`` seconds (default 10 minutes) away; the gap is refreshed by every
event. Several messages sent over one connection (one ``from=`` each, plus STARTTLS, refused
recipients, "did not issue", ...) thus count once, and a pid reused later by the kernel for
another connection counts again.

Limits (documented, accepted):

- a connection that leaves no client line at all is not seen (sendmail logs "did not issue
  MAIL" only at LogLevel >= 6; the Debian and RedHat default is 9), nor are connections the
  listener refuses (load, MaxDaemonChildren, ConnectionRateThrottle) -- see ``refusing``;
- one connection idle for more than ``session_gap`` between two logged events counts twice;
- a pid reused for a new connection of the *same* client within ``session_gap`` counts once
  (needs the pid space to wrap within the gap: 32768 or 4 million forks in 10 minutes; it
  can only make a client count less, never count another one);
- the window is applied per line: a session that started before the window start and logs
  again inside it counts in the window;
- traditional timestamps carry no year nor zone: local time (or ``tz``) and the year that
  puts the line at most one day after "now" (so December lines read in January are last
  year's).

Lines that look like a client event (they contain ``relay=`` or one of the phrases above,
and start as a client line) but whose sendmail field cannot be read -- garbage, truncated,
bad timestamp, bad address -- are counted in ``skipped``; every other line is ignored without
being parsed (that is what makes the scan fast: candidate lines are found with ``bytes.find``
over large chunks).
"""

from __future__ import annotations

import gzip
import ipaddress
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path
from typing import BinaryIO

from passerelle.isotime import parse_datetime

PROGRAMS: frozenset[bytes] = frozenset({b"sm-mta", b"sendmail"})
SESSION_GAP = 600.0
CHUNK_SIZE = 8 << 20
PIECE_MIN = 16 << 20  # smallest byte range given to a process of a parallel scan
MAX_LINE = 1 << 20

_MONTHS = {
    m.encode(): i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
# Client lines without "relay=" are found by these (one pass over the buffer each):
# "... did not issue MAIL/EXPN/VRFY/ETRN during connection to MTA" and "rejecting connections on
# daemon" both contain "connection"; "lost input channel from ...".
_RARE = (b"connection", b"lost input channel from ")

# Kinds of client lines (see "Where the client is read" above).
_K_FIELD = 1  # the client field at a fixed place: STARTTLS=server, AUTH=server, did not issue
_K_LAST = 2  # the client field is the last one: from=
_K_CHECK = 3  # ruleset=check_*: client text before and after the client field
_K_LOST = 4  # lost input channel from <client> to ...
_K_REFUSING = 5  # rejecting connections on daemon ...: no client
_FORGED = b" (may be forged)"
MAX_RELAY = 400  # sendmail's $_ (ident@, host name, address): far shorter


def _relay_addr(buf: bytes, vs: int, ve: int) -> bytes | None:
    """The address inside sendmail's client field ``buf[vs:ve]``, or None.

    The field is sendmail's macro ``$_``: ``[ident@][host ][addr]`` plus an optional
    `` (may be forged)``; ``host`` (from the reverse DNS) and ``ident`` hold no space. The
    address is the last ``[...]``, which must end the field.
    """
    if ve - vs > MAX_RELAY:
        return None
    if buf.endswith(_FORGED, vs, ve):
        ve -= len(_FORGED)
    if ve - vs < 3 or buf[ve - 1] != 93:  # "]"
        return None
    lb = buf.rfind(b"[", vs, ve)
    if lb < 0:
        return None
    if lb > vs:
        sep = buf[lb - 1]
        if (sep != 32 and sep != 64) or buf.find(b" ", vs, lb - 1) >= 0:  # "h [a]", "u@[a]"
            return None
    return buf[lb + 1 : ve - 1]


@dataclass
class ScanStats:
    """What a scan saw; ``skipped`` are candidate lines that could not be read."""

    lines: int = 0
    candidates: int = 0
    events: int = 0
    sessions: int = 0
    skipped: int = 0
    out_of_window: int = 0
    refusing: int = 0
    ambiguous: int = 0  # check_* lines naming two clients, not counted
    bytes: int = 0
    seeked: int = 0  # bytes before the window not read (see window_offset)
    files: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class TimestampReader:
    """Timestamps of syslog lines to epoch seconds, with the year inferred from ``now``."""

    def __init__(self, now: float, tz: tzinfo | None = None) -> None:
        self.now = now
        self.tz = tz
        self._cache: dict[bytes, float | None] = {}

    def _epoch(self, year: int, month: int, day: int, hh: int, mm: int, ss: int) -> float:
        if self.tz is not None:
            return datetime(year, month, day, hh, mm, ss, tzinfo=self.tz).timestamp()
        datetime(year, month, day, hh, mm, ss)  # validates (mktime would normalise 31 Feb)
        return time.mktime((year, month, day, hh, mm, ss, 0, 0, -1))

    def traditional(self, text: bytes) -> float | None:
        """``Nov 27 10:00:01`` (15 bytes, day space-padded) -> epoch, or None."""
        cached = self._cache.get(text, -1.0)
        if cached != -1.0:
            return cached
        ts = self._traditional(text)
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[text] = ts
        return ts

    def _traditional(self, text: bytes) -> float | None:
        month = _MONTHS.get(text[:3])
        if month is None or len(text) != 15 or text[3:4] != b" " or text[6:7] != b" ":
            return None
        try:
            day = int(text[4:6])
            hh, mm, ss = int(text[7:9]), int(text[10:12]), int(text[13:15])
        except ValueError:
            return None
        if text[9:10] != b":" or text[12:13] != b":":
            return None
        year = datetime.fromtimestamp(self.now, self.tz).year
        for y in (year, year - 1):
            try:
                ts = self._epoch(y, month, day, hh, mm, ss)
            except (ValueError, OverflowError):
                continue
            if ts <= self.now + 86400:
                return ts
        return None

    def iso(self, text: bytes) -> float | None:
        """``2026-11-27T10:00:01.123456+00:00`` (or ``Z``, or no zone: local) -> epoch."""
        # Cache on the text without the fraction of a second: lines of the same second share it.
        key = text[:19] + text[19:].lstrip(b".0123456789")
        cached = self._cache.get(key, -1.0)
        if cached != -1.0:
            return cached
        try:
            dt = parse_datetime(key.decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            ts = None
        else:
            if dt.tzinfo is None and self.tz is not None:
                dt = dt.replace(tzinfo=self.tz)
            ts = dt.timestamp()
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[key] = ts
        return ts


class SessionCounter:
    """Feed it log bytes; ``counts`` holds sessions per client IP in ``(since, until]``."""

    def __init__(
        self,
        since: float,
        until: float,
        *,
        now: float | None = None,
        tz: tzinfo | None = None,
        session_gap: float = SESSION_GAP,
        programs: frozenset[bytes] = PROGRAMS,
    ) -> None:
        self.since = since
        self.until = until
        self.session_gap = session_gap
        self.programs = programs
        self.counts: dict[str, int] = {}
        self.stats = ScanStats()
        self._times = TimestampReader(until if now is None else now, tz)
        self._sessions: dict[bytes, tuple[str, float]] = {}
        self._prune_min = self._prune_at = 65536
        self._ips: dict[bytes, str] = {}
        self._last_tsb = b""
        self._last_ts: float | None = None
        # First counted event of each session key, kept only for a piece of a parallel scan
        # (see merge_partials): the piece cannot know the session that was open before it.
        self.firsts: dict[bytes, tuple[str, float]] | None = None

    # -- input -----------------------------------------------------------------------------
    def feed(self, buf: bytes) -> None:
        """Read whole lines (``\\n``-separated; the last one may lack its newline).

        The hot path: candidate lines are found with ``bytes.find`` over the whole buffer
        (``relay=`` lines plus the rare phrases) and each is read in place with offsets: no
        per-line copies, no regex. What a line is (reception, delivery, ...) is decided by
        its start only (see ``_scan``): text a client chose never makes a line skipped.
        """
        if not buf:
            return
        st = self.stats
        st.bytes += len(buf)
        st.lines += buf.count(b"\n") + (0 if buf.endswith(b"\n") else 1)
        find = buf.find
        rfind = buf.rfind
        end = len(buf)
        spans: list[tuple[int, int]] = []
        append = spans.append
        i = find(b"relay=")
        while i >= 0:
            nl = find(b"\n", i)
            if nl < 0:
                nl = end
            append((rfind(b"\n", 0, i) + 1, nl))
            i = find(b"relay=", nl)
        rare: list[tuple[int, int]] = []
        for pat in _RARE:
            i = find(pat)
            while i >= 0:
                nl = find(b"\n", i)
                if nl < 0:
                    nl = end
                rare.append((rfind(b"\n", 0, i) + 1, nl))
                i = find(pat, nl)
        if rare:
            spans += rare
            spans.sort()  # two sorted runs (a few rare lines): cheap; duplicates: see _scan
        self._scan(buf, spans)

    def _scan(self, buf: bytes, spans: list[tuple[int, int]]) -> None:
        """Read each candidate line ``(start, end)`` in place.

        The client address is taken only where sendmail writes it (see the module docstring,
        "Where the client is read"); a line whose sendmail field cannot be read is skipped.
        """
        st = self.stats
        find = buf.find
        rfind = buf.rfind
        startswith = buf.startswith
        since, until, gap = self.since, self.until, self.session_gap
        programs = self.programs
        counts = self.counts
        sessions = self._sessions
        ips = self._ips
        times = self._times
        last_tsb, last_ts = self._last_tsb, self._last_ts
        skipped = events = new = out = refusing = ambiguous = 0
        prev_ls = -1
        for ls, le in spans:
            if ls == prev_ls:
                continue  # found by relay= and by a rare phrase: read once
            prev_ls = ls
            tag = find(b"]: ", ls, le)
            if tag < 0:
                skipped += 1
                continue
            # message body: after the syslog tag and an optional "QID: " / "NOQUEUE: "
            m = tag + 3
            sp = find(b" ", m, le)
            if sp > m and buf[sp - 1] == 58:  # ":"
                m = sp + 1
            # kind, and where sendmail's client field starts (vs) and ends (ve)
            vs = ve = -1
            if startswith(b"from=", m):
                kind = _K_LAST
            elif startswith(b"to=", m):
                continue  # a delivery: its relay= is the next hop
            elif startswith(b"STARTTLS=server", m):
                if startswith(b", relay=", m + 15):
                    kind, vs = _K_FIELD, m + 23
                else:  # "STARTTLS=server, error: accept failed=..., relay=h [ip]"
                    kind = _K_LAST
            elif startswith(b"ruleset=check_", m):
                if startswith(b"compat", m + 14):
                    continue
                kind = _K_CHECK
            elif startswith(b"AUTH=server, relay=", m):
                kind, vs = _K_FIELD, m + 19
            elif startswith(b"lost input channel from ", m):
                kind, vs = _K_LOST, m + 24
            elif startswith(b"rejecting connections on daemon", m):
                kind = _K_REFUSING
            elif (k := find(b" did not issue MAIL", m, le)) >= 0:
                kind, vs, ve = _K_FIELD, m, k
            else:
                continue  # STARTTLS=client, Milter, ...: not about a client
            # syslog header: timestamp, host, program[pid]
            if 48 <= buf[ls] <= 57:  # a digit: ISO timestamp
                hs = find(b" ", ls, tag)
                if hs < 0:
                    skipped += 1
                    continue
                tsb = buf[ls:hs]
                if tsb == last_tsb:
                    ts = last_ts
                else:
                    ts = last_ts = times.iso(tsb)
                    last_tsb = tsb
            else:
                hs = ls + 15
                tsb = buf[ls:hs]
                if tsb == last_tsb:
                    ts = last_ts
                else:
                    ts = last_ts = times.traditional(tsb) if buf[hs : hs + 1] == b" " else None
                    last_tsb = tsb
            he = find(b" ", hs + 1, tag)
            lb = rfind(b"[", he, tag) if he > 0 else -1
            if ts is None or lb < 0:
                skipped += 1
                continue
            if buf[he + 1 : lb] not in programs:
                continue  # another program quoting a sendmail line
            if ts <= since or ts > until:
                out += 1
                continue
            if kind == _K_REFUSING:
                refusing += 1
                continue
            key = buf[hs + 1 : tag]  # "host prog[pid"
            prev = sessions.get(key)
            if kind == _K_CHECK:
                # "ruleset=R, arg1=<client's text>[, arg2=..], relay=V, reject=<reply>": the
                # client's text (and the reply that quotes it) may hold ", relay=.., reject=";
                # every relay= so placed is a candidate, the real one is among them.
                cands: set[str] = set()
                r = find(b", relay=", m, le)
                while r >= 0:
                    vs = r + 8
                    ve = find(b", ", vs, le)
                    if ve < 0:
                        ve = le
                    if (
                        startswith(b", reject=", ve)
                        or startswith(b", quarantine=", ve)
                        or (ve + 9 == le and startswith(b", discard", ve))
                    ):
                        raw = _relay_addr(buf, vs, ve)
                        if raw is not None:
                            ip = ips.get(raw)
                            if ip is None:
                                ip = self._parse_ip(raw)
                            if ip:
                                cands.add(ip)
                    r = find(b", relay=", vs, le)
                if len(cands) == 1:
                    ip = cands.pop()
                elif not cands:
                    skipped += 1
                    continue
                elif prev is not None and prev[0] in cands and -gap <= ts - prev[1] <= gap:
                    ip = prev[0]  # the connection's client, known from its other lines
                else:
                    ambiguous += 1  # two clients named, nothing tells which one is real
                    continue
            else:
                if kind == _K_LAST:
                    # the last field, written after every field the client chose
                    r = rfind(b", relay=", m, le)
                    if r < 0:
                        skipped += 1
                        continue
                    vs, ve = r + 8, le
                elif kind == _K_LOST:
                    ve = find(b" to ", vs, le)
                    if ve < 0:
                        skipped += 1
                        continue
                elif ve < 0:  # _K_FIELD: "relay=V, key=..."
                    ve = find(b", ", vs, le)
                    if ve < 0:
                        ve = le
                # inline fast path of _relay_addr for "host [a]" / "[a]"
                lb = rfind(b"[", vs, ve) if 2 < ve - vs < MAX_RELAY and buf[ve - 1] == 93 else -2
                if lb == vs or (lb > vs and buf[lb - 1] == 32 and find(b" ", vs, lb - 1) < 0):
                    raw = buf[lb + 1 : ve - 1]
                else:
                    raw = _relay_addr(buf, vs, ve) if ve > vs else None
                if raw is None:
                    if find(b"[", vs, le) < 0 and find(b"@", vs, le) >= 0:
                        continue  # relay=root@localhost: a local submission
                    skipped += 1
                    continue
                ip = ips.get(raw)
                if ip is None:
                    ip = self._parse_ip(raw)
                if not ip:
                    skipped += 1
                    continue
            events += 1
            sessions[key] = (ip, ts)
            if prev is not None:
                if prev[0] == ip and -gap <= ts - prev[1] <= gap:
                    continue
            elif self.firsts is not None:
                self.firsts.setdefault(key, (ip, ts))
            counts[ip] = counts.get(ip, 0) + 1
            new += 1
            if len(sessions) > self._prune_at:
                self._prune(ts)
                sessions = self._sessions
        self._last_tsb, self._last_ts = last_tsb, last_ts
        st.candidates += len(spans)
        st.skipped += skipped
        st.events += events
        st.sessions += new
        st.out_of_window += out
        st.refusing += refusing
        st.ambiguous += ambiguous

    def feed_lines(self, lines: Iterable[bytes | str]) -> None:
        """Convenience for tests and small inputs."""
        for line in lines:
            b = line.encode("utf-8", "surrogateescape") if isinstance(line, str) else line
            self.feed(b if b.endswith(b"\n") else b + b"\n")

    def _parse_ip(self, raw: bytes) -> str:
        ip = parse_ip(raw) or ""
        if len(self._ips) > 100_000:
            self._ips.clear()
        self._ips[raw] = ip
        return ip

    def _prune(self, now: float) -> None:
        gap = self.session_gap
        self._sessions = {k: v for k, v in self._sessions.items() if abs(now - v[1]) <= gap}
        self._prune_at = max(self._prune_min, 2 * len(self._sessions))


def parse_ip(raw: bytes | str) -> str | None:
    """``1.2.3.4``, ``IPv6:2001:db8::1`` (as sendmail writes it) -> canonical text, or None."""
    s = raw.decode("ascii", "replace") if isinstance(raw, bytes) else raw
    if s[:5].lower() == "ipv6:":
        s = s[5:]
    try:
        addr = ipaddress.ip_address(s)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


# -- files ---------------------------------------------------------------------------------
def rotated_files(path: str | Path) -> list[Path]:
    """``path`` and its rotations, oldest first.

    Numbered (``maillog.3.gz``, ``maillog.2``, ``maillog.1``: higher is older) then dated
    (``maillog-20261120``, RedHat's dateext, oldest date first), then ``path`` itself.
    """
    p = Path(path)
    numbered: list[tuple[int, Path]] = []
    dated: list[tuple[str, Path]] = []
    try:
        entries = list(p.parent.iterdir())
    except OSError:
        entries = []
    for entry in entries:
        name = entry.name
        if len(name) <= len(p.name) + 1 or not name.startswith(p.name):
            continue
        sep, suffix = name[len(p.name)], name[len(p.name) + 1 :]
        if suffix.endswith(".gz"):
            suffix = suffix[:-3]
        if not suffix.isdigit():
            continue
        if sep == ".":
            numbered.append((int(suffix), entry))
        elif sep == "-":
            dated.append((suffix, entry))
    out = [e for _, e in sorted(numbered, key=lambda t: -t[0])]
    out += [e for _, e in sorted(dated)]
    if p.exists():
        out.append(p)
    return out


def read_chunks(
    path: str | Path,
    chunk_size: int = CHUNK_SIZE,
    max_line: int = MAX_LINE,
    start: int = 0,
    end: int | None = None,
) -> Iterator[bytes]:
    """Whole lines of a (possibly gzip) file, a few MB at a time; bounded memory.

    ``start``, ``end`` (plain files only): read the lines that *begin* at an offset in
    ``[start, end)``; the partial line at ``start`` is dropped, the line running over ``end``
    is finished. Consecutive ranges thus read every line exactly once (parallel pieces).
    """
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    with opener(p, "rb") as fh:
        rest = b""
        pos = 0
        if start > 0:
            fh.seek(start - 1)
            fh.readline()  # up to the end of the line that holds start - 1
            pos = fh.tell()
        while True:
            if end is not None and pos >= end:
                if rest:  # the line in progress began before end: finish it
                    tail = fh.readline(max_line + 1)
                    if len(rest) + len(tail) <= max_line:
                        yield rest + tail
                    rest = b""
                break
            data = fh.read(chunk_size if end is None else min(chunk_size, end - pos))
            if not data:
                break
            pos += len(data)
            if rest:
                data = rest + data
            nl = data.rfind(b"\n")
            if nl < 0:
                rest = data if len(data) <= max_line else b""
                continue
            yield data[: nl + 1]
            rest = data[nl + 1 :]
        if rest:
            yield rest


def _probe_time(fh: BinaryIO, offset: int, times: TimestampReader) -> float | None:
    """Timestamp of the first readable line starting after ``offset``."""
    fh.seek(offset)
    data = fh.read(65536)
    lines = data.split(b"\n")[1:-1] if offset else data.split(b"\n")[:-1]
    for line in lines[:50]:
        if line[:1].isdigit():
            ts = times.iso(line.split(b" ", 1)[0])
        else:
            ts = times.traditional(line[:15])
        if ts is not None:
            return ts
    return None


def window_offset(path: str | Path, since: float, times: TimestampReader, margin: float) -> int:
    """Where to start reading a time-ordered plain log for lines after ``since - margin``.

    Binary search on byte offsets, probing the timestamp of the line after each offset; a
    probe without a readable timestamp is taken as "maybe in the window" (reads more, never
    less). The margin covers lines logged slightly out of order.
    """
    limit = since - margin
    with open(path, "rb") as fh:
        lo, hi = 0, os.fstat(fh.fileno()).st_size
        while hi - lo > 1 << 20:
            mid = (lo + hi) // 2
            ts = _probe_time(fh, mid, times)
            if ts is not None and ts <= limit:
                lo = mid
            else:
                hi = mid
    return lo


def window_end_offset(
    path: str | Path, until: float, times: TimestampReader, margin: float, start: int = 0
) -> int:
    """Where to stop reading a time-ordered plain log: every line after the returned offset
    is later than ``until + margin`` (a replay with ``--now`` of an old day stops there).

    Same binary search as ``window_offset``; an unreadable probe keeps reading (never less).
    """
    limit = until + margin
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        lo, hi = start, size
        if (_probe_time(fh, max(0, size - 65536), times) or limit) <= limit:
            return size  # the usual case: the log ends inside the window
        while hi - lo > 1 << 20:
            mid = (lo + hi) // 2
            ts = _probe_time(fh, mid, times)
            if ts is not None and ts > limit:
                hi = mid
            else:
                lo = mid
    return hi


# -- parallel scan ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Piece:
    """A byte range of one file (``end`` None: to the end; gzip files are never split)."""

    path: str
    start: int = 0
    end: int | None = None


@dataclass
class Partial:
    """What one piece's scan returns to the merge."""

    counts: dict[str, int]
    stats: ScanStats
    firsts: dict[bytes, tuple[str, float]]
    sessions: dict[bytes, tuple[str, float]]


def split_range(start: int, end: int, parts: int, min_size: int = PIECE_MIN) -> list[int]:
    """Boundaries ``[start, b1, ..., end]`` of at most ``parts`` ranges of >= ``min_size``."""
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    n = max(1, min(parts, (end - start) // max(1, min_size)))
    return [start + (end - start) * k // n for k in range(n)] + [end]


def merge_partials(parts: Iterable[Partial], session_gap: float = SESSION_GAP) -> SessionCounter:
    """Join the pieces' results in time order, as one sequential scan would have counted.

    A piece counted the first event of each session key as a new session; if the previous
    pieces left that key open with the same IP within ``session_gap``, it was the same
    connection: one session less. (A check_* line naming two clients at the start of a piece
    cannot be matched with its connection's client of the previous piece: it is counted in
    ``ambiguous`` where a sequential scan would have ignored it; the counts are the same.)
    """
    out = SessionCounter(0, 0, session_gap=session_gap)
    sessions: dict[bytes, tuple[str, float]] = {}
    counts = out.counts
    st = out.stats
    for part in parts:
        for key, (ip, ts) in part.firsts.items():
            prev = sessions.get(key)
            if prev is not None and prev[0] == ip and -session_gap <= ts - prev[1] <= session_gap:
                part.counts[ip] -= 1
                part.stats.sessions -= 1
        sessions.update(part.sessions)
        for ip, n in part.counts.items():
            if n:
                counts[ip] = counts.get(ip, 0) + n
        ps = part.stats
        for name in (
            "lines",
            "candidates",
            "events",
            "sessions",
            "skipped",
            "out_of_window",
            "refusing",
            "ambiguous",
            "bytes",
            "seeked",
        ):
            setattr(st, name, getattr(st, name) + getattr(ps, name))
        st.files += [f for f in ps.files if f not in st.files]
        st.errors += ps.errors
    return out


@dataclass(frozen=True)
class _Job:
    piece: Piece
    since: float
    until: float
    now: float | None
    tz: tzinfo | None
    session_gap: float


def _scan_piece(job: _Job) -> Partial:
    c = SessionCounter(job.since, job.until, now=job.now, tz=job.tz, session_gap=job.session_gap)
    c.firsts = {}
    p = job.piece
    try:
        for chunk in read_chunks(p.path, start=p.start, end=p.end):
            c.feed(chunk)
    except (OSError, EOFError) as exc:
        c.stats.errors.append(f"{p.path}: {exc}")
    return Partial(c.counts, c.stats, c.firsts, c._sessions)


def plan_pieces(
    paths: Iterable[str | Path],
    since: float,
    until: float,
    times: TimestampReader,
    *,
    jobs: int = 1,
    skip_stale: bool = True,
    seek: bool = True,
    margin: float = SESSION_GAP,
    min_piece: int = PIECE_MIN,
) -> tuple[list[Piece], ScanStats]:
    """The byte ranges to read, oldest first: stale rotations skipped, plain files cut to the
    window (``window_offset`` / ``window_end_offset``) and split for ``jobs`` processes."""
    st = ScanStats()
    pieces: list[Piece] = []
    for base in paths:
        for f in rotated_files(base):
            try:
                if skip_stale and os.stat(f).st_mtime <= since:
                    continue
                st.files.append(str(f))
                if f.suffix == ".gz":
                    pieces.append(Piece(str(f)))
                    continue
                size = os.stat(f).st_size
                start, end = 0, size
                if seek:
                    start = window_offset(f, since, times, margin)
                    end = max(start, window_end_offset(f, until, times, margin, start))
                st.seeked += start + (size - end)
                bounds = split_range(start, end, jobs, min_piece)
                pieces += [Piece(str(f), a, b) for a, b in zip(bounds, bounds[1:])]
            except (OSError, EOFError) as exc:
                st.errors.append(f"{f}: {exc}")
    return pieces, st


def scan_logs(
    paths: Iterable[str | Path],
    since: float,
    until: float,
    *,
    now: float | None = None,
    tz: tzinfo | None = None,
    skip_stale: bool = True,
    seek: bool = True,
    session_gap: float = SESSION_GAP,
    jobs: int = 1,
    min_piece: int = PIECE_MIN,
) -> SessionCounter:
    """Count sessions in every configured log and its rotations, oldest file first.

    ``skip_stale``: a file last modified at or before ``since`` holds nothing in the window
    and is not read. ``seek``: in a plain (not gzip) file, start near the window by binary
    search on the timestamps (syslog files are written in time order), so an hourly run
    reads about an hour of log, not the whole day, and stop after it (a replay of an old
    hour). ``jobs`` > 1: pieces (files, byte ranges of plain files of at least ``min_piece``
    bytes) are scanned by that many processes and merged (``merge_partials``): same counts,
    more cores.
    Unreadable or corrupt files are reported in ``stats.errors``.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    counter = SessionCounter(since, until, now=now, tz=tz, session_gap=session_gap)
    pieces, planned = plan_pieces(
        paths,
        since,
        until,
        counter._times,
        jobs=jobs,
        skip_stale=skip_stale,
        seek=seek,
        margin=session_gap,
        min_piece=min_piece,
    )
    if jobs == 1 or len(pieces) < 2:
        for p in pieces:
            try:
                for chunk in read_chunks(p.path, start=p.start, end=p.end):
                    counter.feed(chunk)
            except (OSError, EOFError) as exc:
                counter.stats.errors.append(f"{p.path}: {exc}")
        st = counter.stats
    else:
        import multiprocessing

        work = [_Job(p, since, until, now, tz, session_gap) for p in pieces]
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(min(jobs, len(pieces))) as pool:
            # imap keeps the order (oldest first) and holds at most the pending results
            merged = merge_partials(pool.imap(_scan_piece, work), session_gap)
        counter.counts, st = merged.counts, merged.stats
        counter.stats = st
    st.files = planned.files
    st.seeked += planned.seeked
    st.errors = planned.errors + st.errors
    return counter


# -- one message's lines, for the message trace ------------------------------------------------
# ``parse_sendmail`` reads the fields of the lines about one message (the console's trace,
# ``passerelle.console.trace_ship``); the session counting above never needs them. The same
# rule holds: a line's kind is decided by its start, and a field is read only where sendmail
# writes it, the client's text being kept away from sendmail's own fields:
#
# - ``QID: from=<sender>, size=.., .., msgid=<id>, .., relay=$_``: the sender is the client's
#   (it runs to the first ``, size=``), the Message-ID too (it runs to the next ``, proto=``
#   or ``, bodytype=``), the client field is the last one (as for the session count);
# - ``QID: to=<r1>,<r2>, [ctladdr=.., ]delay=.., mailer=M, pri=.., relay=H, dsn=X.Y.Z,
#   stat=TEXT``: the recipients (the client's, or an alias's) run to the first ``, delay=``
#   (or ``, ctladdr=``); mailer, relay and dsn are read between them and ``, stat=``, the
#   last field, whose text is the next hop's reply (it may quote anything); the kind comes
#   from the dsn class (as ``passerelle check mailflow`` reads it): 2 sent, 4 deferred,
#   5 bounced; the next hop's queue id from sendmail's own reply, ``Sent (QID Message
#   accepted for delivery)``;
# - ``QID: Milter: ...`` / ``QID: Milter (name): ...``: a milter's refusal, kept as text;
# - ``QID: NEWQID: DSN: ...``: the bounce (delivery status notification) made for it;
# - ``QID|NOQUEUE: ruleset=check_rcpt|check_mail, arg1=ADDR, ..., reject=...``: a refusal,
#   with the address refused (the client's text) and the whole text.
# A line of one of these kinds whose sendmail fields cannot be read raises ``LineError``;
# every other line is None. Values are text as logged (8-bit bytes decoded, bad UTF-8
# replaced); their length is the caller's to bound.
class LineError(ValueError):
    """A line of a known kind whose fields cannot be read."""


@dataclass(frozen=True)
class SyslogLine:
    ts: float
    host: str
    program: str
    message: bytes  # after "prog[pid]: "


@dataclass(frozen=True)
class SendmailLine:
    ts: float
    host: str
    queue_id: str  # "" for NOQUEUE
    kind: str  # from | sent | deferred | bounced | milter | dsn | reject
    sender: str = ""
    recipients: tuple[str, ...] = ()
    message_id: str = ""  # without its angle brackets
    relay: str = ""  # from: the client; to: the next hop
    mailer: str = ""
    dsn: str = ""
    status: str = ""  # stat= text
    next_queue_id: str = ""  # the next hop's (sent), the bounce's (dsn)
    detail: str = ""


def split_syslog(line: bytes, times: TimestampReader) -> SyslogLine | None:
    """Timestamp, host, program and message of one syslog line, or None."""
    line = line.rstrip(b"\r\n")
    if line[:1].isdigit():
        hs = line.find(b" ")
        ts = times.iso(line[:hs]) if hs > 0 else None
    else:
        hs = 15
        ts = times.traditional(line[:15]) if line[15:16] == b" " else None
    if ts is None:
        return None
    he = line.find(b" ", hs + 1)
    tag = line.find(b"]: ", he + 1) if he > 0 else -1
    lb = line.rfind(b"[", he + 1, tag) if tag > 0 else -1
    if lb < 0:
        return None
    return SyslogLine(
        ts,
        line[hs + 1 : he].decode("utf-8", "replace"),
        line[he + 1 : lb].decode("utf-8", "replace"),
        line[tag + 3 :],
    )


def _text(b: bytes) -> str:
    return b.decode("utf-8", "replace")


def _bare(addr: bytes) -> str:
    a = addr.strip()
    if a.startswith(b"<") and a.endswith(b">"):
        a = a[1:-1]
    return _text(a)


def _field(msg: bytes, name: bytes, start: int, end: int) -> bytes:
    """``, name=VALUE`` in ``msg[start:end]``; VALUE runs to the next ``, `` or ``end``."""
    i = msg.find(b", " + name + b"=", start, end)
    if i < 0:
        return b""
    vs = i + len(name) + 3
    ve = msg.find(b", ", vs, end)
    return msg[vs : ve if ve >= 0 else end]


_QUEUE_ID_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")


def is_queue_id(word: bytes) -> bool:
    """A sendmail queue id: 6 to 20 ASCII letters and digits."""
    return 6 <= len(word) <= 20 and all(c in _QUEUE_ID_CHARS for c in word)


def _accepted_as(stat: str) -> str:
    # sendmail's own reply to the end of DATA: "Sent (5B1JU1cd004001 Message accepted ...)"
    if stat.startswith("Sent (") and " Message accepted for delivery" in stat:
        word = stat[6:].split(" ", 2)
        qid = word[1] if len(word) > 1 and "." in word[0] else word[0]
        if is_queue_id(qid.encode("ascii", "replace")):
            return qid
    return ""


def parse_sendmail(
    line: bytes, times: TimestampReader, programs: frozenset[bytes] = PROGRAMS
) -> SendmailLine | None:
    """The message-trace fields of one sendmail line (see above), None if it has none."""
    s = split_syslog(line, times)
    if s is None or s.program.encode() not in programs:
        return None
    return sendmail_fields(s)


def sendmail_fields(s: SyslogLine) -> SendmailLine | None:
    """``parse_sendmail`` of a line already split (its program one of sendmail's)."""
    msg = s.message
    colon = msg.find(b": ")
    if colon < 0:
        return None
    head = msg[:colon]
    qid = "" if head == b"NOQUEUE" else _text(head) if is_queue_id(head) else None
    if qid is None:
        return None
    m = colon + 2
    if msg.startswith(b"from=", m):
        if not qid:
            return None
        r = msg.rfind(b", relay=", m)
        se = msg.find(b", size=", m)
        if r < 0 or se < 0:
            raise LineError("from= without its size= or relay= field")
        mid = b""
        i = msg.find(b", msgid=", se, r)
        if i >= 0:
            ends = [
                j for j in (msg.find(b", proto=", i, r), msg.find(b", bodytype=", i, r)) if j >= 0
            ]
            mid = msg[i + 8 : min(ends) if ends else r]
        return SendmailLine(
            s.ts,
            s.host,
            qid,
            "from",
            sender=_bare(msg[m + 5 : se]),
            message_id=_bare(mid),
            relay=_text(msg[r + 8 :]),
        )
    if msg.startswith(b"to=", m):
        if not qid:
            return None
        st = msg.find(b", stat=", m)
        if st < 0:
            raise LineError("to= without its stat= field")
        ends = [j for j in (msg.find(b", delay=", m, st), msg.find(b", ctladdr=", m, st)) if j >= 0]
        rcpt_end = min(ends) if ends else msg.find(b", ", m, st)
        if rcpt_end < 0:
            rcpt_end = st
        status = _text(msg[st + 7 :])
        dsn = _text(_field(msg, b"dsn", rcpt_end, st))
        cls = dsn[:1] or (
            "2" if status.startswith("Sent") else "4" if status.startswith("Deferred") else "5"
        )
        kind = {"2": "sent", "4": "deferred"}.get(cls, "bounced")
        rcpts = tuple(_bare(a) for a in msg[m + 3 : rcpt_end].split(b",") if a.strip())
        return SendmailLine(
            s.ts,
            s.host,
            qid,
            kind,
            recipients=rcpts,
            relay=_text(_field(msg, b"relay", rcpt_end, st)),
            mailer=_text(_field(msg, b"mailer", rcpt_end, st)),
            dsn=dsn,
            status=status,
            next_queue_id=_accepted_as(status) if kind == "sent" else "",
        )
    if msg.startswith(b"Milter: ", m) or msg.startswith(b"Milter (", m):
        return SendmailLine(s.ts, s.host, qid, "milter", detail=_text(msg[m:]))
    if msg.startswith(b"ruleset=check_rcpt, arg1=", m) or msg.startswith(
        b"ruleset=check_mail, arg1=", m
    ):
        a = m + 25
        # "<addr>" may quote ", " in its local part: it ends at its own ">, "
        ae = msg.find(b">, ", a) + 1 if msg.startswith(b"<", a) else msg.find(b", ", a)
        if ae == 0:
            ae = msg.find(b", ", a)
        if ae < 0:
            raise LineError("ruleset= without its fields")
        addr = _bare(msg[a:ae])
        rcpt = msg.startswith(b"rcpt", m + 14)
        return SendmailLine(
            s.ts,
            s.host,
            qid,
            "reject",
            sender="" if rcpt else addr,
            recipients=(addr,) if rcpt else (),
            detail=_text(msg[m:]),
        )
    ds = msg.find(b": DSN: ", m)
    if qid and ds > m and is_queue_id(msg[m:ds]):
        return SendmailLine(
            s.ts, s.host, qid, "dsn", next_queue_id=_text(msg[m:ds]), detail=_text(msg[ds + 2 :])
        )
    return None
