"""Collector, run *inside* a mailstore (python3 standard library only).

Reads sendmail's log in the journal since a time (microsecond timestamps) and prints, as
JSON, ``{"delivered": {bench id: delivery time}, "received": {bench id: time}}`` for every
benchmark message delivered to a local mailbox: the ``from=`` line gives the queue id's
Message-ID (``<ID@bench.test>``) and the time the mailstore took the message from the
gateway (the gateway's part ends there), the ``to=... mailer=local ... stat=Sent`` line its
delivery time.

    python3 collect.py SINCE_EPOCH
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

FROM = re.compile(r"^(\w+): from=.*\bmsgid=<([^@>]+)@bench\.test>")
SENT = re.compile(r"^(\w+): to=.*\bmailer=local\b.*\bstat=Sent")


def parse(lines: list[tuple[float, str]]) -> dict[str, float]:
    """(timestamp, message) lines -> {bench id: first local delivery time}."""
    qid_to_id: dict[str, str] = {}
    out: dict[str, float] = {}
    for ts, msg in lines:
        m = FROM.match(msg)
        if m:
            qid_to_id[m.group(1)] = m.group(2)
            continue
        m = SENT.match(msg)
        if m and m.group(1) in qid_to_id:
            out.setdefault(qid_to_id[m.group(1)], ts)
    return out


def received(lines: list[tuple[float, str]]) -> dict[str, float]:
    """(timestamp, message) lines -> {bench id: when the mailstore first took it}."""
    out: dict[str, float] = {}
    for ts, msg in lines:
        m = FROM.match(msg)
        if m:
            out.setdefault(m.group(2), ts)
    return out


def main() -> int:
    since = float(sys.argv[1])
    res = subprocess.run(
        ["journalctl", "-t", "sm-mta", "-o", "json", "--no-pager", f"--since=@{int(since) - 1}"],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = []
    for raw in res.stdout.splitlines():
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        msg = entry.get("MESSAGE")
        if isinstance(msg, str):
            lines.append((int(entry["__REALTIME_TIMESTAMP"]) / 1e6, msg))
    json.dump({"delivered": parse(lines), "received": received(lines)}, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
