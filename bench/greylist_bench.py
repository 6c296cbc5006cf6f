"""Greylist milter benchmark: 1,000,000 records in the store, concurrent miltertest sessions
over the milter's unix socket, SQLite then MariaDB (throwaway server, like the tests).

    .venv/bin/python bench/greylist_bench.py [--records 1000000] [--seconds 20]
        [--clients 4] [--stores sqlite,mariadb]

Prints decisions/s (one decision = one RCPT answered), p50/p99 RCPT latency and the milter's
RSS. Everything runs on this machine: the clients share the CPU with the milter and the
database, so the figures are a lower bound for the milter alone.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from miltertest import MilterConnection
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
                    now - 600,
                    now - 600,
                    None,
                    now - 600 + 15 * 3600,
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


def client(
    path: str, seconds: float, n_records: int, seed: int, out: multiprocessing.Queue
) -> None:  # type: ignore[type-arg]
    rnd = random.Random(seed)
    lat: list[float] = []
    decisions = {"continue": 0, "tempfail": 0, "other": 0}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(30)
        s.connect(path)
        conn = MilterConnection(s)
        conn.optneg_mta()
        i = rnd.randrange(n_records)
        ip, _g, _s, _r = preload_triplet(i)
        conn.send_macro(C.SMFIC_CONNECT, **{"{client_resolve}": "FAIL"})
        if conn.protocol_flags & C.SMFIP_NR_CONN:
            conn._send(C.SMFIC_CONNECT, hostname=f"[{ip}]", family="4", port=25, address=ip)
        else:
            conn.send_ar(C.SMFIC_CONNECT, hostname=f"[{ip}]", family="4", port=25, address=ip)
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
                if reply[0] == C.SMFIR_CONTINUE:
                    decisions["continue"] += 1
                elif reply[0] == C.SMFIR_REPLYCODE and reply[1]["smtpcode"] == "451":
                    decisions["tempfail"] += 1
                else:
                    decisions["other"] += 1
            conn._send(C.SMFIC_ABORT)
        conn._send(C.SMFIC_QUIT)
        s.close()
    out.put((lat, decisions))


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
        fill_s = fill(url, args.records)
        print(f"[{kind}] filled {args.records} records in {fill_s:.1f} s", flush=True)
        sock = work / f"{kind}.sock"
        cfg = work / f"{kind}.toml"
        cfg.write_text(
            f'[greylist]\nstore = "{url}"\nsocket = "unix:{sock}"\nhostname = "bench"\n'
            f'store_threads = {args.store_threads}\nlog_level = "warning"\n'
            "auto_whitelist_after = 0\n"
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
            procs = [
                ctx.Process(target=client, args=(str(sock), args.seconds, args.records, n, q))
                for n in range(args.clients)
            ]
            t0 = time.monotonic()
            for p in procs:
                p.start()
            lat: list[float] = []
            dec = {"continue": 0, "tempfail": 0, "other": 0}
            for _ in procs:
                lt, d = q.get(timeout=args.seconds + 120)
                lat += lt
                for k, v in d.items():
                    dec[k] += v
            wall = time.monotonic() - t0
            for p in procs:
                p.join()
            rss, hwm = rss_kb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(30)
        lat.sort()
        res = {
            "decisions_per_s": len(lat) / wall,
            "p50_ms": lat[len(lat) // 2] * 1000,
            "p99_ms": lat[int(len(lat) * 0.99)] * 1000,
            "rss_mb": rss / 1024,
            "peak_rss_mb": hwm / 1024,
        }
        print(
            f"[{kind}] {len(lat)} decisions in {wall:.1f} s with {args.clients} client processes: "
            f"{res['decisions_per_s']:.0f} decisions/s, p50 {res['p50_ms']:.2f} ms, "
            f"p99 {res['p99_ms']:.2f} ms, milter RSS {res['rss_mb']:.1f} MB "
            f"(peak {res['peak_rss_mb']:.1f} MB); replies {dec}",
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
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="glbench") as d:
        for kind in args.stores.split(","):
            sub = Path(d) / kind
            sub.mkdir()
            run(kind, args, sub)
    return 0


if __name__ == "__main__":
    sys.exit(main())
