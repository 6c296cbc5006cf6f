"""``passerelle status``: one screen with the health of this host.

Daemons (the systemd units of the config that exist here), queue length, age of the newest
virus signature file, and today's greylist / spam / antivirus / connection guard counts (from
the state ``passerelle metrics write`` keeps). The probes (``probe``) are the only I/O; the
screen and the verdict (``assess``) are pure, with the clock passed in.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone, tzinfo
from pathlib import Path

from passerelle import __version__
from passerelle.durations import format_duration
from passerelle.reports.config import OpsConfig
from passerelle.reports.events import GREYLIST_DELAYING
from passerelle.reports.metrics import queue_length, today_counts

SIGNATURE_SUFFIXES = (".cvd", ".cld", ".cud", ".hdb", ".hsb", ".ndb", ".ldb", ".yar")
SIGNATURES_OLD = 24 * 3600  # older: WARNING (freshclam runs every 15 minutes)
QUEUE_WARNING = 500


@dataclass(frozen=True)
class Unit:
    name: str
    active: str  # active | inactive | failed | activating | ...
    sub: str = ""  # running | dead | exited | ...


@dataclass
class Snapshot:
    """Everything the screen shows, as probed."""

    host: str
    now: float
    version: str = ""  # the passerelle package's version on this host
    units: list[Unit] = field(default_factory=list)
    queues: dict[str, int] = field(default_factory=dict)
    signatures: tuple[str, float] | None = None  # (newest file, its mtime)
    today: dict[str, int] | None = None  # "area|label" -> count (None: no metrics yet)
    problems: list[str] = field(default_factory=list)  # probes that failed


@dataclass(frozen=True)
class Status:
    state: str  # OK | WARNING | CRITICAL
    lines: list[str]

    @property
    def exit_code(self) -> int:
        return {"OK": 0, "WARNING": 1}.get(self.state, 2)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _sum(today: Mapping[str, int], area: str, labels: Sequence[str] | None = None) -> int:
    return sum(
        n
        for k, n in today.items()
        if k.startswith(area + "|") and (labels is None or k.split("|", 1)[1] in labels)
    )


def assess(s: Snapshot, tz: tzinfo | None = timezone.utc) -> Status:
    """The screen and its verdict: CRITICAL if a daemon is down, WARNING for an old
    signature set, a long queue or a probe that failed."""
    crit: list[str] = []
    warn: list[str] = list(s.problems)
    when = datetime.fromtimestamp(s.now, tz).strftime("%Y-%m-%d %H:%M %Z").strip()
    head = f"{s.host}  {when}" + (f"  passerelle {s.version}" if s.version else "")
    lines = [head, "", "daemons:"]
    if not s.units:
        lines.append("  (none of the configured units is installed)")
    width = max((len(u.name) for u in s.units), default=0)
    for u in s.units:
        ok = u.active == "active"
        mark = "ok  " if ok else "DOWN"
        lines.append(f"  {mark} {u.name:<{width}}  {u.active}{f' ({u.sub})' if u.sub else ''}")
        if not ok:
            crit.append(f"{u.name} {u.active}")
    total = sum(s.queues.values())
    detail = ", ".join(f"{q} {n}" for q, n in sorted(s.queues.items()))
    lines += ["", f"queue:      {total} message(s)" + (f" ({detail})" if detail else " (no queue)")]
    if total > QUEUE_WARNING:
        warn.append(f"queue {total} > {QUEUE_WARNING}")
    if s.signatures is None:
        lines.append("signatures: none found")
    else:
        name, mtime = s.signatures
        age = max(0.0, s.now - mtime)
        lines.append(f"signatures: updated {format_duration(age)} ago ({name})")
        if age > SIGNATURES_OLD:
            warn.append(f"signatures {format_duration(age)} old")
    if s.today is None:
        lines.append("today:      no counts yet (passerelle metrics write has not run)")
    else:
        t = s.today
        gl = _sum(t, "greylist")
        delayed = _sum(t, "greylist", GREYLIST_DELAYING)
        came = t.get("greylist|delayed", 0)
        lines.append(
            f"today:      greylist {gl} decision(s): {delayed} delayed (451), "
            f"{came} came back, {gl - delayed - came} accepted"
        )
        tiers = " ".join(f"{k} {t.get('spam|' + k, 0)}" for k in ("HIGH", "MEDIUM", "LOW"))
        lines.append(
            f"            spam {_sum(t, 'spam')} message(s): {tiers}, "
            f"unscanned {t.get('spam|unscanned', 0) + t.get('spam|tempfail', 0)}"
        )
        lines.append(
            f"            antivirus {_sum(t, 'antivirus')} message(s): "
            f"{t.get('antivirus|virus', 0)} virus(es); "
            f"connection guard: {t.get('connwatch|block', 0)} block(s), "
            f"{t.get('connwatch|alert', 0)} alert(s)"
        )
    state = "CRITICAL" if crit else "WARNING" if warn else "OK"
    lines += ["", f"{state}" + (": " + "; ".join(crit + warn) if crit or warn else "")]
    return Status(state, lines)


# -- probes (I/O) --------------------------------------------------------------------------
Runner = Callable[[Sequence[str]], tuple[int, str]]


def run(argv: Sequence[str]) -> tuple[int, str]:
    try:
        p = subprocess.run(list(argv), capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, str(exc)
    return p.returncode, p.stdout


def parse_systemctl_show(text: str) -> list[Unit]:
    """``systemctl show -p Id,LoadState,ActiveState,SubState u1 u2``: blocks separated by a
    blank line; units not installed (LoadState=not-found) are left out."""
    units = []
    for block in text.strip().split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if not props.get("Id") or props.get("LoadState") in ("not-found", "masked", None):
            continue
        name = props["Id"].removesuffix(".service")
        units.append(Unit(name, props.get("ActiveState", "unknown"), props.get("SubState", "")))
    return units


def newest_signature(directory: str | Path) -> tuple[str, float] | None:
    d = Path(directory)
    best: tuple[str, float] | None = None
    try:
        entries = list(d.iterdir())
    except OSError:
        return None
    for e in entries:
        if e.suffix in SIGNATURE_SUFFIXES:
            try:
                m = e.stat().st_mtime
            except OSError:
                continue
            if best is None or m > best[1]:
                best = (e.name, m)
    return best


def probe_units(units: Sequence[str], runner: Runner = run) -> tuple[list[Unit], str]:
    """(the installed units among ``units``, with their state; "" or why it failed)."""
    if not units:
        return [], ""
    rc, out = runner(["systemctl", "show", "-p", "Id,LoadState,ActiveState,SubState", "--", *units])
    if rc != 0:
        return [], f"systemctl show failed ({rc}): {out.strip()[:200]}"
    return parse_systemctl_show(out), ""


def probe(cfg: OpsConfig, now: float, runner: Runner = run, tz: tzinfo | None = None) -> Snapshot:
    s = Snapshot(cfg.hostname, now, version=__version__)
    s.units, problem = probe_units(cfg.units, runner)
    if problem:
        s.problems.append(problem)
    for q in cfg.queue_dirs:
        n = queue_length(q)
        if n is not None:
            s.queues[q] = n
    s.signatures = newest_signature(cfg.signature_dir)
    s.today = today_counts(cfg, now, tz)
    return s
