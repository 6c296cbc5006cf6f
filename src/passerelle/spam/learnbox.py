"""Learning from the mailboxes users forward misclassified mail to.

The gateways deliver two addresses (``passerelle_spam_learn_addresses``: one for missed spam,
one for ham wrongly marked) to local mboxes. On a timer, ``passerelle spam learn-mailbox``
takes each mbox away from the delivery agent (under its dot-lock, by renaming it), keeps only
the messages that came from a trusted network (so nobody on the internet can teach the
shared Bayes store), takes the forwarded message out of each (an attached
``message/rfc822`` when there is one, else the forward itself) and gives them to sa-learn.
A batch sa-learn refuses stays on disk and is tried again at the next run: nothing is lost.
"""

from __future__ import annotations

import email
import email.policy
import ipaddress
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Union

log = logging.getLogger("passerelle.spam")

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]  # Python 3.9: no | at run time
Learner = Callable[[str, list[bytes]], bool]

TAKEN_SUFFIX = ".learning"
# sendmail's default ``HReceived: $?sfrom $s $.$?_($?s$|from $.$_) $.$?{auth_type}(...) $.by
# $j ...``: ``$s`` is the client's HELO (its own word, anything once AllowBogusHELO is on),
# ``$_`` what sendmail recorded for the connection: ``[ident@]name [ip]`` (``[ip]`` alone
# without PTR; IPv6 as ``[IPv6:...]``), then `` (may be forged)`` when the PTR name does not
# resolve back. This matches one ``($_)`` followed by sendmail's ``by`` (the optional
# ``(authenticated ...)`` in between).
_AUTHINFO = re.compile(
    r" \((?:[^\s()\[\]@]+@)?(?:[^\s()\[\]]+ )?\[(?:IPv6:)?([0-9A-Fa-f:.]+)\]"
    r"(?: \(may be forged\))?\)(?= (?:\(authenticated[^()]*\) )?by )"
)


class LockBusy(Exception):
    """The delivery agent holds the mailbox's lock longer than we wait."""


def parse_networks(values: Iterable[str]) -> list[Network]:
    """Networks (or single addresses) of the trusted senders; ValueError names a bad one."""
    out: list[Network] = []
    for v in values:
        try:
            out.append(ipaddress.ip_network(v.strip(), strict=False))
        except ValueError:
            raise ValueError(f"trusted network {v!r}: not an IP address or network") from None
    return out


def client_ip(msg: Message) -> str | None:
    """The address of the client that handed the message to this gateway.

    That is the topmost Received header: the one this gateway's sendmail added when it took
    the forward (the spam milter's own Received line is only shown to spamd, never written
    into the message). Everything below it is the sender's word, and so is the HELO inside it:
    ``EHLO [10.1.2.3]`` gives ``from [10.1.2.3] (evil.example [203.0.113.9]) by ...``. The
    address is taken by position from the ``(name [ip])`` sendmail writes right before
    ``by``; when the client's text (HELO, recipient) reproduces that shape so that two
    candidates exist, the line cannot be read safely and None is returned (untrusted).
    """
    received = msg.get_all("Received") or []
    if not received:
        return None
    top = " ".join(str(received[0]).split())
    if not top.startswith("from "):
        return None
    found = _AUTHINFO.findall(top)
    return found[0] if len(found) == 1 else None


def is_trusted(ip: str | None, networks: Sequence[Network]) -> bool:
    if not ip:
        return False
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr.version == n.version and addr in n for n in networks)


def forwarded_messages(msg: Message) -> list[bytes]:
    """The messages to learn from one forward: its attached messages, else itself."""
    attached: list[bytes] = []
    for part in msg.walk():
        if part.get_content_type() != "message/rfc822":
            continue
        payload = part.get_payload()
        inner = payload[0] if isinstance(payload, list) and payload else None
        if isinstance(inner, Message):
            attached.append(inner.as_bytes(policy=email.policy.compat32))
    if attached:
        return attached
    return [msg.as_bytes(policy=email.policy.compat32)]


def take_mailbox(
    path: Path,
    lock_wait: float = 30.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Path | None:
    """Move ``path`` aside under its dot-lock (``path.lock``, as mail.local takes it).

    Returns the taken file (``path.learning``), or None when there is nothing to learn. A
    file taken by an earlier run that did not finish is appended to, never overwritten.
    """
    taken = path.with_name(path.name + TAKEN_SUFFIX)
    if not path.exists() or path.stat().st_size == 0:
        return taken if taken.exists() else None
    lock = path.with_name(path.name + ".lock")
    deadline = clock() + lock_wait
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            break
        except FileExistsError:
            if clock() >= deadline:
                raise LockBusy(f"{lock}: held for more than {lock_wait:g} s") from None
            sleep(0.2)
    try:
        os.close(fd)
        if taken.exists():
            with path.open("rb") as src, taken.open("ab") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            path.unlink()
        else:
            path.rename(taken)
    finally:
        lock.unlink(missing_ok=True)
    return taken


def read_mbox(path: Path) -> list[Message]:
    """The messages of an mbox file ("From " lines separate them)."""
    import mailbox

    box = mailbox.mbox(path, create=False)
    try:
        return [email.message_from_bytes(box.get_bytes(k)) for k in box.iterkeys()]
    finally:
        box.close()


@dataclass
class BoxResult:
    kind: str
    messages: int = 0
    learned: int = 0
    untrusted: int = 0
    failed: bool = False

    def summary(self) -> str:
        state = "kept for the next run (sa-learn failed)" if self.failed else "done"
        return (
            f"{self.kind}: {self.messages} forwards, {self.learned} messages learned, "
            f"{self.untrusted} from untrusted clients dropped; {state}"
        )


def learn_mailbox(
    kind: str,
    path: Path,
    networks: Sequence[Network],
    learner: Learner,
    lock_wait: float = 30.0,
) -> BoxResult:
    """Take the mailbox, learn what trusted clients forwarded, remove it when learned."""
    if kind not in ("ham", "spam"):
        raise ValueError(kind)
    result = BoxResult(kind)
    taken = take_mailbox(path, lock_wait)
    if taken is None:
        return result
    batch: list[bytes] = []
    for msg in read_mbox(taken):
        result.messages += 1
        ip = client_ip(msg)
        if not is_trusted(ip, networks):
            result.untrusted += 1
            log.warning(
                "learn %s: forward %s from untrusted client %s dropped",
                kind,
                msg.get("Message-ID", "(no Message-ID)"),
                ip or "(unknown)",
            )
            continue
        batch.extend(forwarded_messages(msg))
    if batch and not learner(kind, batch):
        result.failed = True
        return result
    result.learned = len(batch)
    taken.unlink()
    return result
