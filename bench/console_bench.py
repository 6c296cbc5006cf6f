"""Benchmark: the console's quarantine search and its results page.

Fills a quarantine index (``passerelle.console.quarantine_index``) with 100,000 held
messages (deterministic random: 20 gateways, 5,000 recipients, 2,000 senders, subjects from
a word list, the four reasons, 90 days of held times), then reports:

- 200 varied searches (recipient, sender or subject substrings, reason, gateway, date
  ranges, combinations, deep pages; some matching nothing, which reads every row): p50/p95
  in ms, target p95 < 200 ms;
- the render of a 1,000-row results page: the template alone (target < 100 ms), and the
  whole request through the WSGI application (session check, search, render).

The index is in SQLite by default (a single gateway), or with ``--mariadb`` in MariaDB (the
fleet's shared database): a throwaway server started for the run from the test suite's
helper (``tests/protocol/greylist_fixtures.py``: needs the Debian package mariadb-server,
PyMySQL and pytest, which that module imports), its tables created by the console's own
migrations, filled with multi-row INSERTs in transactions, and stopped at the end, also on
an error, Ctrl-C or SIGTERM. On MariaDB the CPU time of the thread is the client's only; the
server's CPU over the searches is printed as well.

Run: .venv/bin/python bench/console_bench.py [--rows 100000] [--searches 200]
     [--renders 30] [--db FILE | --mariadb]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import random
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from passerelle.console.auth import Accounts, hash_password  # noqa: E402
from passerelle.console.quarantine_index import (  # noqa: E402
    FIELDS,
    INSERT_SQL,
    REASONS,
    HeldMessage,
    Part,
    QuarantineIndex,
    insert_values,
    parse_query,
)
from passerelle.console.server import connection_factory  # noqa: E402
from passerelle.console.web import make_app  # noqa: E402
from passerelle.dburl import parse_store_url  # noqa: E402

T_END = 1_764_633_600.0  # 2025-12-02T00:00:00Z
SPAN = 90 * 86400.0
WORDS = [
    "invoice",
    "payment",
    "order",
    "urgent",
    "account",
    "meeting",
    "report",
    "shipment",
    "delivery",
    "notice",
    "password",
    "update",
    "security",
    "alert",
    "document",
    "scan",
    "contract",
    "offer",
    "price",
    "quote",
    "reminder",
    "statement",
    "bonus",
    "refund",
    "ticket",
    "package",
    "tax",
]
EXTS = ("exe", "zip", "pdf", "docm", "iso", "js", "scr", "xlsm")


def message(n: int, rng: random.Random) -> HeldMessage:
    rcpts = tuple(
        f"user{rng.randrange(5000)}@dept{rng.randrange(40)}.example.com"
        for _ in range(1 + (rng.random() < 0.2) * rng.randrange(1, 5))
    )
    reason = rng.choice(REASONS)
    ext = rng.choice(EXTS)
    return HeldMessage(
        gateway=f"gw{rng.randrange(20):02d}.example.net",
        qid=f"20251202T{n % 240000:06d}-{rng.getrandbits(48):012x}",
        queue_id=f"5B{rng.getrandbits(40):010X}",
        message_id=f"<{rng.getrandbits(64):016x}@mail.example.org>",
        sender=f"sender{rng.randrange(2000)}@host{rng.randrange(300)}.example.org",
        recipients=rcpts,
        subject=" ".join(rng.choice(WORDS) for _ in range(rng.randrange(2, 7))).capitalize(),
        reason=reason,
        rule={"virus": "Win.Trojan.Agent", "spam": "score 14.2", "rule": f"block-{ext}"}.get(
            reason, "outbreak mode"
        ),
        size=rng.randrange(2_000, 5_000_000),
        held_at=T_END - rng.random() * SPAN,
        headers="From: x\nTo: y\nSubject: z",
        parts=(Part(f"file.{ext}", "application/octet-stream", rng.randrange(1000, 10**6)),),
    )


def fill(path: str, rows: int, seed: int) -> float:
    rng = random.Random(seed)
    conn = sqlite3.connect(path, isolation_level=None)
    index = QuarantineIndex(conn)
    index.migrate()
    start = time.perf_counter()
    conn.execute("BEGIN")
    for n in range(rows):
        index.upsert(message(n, rng), T_END)
        if n % 10_000 == 9_999:
            conn.execute("COMMIT")
            conn.execute("BEGIN")
    conn.execute("COMMIT")
    conn.close()
    return time.perf_counter() - start


def fill_mariadb(connect: Callable[[], Any], rows: int, seed: int, batch: int = 1000) -> float:
    """The same messages as ``fill``, in one multi-row INSERT per ``batch`` (PyMySQL's
    executemany), committed every 10 batches."""
    rng = random.Random(seed)
    conn = connect()
    try:
        QuarantineIndex(conn).migrate()
        start = time.perf_counter()
        cur = conn.cursor()
        conn.begin()
        for first in range(0, rows, batch):
            cur.executemany(
                INSERT_SQL.replace("?", "%s"),  # PyMySQL's placeholders
                [
                    insert_values(message(n, rng), T_END)
                    for n in range(first, min(rows, first + batch))
                ],
            )
            if first // batch % 10 == 9:
                conn.commit()
                conn.begin()
        conn.commit()
        return time.perf_counter() - start
    finally:
        conn.close()


def day(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


def searches(count: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed + 1)
    out: list[dict[str, str]] = []
    for i in range(count):
        kind = i % 10
        since = T_END - rng.random() * SPAN
        if kind == 0:
            q = {"recipient": f"user{rng.randrange(5000)}@"}
        elif kind == 1:
            q = {"sender": f"sender{rng.randrange(2000)}@"}
        elif kind == 2:
            q = {"subject": rng.choice(WORDS)}
        elif kind == 3:
            q = {"reason": rng.choice(REASONS)}
        elif kind == 4:
            q = {"gateway": f"gw{rng.randrange(20):02d}.example.net"}
        elif kind == 5:
            q = {"since": day(since), "until": day(since + 7 * 86400)}
        elif kind == 6:
            q = {"recipient": f"dept{rng.randrange(40)}", "reason": rng.choice(REASONS)}
        elif kind == 7:
            q = {"subject": "no such words at all"}  # matches nothing: reads every row
        elif kind == 8:
            q = {"reason": rng.choice(REASONS), "offset": str(rng.randrange(0, 5000))}
        else:
            q = {
                "gateway": f"gw{rng.randrange(20):02d}.example.net",
                "since": day(since),
                "subject": rng.choice(WORDS),
            }
        if rng.random() < 0.3:
            q["limit"] = str(rng.choice((100, 200, 500)))
        out.append(q)
    return out


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def line(name: str, values: list[float], target: float | None = None) -> str:
    p50, p95 = pct(values, 50), pct(values, 95)
    verdict = "" if target is None else ("  OK" if p95 < target else f"  OVER {target:g} ms")
    return f"{name:<50} p50 {p50:7.1f} ms   p95 {p95:7.1f} ms   max {max(values):7.1f} ms{verdict}"


def call(app: object, path: str, query: dict[str, str], cookie: str) -> tuple[int, bytes]:
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": urlencode(query),
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_COOKIE": cookie,
        "wsgi.input": io.BytesIO(b""),
    }
    got: dict[str, str] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        got["status"] = status

    body = b"".join(app(environ, start_response))  # type: ignore[operator]
    return int(got["status"].split()[0]), body


def mariadbd_cpu(pid: int) -> float:
    """CPU seconds (user + system, every thread) the process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """SIGTERM ends the run like Ctrl-C (the ``finally`` clauses stop the server)."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def throwaway_mariadb() -> Iterator[Any]:
    """A MariaDB server of its own for the run (the test suite's helper), always stopped."""
    sys.path.insert(0, str(ROOT / "tests"))
    from plugins import load

    fixtures = load("tests/protocol/greylist_fixtures.py")
    # a short path: unix socket paths are limited to 107 bytes
    base = Path(tempfile.mkdtemp(prefix="console-bench-"))
    server = fixtures.MariaDB(base)
    try:
        try:
            server.start()
        except fixtures.pytest.fail.Exception as exc:  # the helper reports with pytest.fail
            raise SystemExit(f"console_bench: {exc}") from None
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--searches", type=int, default=200)
    ap.add_argument("--renders", type=int, default=30)
    ap.add_argument("--seed", type=int, default=17)
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--db", help="keep the SQLite index in this file (default: a temporary one)")
    where.add_argument(
        "--mariadb",
        action="store_true",
        help="the index in a throwaway MariaDB server started for the run (not SQLite)",
    )
    args = ap.parse_args()
    if not args.mariadb:
        return run_sqlite(args)
    try:
        with sigterm_raises(), throwaway_mariadb() as server:
            return run_mariadb(args, server)
    except KeyboardInterrupt:  # the server is stopped by now
        print("console_bench: interrupted, the throwaway MariaDB stopped", file=sys.stderr)
        return 130


def run_sqlite(args: argparse.Namespace) -> int:
    tmp = tempfile.TemporaryDirectory()
    path = args.db or os.path.join(tmp.name, "console.sqlite")
    print(
        f"python {platform.python_version()}, sqlite {sqlite3.sqlite_version}, "
        f"{os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f}"
    )
    if not os.path.exists(path) or args.db is None:
        took = fill(path, args.rows, args.seed)
        print(f"filled {args.rows} held messages in {took:.1f} s ({path})")

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(path, isolation_level=None)

    try:
        measure(args, connect)
    finally:
        tmp.cleanup()
    return 0


def run_mariadb(args: argparse.Namespace, server: Any) -> int:
    url = server.create_db("console_bench")
    connect = connection_factory(parse_store_url(url), timeout=60.0)
    conn = connect()
    try:
        cur = conn.cursor()
        cur.execute("SELECT VERSION()")
        version = cur.fetchone()[0]
    finally:
        conn.close()
    print(
        f"python {platform.python_version()}, MariaDB {version} (throwaway server, "
        f"{parse_store_url(url).redacted()}), {os.cpu_count()} cpus, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    took = fill_mariadb(connect, args.rows, args.seed)
    print(f"filled {args.rows} held messages in {took:.1f} s (MariaDB {version})")
    conn = connect()
    try:  # fresh index statistics, as a server that has run a while has them
        cur = conn.cursor()
        cur.execute("ANALYZE TABLE console_quarantine")
        cur.fetchall()
    finally:
        conn.close()
    measure(args, connect, server.proc.pid)
    return 0


def measure(args: argparse.Namespace, connect: Callable[[], Any], server_pid: int = 0) -> None:
    """The searches and the renders on the filled index; ``server_pid``: a MariaDB server's."""
    conn = connect()
    try:
        measure_on(args, connect, conn, server_pid)
    finally:
        conn.close()


def measure_on(
    args: argparse.Namespace, connect: Callable[[], Any], conn: Any, server_pid: int
) -> None:
    index = QuarantineIndex(conn)
    times: list[float] = []
    cpu: list[float] = []
    found: list[int] = []
    server_cpu = mariadbd_cpu(server_pid) if server_pid else 0.0
    for q in searches(args.searches, args.seed):
        start, start_cpu = time.perf_counter(), time.thread_time()
        page = index.search(q)
        times.append((time.perf_counter() - start) * 1000)
        cpu.append((time.thread_time() - start_cpu) * 1000)
        found.append(len(page.rows))
    print(line(f"search ({len(times)} varied queries), wall", times, 200.0))
    if server_pid:
        server_cpu = mariadbd_cpu(server_pid) - server_cpu
        print(line("search, CPU time of the thread (client only)", cpu))
        print(
            f"{'search, CPU time of mariadbd':<50} {server_cpu:.2f} s in all, "
            f"mean {server_cpu * 1000 / len(times):.1f} ms a search"
        )
    else:
        print(line("search, CPU time of the thread", cpu, 200.0))
    print(f"{'':<50} rows returned: median {statistics.median(found):.0f}, max {max(found)}")

    # a 1,000-row page: the template alone, then the whole request through the app
    accounts = Accounts.from_inventory(
        [{"name": "bench", "role": "admin", "password_hash": hash_password("bench", 10_000)}]
    )
    secret = b"b" * 32

    app = make_app(connect, accounts, secret, time.time)
    token, session = app.sessions.issue("bench", time.time())
    from passerelle.console.web import User

    user = User("bench", "admin", session, app.sessions.csrf_token(session))
    page = index.search(parse_query({"limit": "1000"}))
    assert len(page.rows) == 1000
    template = app.env.get_template("quarantine.html")
    form = dict.fromkeys(FIELDS, "")
    renders: list[float] = []
    renders_cpu: list[float] = []
    size = 0
    for _ in range(args.renders):
        start, start_cpu = time.perf_counter(), time.thread_time()
        html = template.render(
            user=user,
            base="",
            link=app._link,
            form=form,
            page=page,
            error="",
            reasons=REASONS,
            states=("held", "released", "deleted"),
            prev_link="",
            next_link="/quarantine?offset=1000",
        )
        renders.append((time.perf_counter() - start) * 1000)
        renders_cpu.append((time.thread_time() - start_cpu) * 1000)
        size = len(html)
    print(line("render of a 1,000-row page (template), wall", renders, 100.0))
    print(line("render, CPU time of the thread", renders_cpu, 100.0))
    requests: list[float] = []
    cookie = f"passerelle_console={token}"
    queries = ({"limit": "1000"}, {"limit": "1000", "reason": "virus"})
    # rows each page holds: 1,000, or fewer virus ones in a small index (--rows 2000)
    expected = [len(index.search(parse_query(q)).rows) for q in queries]
    for i in range(args.renders):
        query = queries[i % 2]
        start = time.perf_counter()
        status, body = call(app, "/quarantine", query, cookie)
        requests.append((time.perf_counter() - start) * 1000)
        assert status == 200 and body.count(b"<tr>") >= expected[i % 2], status
    print(line("GET /quarantine?limit=1000 (search+render), wall", requests))
    print(f"{'':<50} page size {size / 1024:.0f} KiB")


if __name__ == "__main__":
    raise SystemExit(main())
