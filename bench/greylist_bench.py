"""Greylist milter benchmark: 1,000,000 records in the store, concurrent miltertest sessions
over the milter's unix socket, SQLite then MariaDB (throwaway server, like the tests).

    .venv/bin/python bench/greylist_bench.py [--records 1000000] [--seconds 20]
        [--clients 4] [--stores sqlite,mariadb] [--mode messages|one-rcpt] [--no-store]

Modes:
- ``messages``: 10 messages per connection, 5 recipients each (half known triplets);
- ``one-rcpt``: the common greylisted session: connect, HELO, MAIL, ONE RCPT, then abort and
  QUIT; a new connection each time (half known triplets, half new ones).

``--no-store``: the same sessions with every client trusted, so no decision reaches the store:
what is left is the milter's own cost per session (the protocol loop, the connection object,
the exemption path).

Prints decisions/s (one decision = one RCPT answered), sessions/s (connections), p50/p99 RCPT
latency, the milter's CPU (user + system, from /proc) per session and per decision, its RSS,
and, for SQLite, the size of the database and of its WAL file after the run. Everything runs on
this machine: the clients share the CPU with the milter and the database, so the figures are a
lower bound for the milter alone.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import shutil
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from miltertest import MilterConnection, codec
from miltertest import constants as C

from passerelle.greylist.policy import triplet_key
from passerelle.greylist.store import open_store

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "protocol"))

RCPTS_PER_MESSAGE = 5
MESSAGES_PER_CONNECTION = 10


def preload_triplet(i: int) -> tuple[str, str, str, str]:
    ip = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
    group = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.0/24"
    letters = "".join(chr(97 + int(d)) for d in str(i))
    return ip, group, f"sender.{letters}@example.net", f"rcpt{letters}@example.org"


# fill(): the pending triplets were first seen this long before the fill (a retry now is
# "early": under min_delay), the passed ones last seen an hour before it.
PENDING_AGE = 600


def fill(url: str, n: int) -> float:
    store = open_store(url, 30.0)
    store.migrate()
    now = time.time()
    t = time.monotonic()

    def rows():  # noqa: ANN202
        for i in range(n):
            _ip, group, snd, rcpt = preload_triplet(i)
            k = triplet_key(group, snd, rcpt)
            if i % 2:
                yield (
                    k,
                    group,
                    snd.encode(),
                    rcpt.encode(),
                    1,
                    now - 86400 * 2,
                    now - 3600,
                    now - 86400,
                    now - 3600 + 15 * 86400,
                    1,
                    3,
                    3,
                )
            else:
                yield (
                    k,
                    group,
                    snd.encode(),
                    rcpt.encode(),
                    0,
                    now - PENDING_AGE,
                    now - PENDING_AGE,
                    None,
                    now - PENDING_AGE + 15 * 3600,
                    1,
                    0,
                    0,
                )

    # sorted by primary key: sequential B-tree inserts instead of random ones
    data = sorted(rows())
    if url.startswith("sqlite:"):
        store.conn().execute("PRAGMA cache_size=-262144")
    store.bulk_load(data, chunk=10000)
    del data
    elapsed = time.monotonic() - t
    store.close()
    return elapsed


def rebase(db: Path, now: float) -> float:
    """Shift every time of a copied template so that it looks filled ``now``; the shift (s).

    Without it the mix of decisions depends on the template's age: its pending triplets are
    early retries for 30 minutes after the fill (min_delay 40m), then delayed ones that pass,
    then after 15 hours restarts, and the figures of two runs a few hours apart measure
    different work. The fill time is read back from the newest pending first_seen (indexed).
    """
    c = sqlite3.connect(db, isolation_level=None)
    try:
        (newest,) = c.execute("SELECT MAX(first_seen) FROM greylist WHERE state = 0").fetchone()
        if newest is None:
            return 0.0
        shift = now - (float(newest) + PENDING_AGE)
        c.execute("PRAGMA cache_size=-262144")
        c.execute("BEGIN")
        c.execute(
            "UPDATE greylist SET first_seen = first_seen + ?1, last_seen = last_seen + ?1,"
            " passed_at = passed_at + ?1, expires = expires + ?1",
            (shift,),
        )
        c.execute("COMMIT")
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the run starts with an empty WAL
        return shift
    finally:
        c.close()


def _step(conn: MilterConnection, skip: int, noreply: int, cmd: str, **kw: object) -> None:
    """Send one SMTP step the way sendmail does: not at all when the milter negotiated it
    away, without waiting when it asked for no reply."""
    flags = conn.protocol_flags
    if flags & skip:
        return
    if flags & noreply:
        conn._send(cmd, **kw)
    else:
        conn.send_ar(cmd, **kw)


def _open(path: str, ip: str) -> tuple[socket.socket, MilterConnection]:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    s.connect(path)
    conn = MilterConnection(s)
    conn.optneg_mta()
    conn.send_macro(C.SMFIC_CONNECT, **{"{client_resolve}": "FAIL"})
    _step(
        conn,
        C.SMFIP_NOCONNECT,
        C.SMFIP_NR_CONN,
        C.SMFIC_CONNECT,
        hostname=f"[{ip}]",
        family="4",
        port=25,
        address=ip,
    )
    _step(conn, C.SMFIP_NOHELO, C.SMFIP_NR_HELO, C.SMFIC_HELO, helo=f"h{ip}.example.net")
    return s, conn


def _count(reply: tuple, decisions: dict[str, int]) -> None:  # type: ignore[type-arg]
    if reply[0] == C.SMFIR_CONTINUE:
        decisions["continue"] += 1
    elif reply[0] == C.SMFIR_REPLYCODE and reply[1]["smtpcode"] == "451":
        decisions["tempfail"] += 1
    else:
        decisions["other"] += 1


def _recv_msg(s: socket.socket) -> bytes:
    """One milter packet (command byte + data) read from ``s``."""
    buf = b""
    while len(buf) < 4:
        got = s.recv(4 - len(buf))
        if not got:
            raise ConnectionError("milter closed the connection")
        buf += got
    n = struct.unpack("!I", buf)[0]
    data = b""
    while len(data) < n:
        got = s.recv(n - len(data))
        if not got:
            raise ConnectionError("milter closed the connection")
        data += got
    return data


def client_one_rcpt(
    path: str, seconds: float, n_records: int, seed: int, out: multiprocessing.Queue
) -> None:  # type: ignore[type-arg]
    """One recipient per connection: connect, HELO, MAIL, RCPT, abort, QUIT.

    A lean MTA side (packets built with miltertest's codec, constant ones once; the steps
    without a reply written together, as sendmail writes them) so that the client processes
    leave the CPU to the milter."""
    rnd = random.Random(seed)
    lat: list[float] = []
    decisions = {"continue": 0, "tempfail": 0, "other": 0, "error": 0}
    sessions = 0
    actions, protocol = codec.optneg_mta_capable(C.SMFI_V6_ACTS, C.SMFI_V6_PROT)
    optneg = codec.encode_optneg(actions, protocol)
    macro = codec.encode_msg(
        C.SMFIC_MACRO, cmdcode=C.SMFIC_CONNECT, nameval=["{client_resolve}", "FAIL"]
    )
    tail = codec.encode_msg(C.SMFIC_ABORT) + codec.encode_msg(C.SMFIC_QUIT)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        i = rnd.randrange(n_records)
        ip, _g, snd, rcpt = preload_triplet(i)
        # half known triplets (pending or passed), half new ones
        r = rcpt if rnd.random() < 0.5 else f"new{rnd.getrandbits(48):x}@example.org"
        try:
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(30)
            s.connect(path)
            s.sendall(optneg)
            reply = _recv_msg(s)
            if reply[:1] != C.SMFIC_OPTNEG.encode():
                raise RuntimeError(f"bad option negotiation reply {reply!r}")
            flags = struct.unpack("!III", reply[1:13])[2]
            steps = [
                (
                    C.SMFIP_NOCONNECT,
                    C.SMFIP_NR_CONN,
                    macro
                    + codec.encode_msg(
                        C.SMFIC_CONNECT, hostname=f"[{ip}]", family="4", port=25, address=ip
                    ),
                ),
                (
                    C.SMFIP_NOHELO,
                    C.SMFIP_NR_HELO,
                    codec.encode_msg(C.SMFIC_HELO, helo=f"h{i}.example.net"),
                ),
                (
                    C.SMFIP_NOMAIL,
                    C.SMFIP_NR_MAIL,
                    codec.encode_msg(C.SMFIC_MAIL, args=[f"<{snd}>"]),
                ),
            ]
            pending = b""
            for skip, noreply, packet in steps:
                if flags & skip:
                    continue
                pending += packet
                if not flags & noreply:
                    s.sendall(pending)
                    pending = b""
                    _recv_msg(s)
            t = time.perf_counter()
            s.sendall(pending + codec.encode_msg(C.SMFIC_RCPT, args=[f"<{r}>"]))
            reply = _recv_msg(s)
            lat.append(time.perf_counter() - t)
            if reply[:1] == C.SMFIR_CONTINUE.encode():
                decisions["continue"] += 1
            elif reply[:1] == C.SMFIR_REPLYCODE.encode() and reply[1:4] == b"451":
                decisions["tempfail"] += 1
            else:
                decisions["other"] += 1
            s.sendall(tail)
            s.close()
        except OSError:  # a connection the milter dropped: counted, not fatal
            decisions["error"] += 1
            s.close()
            continue
        sessions += 1
    out.put((lat, decisions, sessions))


def client(
    path: str, seconds: float, n_records: int, seed: int, out: multiprocessing.Queue
) -> None:  # type: ignore[type-arg]
    rnd = random.Random(seed)
    lat: list[float] = []
    decisions = {"continue": 0, "tempfail": 0, "other": 0}
    sessions = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        i = rnd.randrange(n_records)
        ip, _g, _s, _r = preload_triplet(i)
        s, conn = _open(path, ip)
        sessions += 1
        for _m in range(MESSAGES_PER_CONNECTION):
            if time.monotonic() >= end:
                break
            j = i if rnd.random() < 0.5 else rnd.randrange(n_records)
            _ip, _g, snd, rcpt = preload_triplet(j)
            conn.send_ar(C.SMFIC_MAIL, args=[f"<{snd}>"])
            for k in range(RCPTS_PER_MESSAGE):
                # half known triplets (pending or passed), half new ones
                r = rcpt if k % 2 == 0 else f"new{rnd.getrandbits(48):x}@example.org"
                t = time.perf_counter()
                reply = conn.send_ar(C.SMFIC_RCPT, args=[f"<{r}>"])
                lat.append(time.perf_counter() - t)
                _count(reply, decisions)
            conn._send(C.SMFIC_ABORT)
        conn._send(C.SMFIC_QUIT)
        s.close()
    out.put((lat, decisions, sessions))


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and all its threads so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def file_mb(path: Path) -> float:
    return path.stat().st_size / 1e6 if path.exists() else 0.0


def rss_kb(pid: int) -> tuple[int, int]:
    vals = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            vals[k] = int(v.split()[0])
    return vals.get("VmRSS", 0), vals.get("VmHWM", 0)


def run(kind: str, args: argparse.Namespace, work: Path) -> dict[str, float]:
    maria = None
    if kind == "sqlite":
        url = f"sqlite:///{work}/greylist.sqlite"
    else:
        from greylist_fixtures import start_mariadb

        maria = start_mariadb(work / "maria")
        url = maria.create_db("greylist")
    try:
        tpl = Path(args.sqlite_template) if args.sqlite_template and kind == "sqlite" else None
        if tpl is not None and tpl.exists():
            shutil.copyfile(tpl, work / "greylist.sqlite")
            t = time.monotonic()
            shift = rebase(work / "greylist.sqlite", time.time())
            print(
                f"[{kind}] copied the filled store from {tpl}, its times moved {shift / 3600:.2f} h"
                f" forward (as if filled now; {time.monotonic() - t:.1f} s)",
                flush=True,
            )
        else:
            fill_s = fill(url, args.records)
            print(f"[{kind}] filled {args.records} records in {fill_s:.1f} s", flush=True)
            if tpl is not None:
                shutil.copyfile(work / "greylist.sqlite", tpl)
        sock = work / f"{kind}.sock"
        cfg = work / f"{kind}.toml"
        cfg.write_text(
            f'[greylist]\nstore = "{url}"\nsocket = "unix:{sock}"\nhostname = "bench"\n'
            f'store_threads = {args.store_threads}\nlog_level = "warning"\n'
            "auto_whitelist_after = 0\n"
            + ('[whitelist]\ntrusted_networks = ["10.0.0.0/8"]\n' if args.no_store else "")
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "passerelle.cli", "greylist", "milter", "--config", str(cfg)],
            stdout=subprocess.DEVNULL,
            stderr=(work / f"{kind}.log").open("wb"),
        )
        try:
            for _ in range(200):
                if sock.exists():
                    break
                time.sleep(0.05)
            ctx = multiprocessing.get_context("fork")
            q = ctx.Queue()
            target = client_one_rcpt if args.mode == "one-rcpt" else client
            procs = [
                ctx.Process(target=target, args=(str(sock), args.seconds, args.records, n, q))
                for n in range(args.clients)
            ]
            cpu0 = cpu_seconds(proc.pid)
            t0 = time.monotonic()
            for p in procs:
                p.start()
            lat: list[float] = []
            dec = {"continue": 0, "tempfail": 0, "other": 0, "error": 0}
            sessions = 0
            for _ in procs:
                lt, d, n = q.get(timeout=args.seconds + 120)
                lat += lt
                sessions += n
                for k, v in d.items():
                    dec[k] += v
            wall = time.monotonic() - t0
            cpu = cpu_seconds(proc.pid) - cpu0
            for p in procs:
                p.join()
            rss, hwm = rss_kb(proc.pid)
            # measured while the milter still runs (closing the last connection checkpoints
            # and removes the WAL, which would hide its size)
            db_mb = file_mb(work / "greylist.sqlite")
            wal_mb = file_mb(work / "greylist.sqlite-wal")
        finally:
            proc.terminate()
            proc.wait(30)
        lat.sort()
        res = {
            "decisions_per_s": len(lat) / wall,
            "sessions_per_s": sessions / wall,
            "cpu_us_per_session": cpu / max(sessions, 1) * 1e6,
            "cpu_us_per_decision": cpu / max(len(lat), 1) * 1e6,
            "p50_ms": lat[len(lat) // 2] * 1000,
            "p99_ms": lat[int(len(lat) * 0.99)] * 1000,
            "rss_mb": rss / 1024,
            "peak_rss_mb": hwm / 1024,
        }
        print(
            f"[{kind}] mode {args.mode}: {len(lat)} decisions, {sessions} sessions in "
            f"{wall:.1f} s with {args.clients} client processes: "
            f"{res['decisions_per_s']:.0f} decisions/s, {res['sessions_per_s']:.0f} sessions/s, "
            f"p50 {res['p50_ms']:.2f} ms, p99 {res['p99_ms']:.2f} ms, milter CPU "
            f"{res['cpu_us_per_session']:.0f} us/session "
            f"({res['cpu_us_per_decision']:.0f} us/decision), milter RSS {res['rss_mb']:.1f} MB "
            f"(peak {res['peak_rss_mb']:.1f} MB); replies {dec}",
            flush=True,
        )
        if kind == "sqlite":
            res["db_mb"], res["wal_mb"] = db_mb, wal_mb
            print(
                f"[{kind}] after the run (milter still running): database {db_mb:.1f} MB, "
                f"WAL {res['wal_mb']:.1f} MB",
                flush=True,
            )
        return res
    finally:
        if maria is not None:
            maria.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--store-threads", type=int, default=4)
    ap.add_argument("--stores", default="sqlite,mariadb")
    ap.add_argument(
        "--sqlite-template",
        help="filled SQLite store to copy instead of filling one (made on first use; the "
        "same --records every time); the copy's times are moved to now, so that the mix of "
        "decisions does not depend on the template's age",
    )
    ap.add_argument("--mode", choices=("messages", "one-rcpt"), default="messages")
    ap.add_argument(
        "--no-store",
        action="store_true",
        help="every client trusted (the generated ones are in 10.0.0.0/8): the same sessions "
        "without a store call, to tell the milter's own cost (the protocol loop, the connection "
        "object) from the store's",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="glbench") as d:
        for kind in args.stores.split(","):
            sub = Path(d) / kind
            sub.mkdir()
            run(kind, args, sub)
    return 0


if __name__ == "__main__":
    sys.exit(main())
