"""The daily report (``passerelle report daily``): one self-contained HTML page per day.

Greylist decisions and delay histogram with whitelist suggestions, spam tiers, viruses, the
busiest clients and the connection guard's blocks, with charts drawn here as inline SVG (no
JavaScript, no stylesheet or font fetched: it reads the same in a mail client, offline). It
is kept on disk (``<output_dir>/YYYY-MM-DD.html``, written atomically) and mailed to the
admins through the local ``sendmail -t`` as a multipart message (text summary + the page).

Sources, all on this host: the milters' decision lines in the mail log and its rotations
(``passerelle.reports.events``) and the SMTP sessions per client (``passerelle.maillog``).
The delay histogram reuses the greylist report's buckets (``greylist.stats``).

``build`` (pure: a ``Tally`` and the session counts in, a ``DayReport`` out) and the
renderers are separate from ``collect_day`` (reads the logs) and ``deliver`` (disk, mail).
"""

from __future__ import annotations

import gzip
import html
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, tzinfo
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from passerelle import adminmail
from passerelle.atomicfile import atomic_write
from passerelle.durations import format_duration
from passerelle.greylist.stats import delay_distribution
from passerelle.maillog import TimestampReader, read_chunks, rotated_files, scan_logs
from passerelle.reports.config import OpsConfig, ReportConfig
from passerelle.reports.events import (
    ANTIVIRUS_RESULTS,
    GREYLIST_DELAYING,
    GREYLIST_REASONS,
    SPAM_TIERS,
    Tally,
    scan_events,
)

SUGGESTIONS_SHOWN = 12
COLORS = {
    "none": "#9aa5b1",
    "LOW": "#f0c419",
    "MEDIUM": "#f08c00",
    "HIGH": "#d9480f",
    "unscanned": "#868e96",
    "tempfail": "#495057",
    "delayed": "#2b8a3e",
    "greylisted": "#e8590c",
    "accepted": "#1c7ed6",
    "bar": "#1c7ed6",
    "virus": "#c92a2a",
    "block": "#c92a2a",
}


@dataclass
class DayReport:
    host: str
    day: str  # YYYY-MM-DD
    start: float
    end: float
    greylist: dict[str, int]
    greylist_hourly: list[dict[str, int]]  # 24 x {greylisted, delayed, accepted}
    delays: dict[str, Any]  # greylist.stats.delay_distribution
    suggestions: list[dict[str, Any]]
    spam: dict[str, int]
    spam_hourly: list[dict[str, int]]  # 24 x {tier: n}
    antivirus: dict[str, int]
    viruses: list[tuple[str, int]]
    spam_clients: list[tuple[str, int]]
    top_clients: list[tuple[str, int]]
    clients_total: int
    sessions_total: int
    connwatch: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)


def day_bounds(day: date, tz: tzinfo | None) -> tuple[float, float]:
    """Local midnight to the next midnight (23 or 25 hours on DST days)."""
    start = datetime.combine(day, time(0), tz)  # tz None: the host's local time
    end = datetime.combine(day + timedelta(days=1), time(0), tz)
    return start.timestamp(), end.timestamp()


def suggestions(
    groups: Mapping[str, Sequence[int]],
    max_delay: Mapping[str, float],
    min_passes: int,
    min_ratio: float,
) -> list[dict[str, Any]]:
    """Client groups that always come back: greylisting only delays them (whitelist them).

    ``groups``: group -> [times it came back (delayed), times it was greylisted]. A group is
    suggested when it came back at least ``min_passes`` times and at least ``min_ratio`` of
    its greylisted triplets came back that day.
    """
    out = []
    for g, (came, grey) in groups.items():
        if came < min_passes or grey <= 0:
            continue
        ratio = min(1.0, came / grey)
        if ratio >= min_ratio:
            out.append(
                {
                    "group": g,
                    "came_back": came,
                    "greylisted": grey,
                    "ratio": round(ratio, 2),
                    "max_delay": max_delay.get(g),
                }
            )
    out.sort(key=lambda d: (-d["came_back"], d["group"]))
    return out


def build(
    tally: Tally,
    sessions: Mapping[str, int],
    host: str,
    day: str,
    start: float,
    end: float,
    cfg: ReportConfig,
) -> DayReport:
    """Aggregate one day's events (pure)."""
    hours = [int(start + 3600 * i) for i in range(max(1, round((end - start) / 3600)))]
    gl_hourly = []
    spam_hourly = []
    for h in hours:
        row = {"greylisted": 0, "delayed": 0, "accepted": 0}
        srow = dict.fromkeys(SPAM_TIERS, 0)
        for (area, label, hh), n in tally.hourly.items():
            if hh != h:
                continue
            if area == "greylist":
                key = (
                    "greylisted"
                    if label in GREYLIST_DELAYING
                    else "delayed"
                    if label == "delayed"
                    else "accepted"
                )
                row[key] += n
            elif area == "spam":
                srow[label] = srow.get(label, 0) + n
        gl_hourly.append(row)
        spam_hourly.append(srow)
    greylist = {r: tally.counts.get(("greylist", r), 0) for r in GREYLIST_REASONS}
    greylist.update(tally.by_label("greylist"))
    spam = {t: tally.counts.get(("spam", t), 0) for t in SPAM_TIERS}
    spam.update(tally.by_label("spam"))
    av = {r: tally.counts.get(("antivirus", r), 0) for r in ANTIVIRUS_RESULTS}
    av.update(tally.by_label("antivirus"))
    top = sorted(sessions.items(), key=lambda kv: (-kv[1], kv[0]))[: cfg.top_clients]
    cw = [
        {
            "time": ev.ts,
            "ip": ev.client,
            "count": ev.count,
            "action": ev.label,
            "direction": ev.group,
        }
        for ev in sorted(tally.connwatch, key=lambda e: e.ts)
    ]
    return DayReport(
        host=host,
        day=day,
        start=start,
        end=end,
        greylist=greylist,
        greylist_hourly=gl_hourly,
        delays=delay_distribution(tally.delays),
        suggestions=suggestions(
            tally.groups, tally.max_delay, cfg.suggest_min_passes, cfg.suggest_min_ratio
        ),
        spam=spam,
        spam_hourly=spam_hourly,
        antivirus=av,
        viruses=sorted(tally.viruses.items(), key=lambda kv: (-kv[1], kv[0])),
        spam_clients=sorted(tally.spam_clients.items(), key=lambda kv: (-kv[1], kv[0]))[
            : cfg.top_clients
        ],
        top_clients=top,
        clients_total=len(sessions),
        sessions_total=sum(sessions.values()),
        connwatch=cw,
    )


# -- SVG charts (pure) ---------------------------------------------------------------------
def _e(v: object) -> str:
    return html.escape(str(v), quote=True)


def _nice_max(v: float) -> int:
    if v <= 0:
        return 1
    m = 1
    while m * 10 <= v:
        m *= 10
    for k in (1, 2, 5, 10):
        if k * m >= v:
            return k * m
    return 10 * m


def _chart_frame(
    title: str, width: int, height: int, left: int, head: int, plot_h: float, top: float
) -> list[str]:
    """An SVG chart's opening: the svg element, its title and 5 grid lines with their values."""
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}">',
        f'<text x="{left}" y="16" class="t">{_e(title)}</text>',
    ]
    for k in range(5):
        y = head + plot_h - plot_h * k / 4
        out.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - 10}" y2="{y:.1f}" class="g"/>'
            f'<text x="{left - 4}" y="{y + 4:.1f}" class="a" text-anchor="end">'
            f"{round(top * k / 4)}</text>"
        )
    return out


def svg_bars(
    labels: Sequence[str],
    values: Sequence[int],
    title: str,
    colors: Sequence[str] | None = None,
    width: int = 560,
    height: int = 220,
) -> str:
    """Vertical bar chart with its values written on the bars."""
    if len(labels) != len(values):
        raise ValueError(f"{len(labels)} labels for {len(values)} values")
    n = max(1, len(values))
    top = _nice_max(max(values, default=0))
    left, bottom, head = 46, 40, 26
    plot_w, plot_h = width - left - 10, height - bottom - head
    bw = plot_w / n
    out = _chart_frame(title, width, height, left, head, plot_h, top)
    for i, (lbl, v) in enumerate(zip(labels, values)):
        h = plot_h * v / top
        x = left + i * bw + bw * 0.12
        y = head + plot_h - h
        color = (colors[i] if colors else None) or COLORS["bar"]
        out.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{bw * 0.76:.1f}" height="{h:.1f}" '
            f'fill="{color}"><title>{_e(lbl)}: {v}</title></rect>'
            f'<text x="{x + bw * 0.38:.1f}" y="{y - 3:.1f}" class="v" text-anchor="middle">'
            f"{v}</text>"
            f'<text x="{x + bw * 0.38:.1f}" y="{height - bottom + 16}" class="a" '
            f'text-anchor="middle">{_e(lbl)}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def svg_stacked_hours(
    rows: Sequence[Mapping[str, int]],
    keys: Sequence[str],
    title: str,
    width: int = 760,
    height: int = 240,
) -> str:
    """Stacked bars per hour of the day, with a legend."""
    n = max(1, len(rows))
    top = _nice_max(max((sum(r.get(k, 0) for k in keys) for r in rows), default=0))
    left, bottom, head = 46, 46, 26
    plot_w, plot_h = width - left - 10, height - bottom - head
    bw = plot_w / n
    out = _chart_frame(title, width, height, left, head, plot_h, top)
    for i, r in enumerate(rows):
        y = head + plot_h
        x = left + i * bw + bw * 0.1
        for key in keys:
            v = r.get(key, 0)
            if not v:
                continue
            h = plot_h * v / top
            y -= h
            out.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bw * 0.8:.1f}" height="{h:.1f}" '
                f'fill="{COLORS.get(key, COLORS["bar"])}"><title>{i:02d}h {_e(key)}: {v}'
                "</title></rect>"
            )
        if i % 3 == 0:
            out.append(
                f'<text x="{x + bw * 0.4:.1f}" y="{head + plot_h + 14}" class="a" '
                f'text-anchor="middle">{i:02d}h</text>'
            )
    lx = left
    for key in keys:
        out.append(
            f'<rect x="{lx}" y="{height - 16}" width="10" height="10" '
            f'fill="{COLORS.get(key, COLORS["bar"])}"/>'
            f'<text x="{lx + 14}" y="{height - 7}" class="a">{_e(key)}</text>'
        )
        lx += 24 + 7 * len(key)
    out.append("</svg>")
    return "".join(out)


def svg_hbars(items: Sequence[tuple[str, int]], title: str, width: int = 560) -> str:
    """Horizontal bars (top-N lists)."""
    row = 20
    height = 30 + row * max(1, len(items))
    top = max((v for _, v in items), default=0) or 1
    label_w = 190
    plot_w = width - label_w - 60
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}">',
        f'<text x="4" y="16" class="t">{_e(title)}</text>',
    ]
    if not items:
        out.append('<text x="4" y="40" class="a">none</text>')
    for i, (lbl, v) in enumerate(items):
        y = 26 + i * row
        w = plot_w * v / top
        out.append(
            f'<text x="{label_w - 6}" y="{y + 13}" class="a" text-anchor="end">{_e(lbl)}</text>'
            f'<rect x="{label_w}" y="{y + 2}" width="{w:.1f}" height="{row - 6}" '
            f'fill="{COLORS["bar"]}"><title>{_e(lbl)}: {v}</title></rect>'
            f'<text x="{label_w + w + 4:.1f}" y="{y + 13}" class="v">{v}</text>'
        )
    out.append("</svg>")
    return "".join(out)


# -- HTML and text (pure) ------------------------------------------------------------------
CSS = """
body{font-family:DejaVu Sans,Verdana,Arial,sans-serif;color:#212529;margin:24px;max-width:1100px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid
#dee2e6;padding-bottom:4px} .sub{color:#6c757d;font-size:13px}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:16px 0}
.card{border:1px solid #dee2e6;border-radius:6px;padding:10px 14px;min-width:130px}
.card b{display:block;font-size:22px} .card span{color:#6c757d;font-size:12px}
table{border-collapse:collapse;font-size:13px;margin:6px 0} td,th{padding:3px 10px;
border-bottom:1px solid #e9ecef;text-align:left} td.n,th.n{text-align:right}
.row{display:flex;gap:24px;flex-wrap:wrap;align-items:flex-start}
svg .t{font-size:13px;font-weight:bold;fill:#343a40} svg .a{font-size:11px;fill:#495057}
svg .v{font-size:10px;fill:#212529} svg .g{stroke:#e9ecef;stroke-width:1}
"""


def _table(head: Sequence[str], rows: Sequence[Sequence[object]], numeric: set[int]) -> str:
    if not rows:
        return '<p class="sub">none</p>'
    th = "".join(
        f'<th class="n">{_e(h)}</th>' if i in numeric else f"<th>{_e(h)}</th>"
        for i, h in enumerate(head)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{_e(v)}</td>' if i in numeric else f"<td>{_e(v)}</td>"
            for i, v in enumerate(r)
        )
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{th}</tr>{body}</table>"


def _hhmm(ts: float, tz: tzinfo | None) -> str:
    return datetime.fromtimestamp(ts, tz).strftime("%H:%M")


def _dur(v: float | None) -> str:
    return "-" if v is None else format_duration(v)


def render_html(r: DayReport, tz: tzinfo | None = None, generated: float | None = None) -> str:
    gl_total = sum(r.greylist.values())
    delayed_451 = sum(r.greylist.get(k, 0) for k in GREYLIST_DELAYING)
    spam_total = sum(r.spam.values())
    virus_total = r.antivirus.get("virus", 0)
    blocks = [c for c in r.connwatch if c["action"] == "block"]
    cards = [
        (gl_total, "greylist decisions"),
        (delayed_451, "delayed (451)"),
        (r.greylist.get("delayed", 0), "came back"),
        (spam_total, "messages scanned for spam"),
        (r.spam.get("HIGH", 0), "spam HIGH (tagged)"),
        (virus_total, "viruses"),
        (r.sessions_total, f"SMTP sessions, {r.clients_total} clients"),
        (len(blocks), "connection guard blocks"),
    ]
    d = r.delays
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Passerelle daily report {_e(r.host)} {_e(r.day)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>Passerelle daily report: {_e(r.host)}, {_e(r.day)}</h1>",
        '<p class="sub">'
        + (
            f"generated {datetime.fromtimestamp(generated, tz):%Y-%m-%d %H:%M}, "
            if generated is not None
            else ""
        )
        + "from the mail log of this host</p>",
        '<div class="cards">'
        + "".join(f'<div class="card"><b>{v}</b><span>{_e(t)}</span></div>' for v, t in cards)
        + "</div>",
        "<h2>Greylisting</h2>",
        svg_stacked_hours(
            r.greylist_hourly,
            ("greylisted", "delayed", "accepted"),
            "Greylist decisions per hour (greylisted = 451, delayed = came back and accepted)",
        ),
        '<div class="row"><div>',
        svg_bars(
            [b["range"] for b in d["buckets"]],
            [b["count"] for b in d["buckets"]],
            f"Delay before the retry was accepted ({d['count']} messages)",
            [COLORS["delayed"]] * len(d["buckets"]),
        ),
        "</div><div>",
        _table(
            ["delay", "value"],
            [(k, _dur(d[k])) for k in ("min", "p50", "p90", "p99", "max")],
            set(),
        ),
        _table(
            ["decision", "count"],
            [(k, v) for k, v in r.greylist.items() if v],
            {1},
        ),
        "</div></div>",
        "<h3>Whitelist suggestions</h3>",
        '<p class="sub">Client groups that came back after (nearly) every delay: greylisting '
        "only slows them down. <code>passerelle greylist whitelist add GROUP</code></p>",
        _table(
            ["client group", "came back", "greylisted", "ratio", "longest delay"],
            [
                (s["group"], s["came_back"], s["greylisted"], s["ratio"], _dur(s["max_delay"]))
                for s in r.suggestions[:SUGGESTIONS_SHOWN]
            ],
            {1, 2, 3},
        ),
        (
            f'<p class="sub">and {len(r.suggestions) - SUGGESTIONS_SHOWN} more</p>'
            if len(r.suggestions) > SUGGESTIONS_SHOWN
            else ""
        ),
        "<h2>Spam</h2>",
        '<div class="row"><div>',
        svg_bars(
            list(SPAM_TIERS),
            [r.spam.get(t, 0) for t in SPAM_TIERS],
            f"Messages by spam tier ({spam_total})",
            [COLORS[t] for t in SPAM_TIERS],
        ),
        "</div><div>",
        svg_hbars(r.spam_clients[:10], "Clients sending the most spam (MEDIUM + HIGH)", 460),
        "</div></div>",
        svg_stacked_hours(r.spam_hourly, ("LOW", "MEDIUM", "HIGH"), "Spam per hour by tier"),
        "<h2>Antivirus</h2>",
        '<div class="row"><div>',
        svg_bars(
            list(ANTIVIRUS_RESULTS),
            [r.antivirus.get(k, 0) for k in ANTIVIRUS_RESULTS],
            f"Messages by antivirus result ({sum(r.antivirus.values())})",
            [COLORS["virus"] if k == "virus" else COLORS["bar"] for k in ANTIVIRUS_RESULTS],
        ),
        "</div><div>",
        "<h3>Viruses found</h3>",
        _table(["signature", "messages"], r.viruses, {1}),
        "</div></div>",
        "<h2>Clients</h2>",
        svg_hbars(r.top_clients[:20], f"Busiest clients (SMTP sessions, of {r.clients_total})"),
        "<h2>Connection guard</h2>",
        _table(
            ["time", "client", "connections", "decision", "direction"],
            [
                (_hhmm(c["time"], tz), c["ip"], c["count"], c["action"], c["direction"])
                for c in r.connwatch
            ],
            {2},
        ),
    ]
    if r.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in r.notes))
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def render_text(r: DayReport) -> str:
    d = r.delays
    lines = [
        f"Passerelle daily report: {r.host}, {r.day}",
        "",
        "Greylist: "
        + ", ".join(f"{k} {v}" for k, v in r.greylist.items() if v)
        + (f"; delays p50 {_dur(d['p50'])}, p90 {_dur(d['p90'])}" if d["count"] else ""),
        "Whitelist suggestions: "
        + (", ".join(f"{s['group']} ({s['came_back']})" for s in r.suggestions[:10]) or "none"),
        "Spam: " + ", ".join(f"{k} {v}" for k, v in r.spam.items()),
        "Antivirus: "
        + ", ".join(f"{k} {v}" for k, v in r.antivirus.items())
        + ("; viruses: " + ", ".join(f"{s} ({n})" for s, n in r.viruses[:10]) if r.viruses else ""),
        f"Clients: {r.clients_total}, sessions {r.sessions_total}; busiest: "
        + (", ".join(f"{ip} ({n})" for ip, n in r.top_clients[:5]) or "none"),
        "Connection guard: "
        + (
            ", ".join(f"{c['ip']} {c['action']} ({c['count']})" for c in r.connwatch[:10])
            or "nothing"
        ),
        "",
        "The full report with charts is attached (HTML).",
    ]
    return "\n".join(lines) + "\n"


def build_mail(
    r: DayReport, html_text: str, sender: str, to: Sequence[str], text: str | None = None
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Subject"] = f"[passerelle] daily report {r.host} {r.day}"
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(text if text is not None else render_text(r))
    msg.add_alternative(html_text, subtype="html")
    return msg.as_bytes()


# -- I/O -----------------------------------------------------------------------------------
def collect_day(
    cfg: OpsConfig, day: date, now: float, tz: tzinfo | None = None
) -> tuple[Tally, dict[str, int], float, float, list[str]]:
    """Read the day's lines from the logs and their rotations (files last written before the
    day are skipped). Returns (tally, sessions per client, start, end, problems)."""
    start, end = day_bounds(day, tz)
    times = TimestampReader(now, tz)
    tally = Tally()
    notes: list[str] = []
    for base in cfg.logs:
        files = rotated_files(base)
        if not files:
            notes.append(f"{base}: no such file")
        for f in files:
            try:
                if os.stat(f).st_mtime < start:
                    continue
                for chunk in read_chunks(f):
                    for ev in scan_events(chunk, times):
                        if start <= ev.ts < end:
                            tally.add(ev)
            except (OSError, EOFError, gzip.BadGzipFile) as exc:
                notes.append(f"{f}: {exc}")
    counter = scan_logs(cfg.logs, start, end, now=now, tz=tz)
    notes += counter.stats.errors
    return tally, counter.counts, start, end, notes


@dataclass
class Delivered:
    path: Path
    mailed: list[str]
    errors: list[str]


def deliver(
    cfg: OpsConfig,
    r: DayReport,
    html_text: str,
    output_dir: str | None = None,
    mail_to: Sequence[str] | None = None,
    mailer: adminmail.Mailer = adminmail.send_mail,
    now: float | None = None,
) -> Delivered:
    """Write ``<dir>/<day>.html`` atomically, delete reports older than keep_days, mail it."""
    rc_cfg = cfg.report
    out_dir = Path(output_dir or rc_cfg.output_dir)
    path = out_dir / f"{r.day}.html"
    atomic_write(path, html_text.encode(), 0o644)
    errors: list[str] = []
    if now is not None:
        for old in out_dir.glob("????-??-??.html"):
            try:
                if now - old.stat().st_mtime > rc_cfg.keep_days * 86400:
                    old.unlink()
            except OSError as exc:
                errors.append(f"{old}: {exc}")
    to = list(mail_to if mail_to is not None else rc_cfg.mail_to)
    mailed: list[str] = []
    if to:
        msg = build_mail(r, html_text, rc_cfg.mail_from, to)
        rc, text = mailer(list(rc_cfg.mail_command), msg)
        if rc != 0:
            errors.append(f"mail to {', '.join(to)} failed ({rc}): {text.strip()[:200]}")
        else:
            mailed = to
    return Delivered(path, mailed, errors)
