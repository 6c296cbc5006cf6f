"""Benchmark: the antivirus engine on the worst inputs of issue 14 (tests/hostile_samples.py).

For each hostile message (central-directory bomb, 200,000 tiny MIME parts, deep nesting,
archives with executables, ...), a fresh subprocess runs the engine once (rules, MIME walk,
archives, decision; clamd is a fake that answers at once, so this is the milter's own cost)
and reports:

- CPU time of ``Engine.process`` (time.process_time);
- peak extra memory: the rise of the process's peak RSS (ru_maxrss) during the call, which
  counts libarchive's and zlib's C allocations, and tracemalloc's peak of Python
  allocations in a second call;

against the targets: under 0.5 s CPU and under 64 MB extra memory per message.

Run: .venv/bin/python bench/antivirus_worst.py [--src other/src] [--only name,name]
(--src runs another tree's package, e.g. main's, for a before/after comparison.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import hostile_samples as hs  # noqa: E402

CPU_TARGET = 0.5
MEM_TARGET_MB = 64.0

CHILD = r"""
import io, json, resource, sys, tempfile, time, tracemalloc
from pathlib import Path
sys.path.insert(0, {tests!r})
import hostile_samples as hs
from passerelle.antivirus.config import parse_config
from passerelle.antivirus.engine import Engine, Envelope
from passerelle.antivirus.outbreak import OutbreakStore
from passerelle.antivirus.quarantine import Quarantine

tmp = Path(tempfile.mkdtemp())
cfg = parse_config({{"antivirus": {{"hostname": "bench", "rules": hs.EXE_RULES}}}})
engine = Engine(cfg, scanner=hs.ReplyScanner({reply!r}), quarantine=Quarantine(tmp / "q"),
                outbreak=OutbreakStore(tmp / "ob.json"))
raw = Path({path!r}).read_bytes()
headers, _ = hs.split(raw)
env = Envelope("m@example.net", ["b@example.com"], "192.0.2.1", "mx")
warm = hs.message([hs.attachment("w.zip", hs.make_zip({{"a.txt": b"x"}}))])
engine.process(env, hs.split(warm)[0], io.BytesIO(warm), len(warm))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.process_time()
v = engine.process(env, headers, io.BytesIO(raw), len(raw))
cpu = time.process_time() - t0
rss = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024.0
tracemalloc.start()
engine.process(env, headers, io.BytesIO(raw), len(raw))
_cur, peak = tracemalloc.get_traced_memory()
tracemalloc.stop()
print(json.dumps({{"cpu": cpu, "rss_mb": rss, "py_peak_mb": peak / 1048576, "action": v.action,
                  "log": v.log[:160]}}))
"""


# Legitimate inputs at the limits, for scale (what an allowed message may cost).
EXTRA = [
    hs.Sample(
        "zip_1000_members",
        lambda: hs.message(
            [hs.attachment("many.zip", hs.make_zip({f"f{i}.txt": b"x" * 100 for i in range(1000)}))]
        ),
        hs.ACCEPT,
        "a zip at the member limit",
    ),
    hs.Sample("parts_999", lambda: hs.many_parts(999), hs.ACCEPT, "just under max_parts"),
    hs.Sample(
        "pdf_18MB",
        lambda: hs.message(
            [hs.attachment("big.pdf", hs.PDF_DOC + os.urandom(18 * 1024 * 1024), "application/pdf")]
        ),
        hs.ACCEPT,
        "a large legitimate attachment (25 MB message once in base64)",
    ),
]


def run_one(sample: hs.Sample, src: Path, timeout: float) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".eml", delete=False) as fh:
        raw = sample.build()
        fh.write(raw)
        path = fh.name
    try:
        code = CHILD.format(tests=str(ROOT / "tests"), reply=sample.clamd_reply, path=path)
        env = {**os.environ, "PYTHONPATH": str(src)}
        try:
            out = subprocess.run(
                [sys.executable, "-c", code],
                capture_output=True,
                text=True,
                timeout=timeout,
                env=env,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return {"size": len(raw), "error": f"timed out after {timeout:.0f} s"}
        if out.returncode != 0:
            return {"size": len(raw), "error": out.stderr.strip().splitlines()[-1][:160]}
        res = json.loads(out.stdout.strip().splitlines()[-1])
        res["size"] = len(raw)
        return res
    finally:
        os.unlink(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=ROOT / "src", help="package tree to measure")
    ap.add_argument("--only", default="", help="comma-separated sample names")
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args()
    wanted = set(filter(None, args.only.split(",")))
    print(
        f"# {platform.node()} {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cpus, Python {platform.python_version()}, src={args.src}"
    )
    print(f"# targets: < {CPU_TARGET} s CPU, < {MEM_TARGET_MB:.0f} MB extra per message")
    print(
        f"{'input':28} {'bytes':>9} {'cpu s':>7} {'rss+ MB':>8} {'py MB':>7}  {'verdict':8} ok  why"
    )
    missed = 0
    for s in [*hs.SAMPLES, *EXTRA]:
        if wanted and s.name not in wanted:
            continue
        r = run_one(s, args.src, args.timeout)
        if "error" in r:
            missed += 1
            print(
                f"{s.name:28} {r['size']:>9} {'-':>7} {'-':>8} {'-':>7}  ERROR    no  {r['error']}"
            )
            continue
        ok = r["cpu"] < CPU_TARGET and max(r["rss_mb"], r["py_peak_mb"]) < MEM_TARGET_MB
        missed += not ok
        print(
            f"{s.name:28} {r['size']:>9} {r['cpu']:7.3f} {r['rss_mb']:8.1f} "
            f"{r['py_peak_mb']:7.1f}  {r['action']:8} {'yes' if ok else 'NO ':3} {r['log'][:70]}"
        )
    print(f"# {missed} input(s) over a target" if missed else "# every input within targets")
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
