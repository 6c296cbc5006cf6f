"""Real-looking sendmail 8.17 syslog lines, for the tests of the log reader, the connection
guard and the reports (imported as ``maillog.smlog``)."""

from __future__ import annotations

from datetime import datetime, timezone

NOW = datetime(2026, 11, 27, 11, 0, 0, tzinfo=timezone.utc).timestamp()


def trad(ts: float) -> str:
    """Traditional syslog timestamp (UTC in the tests: tz is injected)."""
    dt = datetime.fromtimestamp(ts, timezone.utc)
    return f"{dt:%b} {dt.day:>2} {dt:%H:%M:%S}"


def isots(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="microseconds")


def relay(ip: str, name: str | None = "mail.example.net") -> str:
    addr = f"IPv6:{ip}" if ":" in ip else ip
    return f"{name} [{addr}]" if name else f"[{addr}]"


def session(
    ts: float,
    pid: int,
    ip: str,
    *,
    messages: int = 1,
    host: str = "gw1",
    prog: str = "sm-mta",
    iso: bool = False,
    name: str | None = "mail.example.net",
) -> list[str]:
    """The lines of one SMTP session with ``messages`` messages (TLS, from= and to= each)."""
    stamp = isots(ts) if iso else trad(ts)
    head = f"{stamp} {host} {prog}[{pid}]:"
    r = relay(ip, name)
    out = [
        f"{head} STARTTLS=server, relay={r}, version=TLSv1.3, verify=NO, "
        "cipher=TLS_AES_256_GCM_SHA384, bits=256/256"
    ]
    for i in range(messages):
        qid = f"4ARB{pid % 100000:05d}{i:03d}"
        out.append(
            f"{head} {qid}: from=<news{i}@example.net>, size=2{i}31, class=0, nrcpts=1, "
            f"msgid=<{pid}.{i}@example.net>, bodytype=8BITMIME, proto=ESMTPS, daemon=MTA, "
            f"tls_verify=NO, auth=NONE, relay={r}"
        )
        out.append(
            f"{head} {qid}: to=<user{i}@dept.example.edu>, delay=00:00:01, xdelay=00:00:01, "
            "mailer=esmtp, tls_verify=OK, pri=123{i}, relay=store1.example.edu. [10.1.2.3], "
            "dsn=2.0.0, stat=Sent (Ok: queued as 4ZabC)"
        )
    return out
