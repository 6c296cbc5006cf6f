"""The greylist milter's Python side in one process, without sockets: per-session CPU and a
cProfile of the callbacks, the decision and the store.

    .venv/bin/python bench/greylist_profile.py --sqlite-template /tmp/gl-1m.sqlite
        [--sessions 10000] [--profile] [--sort tottime] [--log-level warning]

Each session is what the one-recipient mode of ``bench/greylist_bench.py`` sends (connect,
MAIL, one RCPT, abort, close; half known triplets, half new ones), driven through pymilter's
own Python dispatch (``negotiate_callback``, ``connect_callback``, the ``*_bytes``
decoders, ``close_callback``) with a fake milter context, on the milter's binding
(``milterrun.bind``), engine and serial SQLite store (a copy of the template: make one with
``greylist_bench.py --sqlite-template``). What it leaves out is the protocol loop
(``passerelle.milterloop``) and the socket I/O: the figures are the part of the milter's CPU
per session that is the callbacks, the engine and the store.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import Milter

from passerelle.greylist.config import parse_config
from passerelle.greylist.daemon import GreylistMilter
from passerelle.greylist.engine import Greylister
from passerelle.greylist.store import open_store
from passerelle.logsetup import setup_logging
from passerelle.milterrun import bind

sys.path.insert(0, str(Path(__file__).resolve().parent))
from greylist_bench import preload_triplet, rebase


class FakeContext:
    """What pymilter's ``milterContext`` offers the callbacks used here."""

    def __init__(self) -> None:
        self.priv: Any = None

    def setpriv(self, p: Any) -> None:
        self.priv = p

    def getpriv(self) -> Any:
        return self.priv

    def getsymval(self, name: str) -> str | None:
        return "FAIL" if name == "{client_resolve}" else None

    def setreply(self, *args: Any) -> None:
        return None


def session(rnd: random.Random, records: int) -> int:
    i = rnd.randrange(records)
    ip, _g, snd, rcpt = preload_triplet(i)
    r = rcpt if rnd.random() < 0.5 else f"new{rnd.getrandbits(48):x}@example.org"
    ctx = FakeContext()
    Milter.negotiate_callback(ctx, [Milter.CURR_ACTS, 0x1FFFFF, 0, 0])
    Milter.connect_callback(ctx, f"[{ip}]", socket.AF_INET, (ip, 25))
    ctx.getpriv().envfrom_bytes(f"<{snd}>".encode())  # what runmilter's lambdas call
    rc = ctx.getpriv().envrcpt_bytes(f"<{r}>".encode())
    ctx.getpriv().abort()
    Milter.close_callback(ctx)
    return int(rc)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sqlite-template", required=True, help="filled store to copy")
    ap.add_argument("--records", type=int, default=1_000_000, help="as the template was made")
    ap.add_argument("--sessions", type=int, default=10000)
    ap.add_argument("--warmup", type=int, default=2000)
    ap.add_argument("--profile", action="store_true", help="print a cProfile of the sessions")
    ap.add_argument("--sort", default="tottime")
    ap.add_argument("--log-level", default="warning", help="the bench's milter logs warnings")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="glprof") as d:
        db = Path(d) / "greylist.sqlite"
        shutil.copyfile(args.sqlite_template, db)
        rebase(db, time.time())  # the mix of greylist_bench.py, whatever the template's age
        cfg = parse_config(
            {
                "greylist": {
                    "store": f"sqlite:///{db}",
                    "hostname": "bench",
                    "auto_whitelist_after": 0,
                    "log_level": args.log_level,
                }
            }
        )
        setup_logging("greylist", args.log_level, stderr=False)
        assert cfg.store_url is not None
        store = open_store(cfg.store_url, cfg.store_timeout, serial=True)
        store.migrate()
        engine = Greylister(cfg, store)
        engine.start_background()
        Milter.factory = bind(GreylistMilter, engine, "greylist")
        rnd = random.Random(1)
        try:
            for _ in range(args.warmup):
                session(rnd, args.records)
            prof = cProfile.Profile() if args.profile else None
            if prof is not None:
                prof.enable()
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(args.sessions):
                session(rnd, args.records)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            if prof is not None:
                prof.disable()
                pstats.Stats(prof).sort_stats(args.sort).print_stats(40)
        finally:
            engine.close()
        n = args.sessions
        print(
            f"{n} sessions: {cpu / n * 1e6:.1f} us CPU/session (this process, every thread), "
            f"{wall / n * 1e6:.1f} us wall/session"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
