"""SMTP load generator, run *inside* a lab container (python3 standard library only).

Many concurrent sessions (threads with smtplib) against one or more gateways, with a mix of
what an MX sees: first attempts that greylisting defers, their retries, ham, spam (GTUBE),
messages with an attachment, and a little EICAR. Every message carries ``X-Bench-Id`` and
``X-Bench-Sent`` and a Message-ID ``<ID@bench.test>`` so that the collector on the mailstore
can measure its delivery latency. Prints one JSON document: the events, one per session.

    python3 loadgen.py --servers gw1,gw2 --duration 30 --concurrency 20 \
        --rcpts alice@static-a.test,carol@static-b.test --whitelisted-source 10.89.83.250 \
        --greylist-source 10.89.83.245
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import email.utils
import json
import os
import random
import smtplib
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
EICAR = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
DEFAULT_MIX = "greylist=55,retry=10,ham=18,spam=8,attach=7,eicar=2"
WORDS = [
    "meeting",
    "report",
    "budget",
    "schedule",
    "project",
    "student",
    "course",
    "exam",
    "library",
    "campus",
    "network",
    "server",
    "account",
    "research",
    "paper",
    "review",
    "thesis",
    "seminar",
    "invoice",
    "travel",
    "lunch",
]


def parse_mix(text: str) -> dict[str, int]:
    """``greylist=55,ham=20`` -> weights; names must be known, weights positive integers."""
    known = {"greylist", "retry", "ham", "spam", "attach", "eicar"}
    out: dict[str, int] = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        name = name.strip()
        if name not in known:
            raise ValueError(f"mix: unknown kind {name!r} (known: {', '.join(sorted(known))})")
        if not weight.strip().isdigit() or int(weight) < 0:
            raise ValueError(f"mix: weight of {name} must be a non-negative integer: {weight!r}")
        out[name] = int(weight)
    if not any(out.values()):
        raise ValueError("mix: every weight is 0")
    return out


def body_text(rng: random.Random, words: int) -> str:
    lines = []
    for _ in range(max(1, words // 12)):
        lines.append(" ".join(rng.choice(WORDS) for _ in range(12)))
    return "\n".join(lines)


def partner_address(rng: random.Random, domain: str = "") -> str:
    """A sender of the whitelisted traffic: a word and a number at one of 50 partner domains
    (the lab's DNS answers SPF and DMARC for them: their mail from outside passes)."""
    domain = domain or f"partner{rng.randrange(50)}.example"
    return f"{rng.choice(WORDS)}{rng.randrange(1000)}@{domain}"


def build_message(
    kind: str,
    msg_id: str,
    mail_from: str,
    rcpt: str,
    rng: random.Random,
    now: float | None = None,
) -> str:
    sent_at = time.time() if now is None else now
    sent = f"{sent_at:.6f}"
    head = (
        f"From: <{mail_from}>\nTo: <{rcpt}>\nSubject: bench {kind} {msg_id}\n"
        f"Date: {email.utils.formatdate(sent_at, localtime=True)}\n"
        f"Message-ID: <{msg_id}@bench.test>\nX-Bench-Id: {msg_id}\nX-Bench-Kind: {kind}\n"
        f"X-Bench-Sent: {sent}\nMIME-Version: 1.0\n"
    )
    if kind == "spam":
        return head + f"Content-Type: text/plain\n\n{body_text(rng, 60)}\n{GTUBE}\n"
    if kind in ("attach", "eicar"):
        if kind == "eicar":
            payload, name = EICAR.encode(), "invoice.com"
        else:
            payload, name = rng.randbytes(48_000), "report.pdf"
        b64 = base64.encodebytes(payload).decode()
        return (
            head + 'Content-Type: multipart/mixed; boundary="b1"\n\n--b1\n'
            f"Content-Type: text/plain\n\n{body_text(rng, 80)}\n--b1\n"
            f'Content-Type: application/octet-stream; name="{name}"\n'
            f'Content-Disposition: attachment; filename="{name}"\n'
            f"Content-Transfer-Encoding: base64\n\n{b64}--b1--\n"
        )
    return head + f"Content-Type: text/plain\n\n{body_text(rng, 300)}\n"


@dataclass
class Shared:
    servers: list[str]
    rcpts: list[str]
    mix: dict[str, int]
    greylist_source: str
    whitelisted_source: str
    from_domain: str
    retry_after: float
    deadline: float
    max_messages: int
    # Seconds a session refused at connect (the server's port closed: sendmail's RefuseLA on a
    # loaded machine) is tried again, once a second, as an MTA tries again; 0: never.
    refused_retry: float = 0.0
    pending_retries: deque = field(default_factory=deque)
    events: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    started: int = 0

    def take_slot(self) -> bool:
        with self.lock:
            if time.time() >= self.deadline:
                return False
            if self.max_messages and self.started >= self.max_messages:
                return False
            self.started += 1
            return True


def session(
    sh: Shared, kind: str, rng: random.Random, n: int, steps: dict[str, float] | None = None
) -> tuple[str, int, str, str | None]:
    """One SMTP session; returns (outcome, code, server, message id or None).

    ``steps`` receives the seconds each SMTP step took (connect with the greeting, ehlo,
    mail, rcpt, data, eom): a stall shows which step it sits in.
    """
    steps = {} if steps is None else steps
    mark = [time.time()]

    def step(name: str) -> None:
        now = time.time()
        steps[name] = round(now - mark[0], 4)
        mark[0] = now

    server = sh.servers[n % len(sh.servers)]
    msg_id = None
    retry = None
    if kind == "retry":
        with sh.lock:
            if sh.pending_retries and sh.pending_retries[0][0] <= time.time():
                retry = sh.pending_retries.popleft()
        if retry is None:
            kind = "ham"
    if kind == "greylist":
        source = sh.greylist_source
        mail_from = f"u{uuid.uuid4().hex[:10]}@sender{rng.randrange(500)}.example"
        rcpt = rng.choice(sh.rcpts)
    elif retry is not None:
        _, server, mail_from, rcpt = retry
        source = sh.greylist_source
    else:
        source = sh.whitelisted_source
        mail_from = partner_address(rng, sh.from_domain)
        rcpt = rng.choice(sh.rcpts)
    try:
        s = smtplib.SMTP(timeout=60, source_address=(source, 0) if source else None)
        code, _ = s.connect(server, 25)
        step("connect")
        if code >= 400:
            return ("deferred" if code < 500 else "rejected"), code, server, None
        s.ehlo("client.bench.test")
        step("ehlo")
        code, _ = s.docmd(f"MAIL FROM:<{mail_from}>")
        step("mail")
        if code >= 400:
            s.close()
            return ("deferred" if code < 500 else "rejected"), code, server, None
        code, _ = s.docmd(f"RCPT TO:<{rcpt}>")
        step("rcpt")
        if code >= 400:
            with contextlib.suppress(smtplib.SMTPException):
                s.quit()
            if code < 500 and kind == "greylist":
                with sh.lock:
                    sh.pending_retries.append(
                        (time.time() + sh.retry_after, server, mail_from, rcpt)
                    )
            return ("deferred" if code < 500 else "rejected"), code, server, None
        msg_id = f"b{uuid.uuid4().hex[:16]}"
        data = build_message("retry" if retry else kind, msg_id, mail_from, rcpt, rng)
        code, _ = s.docmd("DATA")
        step("data")
        if code != 354:
            s.close()
            return ("deferred" if code < 500 else "rejected"), code, server, None
        body = data.replace("\n.", "\n..").replace("\n", "\r\n").encode()
        s.send(body + b"\r\n.\r\n")
        code, _ = s.getreply()
        step("eom")
        with contextlib.suppress(smtplib.SMTPException):
            s.quit()
        if code < 300:
            return "accepted", code, server, msg_id
        return ("deferred" if code < 500 else "rejected"), code, server, None
    except (OSError, smtplib.SMTPException) as exc:
        return f"error:{type(exc).__name__}", 0, server, None


def worker(sh: Shared, seed: int) -> None:
    rng = random.Random(seed)
    kinds = list(sh.mix)
    weights = [sh.mix[k] for k in kinds]
    n = seed
    while sh.take_slot():
        kind = rng.choices(kinds, weights)[0]
        t0 = time.time()
        steps: dict[str, float] = {}
        outcome, code, server, msg_id = session(sh, kind, rng, n, steps)
        while (
            outcome == "error:ConnectionRefusedError"
            and time.time() - t0 < sh.refused_retry
            and kind != "retry"
        ):
            time.sleep(1.0)
            steps = {}
            outcome, code, server, msg_id = session(sh, kind, rng, n, steps)
        t1 = time.time()
        if outcome.startswith("error"):
            time.sleep(0.2)  # a refused or broken connection: do not spin
        n += 1
        with sh.lock:
            sh.events.append(
                [round(t0, 6), round(t1, 6), kind, outcome, code, server, msg_id, steps]
            )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--servers", required=True, help="comma list of gateways (round robin)")
    ap.add_argument("--rcpts", required=True, help="comma list of recipients")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    ap.add_argument("--messages", type=int, default=0, help="stop after this many sessions")
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--mix", default=DEFAULT_MIX)
    ap.add_argument("--greylist-source", default="", help="address the greylisted use")
    ap.add_argument("--whitelisted-source", default="", help="address the others use")
    ap.add_argument("--from-domain", default="", help="sender domain (default: varied)")
    ap.add_argument("--retry-after", type=float, default=25.0, help="seconds before a retry")
    ap.add_argument(
        "--refused-retry",
        type=float,
        default=0.0,
        help="seconds a session refused at connect is tried again (once a second; 0: never)",
    )
    ap.add_argument("--seed", type=int, default=int.from_bytes(os.urandom(4), "big"))
    a = ap.parse_args(argv)
    if a.concurrency < 1 or a.duration <= 0:
        ap.error("--concurrency must be >= 1 and --duration > 0")
    try:
        mix = parse_mix(a.mix)
    except ValueError as exc:
        ap.error(str(exc))
    start = time.time()
    sh = Shared(
        servers=[s for s in a.servers.split(",") if s],
        rcpts=[r for r in a.rcpts.split(",") if r],
        mix=mix,
        greylist_source=a.greylist_source,
        whitelisted_source=a.whitelisted_source,
        from_domain=a.from_domain,
        retry_after=a.retry_after,
        deadline=start + a.duration,
        max_messages=a.messages,
        refused_retry=a.refused_retry,
    )
    threads = [
        threading.Thread(target=worker, args=(sh, a.seed + i * 7919), daemon=True)
        for i in range(a.concurrency)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    json.dump(
        {
            "start": start,
            "deadline": sh.deadline,
            "end": time.time(),
            "concurrency": a.concurrency,
            "events": sh.events,
        },
        sys.stdout,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
