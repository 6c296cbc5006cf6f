"""``passerelle check mailflow``: mail flows through this host, end to end.

One probe message goes through this host's sendmail over SMTP (by default to 127.0.0.1:25,
inside the greylist milter's trusted networks, through every milter), addressed to a test
recipient the operator names; then the mail log is followed until sendmail logs what became
of that message's queue id: ``stat=Sent`` (OK), a deferral (CRITICAL: mail is stuck here) or
a bounce (CRITICAL). The rolling upgrade (``playbooks/upgrade.yml``) runs it on each gateway
before the next one is touched.

Pure parts: the queue id in the reply to DATA (``queue_id_from_reply``), the outcome in log
lines (``delivery_outcome``) and the verdict (``verdict``). The I/O (SMTP, reading the log
from where it ended before the probe) takes its clock and sleep as arguments.
"""

from __future__ import annotations

import re
import smtplib
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

from passerelle.supervision.checks import CRITICAL, OK, UNKNOWN, Result

# sendmail 8: "250 2.0.0 5AJ2qK6Q003456 Message accepted for delivery"
_ACCEPTED = re.compile(r"(?:^|\s)([A-Za-z0-9]{8,20})\s+Message accepted for delivery")
_DSN = re.compile(r"\bdsn=(\d)\.\d{1,3}\.\d{1,3}\b")
_STAT = re.compile(r"\bstat=(.*)$")
_RELAY = re.compile(r"\brelay=([^,]*)")
SUBJECT = "Passerelle mail flow probe"


@dataclass(frozen=True)
class Outcome:
    """What sendmail logged for a queue id: ``sent``, ``deferred`` or ``bounced``."""

    kind: str
    stat: str
    relay: str = ""


def queue_id_from_reply(reply: str) -> str | None:
    """The queue id in sendmail's reply to the end of DATA, if it names one."""
    m = _ACCEPTED.search(reply)
    return m.group(1) if m else None


def delivery_outcome(lines: Iterable[str], qid: str) -> Outcome | None:
    """The last delivery attempt logged for ``qid`` (``QID: to=..., dsn=X.Y.Z, stat=...``)."""
    marker = f" {qid}: to="
    found: Outcome | None = None
    for line in lines:
        if marker not in line:
            continue
        stat_m = _STAT.search(line)
        if stat_m is None:
            continue
        stat = stat_m.group(1).strip()
        dsn_m = _DSN.search(line)
        if dsn_m:
            cls = dsn_m.group(1)
        else:
            cls = "2" if stat.startswith("Sent") else "4" if stat.startswith("Deferred") else "5"
        kind = {"2": "sent", "4": "deferred"}.get(cls, "bounced")
        relay_m = _RELAY.search(line)
        found = Outcome(kind, stat, relay_m.group(1).strip() if relay_m else "")
        if kind != "deferred":
            return found  # final: delivered or bounced
    return found


def verdict(qid: str, recipient: str, outcome: Outcome | None, waited: float) -> Result:
    perf = f"time={waited:.1f}s"
    if outcome is None:
        return Result(
            CRITICAL,
            f"{qid} to {recipient}: nothing logged about its delivery after {waited:.0f} s "
            "(still queued? see mailq and the mail log)",
            perf,
        )
    if outcome.kind == "sent":
        via = f" via {outcome.relay}" if outcome.relay else ""
        return Result(OK, f"{qid} to {recipient} delivered{via} in {waited:.1f} s", perf)
    return Result(CRITICAL, f"{qid} to {recipient} {outcome.kind}: {outcome.stat}", perf)


def probe_message(sender: str, recipient: str, host: str, tag: str, now: float) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender or f"MAILER-DAEMON@{host}"
    msg["To"] = recipient
    msg["Subject"] = f"{SUBJECT} {tag}"
    msg["Date"] = formatdate(now, localtime=True)
    msg["Message-ID"] = make_msgid("passerelle-probe", domain=host)
    msg.set_content(
        f"Probe {tag} sent by 'passerelle check mailflow' on {host}: it checks that mail goes\n"
        "through this gateway's milters and is delivered. Nothing to do with it.\n"
    )
    return msg


def send_probe(
    server: str, port: int, sender: str, recipient: str, msg: EmailMessage, timeout: float
) -> str:
    """One SMTP transaction; the queue id sendmail gave the message. Raises ``ProbeError``."""
    try:
        with smtplib.SMTP(server, port, timeout=timeout) as s:
            s.ehlo_or_helo_if_needed()
            for step, (code, text) in (
                ("MAIL", s.mail(sender)),
                ("RCPT", s.rcpt(recipient)),
            ):
                if code >= 400:
                    raise ProbeError(f"{step} refused: {code} {_text(text)}")
            # CRLF line ends: sendmail refuses a bare LF in DATA (SMTP smuggling fix).
            code, text = s.data(msg.as_bytes(policy=msg.policy.clone(linesep="\r\n")))
    except ProbeError:
        raise
    except (OSError, smtplib.SMTPException) as exc:
        raise ProbeError(f"SMTP to {server}:{port} failed: {exc}") from None
    if code >= 400:
        raise ProbeError(f"DATA refused: {code} {_text(text)}")
    qid = queue_id_from_reply(_text(text))
    if qid is None:
        raise ProbeError(f"no queue id in the reply to DATA: {code} {_text(text)}")
    return qid


class ProbeError(RuntimeError):
    """The probe could not be sent (refused, no answer)."""


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


class LogFollower:
    """New lines of the mail logs since this object was made (a file that shrank was
    rotated: read again from its start)."""

    def __init__(self, paths: Sequence[str | Path]) -> None:
        self.paths = [Path(p) for p in paths]
        self.offsets = {p: _size(p) for p in self.paths}

    def new_lines(self) -> list[str]:
        out: list[str] = []
        for p in self.paths:
            size = _size(p)
            start = self.offsets[p] if size >= self.offsets[p] else 0
            if size == start:
                continue
            try:
                with p.open("rb") as f:
                    f.seek(start)
                    data = f.read(size - start)
            except OSError:
                continue
            # a line still being written is read again next time
            end = data.rfind(b"\n") + 1
            self.offsets[p] = start + end
            out.extend(data[:end].decode("utf-8", "replace").splitlines())
        return out


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except OSError:
        return 0


def check_mailflow(
    recipient: str,
    sender: str = "",
    server: str = "127.0.0.1",
    port: int = 25,
    logs: Sequence[str | Path] = ("/var/log/mail.log",),
    timeout: float = 120.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    send: Callable[..., str] = send_probe,
) -> Result:
    if not any(Path(p).exists() for p in logs):
        return Result(UNKNOWN, f"no mail log to follow ({', '.join(map(str, logs))})")
    host = socket.getfqdn()
    tag = uuid.uuid4().hex[:12]
    follower = LogFollower(logs)
    start = clock()
    try:
        qid = send(
            server,
            port,
            sender,
            recipient,
            probe_message(sender, recipient, host, tag, time.time()),
            min(timeout, 60.0),
        )
    except ProbeError as exc:
        return Result(CRITICAL, f"probe to {recipient} not accepted: {exc}")
    seen: list[str] = []
    outcome: Outcome | None = None
    while True:
        seen.extend(follower.new_lines())
        outcome = delivery_outcome(seen, qid)
        if (outcome is not None and outcome.kind != "deferred") or clock() - start >= timeout:
            break
        sleep(1.0)
    return verdict(qid, recipient, outcome, clock() - start)
