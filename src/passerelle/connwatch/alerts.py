"""Telling people: the Nagios status file and the mail to the admins.

Status file (``/var/lib/passerelle/connwatch.status``), one line, Nagios plugin output::

    STATE - text | perfdata

``STATE`` is ``OK``, ``WARNING`` or ``CRITICAL`` (``UNKNOWN`` when the run failed), e.g.
``CRITICAL - inbound gw1: blocked 198.51.100.7 (3000/1h); alert 192.0.2.10 (600/1h) |
clients=3 max=3000 alerts=1 blocks=1``. An NRPE command reads it and maps the first word to
the exit status (OK=0, WARNING=1, CRITICAL=2, anything else 3), and should report UNKNOWN
when the file is older than two runs (the timer runs hourly), e.g.::

    f=/var/lib/passerelle/connwatch.status
    find "$f" -mmin -130 | grep -q . || { echo "UNKNOWN - $f is stale"; exit 3; }
    l=$(head -n1 "$f"); echo "$l"
    case "$l" in OK*) exit 0;; WARNING*) exit 1;; CRITICAL*) exit 2;; *) exit 3;; esac
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from email.message import EmailMessage
from pathlib import Path

from passerelle.atomicfile import atomic_write

# (argv, message bytes) -> (exit status, output)
Mailer = Callable[[Sequence[str], bytes], tuple[int, str]]


def write_status(path: str | Path, line: str) -> None:
    atomic_write(path, (line.replace("\n", " ") + "\n").encode(), 0o644)


def build_mail(sender: str, to: Sequence[str], subject: str, body: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Subject"] = subject
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(body, cte="8bit")
    return msg.as_bytes()


def send_mail(command: Sequence[str], message: bytes) -> tuple[int, str]:
    """Default Mailer: pipe the message to ``sendmail -oi -t``."""
    from passerelle.runner import run_command

    with tempfile.NamedTemporaryFile(prefix="connwatch-mail.") as fh:
        fh.write(message)
        fh.flush()
        return run_command(command, Path(fh.name))
