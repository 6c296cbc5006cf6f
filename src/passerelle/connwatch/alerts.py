"""The connection guard's Nagios status file (its mail to the admins: ``passerelle.adminmail``).

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

from pathlib import Path

from passerelle.atomicfile import atomic_write


def write_status(path: str | Path, line: str) -> None:
    atomic_write(path, (line.replace("\n", " ") + "\n").encode(), 0o644)
