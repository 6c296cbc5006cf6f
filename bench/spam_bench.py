"""Spam milter benchmark: messages/s through the milter with a real spamd, and the milter's
own overhead per message compared with asking spamd directly with the same client.

Run from the repository (needs the Debian packages spamd + spamassassin, and the dev venv):

    .venv/bin/python bench/spam_bench.py [--messages 200] [--concurrency 2]

The corpus is generated: realistic French/English business mail, newsletters and spam-like
offers, plain and multipart with a base64 attachment, 5 to 50 kB each.
"""

from __future__ import annotations

import argparse
import base64
import os
import platform
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "protocol"))

from spam_fixtures import send_message, start_milter, start_spamd  # noqa: E402

from passerelle.spam.scanner import build_message  # noqa: E402
from passerelle.spam.spamc import SpamdClient  # noqa: E402

WORDS_TEXT = (
    "réunion projet messagerie passerelle serveur migration domaine planning budget rapport "
    "meeting schedule invoice delivery contract review team update release network storage "
    "offre exceptionnelle gratuit cliquez gagnez promotion discount free winner click now "
    "université laboratoire étudiants cours examen bibliothèque recherche publication"
)
WORDS = WORDS_TEXT.split()


def paragraph(rng: random.Random, n: int) -> str:
    words = [rng.choice(WORDS) for _ in range(n)]
    lines, line = [], []
    for w in words:
        line.append(w)
        if len(" ".join(line)) > 68:
            lines.append(" ".join(line))
            line = []
    lines.append(" ".join(line))
    return "\r\n".join(lines).capitalize()


def make_message(rng: random.Random, i: int) -> tuple[list[tuple[str, str]], bytes]:
    size = rng.randint(5_000, 50_000)
    headers = [
        (
            "Received",
            f"from mail{i}.sender.example (mail{i}.sender.example [192.0.2.{i % 250}])"
            f"\n\tby gw1.example.com with ESMTP id Q{i:06d}; Tue, 4 Jun 2024 10:00:00 +0200",
        ),
        ("From", f"Sender {i} <user{i}@sender.example>"),
        ("To", "Destinataire <dest@example.com>"),
        ("Subject", paragraph(rng, 6).replace("\r\n", " ")[:70]),
        ("Date", "Tue, 4 Jun 2024 10:00:00 +0200"),
        ("Message-ID", f"<{i}.{rng.getrandbits(40)}@sender.example>"),
        ("MIME-Version", "1.0"),
    ]
    text = ""
    while len(text) < size * (0.5 if i % 3 == 0 else 1.0):
        text += paragraph(rng, rng.randint(40, 120)) + "\r\n\r\n"
    if i % 3 == 0:
        blob = base64.encodebytes(rng.randbytes(int(size * 0.35))).replace(b"\n", b"\r\n")
        headers.append(("Content-Type", 'multipart/mixed; boundary="=_b"'))
        body = (
            b"--=_b\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: 8bit\r\n\r\n" + text.encode() + b"\r\n"
            b"--=_b\r\nContent-Type: application/pdf; name=doc.pdf\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + blob + b"--=_b--\r\n"
        )
    else:
        headers.append(("Content-Type", "text/plain; charset=utf-8"))
        headers.append(("Content-Transfer-Encoding", "8bit"))
        body = text.encode()
    return headers, body


CANNED = b"SPAMD/1.1 0 EX_OK\r\nContent-length: 5\r\nSpam: False ; 0.1 / 5.0\r\n\r\nRULE1"


def instant_spamd() -> tuple[str, socket.socket]:
    """A stand-in spamd answering at once: isolates the milter's own cost from spamd's."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)

    def handle(conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(head.split(b"Content-length: ")[1].split(b"\r\n")[0])
            while len(body) < length:
                body += conn.recv(65536)
            conn.sendall(CANNED)

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return f"127.0.0.1:{srv.getsockname()[1]}", srv


def overhead(corpus: list, milter_sock: Path, client: SpamdClient) -> tuple[list, list]:
    direct, through = [], []
    for h, b in corpus:  # interleaved, one at a time
        msg = build_message(h, b)
        t0 = time.perf_counter()
        client.check(msg)
        t1 = time.perf_counter()
        res = send_message(milter_sock, h, b)
        t2 = time.perf_counter()
        assert res.added(), "milter added no header"
        direct.append(t1 - t0)
        through.append(t2 - t1)
    return direct, through


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--children", type=int, default=2)
    args = ap.parse_args()
    rng = random.Random(5)
    corpus = [make_message(rng, i) for i in range(args.messages)]
    sizes = [len(build_message(h, b)) for h, b in corpus]
    with tempfile.TemporaryDirectory() as tmp:
        spamd = start_spamd(Path(tmp) / "spamd", children=args.children)
        milter = start_milter(Path(tmp) / "milter", [spamd.address])
        try:
            client = SpamdClient([spamd.address], 2.0, 60.0, user="passerelle")
            for h, b in corpus[:5]:  # warm up both paths
                client.check(build_message(h, b))
                send_message(milter.socket, h, b)
            direct, through = overhead(corpus, milter.socket, client)
            t0 = time.perf_counter()
            with ThreadPoolExecutor(args.concurrency) as pool:
                list(pool.map(lambda hb: send_message(milter.socket, *hb), corpus))
            wall = time.perf_counter() - t0
        finally:
            milter.stop()
            spamd.stop()
        fake, fake_sock = instant_spamd()
        milter2 = start_milter(Path(tmp) / "milter2", [fake])
        try:
            fclient = SpamdClient([fake], 2.0, 60.0, user="passerelle")
            overhead(corpus[:5], milter2.socket, fclient)
            fdirect, fthrough = overhead(corpus, milter2.socket, fclient)
        finally:
            milter2.stop()
            fake_sock.close()
    diffs = [t - d for d, t in zip(direct, through, strict=True)]
    ms = 1000.0
    print(
        f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cpus, "
        f"python {platform.python_version()}, {platform.platform()}"
    )
    print(
        f"corpus: {len(corpus)} messages, {min(sizes)}-{max(sizes)} bytes, "
        f"mean {statistics.mean(sizes) / 1024:.1f} kB"
    )
    print(
        f"spamd direct (same client):  median {statistics.median(direct) * ms:.1f} ms, "
        f"mean {statistics.mean(direct) * ms:.1f} ms"
    )
    print(
        f"through the milter:          median {statistics.median(through) * ms:.1f} ms, "
        f"mean {statistics.mean(through) * ms:.1f} ms"
    )
    print(
        f"milter overhead per message: median {statistics.median(diffs) * ms:.2f} ms, "
        f"mean {statistics.mean(diffs) * ms:.2f} ms (target < 5 ms)"
    )
    fd = [t - d for d, t in zip(fdirect, fthrough, strict=True)]
    print(
        f"instant fake spamd: direct median {statistics.median(fdirect) * ms:.2f} ms, "
        f"through the milter median {statistics.median(fthrough) * ms:.2f} ms"
    )
    print(
        "milter overhead (fake spamd, includes the Python MTA simulator): "
        f"median {statistics.median(fd) * ms:.2f} ms, mean {statistics.mean(fd) * ms:.2f} ms, "
        f"p95 {sorted(fd)[int(len(fd) * 0.95)] * ms:.2f} ms"
    )
    print(
        f"throughput through the milter, concurrency {args.concurrency}, "
        f"spamd children {args.children}: {len(corpus) / wall:.1f} messages/s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
