"""Log lines of Passerelle's milters and connection guard, as they reach the mail log."""

from __future__ import annotations

from maillog.smlog import trad


def gl(ts, reason, ip="192.0.2.1", group=None, delay=None, pid=812, host="gw1"):
    group = group or (ip.rsplit(".", 1)[0] + ".0/24")
    head = f"{trad(ts)} {host} passerelle-greylist[{pid}]:"
    if reason in ("trusted", "client", "auth", "sender", "recipient", "auto"):
        return f"{head} accepted client={ip} group={group} reason={reason}"
    if reason == "store-error":
        return (
            f"{head} store unavailable, greylisting skipped client={ip} reason=store-error "
            "(OperationalError)"
        )
    verb = "greylisted" if reason in ("new", "early", "restart") else "accepted"
    d = f" delay={delay}" if delay else ""
    return (
        f"{head} {verb} client={ip} group={group} from=<news@example.net> "
        f"to=<user@dept.example.edu>{d} reason={reason}"
    )


def spam(ts, tier, ip="192.0.2.1", score=None, qid="4ARB000123", host="gw1"):
    head = f"{trad(ts)} {host} passerelle-spam[813]: {qid}: client=mx.example.net[{ip}]"
    if tier == "unscanned":
        return f"{head} spamd unavailable, accepted unscanned: connection refused"
    if tier == "tempfail":
        return f"{head} spamd unavailable, tempfail: connection refused"
    score = score if score is not None else {"none": 0.4, "LOW": 3.5, "MEDIUM": 4.5}.get(tier, 8.1)
    return (
        f"{head} score={score} required=5 tier={tier} tests=BAYES_99,HTML_MESSAGE "
        "spamd=127.0.0.1:783 time=0.41s"
    )


def av(ts, what, ip="192.0.2.1", sig="Eicar-Signature", qid="4ARB000124", host="gw1"):
    head = (
        f"{trad(ts)} {host} passerelle-antivirus[814]: {qid}: from=<a@example.net> rcpts=1 "
        f"size=2048 client=mx.example.net [{ip}]"
    )
    return {
        "clean": f"{head} clean (clean, clamd 127.0.0.1:3310) -> accept",
        "virus": f"{head} quarantined 20261127-ab12cd (signature: {sig}) -> discard",
        "virus-reject": f"{head} virus {sig} (clamd 127.0.0.1:3310) -> reject",
        "rule": f"{head} rule exe: attachment x.exe -> reject",
        "held": f"{head} quarantined 20261127-ff00 (outbreak: attachment held in outbreak mode)"
        " -> discard",
        "unscanned": f"{head} clean (too_large, clamd -) -> accept",
        "error": f"{head} clamd error: connection refused -> tempfail",
    }[what]


def cw(ts, ip, n, blocked=True, direction="inbound", host="gw1"):
    tail = ": blocked" if blocked else ""
    thr = 2500 if blocked else 500
    return (
        f"{trad(ts)} {host} passerelle-connwatch[815]: connwatch {direction}: {ip} made {n} "
        f"connections in 1h (> {thr}){tail}"
    )
