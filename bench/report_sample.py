"""A day of a gateway's mail log, generated, and the daily report made from it (issue 8).

Writes a realistic day (sessions over a daily curve; greylisting with senders that come back
after 40-90 minutes, big senders retrying from their pools, spam-cannons that never retry;
spam tiers; a few viruses; one client hammering the gateway until the connection guard
blocks it), runs ``passerelle report daily`` on it, and prints how long the report took.
``--html`` keeps the page (docs/report-sample.html was made this way).

    .venv/bin/python bench/report_sample.py [--messages 40000] [--html docs/report-sample.html]
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

from passerelle.reports import report
from passerelle.reports.config import parse_config

DAY = date(2026, 11, 26)
START = datetime(2026, 11, 26, tzinfo=UTC).timestamp()


def stamp(ts: float) -> str:
    dt = datetime.fromtimestamp(ts, UTC)
    return f"{dt:%b} {dt.day:>2} {dt:%H:%M:%S}"


def daily_curve(rnd: random.Random) -> float:
    """A second of the day, busier in office hours."""
    while True:
        t = rnd.random() * 86400
        w = (
            0.25
            + math.exp(-(((t / 3600) - 11) ** 2) / 18)
            + 0.6 * math.exp(-(((t / 3600) - 16) ** 2) / 8)
        )
        if rnd.random() * 1.9 < w:
            return t


def generate(path: Path, messages: int, seed: int = 8) -> int:
    rnd = random.Random(seed)
    big = [f"209.85.{rnd.randint(128, 255)}.{rnd.randint(1, 254)}" for _ in range(60)]  # pools
    big += [f"40.107.{rnd.randint(0, 255)}.{rnd.randint(1, 254)}" for _ in range(40)]
    small = [f"{rnd.randint(11, 223)}.{rnd.randint(0, 255)}.{rnd.randint(0, 255)}."
             f"{rnd.randint(1, 254)}" for _ in range(3000)]  # fmt: skip
    cannons = [f"185.{rnd.randint(0, 255)}.{rnd.randint(0, 255)}.{rnd.randint(1, 254)}"
               for _ in range(200)]  # fmt: skip
    v6 = [f"2001:db8:{rnd.randint(0, 0xFFFF):x}::{rnd.randint(1, 0xFFFF):x}" for _ in range(200)]
    viruses = ["Win.Test.EICAR_HDB-1", "Doc.Malware.Emotet-9", "Html.Phishing.Bank-42"]
    out: list[tuple[float, str]] = []
    pid = 2000

    def gl(ts: float, verb: str, ip: str, reason: str, delay: str = "") -> None:
        group = ip.rsplit(".", 1)[0] + ".0/24" if ":" not in ip else ip.rsplit(":", 2)[0] + "::/64"
        d = f" delay={delay}" if delay else ""
        out.append(
            (ts, f"{stamp(ts)} gw1 passerelle-greylist[811]: {verb} client={ip} group={group} "
                 f"from=<news@sender.example> to=<user@dept.example.edu>{d} reason={reason}")
        )  # fmt: skip

    for _ in range(messages):
        t = START + daily_curve(rnd)
        pid = pid + 1 if pid < 32000 else 2000
        r = rnd.random()
        ip = (
            rnd.choice(big)
            if r < 0.35
            else rnd.choice(cannons)
            if r < 0.5
            else rnd.choice(v6)
            if r < 0.55
            else rnd.choice(small)
        )
        head = f"{stamp(t)} gw1 sm-mta[{pid}]:"
        qid = f"4AR{int(t) % 100000:05d}{pid:05d}"
        out.append((t, f"{head} STARTTLS=server, relay=mx.sender.example [{ip}], version=TLSv1.3"))
        # greylist
        if ip in cannons:
            gl(t, "greylisted", ip, "new" if rnd.random() < 0.8 else "early")
            out.append((t, f"{head} {qid}: from=<x@spam.example>, size=0, nrcpts=0, "
                           f"proto=ESMTP, daemon=MTA, relay=[{ip}]"))  # fmt: skip
            continue
        first = rnd.random()
        if first < 0.12 and t < START + 80000:
            gl(t, "greylisted", ip, "new")
            back = t + rnd.uniform(2400, 5400) if ip not in big else t + rnd.uniform(2400, 3000)
            if rnd.random() < 0.03:
                back = t + rnd.uniform(4 * 3600, 9 * 3600)
            m, s = divmod(int(back - t), 60)
            h, m = divmod(m, 60)
            t = back
            head = f"{stamp(t)} gw1 sm-mta[{pid}]:"
            gl(t, "accepted", ip, "delayed", (f"{h}h" if h else "") + f"{m}m{s}s")
        elif first < 0.2:
            why = rnd.choice(["trusted", "auto", "client"])
            out.append((t, f"{stamp(t)} gw1 passerelle-greylist[811]: accepted client={ip} "
                           f"group=x reason={why}"))  # fmt: skip
        else:
            gl(t, "accepted", ip, "passed")
        out.append((t, f"{head} {qid}: from=<a@sender.example>, size=4200, class=0, nrcpts=1, "
                       f"proto=ESMTPS, daemon=MTA, relay=mx.sender.example [{ip}]"))  # fmt: skip
        # antivirus
        av = f"{stamp(t)} gw1 passerelle-antivirus[812]: {qid}: from=<a@sender.example> rcpts=1 "
        av += f"size=4200 client=mx.sender.example [{ip}] "
        if rnd.random() < 0.0015:
            out.append((t, av + f"quarantined 20261126-{pid:x} (signature: "
                                f"{rnd.choice(viruses)}) -> discard"))  # fmt: skip
            continue
        out.append((t, av + "clean (clean, clamd 127.0.0.1:3310) -> accept"))
        # spam
        score = rnd.gauss(-0.5, 2.2) if ip in big else rnd.gauss(2.2, 3.0)
        tier = "HIGH" if score > 5 else "MEDIUM" if score > 4 else "LOW" if score > 3 else "None"
        out.append(
            (t, f"{stamp(t)} gw1 passerelle-spam[813]: {qid}: client=mx.sender.example[{ip}] "
                f"score={score:.1f} required=5 tier={tier} tests=BAYES_50 spamd=127.0.0.1:783 "
                "time=0.3s")
        )  # fmt: skip
    # one client hammering the gateway for an hour, then the guard's block
    t0 = START + 14 * 3600
    for i in range(2800):
        t = t0 + i * 1.2
        pid = pid + 1 if pid < 32000 else 2000
        out.append((t, f"{stamp(t)} gw1 sm-mta[{pid}]: 4ARZ{i:05d}: [198.51.100.66] did not "
                       "issue MAIL/EXPN/VRFY/ETRN during connection to MTA"))  # fmt: skip
    t = t0 + 3600
    out.append((t, f"{stamp(t)} gw1 passerelle-connwatch[900]: connwatch inbound: 198.51.100.66 "
                   "made 2800 connections in 1h (> 2500): blocked"))  # fmt: skip
    out.append((t, f"{stamp(t)} gw1 passerelle-connwatch[900]: connwatch inbound: 203.0.113.80 "
                   "made 640 connections in 1h (> 500)"))  # fmt: skip
    out.sort(key=lambda x: x[0])
    path.write_text("\n".join(line for _, line in out) + "\n")
    return len(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=40000)
    ap.add_argument("--html", help="keep the report page here")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="report-sample."))
    try:
        log = tmp / "mail.log"
        lines = generate(log, args.messages)
        cfg = parse_config({"ops": {"hostname": "gw1", "logs": [str(log)]}})
        now = START + 86400 + 600
        t0 = time.perf_counter()
        tally, sessions, start, end, notes = report.collect_day(cfg, DAY, now, UTC)
        rep = report.build(tally, sessions, "gw1", DAY.isoformat(), start, end, cfg.report)
        rep.notes = notes
        page = report.render_html(rep, UTC, generated=now)
        took = time.perf_counter() - t0
        size = log.stat().st_size
        print(
            f"log {size / 1e6:.1f} MB, {lines} lines; report in {took:.2f}s "
            f"({size / 1e6 / took:.0f} MB/s); page {len(page) / 1e3:.0f} kB; "
            f"greylist {sum(rep.greylist.values())}, spam HIGH {rep.spam['HIGH']}, "
            f"viruses {rep.antivirus['virus']}, suggestions {len(rep.suggestions)}"
        )
        if args.html:
            Path(args.html).write_text(page)
            print(f"wrote {args.html}")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
