"""Nagios checks of a Passerelle host (``passerelle check ...``), run by NRPE.

Each check returns a :class:`Result`: a Nagios state (exit status 0 OK, 1 WARNING,
2 CRITICAL, 3 UNKNOWN), one line of text and optional performance data. The decisions
(thresholds, protocol replies, what counts as a restart) are pure functions; the I/O around
them (sockets, files, ``/proc``) takes its paths, timeouts and clock as arguments so that
tests drive them with fixtures.

- ``milter``: a milter negotiation (SMFIC_OPTNEG) on the milter's socket: the milter is
  alive and answering, not only its process present.
- ``queue``: messages in sendmail's queue (``qf`` files), warning/critical thresholds.
- ``memory``: memory in use (MemTotal - MemAvailable) in percent.
- ``db``: the shared MariaDB answers with a server greeting (no login needed).
- ``restarts``: restarts of the watched daemons in the last hour, from the process watch's
  state file (``passerelle watch``): systemd's own restarts and the watch's starts.
- ``status-file``: a status line written by another tool (the connection guard), stale
  after ``max_age``.
- ``backup``: the newest complete backup of the host (role ``backup``) is younger than
  ``max_age`` (about a day and two hours for a nightly run), and the last run did not fail.

``console`` (the web console answers, its database is read, every gateway's side reports) is
``passerelle.console.health``; ``mailflow`` (a probe message through this host, followed in
the mail log) has its own module, ``passerelle.supervision.mailflow``.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATE_NAMES = ("OK", "WARNING", "CRITICAL", "UNKNOWN")


@dataclass(frozen=True)
class Result:
    state: int
    text: str
    perf: str = ""

    def line(self, label: str) -> str:
        out = f"{label} {STATE_NAMES[self.state]} - {self.text}"
        return f"{out} | {self.perf}" if self.perf else out


def threshold_state(value: float, warning: float, critical: float) -> int:
    """CRITICAL when ``value >= critical``, WARNING when ``value >= warning``, else OK."""
    if value >= critical:
        return CRITICAL
    if value >= warning:
        return WARNING
    return OK


def check_thresholds(warning: float, critical: float, what: str) -> None:
    if warning < 0 or critical < 0:
        raise ValueError(f"{what}: thresholds must not be negative (-w {warning}, -c {critical})")
    if critical < warning:
        raise ValueError(f"{what}: critical ({critical}) must be >= warning ({warning})")


# -- milter negotiation ------------------------------------------------------------------
SMFIC_OPTNEG = b"O"
SMFIC_QUIT = b"Q"
# Version 6, every action and protocol step libmilter may offer: the milter answers with
# what it wants.
_OPTNEG_BODY = struct.pack("!III", 6, 0x1FF, 0x1FFFFF)


def optneg_packet() -> bytes:
    body = SMFIC_OPTNEG + _OPTNEG_BODY
    return struct.pack("!I", len(body)) + body


def parse_optneg_reply(data: bytes) -> Result:
    """The milter's reply to SMFIC_OPTNEG: ``O`` + version, actions, protocol steps."""
    if len(data) < 5:
        return Result(CRITICAL, f"short reply ({len(data)} bytes) to the negotiation")
    (length,) = struct.unpack("!I", data[:4])
    cmd = data[4:5]
    if cmd != SMFIC_OPTNEG or length < 13 or len(data) < 4 + 13:
        return Result(CRITICAL, f"unexpected reply {data[:16]!r} to the negotiation")
    version, actions, proto = struct.unpack("!III", data[5:17])
    return Result(OK, f"negotiated (version {version}, actions 0x{actions:x}, steps 0x{proto:x})")


def socket_address(spec: str) -> tuple[int, str | tuple[str, int]]:
    """sendmail's socket spec (``unix:/path``, ``local:/path``, ``inet:PORT@HOST``, a path)."""
    if spec.startswith(("unix:", "local:")):
        return socket.AF_UNIX, spec.split(":", 1)[1]
    if spec.startswith("/"):
        return socket.AF_UNIX, spec
    if spec.startswith(("inet:", "inet6:")):
        kind, rest = spec.split(":", 1)
        port, _, host = rest.partition("@")
        if not port.isdigit():
            raise ValueError(f"not a milter socket: {spec!r} (port)")
        fam = socket.AF_INET6 if kind == "inet6" else socket.AF_INET
        return fam, (host or "127.0.0.1", int(port))
    raise ValueError(f"not a milter socket: {spec!r} (unix:/path or inet:PORT@HOST)")


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf


def check_milter(
    spec: str, timeout: float = 5.0, clock: Callable[[], float] = time.monotonic
) -> Result:
    try:
        family, addr = socket_address(spec)
    except ValueError as exc:
        return Result(UNKNOWN, str(exc))
    t0 = clock()
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(addr)
            s.sendall(optneg_packet())
            head = _recv_exactly(s, 4)
            if len(head) == 4:
                (length,) = struct.unpack("!I", head)
                data = head + _recv_exactly(s, min(length, 1 << 16))
            else:
                data = head
            quit_body = SMFIC_QUIT
            s.sendall(struct.pack("!I", len(quit_body)) + quit_body)
    except OSError as exc:
        return Result(CRITICAL, f"{spec}: {exc.strerror or exc}")
    elapsed = clock() - t0
    res = parse_optneg_reply(data)
    return Result(res.state, f"{spec}: {res.text}", f"time={elapsed:.3f}s;;;0")


# -- mail queue ----------------------------------------------------------------------------
def count_queue(directory: str | Path) -> int:
    """Messages in a sendmail queue folder: its ``qf*`` files (also in a ``qf/`` subfolder)."""
    d = Path(directory)
    n = 0
    for sub in (d, d / "qf"):
        try:
            with os.scandir(sub) as it:
                n += sum(1 for e in it if e.name.startswith("qf") and e.is_file())
        except FileNotFoundError:
            if sub == d:
                raise
    return n


def queue_result(count: int, warning: int, critical: int, directory: str) -> Result:
    state = threshold_state(count, warning, critical)
    return Result(
        state,
        f"{count} message(s) in {directory}",
        f"queue={count};{warning};{critical};0",
    )


def check_queue(directories: Sequence[str], warning: int, critical: int) -> Result:
    try:
        total = sum(count_queue(d) for d in directories)
    except OSError as exc:
        return Result(UNKNOWN, f"cannot read the queue: {exc}")
    return queue_result(total, warning, critical, ", ".join(directories))


# -- memory --------------------------------------------------------------------------------
def parse_meminfo(text: str) -> dict[str, int]:
    """``/proc/meminfo`` -> {field: kB}."""
    out = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[name.strip()] = int(parts[0])
    return out


def memory_result(meminfo: Mapping[str, int], warning: float, critical: float) -> Result:
    total = meminfo.get("MemTotal", 0)
    if total <= 0:
        return Result(UNKNOWN, "no MemTotal in /proc/meminfo")
    avail = meminfo.get("MemAvailable")
    if avail is None:  # kernels before 3.14
        avail = sum(meminfo.get(k, 0) for k in ("MemFree", "Buffers", "Cached"))
    used_pct = 100.0 * (total - avail) / total
    state = threshold_state(used_pct, warning, critical)
    return Result(
        state,
        f"{used_pct:.1f}% used, {avail // 1024} MB available of {total // 1024} MB",
        f"used={used_pct:.1f}%;{warning};{critical};0;100",
    )


def check_memory(warning: float, critical: float, path: str = "/proc/meminfo") -> Result:
    try:
        text = Path(path).read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        return Result(UNKNOWN, f"{path}: {exc}")
    return memory_result(parse_meminfo(text), warning, critical)


# -- shared database -----------------------------------------------------------------------
def parse_mysql_greeting(data: bytes) -> Result:
    """A MySQL/MariaDB server greeting: 3-byte length, sequence 0, protocol 10, version."""
    if len(data) < 6:
        return Result(CRITICAL, f"no server greeting ({len(data)} bytes)")
    proto = data[4]
    if proto == 0xFF:
        # An error packet: 0xff, 2-byte code, message (e.g. "Host ... is not allowed").
        code = struct.unpack("<H", data[5:7])[0] if len(data) >= 7 else 0
        msg = data[7:].decode("utf-8", "replace").lstrip("#").strip()
        return Result(CRITICAL, f"server refused the connection: error {code} {msg}")
    if proto != 10:
        return Result(CRITICAL, f"not a MySQL protocol 10 greeting (byte {proto})")
    version = data[5:].split(b"\0", 1)[0].decode("ascii", "replace")
    return Result(OK, f"server {version} answers")


def check_db(
    host: str, port: int, timeout: float = 5.0, clock: Callable[[], float] = time.monotonic
) -> Result:
    t0 = clock()
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            head = _recv_exactly(s, 4)
            length = int.from_bytes(head[:3], "little") if len(head) == 4 else 0
            data = head + _recv_exactly(s, min(length, 4096))
    except OSError as exc:
        return Result(CRITICAL, f"{host}:{port}: {exc.strerror or exc}")
    elapsed = clock() - t0
    res = parse_mysql_greeting(data)
    return Result(res.state, f"{host}:{port}: {res.text}", f"time={elapsed:.3f}s;;;0")


# -- restarts (from the process watch's state file) ----------------------------------------
def restarts_result(
    events: Sequence[Mapping[str, object]],
    now: float,
    window: float,
    warning: int,
    critical: int,
) -> Result:
    """Restarts in ``(now - window, now]`` per unit; the state follows the busiest unit."""
    per_unit: dict[str, list[Mapping[str, object]]] = {}
    for e in events:
        ts = e.get("time")
        if not isinstance(ts, (int, float)) or not (now - window < ts <= now):
            continue
        per_unit.setdefault(str(e.get("unit", "?")), []).append(e)
    total = sum(len(v) for v in per_unit.values())
    busiest = max((len(v) for v in per_unit.values()), default=0)
    state = threshold_state(busiest, warning, critical) if busiest else OK
    mins = int(window // 60)
    if not per_unit:
        text = f"no daemon restarted in the last {mins} min"
    else:
        parts = []
        for unit in sorted(per_unit, key=lambda u: (-len(per_unit[u]), u)):
            kinds = sorted({str(e.get("kind", "restart")) for e in per_unit[unit]})
            last = max(float(e["time"]) for e in per_unit[unit])  # type: ignore[arg-type]
            ago = int((now - last) // 60)
            parts.append(f"{unit} x{len(per_unit[unit])} ({'/'.join(kinds)}, last {ago} min ago)")
        text = f"restarts in the last {mins} min: " + ", ".join(parts)
    return Result(state, text, f"restarts={total};{warning};{critical};0")


def check_restarts(
    state_file: str, now: float, window: float, warning: int, critical: int, max_age: float
) -> Result:
    p = Path(state_file)
    try:
        st = p.stat()
        doc = json.loads(p.read_text(encoding="utf-8"))
        events = doc["events"]
        if not isinstance(events, list):
            raise TypeError("events is not a list")
    except FileNotFoundError:
        return Result(UNKNOWN, f"{state_file} missing: is passerelle-watch.timer running?")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return Result(UNKNOWN, f"{state_file}: {exc}")
    if now - st.st_mtime > max_age:
        return Result(UNKNOWN, f"{state_file} not updated for {int(now - st.st_mtime)} s")
    res = restarts_result(events, now, window, warning, critical)
    down = doc.get("down", {})
    if isinstance(down, dict) and down:
        names = ", ".join(sorted(down))
        return Result(max(res.state, WARNING), f"down now: {names}; {res.text}", res.perf)
    return res


# -- status file of another tool -----------------------------------------------------------
def status_file_result(line: str, age: float, max_age: float, path: str) -> Result:
    if age > max_age:
        return Result(UNKNOWN, f"{path} is stale ({int(age // 60)} min old)")
    text, _, perf = line.strip().partition(" | ")
    word = text.split(" ", 1)[0]
    state = {"OK": OK, "WARNING": WARNING, "CRITICAL": CRITICAL}.get(word, UNKNOWN)
    rest = text.split(" - ", 1)[1] if " - " in text else text
    return Result(state, rest or f"empty status in {path}", perf.strip())


def check_status_file(path: str, now: float, max_age: float) -> Result:
    p = Path(path)
    try:
        age = now - p.stat().st_mtime
        line = p.read_text(encoding="utf-8", errors="replace").splitlines()[0]
    except FileNotFoundError:
        return Result(UNKNOWN, f"{path} missing (the tool has not run yet)")
    except (OSError, IndexError) as exc:
        return Result(UNKNOWN, f"{path}: {exc or 'empty'}")
    return status_file_result(line, age, max_age, path)


# -- backups (the backup role's nightly run) ------------------------------------------------
def backup_result(
    latest: tuple[str, float] | None,
    last_run: Mapping[str, object] | None,
    now: float,
    max_age: float,
    where: str,
) -> Result:
    """CRITICAL when the newest complete backup (name, time) is older than ``max_age`` or
    there is none; WARNING when it is young enough but the last run failed."""
    failed = ""
    if last_run is not None and last_run.get("ok") is False:
        failed = f"the last run failed: {str(last_run.get('error', '?'))[:200]}"
    if latest is None:
        return Result(CRITICAL, f"no backup in {where}" + (f"; {failed}" if failed else ""))
    name, made = latest
    age = max(0.0, now - made)
    text = f"last backup {name}, {age / 3600:.1f} h old"
    perf = f"age={int(age)}s;;{int(max_age)};0"
    if age > max_age:
        limit = f"older than {max_age / 3600:g} h"
        return Result(CRITICAL, f"{text}, {limit}" + (f"; {failed}" if failed else ""), perf)
    if failed:
        return Result(WARNING, f"{text}; {failed}", perf)
    return Result(OK, text, perf)


def check_backup(config: str, now: float, max_age: float) -> Result:
    from passerelle.backup.config import load_config
    from passerelle.backup.engine import LAST_RUN, scan
    from passerelle.config import ConfigError

    try:
        cfg = load_config(config)
    except ConfigError as exc:
        return Result(UNKNOWN, str(exc))
    try:
        listing = scan(cfg.directory)
    except OSError as exc:
        return Result(UNKNOWN, f"{cfg.directory}: {exc.strerror or exc}")
    latest = (listing.complete[-1].name, listing.complete[-1].created) if listing.complete else None
    try:
        last = json.loads((Path(cfg.directory) / LAST_RUN).read_text(encoding="utf-8"))
        last_run = last if isinstance(last, dict) else None
    except (OSError, ValueError):
        last_run = None
    return backup_result(latest, last_run, now, max_age, cfg.directory)
