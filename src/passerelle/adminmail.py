"""Mail to the admins, handed to the local ``sendmail -oi -t``.

Sent by the connection guard (alerts and blocks, ``build_mail``: one plain text part) and the
daily report (its own multipart message, ``reports.report.build_mail``). Code that sends takes
a ``Mailer`` argument that defaults to ``send_mail``, so the tests pass a fake one.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from email.message import EmailMessage
from pathlib import Path

from passerelle.runner import run_command

# (argv, message bytes) -> (exit status, output)
Mailer = Callable[[Sequence[str], bytes], tuple[int, str]]


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
    with tempfile.NamedTemporaryFile(prefix="passerelle-mail.") as fh:
        fh.write(message)
        fh.flush()
        return run_command(command, Path(fh.name))
