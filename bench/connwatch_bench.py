"""Benchmark of the connection guard's log scan (issue 8).

Generates a sendmail mail log of ``--size-mb`` (default 1024 MB, about 5 million lines: a day of
a busy gateway, realistic mix of sessions, deliveries, milter and spamd lines, rejections,
IPv6, pid wrap at 32768), then times ``scan_logs`` in a fresh subprocess (so the peak RSS is
the scan's, not the generator's) twice:

- ``full``: a window covering the whole file, every client line counted (worst case);
- ``1h``: the hourly run's window (the realistic case: most lines are outside it).

Prints MB/s, lines/s and peak RSS, and checks the counts of two planted clients (600 and 3000
sessions in the last hour). The file lives in a temporary directory removed at the end
(``--keep`` to keep it). The file is in the page cache when scanned: this measures parsing,
not the disk.

    .venv/bin/python bench/connwatch_bench.py [--size-mb 1024] [--jobs 2] [--keep] [--dir DIR]
    .venv/bin/python bench/connwatch_bench.py --log KEPT_LOG --jobs 2   # rescan a kept log

With ``--jobs N`` the scans are repeated with N processes (``scan_logs(jobs=N)``); the CPU
time then includes the workers'.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

NOW = datetime(2026, 11, 27, 11, 0, 0, tzinfo=UTC).timestamp()
HEAVY = {"203.0.113.66": 600, "198.51.100.7": 3000}


def _stamp(ts: float, cache: dict[int, str]) -> str:
    s = int(ts)
    v = cache.get(s)
    if v is None:
        dt = datetime.fromtimestamp(s, UTC)
        v = f"{dt:%b} {dt.day:>2} {dt:%H:%M:%S}"
        cache.clear()
        cache[s] = v
    return v


def generate(path: Path, size_mb: int, seed: int = 42) -> tuple[int, float]:
    """Write the log; returns (lines, first timestamp)."""
    rnd = random.Random(seed)
    target = size_mb * 1024 * 1024
    v4 = [f"{rnd.randint(1, 223)}.{rnd.randint(0, 255)}.{rnd.randint(0, 255)}.{rnd.randint(1, 254)}"
          for _ in range(20000)]  # fmt: skip
    v6 = [f"IPv6:2001:db8:{rnd.randint(0, 65535):x}::{rnd.randint(1, 65535):x}"
          for _ in range(2000)]  # fmt: skip
    names = [f"mx{i}.example{i % 97}.net" for i in range(500)] + ["unknown"]
    users = [f"user{i}" for i in range(3000)]
    stores = [f"store{i}.example.edu. [10.1.{i}.{i + 10}]" for i in range(29)]
    # the log spans a day per GB, time proportional to the bytes written (~192 bytes a line)
    span = 86400.0 * size_mb / 1024
    start = NOW - span
    # planted heavy clients: placed among the sessions of the last hour until all are out
    heavy = [ip for ip, n in HEAVY.items() for _ in range(n)]
    rnd.shuffle(heavy)
    cache: dict[int, str] = {}
    out: list[str] = []
    lines = 0
    written = 0
    pid = 1000
    with path.open("w", encoding="ascii") as fh:
        k = 0
        while written < target:
            ts = start + span * min(1.0, (written + 192 * len(out)) / target)
            t = _stamp(ts, cache)
            pid = pid + 1 if pid < 32767 else 300
            if heavy and ts > NOW - 3500 and rnd.random() < 0.15:
                ip = heavy.pop()
            else:
                ip = rnd.choice(v6) if rnd.random() < 0.1 else rnd.choice(v4)
            name = rnd.choice(names)
            relay = f"[{ip}]" if name == "unknown" else f"{name} [{ip}]"
            head = f"{t} gw1 sm-mta[{pid}]:"
            qid = f"4AR{int(ts) % 100000:05d}{pid:05d}"
            r = rnd.random()
            if r < 0.08:
                out.append(
                    f"{head} {qid}: {relay} did not issue MAIL/EXPN/VRFY/ETRN during "
                    "connection to MTA"
                )
            elif r < 0.10:
                out.append(
                    f"{head} NOQUEUE: ruleset=check_relay, arg1={name}, arg2={ip}, "
                    f"relay={relay}, reject=550 5.7.1 Access denied"
                )
            else:
                if r < 0.7:
                    out.append(
                        f"{head} STARTTLS=server, relay={relay}, version=TLSv1.3, verify=NO, "
                        "cipher=TLS_AES_256_GCM_SHA384, bits=256/256"
                    )
                for m in range(1 if rnd.random() < 0.85 else 3):
                    q = f"{qid}{m}"
                    u = rnd.choice(users)
                    if rnd.random() < 0.25:  # greylisted
                        out.append(
                            f"{head} {q}: Milter: to=<{u}@dept.example.edu>, "
                            "reject=451 4.7.1 Greylisted, please retry later"
                        )
                        out.append(
                            f"{head} {q}: from=<bounce-{u}@news.example.com>, size=0, "
                            f"class=0, nrcpts=0, proto=ESMTPS, daemon=MTA, relay={relay}"
                        )
                        continue
                    if rnd.random() < 0.05:
                        out.append(
                            f"{head} {q}: ruleset=check_rcpt, arg1=<{u}@other.example>, "
                            f"relay={relay}, reject=550 5.7.1 <{u}@other.example>... "
                            "Relaying denied"
                        )
                        continue
                    size = rnd.randint(800, 90000)
                    out.append(
                        f"{head} {q}: from=<{u}@example{pid % 97}.org>, size={size}, "
                        f"class=0, nrcpts=1, msgid=<{q}.{pid}@example.org>, "
                        f"bodytype=8BITMIME, proto=ESMTPS, daemon=MTA, tls_verify=NO, "
                        f"auth=NONE, relay={relay}"
                    )
                    out.append(
                        f"{t} gw1 spamd[812]: spamd: result: . 1 - BAYES_00,DKIM_SIGNED,"
                        f"SPF_PASS scantime=0.4,size={size},user=spamd,uid=110,"
                        f"required_score=5.0,rhost=::1,raddr=::1,rport=41234,mid=<{q}>"
                    )
                    out.append(
                        f"{head} {q}: Milter insert (1): header: X-Spam-Status: No, score=1.0"
                    )
                    out.append(
                        f"{t} gw1 sm-mta[{pid + 1}]: {q}: to=<{u}@dept.example.edu>, "
                        f"delay=00:00:01, xdelay=00:00:01, mailer=esmtp, tls_verify=OK, "
                        f"pri={size + 30000}, relay={rnd.choice(stores)}, dsn=2.0.0, "
                        "stat=Sent (Ok: queued as 4ZbXy)"
                    )
                if rnd.random() < 0.03:
                    out.append(f"{head} {qid}: lost input channel from {relay} to MTA after data")
            if k % 5000 == 0:
                out.append(f"{t} gw1 CRON[{pid}]: (root) CMD (/usr/lib/sendmail/sm-queue-check)")
                out.append(f"{t} gw1 sm-mta[999]: garbage \x01\x02 relay= [trunc")
            k += 1
            if len(out) >= 20000:
                chunk = "\n".join(out) + "\n"
                fh.write(chunk)
                written += len(chunk)
                lines += len(out)
                out.clear()
        if out:
            chunk = "\n".join(out) + "\n"
            fh.write(chunk)
            lines += len(out)
    if heavy:
        raise SystemExit(f"log too small to plant the heavy clients ({len(heavy)} left)")
    return lines, start


def scan(path: str, since: float, until: float, jobs: int = 1) -> dict[str, object]:
    from passerelle.maillog import scan_logs

    t0, c0 = time.perf_counter(), time.process_time()
    c = scan_logs([path], since, until, now=until, tz=UTC, skip_stale=False, jobs=jobs)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu += children.ru_utime + children.ru_stime
    st = c.stats
    return {
        "seconds": dt,
        "cpu": cpu,
        "bytes": st.bytes,
        "seeked": st.seeked,
        "lines": st.lines,
        "candidates": st.candidates,
        "sessions": st.sessions,
        "clients": len(c.counts),
        "skipped": st.skipped,
        "heavy": {ip: c.counts.get(ip, 0) for ip in HEAVY},
        "max_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "children_max_rss_kb": children.ru_maxrss,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--dir", help="where to write the log (default: a temporary directory)")
    ap.add_argument("--keep", action="store_true", help="keep the generated log")
    ap.add_argument("--log", help="scan this existing log (made by --keep) instead of a new one")
    ap.add_argument(
        "--jobs", type=int, default=1, help="also scan with this many processes (default 1)"
    )
    ap.add_argument("--scan", help=argparse.SUPPRESS)
    ap.add_argument("--since", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--until", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.scan:
        print(json.dumps(scan(args.scan, args.since, args.until, args.jobs)))
        return 0

    tmp = Path(tempfile.mkdtemp(prefix="connwatch-bench.", dir=args.dir))
    log = Path(args.log) if args.log else tmp / "mail.log"
    try:
        if args.log:
            start = NOW - 86400.0 * log.stat().st_size / (1024 * 1024) / 1024
            size = log.stat().st_size
            print(f"existing log {log}, {size / 1e6:.0f} MB")
        else:
            t0 = time.perf_counter()
            lines, start = generate(log, args.size_mb)
            size = log.stat().st_size
            print(
                f"generated {size / 1e6:.0f} MB, {lines} lines in "
                f"{time.perf_counter() - t0:.1f}s ({log})"
            )
        print(f"python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cpus, "
              f"{platform.processor() or platform.platform()}")  # fmt: skip
        ok = True
        runs = [("full", start - 1, 1), ("1h", NOW - 3600, 1)]
        if args.jobs > 1:
            runs += [("full", start - 1, args.jobs), ("1h", NOW - 3600, args.jobs)]
        for name, since, jobs in runs:
            label = f"{name} j{jobs}"
            res = json.loads(
                subprocess.run(
                    [
                        *(sys.executable, __file__, "--scan", str(log)),
                        *("--since", str(since), "--until", str(NOW), "--jobs", str(jobs)),
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
            )
            secs = float(res["seconds"])
            rss = max(int(res["max_rss_kb"]), int(res["children_max_rss_kb"]))  # type: ignore[call-overload]
            print(
                f"{label:>7}: {secs:6.2f}s (cpu {res['cpu']:.2f}s)  {size / 1e6 / secs:6.0f} MB/s "
                f"of log  read {res['bytes'] / 1e6:.0f} MB (seeked past "
                f"{res['seeked'] / 1e6:.0f} MB)  {res['lines'] / secs / 1e6:5.2f} M lines/s  "
                f"peak RSS {rss / 1024:.0f} MB (per process)  sessions={res['sessions']} "
                f"clients={res['clients']} skipped={res['skipped']} heavy={res['heavy']}"
            )
            for ip, n in HEAVY.items():
                got = res["heavy"][ip]  # type: ignore[index]
                if (name == "1h" and got != n) or got < n:
                    ok = False
                    print(f"  MISMATCH {ip}: expected {n}, got {got}")
        return 0 if ok else 1
    finally:
        if args.keep or args.log:
            print(f"kept {log}")
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
