"""Benchmark: the antivirus content milter with a real clamd.

Generates a corpus of messages with attachments (text, PDF, zip of documents, executables,
EICAR), starts a throwaway clamd and the milter, then reports:

- clamd's own scan time per message (INSTREAM straight to clamd);
- messages per second through the milter over its socket (miltertest as the MTA);
- the milter's overhead per message over clamd's own scan time (target < 10 ms), measured
  end to end over the socket and in process (rules + MIME walk + decision).

Run: .venv/bin/python bench/antivirus_bench.py [--messages 300]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "protocol"))
sys.path.insert(0, str(ROOT / "tests"))

import antivirus_fixtures as fx  # noqa: E402

from hostile_samples import make_zip  # noqa: E402
from passerelle.antivirus.clamd import ClamdClient  # noqa: E402
from passerelle.antivirus.config import load_config  # noqa: E402
from passerelle.antivirus.engine import Engine, Envelope  # noqa: E402


def corpus(n: int, rng: random.Random) -> list[tuple[list[tuple[str, str]], bytes]]:
    out = []
    for i in range(n):
        kind = i % 10
        text = " ".join(
            rng.choice(["lorem", "ipsum", "mail", "gateway", "report"]) for _ in range(400)
        )
        pdf = fx.PDF_DOC + os.urandom(rng.randint(20_000, 200_000))
        if kind < 3:
            parts = [("notes.txt", "text/plain", text.encode())]
        elif kind < 6:
            parts = [("report.pdf", "application/pdf", pdf)]
        elif kind < 8:
            z = make_zip({"a.txt": text.encode(), "b.pdf": pdf, "c.csv": b"1,2,3\n" * 2000})
            parts = [("docs.zip", "application/zip", z)]
        elif kind == 8:
            parts = [("setup.exe", "application/octet-stream", fx.PE_STUB + os.urandom(50_000))]
        else:
            parts = [("eicar.com", "application/octet-stream", fx.EICAR)]
        out.append(fx.mime_message(parts, subject=f"bench {i}"))
    return out


def raw_of(headers: list[tuple[str, str]], body: bytes) -> bytes:
    return "".join(f"{k}: {v}\r\n" for k, v in headers).encode() + b"\r\n" + body


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=300)
    args = ap.parse_args()
    rng = random.Random(6)
    msgs = corpus(args.messages, rng)
    # Same shapes, other random bytes: clamd caches clean results by hash, so the clamd-only
    # run must not warm the cache for the milter run (and the reverse).
    msgs_clamd = corpus(args.messages, random.Random(7))
    total_bytes = sum(len(b) for _, b in msgs)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        clamd = fx.start_clamd(base / "clamd", stream_max="50M")
        (base / "milter").mkdir()
        conf = fx.write_milter_config(base / "milter", [str(clamd.socket)], clamd.db_dir, fx.RULES)
        conf.write_text(conf.read_text().replace('log_level = "debug"', 'log_level = "warning"'))
        milter = fx.start_milter(base / "milter", conf)
        try:
            client = ClamdClient([f"unix:{clamd.socket}"], 2, 60)
            raws = [raw_of(h, b) for h, b in msgs_clamd]
            client.scan(raws[0])
            t0 = time.perf_counter()
            clamd_times = []
            for r in raws:
                s = time.perf_counter()
                client.scan(r)
                clamd_times.append(time.perf_counter() - s)
            clamd_total = time.perf_counter() - t0

            milter_times = []
            outcomes: dict[str, int] = {}
            t0 = time.perf_counter()
            for h, b in msgs:
                s = time.perf_counter()
                res = fx.send_message(milter.socket, h, b)
                milter_times.append(time.perf_counter() - s)
                outcomes[res[-1][0]] = outcomes.get(res[-1][0], 0) + 1
            milter_total = time.perf_counter() - t0

            engine = Engine(load_config(conf))
            engine_over = []
            for r in [raw_of(h, b) for h, b in corpus(args.messages, random.Random(8))]:
                env = Envelope("a@example.org", ["b@example.com"], "192.0.2.1", "mx")
                s = time.perf_counter()
                v = engine.process(env, [], io.BytesIO(r), len(r))
                took = time.perf_counter() - s
                engine_over.append(took - (v.scan.elapsed if v.scan else 0.0))
        finally:
            milter.stop()
            clamd.stop()

    n = len(msgs)
    over = [m - c for m, c in zip(milter_times, clamd_times, strict=True)]
    print(
        f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cpu, "
        f"Python {platform.python_version()}"
    )
    print(
        f"corpus: {n} messages, {total_bytes / n / 1024:.0f} KiB average, "
        "30% text, 30% PDF, 20% zip, 10% exe, 10% EICAR"
    )
    print(
        f"outcomes through the milter: {outcomes} "
        "(a=accept, d=discard/quarantine, y=reply code/reject)"
    )

    def ms(x: float) -> str:
        return f"{x * 1000:.2f} ms"

    med = statistics.median
    print(f"clamd alone:    {n / clamd_total:7.1f} msg/s, median {ms(med(clamd_times))}")
    print(f"through milter: {n / milter_total:7.1f} msg/s, median {ms(med(milter_times))}")
    print(
        f"milter overhead over clamd (socket, end to end): mean {ms(statistics.mean(over))}, "
        f"median {ms(med(over))}, p95 {ms(sorted(over)[int(n * 0.95)])}"
    )
    print(
        "engine overhead in process (rules+MIME+decision+quarantine): mean "
        f"{ms(statistics.mean(engine_over))}, median {ms(med(engine_over))}"
    )
    ok = statistics.median(over) < 0.010
    print(f"target < 10 ms per message (median): {'MET' if ok else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
