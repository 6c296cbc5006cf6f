#!/usr/bin/env python3
"""Mail during a rolling upgrade of the lab: none lost, never both gateways down.

    bench/upgrade_load.py start --out DIR &   # sends from `outside` to gw1 and gw2
    ansible-playbook -i inventory/lab playbooks/lab/upgrade.yml
    bench/upgrade_load.py stop
    bench/upgrade_load.py check --out DIR     # exit 0: nothing lost, one gateway always up

``start`` runs a small program inside the lab's ``outside`` container (``podman exec``): one
thread per gateway opens an SMTP session every ``--probe-interval`` seconds and records
whether the gateway answered with its 220 banner; a sender thread sends, every
``--interval`` seconds, one message to each gateway in turn (alice@static-a.test, delivered on
mailstore1; outside's address is whitelisted for greylisting) and, like a sending MTA, tries
the other gateway when one does not accept (4xx or no answer), then again at the next tick.
Every attempt is one JSON line in DIR/events.jsonl. It stops at ``stop`` (a file in the
container) or after ``--duration``.

``check`` reads DIR/events.jsonl and alice's mailbox on mailstore1 (waiting up to ``--wait``
seconds for the last messages), and reports: messages accepted (per gateway), delivered,
lost (accepted and never delivered), refused for good (5xx: a sender would bounce them),
never accepted; and, second by second, which gateways answered: any second in which no
gateway answered fails the check. The pure parts (``availability``, ``verdict``...) are
tested in tests/unit/test_upgrade_load.py.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = os.environ.get("PASSERELLE_LAB_PREFIX", "lab-")
GATEWAYS = ("gw1", "gw2")
RCPT = "alice@static-a.test"
STORE = "mailstore1"
MAILBOX = "/var/mail/alice"
SENDER = "dave@internet.test"
STOP_FILE = "/run/passerelle-upgrade-load.stop"  # inside outside (root only)
TAG_RE = re.compile(r"upgrade-load-[0-9a-z]+-\d+")

# Runs inside `outside` (python3 of the container): arguments as JSON on argv[1].
SENDER_PROGRAM = r"""
import email.utils, json, os, smtplib, socket, sys, threading, time
a = json.loads(sys.argv[1])
lock = threading.Lock()
stop = threading.Event()
def emit(rec):
    with lock:
        sys.stdout.write(json.dumps(rec) + "\n")
        sys.stdout.flush()
def probe(gw):
    while not stop.is_set():
        t = time.time()
        ok, err = False, ""
        try:
            with socket.create_connection((gw, 25), timeout=a["probe_timeout"]) as s:
                s.settimeout(a["probe_timeout"])
                banner = s.recv(512).decode("ascii", "replace")
                ok = banner.startswith("220")
                err = "" if ok else banner.strip()[:80]
                s.sendall(b"QUIT\r\n")
        except OSError as exc:
            err = repr(exc)[:80]
        emit({"k": "probe", "t": t, "gw": gw, "ok": ok, "err": err})
        stop.wait(a["probe_interval"])
def send(gw, tag):
    t = time.time()
    rec = {"k": "send", "t": t, "gw": gw, "tag": tag, "code": 0, "reply": ""}
    try:
        with smtplib.SMTP(gw, 25, timeout=a["smtp_timeout"]) as s:
            head = "From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nMessage-ID: <%s@internet.test>\r\n"
            body = (head + "Date: %s\r\n\r\nUpgrade load message %s via %s\r\n") % (
                a["sender"], a["rcpt"], tag, tag, email.utils.formatdate(t), tag, gw)
            s.ehlo("load.internet.test")
            code, msg = s.mail(a["sender"])
            if code < 400:
                code, msg = s.rcpt(a["rcpt"])
            if code < 400:
                code, msg = s.data(body.encode())
            rec["code"], rec["reply"] = code, msg.decode("ascii", "replace")[:120]
    except (OSError, smtplib.SMTPException) as exc:
        rec["reply"] = repr(exc)[:120]
    emit(rec)
    return 200 <= rec["code"] < 300
for gw in a["gateways"]:
    threading.Thread(target=probe, args=(gw,), daemon=True).start()
start = time.time()
n = 0
pending = []
while not os.path.exists(a["stop_file"]) and time.time() - start < a["duration"]:
    tick = time.time()
    for i, gw in enumerate(a["gateways"]):
        n += 1
        pending.append((a["run"] + "-" + str(n), i))
    still = []
    for tag, first in pending:
        order = a["gateways"][first:] + a["gateways"][:first]
        if not any(send(gw, tag) for gw in order):
            still.append((tag, first))
    pending = still
    time.sleep(max(0.0, a["interval"] - (time.time() - tick)))
stop.set()
emit({"k": "end", "t": time.time(), "pending": [t for t, _ in pending]})
"""


def _podman(host: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", "exec", *(["-i"] if stdin is not None else []), PREFIX + host, *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )


# --- pure parts ------------------------------------------------------------------------------


@dataclass
class Report:
    seconds: int = 0
    both_down: list[int] = field(default_factory=list)  # seconds (from the start) with none up
    down: dict[str, int] = field(default_factory=dict)  # gateway -> seconds it did not answer
    accepted: dict[str, int] = field(default_factory=dict)  # gateway -> messages it accepted
    generated: int = 0
    delivered: int = 0
    lost: list[str] = field(default_factory=list)  # accepted, never delivered
    refused: list[str] = field(default_factory=list)  # 5xx: a sender would bounce it
    never_accepted: list[str] = field(default_factory=list)  # still pending at the end

    @property
    def ok(self) -> bool:
        return not (self.both_down or self.lost or self.refused or self.never_accepted)


def read_events(lines: Iterable[str]) -> list[dict]:
    out = []
    for line in lines:
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut when the sender was stopped
    return out


def availability(events: Sequence[Mapping], gateways: Sequence[str]) -> dict[int, dict[str, bool]]:
    """Second (from the first event) -> gateway -> answered at least once in that second.
    A gateway not probed in a second is left out of that second."""
    probes = [e for e in events if e.get("k") == "probe"]
    if not probes:
        return {}
    t0 = min(float(e["t"]) for e in probes)
    out: dict[int, dict[str, bool]] = {}
    for e in probes:
        if e["gw"] not in gateways:
            continue
        sec = int(float(e["t"]) - t0)
        slot = out.setdefault(sec, {})
        slot[e["gw"]] = slot.get(e["gw"], False) or bool(e["ok"])
    return dict(sorted(out.items()))


def verdict(
    events: Sequence[Mapping], delivered_tags: Iterable[str], gateways: Sequence[str] = GATEWAYS
) -> Report:
    r = Report()
    avail = availability(events, gateways)
    r.seconds = (max(avail) + 1) if avail else 0
    r.both_down = [s for s, seen in avail.items() if seen and not any(seen.values())]
    r.down = {g: sum(1 for seen in avail.values() if seen.get(g) is False) for g in gateways}
    delivered = set(delivered_tags)
    sends = [e for e in events if e.get("k") == "send"]
    tags = list(dict.fromkeys(e["tag"] for e in sends))
    r.generated = len(tags)
    accepted: dict[str, str] = {}
    refused: set[str] = set()
    for e in sends:
        code = int(e.get("code") or 0)
        if 200 <= code < 300:
            accepted.setdefault(e["tag"], e["gw"])
        elif code >= 500:
            refused.add(e["tag"])
    r.accepted = {g: sum(1 for v in accepted.values() if v == g) for g in gateways}
    r.delivered = sum(1 for t in tags if t in delivered)
    r.lost = [t for t in tags if t in accepted and t not in delivered]
    r.refused = sorted(refused - set(accepted), key=tags.index)
    r.never_accepted = [t for t in tags if t not in accepted and t not in refused]
    return r


def render(r: Report) -> str:
    lines = [
        f"seconds observed: {r.seconds}; seconds without an answer: "
        + ", ".join(f"{g} {n}" for g, n in r.down.items()),
        f"seconds with NO gateway answering: {len(r.both_down)}"
        + (f" (at {', '.join(map(str, r.both_down[:20]))} s)" if r.both_down else ""),
        f"messages: {r.generated} sent, accepted "
        + ", ".join(f"{g} {n}" for g, n in r.accepted.items())
        + f"; delivered {r.delivered}",
        f"lost (accepted, not delivered): {len(r.lost)} {' '.join(r.lost[:20])}".rstrip(),
        f"refused for good (5xx): {len(r.refused)} {' '.join(r.refused[:20])}".rstrip(),
        f"never accepted: {len(r.never_accepted)} {' '.join(r.never_accepted[:20])}".rstrip(),
        "OK: nothing lost, one gateway always answered" if r.ok else "FAILED",
    ]
    return "\n".join(lines) + "\n"


# --- commands --------------------------------------------------------------------------------


def cmd_start(a: argparse.Namespace) -> int:
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    run = format(int(time.time()), "x")
    _podman("outside", "rm", "-f", STOP_FILE)
    args = {
        "run": f"upgrade-load-{run}",
        "gateways": list(GATEWAYS),
        "rcpt": RCPT,
        "sender": SENDER,
        "interval": a.interval,
        "probe_interval": a.probe_interval,
        "probe_timeout": 2.0,
        "smtp_timeout": 30.0,
        "duration": a.duration,
        "stop_file": STOP_FILE,
    }
    print(f"upgrade load {args['run']}: events in {out / 'events.jsonl'}", file=sys.stderr)
    with (out / "events.jsonl").open("a") as f:
        proc = subprocess.run(
            [
                "podman",
                "exec",
                PREFIX + "outside",
                "python3",
                "-c",
                SENDER_PROGRAM,
                json.dumps(args),
            ],
            stdout=f,
            check=False,
        )
    return proc.returncode


def cmd_stop(_: argparse.Namespace) -> int:
    return _podman("outside", "touch", STOP_FILE).returncode


def delivered_tags() -> set[str]:
    res = _podman(STORE, "cat", MAILBOX)
    return set(TAG_RE.findall(res.stdout)) if res.returncode == 0 else set()


def settle(
    events: Sequence[Mapping], wait: float, between: Callable[[], object] | None = None
) -> Report:
    """The verdict once every accepted message reached the mailbox, or after ``wait`` seconds;
    ``between`` runs before each new look (the molecule test flushes the gateways' queues)."""
    deadline = time.monotonic() + wait
    while True:
        r = verdict(events, delivered_tags())
        if not r.lost or time.monotonic() >= deadline:
            return r
        if between is not None:
            between()
        time.sleep(5)


def cmd_check(a: argparse.Namespace) -> int:
    events = read_events((Path(a.out) / "events.jsonl").read_text().splitlines())
    if not any(e.get("k") == "end" for e in events):
        print("the load is still running (or was killed): run 'stop' first", file=sys.stderr)
    r = settle(events, a.wait)
    text = render(r)
    (Path(a.out) / "report.txt").write_text(text)
    sys.stdout.write(text)
    return 0 if r.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("start", help="send mail to both gateways until 'stop'")
    s.add_argument("--out", required=True, help="folder for events.jsonl and report.txt")
    s.add_argument("--interval", type=float, default=2.0, help="a message per gateway every N s")
    s.add_argument("--probe-interval", type=float, default=0.5, help="banner probes every N s")
    s.add_argument("--duration", type=float, default=3600, help="stop by itself after N s")
    s.set_defaults(func=cmd_start)
    sub.add_parser("stop", help="stop the load").set_defaults(func=cmd_stop)
    c = sub.add_parser("check", help="nothing lost, never both gateways down")
    c.add_argument("--out", required=True)
    c.add_argument(
        "--wait",
        type=float,
        default=900,
        help="wait this long for deliveries (a message deferred by a restarting mailstore waits"
        " for the gateways' next queue run: 10 min in the lab)",
    )
    c.set_defaults(func=cmd_check)
    a = p.parse_args(argv)
    return int(a.func(a))


if __name__ == "__main__":
    sys.exit(main())
