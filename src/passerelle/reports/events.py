"""The decisions of Passerelle's milters and of the connection guard, read from the mail log.

Each milter logs one line per decision (syslog, facility mail), so the metrics, the status
screen and the daily report count the same thing from the same place on every host, with no
extra state in the milters and nothing to query on the shared database:

- greylist (one line per recipient)::

      passerelle-greylist[812]: greylisted client=192.0.2.1 group=192.0.2.0/24 from=<a@b>
          to=<c@d> reason=new                     (new | early | restart)
      passerelle-greylist[812]: accepted client=... group=... from=<..> to=<..> delay=41m
          reason=delayed                           (delayed | passed)
      passerelle-greylist[812]: accepted client=192.0.2.1 group=192.0.2.0/24 reason=trusted
          (an exemption: trusted | client | auth | sender | recipient | auto)
      passerelle-greylist[812]: store unavailable, greylisting skipped client=192.0.2.1
          reason=store-error (...)

- spam (one line per message)::

      passerelle-spam[813]: 4ARxyz: client=mx.example.net[192.0.2.1] score=6.2 required=5
          tier=HIGH tests=... spamd=127.0.0.1:783 time=0.41s
      (tier none | LOW | MEDIUM | HIGH; ``unscanned`` for too large / spamd down and
      accepted; ``tempfail`` for spamd down with the tempfail policy)

- antivirus (one line per message)::

      passerelle-antivirus[814]: 4ARxyz: from=<a@b> rcpts=1 size=300 client=mx [192.0.2.1]
          quarantined 20261127-ab12 (signature: Eicar-Signature) -> discard

  results: ``clean``, ``virus`` (with its signature), ``rule``, ``held`` (outbreak mode),
  ``unscanned`` (too large or clamd down, accepted), ``error`` (clamd down: 451).

- connection guard::

      passerelle-connwatch[815]: connwatch inbound: 198.51.100.7 made 3000 connections in
          1h (> 2500): blocked

The text of each line is defined once, in ``passerelle.decisionlog``, which the milters and
the connection guard write with and this module reads with.

Pure: ``parse_line`` turns one line into an ``Event``; ``Tally`` adds events up;
``scan_events`` reads whole chunks (a cheap ``bytes.find`` prefilter: only lines holding
`` passerelle-`` are parsed).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from passerelle import decisionlog
from passerelle.decisionlog import (  # noqa: F401  (re-exported: metrics, report)
    ANTIVIRUS_RESULTS,
    CONNWATCH_ACTIONS,
    GREYLIST_DELAYING,
    GREYLIST_REASONS,
    SPAM_TIERS,
)
from passerelle.maillog import TimestampReader

AREAS = {
    b"passerelle-greylist": "greylist",
    b"passerelle-spam": "spam",
    b"passerelle-antivirus": "antivirus",
    b"passerelle-connwatch": "connwatch",
}


@dataclass(frozen=True)
class Event:
    ts: float
    area: str  # greylist | spam | antivirus | connwatch
    label: str  # the reason, tier, result or action (see the module's docstring)
    client: str = ""  # IP (greylist: the client; connwatch: the counted client)
    detail: str = ""  # greylist: delay seconds; spam: score; antivirus: signature; connwatch
    group: str = ""  # greylist: the client group (/24, /64); connwatch: the direction
    count: int = 0  # connwatch: connections


def parse_message(area: str, msg: str, ts: float = 0.0) -> Event | None:
    """The decision in one milter log message (the text after ``prog[pid]: ``), or None.

    The lines are read by ``passerelle.decisionlog``, the module their writers use.
    """
    if area == "greylist":
        g = decisionlog.parse_greylist(msg)
        if g is None:
            return None
        delay = str(g.delay) if g.delay is not None else ""
        return Event(ts, area, g.reason, g.client, delay, g.group)
    if area == "spam":
        s = decisionlog.parse_spam(msg)
        if s is None:
            return None
        detail = s.score if s.score else ("" if s.tier == "tempfail" else s.rest[:80])
        return Event(ts, area, s.tier, s.ip, detail)
    if area == "antivirus":
        a = decisionlog.parse_antivirus(msg)
        if a is None:
            return None
        return Event(ts, area, a.label, a.client_ip, a.signature)
    if area == "connwatch":
        c = decisionlog.parse_connwatch(msg)
        if c is None:
            return None
        return Event(ts, area, c.action, c.ip, group=c.direction, count=c.count)
    return None


def parse_line(line: bytes, times: TimestampReader) -> Event | None:
    """One syslog line (traditional or ISO timestamp) -> Event, or None if not a decision."""
    if line[:1].isdigit():
        sp = line.find(b" ")
        ts = times.iso(line[:sp]) if sp > 0 else None
        hs = sp
    else:
        ts = times.traditional(line[:15])
        hs = 15
    if ts is None or hs < 0:
        return None
    he = line.find(b" ", hs + 1)
    if he < 0:
        return None
    lb = line.find(b"[", he + 1)
    tag_end = line.find(b"]: ", he + 1)
    if lb < 0 or tag_end < lb:
        return None
    area = AREAS.get(line[he + 1 : lb])
    if area is None:
        return None
    msg = line[tag_end + 3 :].rstrip(b"\r\n").decode("utf-8", "replace")
    return parse_message(area, msg, ts)


def scan_events(buf: bytes, times: TimestampReader) -> Iterable[Event]:
    """Events in a chunk of whole lines; only lines holding `` passerelle-`` are parsed."""
    find = buf.find
    rfind = buf.rfind
    end = len(buf)
    i = find(b" passerelle-")
    while i >= 0:
        ls = rfind(b"\n", 0, i) + 1
        nl = find(b"\n", i)
        if nl < 0:
            nl = end
        ev = parse_line(buf[ls:nl], times)
        if ev is not None:
            yield ev
        i = find(b" passerelle-", nl)


@dataclass
class Tally:
    """Counts of events by (area, label), by hour, and the details reports need."""

    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    hourly: dict[tuple[str, str, int], int] = field(default_factory=dict)
    delays: list[float] = field(default_factory=list)
    viruses: dict[str, int] = field(default_factory=dict)
    spam_clients: dict[str, int] = field(default_factory=dict)  # HIGH and MEDIUM per client
    groups: dict[str, list[int]] = field(default_factory=dict)  # group: [delayed, greylisted]
    max_delay: dict[str, float] = field(default_factory=dict)
    connwatch: list[Event] = field(default_factory=list)
    keep_details: bool = True

    def add(self, ev: Event) -> None:
        key = (ev.area, ev.label)
        self.counts[key] = self.counts.get(key, 0) + 1
        if not self.keep_details:
            return
        h = int(ev.ts // 3600 * 3600)
        hk = (ev.area, ev.label, h)
        self.hourly[hk] = self.hourly.get(hk, 0) + 1
        if ev.area == "greylist":
            if ev.group and ev.label in ("new", "restart", "delayed"):
                g = self.groups.setdefault(ev.group, [0, 0])
                g[0 if ev.label == "delayed" else 1] += 1
            if ev.label == "delayed" and ev.detail:
                d = float(ev.detail)
                self.delays.append(d)
                if d > self.max_delay.get(ev.group, -1.0):
                    self.max_delay[ev.group] = d
        elif ev.area == "antivirus" and ev.label == "virus":
            sig = ev.detail or "unknown"
            self.viruses[sig] = self.viruses.get(sig, 0) + 1
        elif ev.area == "spam" and ev.label in ("HIGH", "MEDIUM") and ev.client:
            self.spam_clients[ev.client] = self.spam_clients.get(ev.client, 0) + 1
        elif ev.area == "connwatch":
            self.connwatch.append(ev)

    def total(self, area: str, label: str | None = None) -> int:
        return sum(n for (a, lbl), n in self.counts.items() if a == area and label in (None, lbl))

    def by_label(self, area: str) -> dict[str, int]:
        return {lbl: n for (a, lbl), n in sorted(self.counts.items()) if a == area}
