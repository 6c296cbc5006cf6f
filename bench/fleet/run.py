"""End-to-end benchmark of the lab fleet: SMTP load from ``outside`` through the gateways to
the mailstores, with the figures the sizing issue asks for.

    .venv/bin/python bench/fleet/run.py --duration 60 --concurrency 40

It copies three scripts into the containers (``podman exec -i ... python3 -``): a sampler on
every sampled host (queue depth, per-daemon CPU and memory, cgroup memory), the load
generator on ``outside`` (greylisted first attempts, retries, ham, spam, attachments, EICAR),
then, once the load has ended and the queues have drained, the collector on each mailstore
(delivery times from sendmail's log). Prints a figures table (``--json FILE`` keeps
everything). Containers are ``$PASSERELLE_LAB_PREFIX<host>`` on ``$PASSERELLE_LAB_NET``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

HERE = Path(__file__).resolve().parent


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100) of values; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-p * len(ordered) // 100))))
    return ordered[rank - 1]


def per_second(events: list[list[Any]], start: float, end: float) -> dict[str, list[int]]:
    """Sessions ending in each whole second of [start, end), by outcome."""
    n = max(1, int(end - start))
    out: dict[str, list[int]] = {}
    for _t0, t1, _kind, outcome, *_ in events:
        sec = int(t1 - start)
        if 0 <= sec < n:
            key = outcome if outcome in ("accepted", "deferred", "rejected") else "error"
            out.setdefault(key, [0] * n)[sec] += 1
    return out


STEPS = ("connect", "ehlo", "mail", "rcpt", "data", "eom")


def step_figures(events: list[list[Any]], slow: float = 1.0) -> dict[str, dict[str, Any]]:
    """Per SMTP step: p50, p99, max seconds and how many sessions spent over ``slow`` in it."""
    out: dict[str, dict[str, Any]] = {}
    for name in STEPS:
        times = [e[7][name] for e in events if len(e) > 7 and name in e[7]]
        if times:
            out[name] = {
                "p50": percentile(times, 50),
                "p99": percentile(times, 99),
                "max": max(times),
                "slow": sum(1 for t in times if t > slow),
            }
    return out


def figures(
    load: dict[str, Any],
    delivered: dict[str, float],
    samples: dict[str, dict[str, Any]],
    received: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Everything the report prints, from the raw results (pure: no I/O).

    ``delivered``: when each message reached its mailbox; ``received``: when its mailstore
    took it from the gateway (the end of the gateways' part of the latency).
    """
    events = load["events"]
    start, end = load["start"], load["end"]
    # Sessions per second over the load window (sessions still running at its end finish
    # after it: counted in the totals, not in the rate).
    window_end = min(end, load.get("deadline", end))
    duration = max(1e-6, window_end - start)
    # (an SMTP session is one that got a reply to its MAIL/RCPT/DATA: a refused or broken
    # connection is counted in the outcomes as error:..., not as a session)
    in_window = [e for e in events if e[1] <= window_end and not e[3].startswith("error")]
    outcomes = Counter(e[3] for e in events)
    kinds = Counter(e[2] for e in events)
    accepted = {e[6]: e for e in events if e[3] == "accepted" and e[6]}
    latencies = [delivered[mid] - e[0] for mid, e in accepted.items() if mid in delivered]
    scanned = [mid for mid, e in accepted.items() if mid in delivered]
    received = received or {}
    handoffs = [received[mid] - accepted[mid][0] for mid in scanned if mid in received]
    last_delivery = max((delivered[m] for m in scanned), default=end)
    series = per_second(events, start, end)
    # spamd scanned every accepted message once (the spam milter at end of message; a
    # refused one never reaches it): its CPU over the run per accepted message (issue 21).
    spamd_s = [
        h["cpu_seconds"]["spamd"] for h in samples.values() if "spamd" in h.get("cpu_seconds", {})
    ]
    spamd_ms = round(1000 * sum(spamd_s) / len(accepted), 1) if spamd_s and accepted else None
    return {
        "duration_s": round(duration, 1),
        "concurrency": load.get("concurrency"),
        "sessions": len(events),
        "sessions_per_s": round(len(in_window) / duration, 1),
        "finished_after_window_s": round(end - window_end, 1),
        "outcomes": dict(outcomes),
        "kinds": dict(kinds),
        "per_second": {
            k: {"min": min(v), "median": statistics.median(v), "max": max(v)}
            for k, v in series.items()
        },
        "accepted": len(accepted),
        "delivered": len(scanned),
        "lost_or_late": len(accepted) - len(scanned),
        # every accepted message went through greylist, antivirus and spam milters
        "delivered_per_s": round(len(scanned) / max(1e-6, last_delivery - start), 2),
        "latency_p50_s": percentile(latencies, 50),
        "latency_p99_s": percentile(latencies, 99),
        "latency_max_s": max(latencies, default=None),
        "handoff_p50_s": percentile(handoffs, 50),
        "handoff_p99_s": percentile(handoffs, 99),
        "spamd_cpu_ms_per_accepted": spamd_ms,
        "steps": step_figures(events),
        "hosts": samples,
    }


BAYES_COUNTS = ("nspam", "nham")


def bayes_counts(magic: str) -> dict[str, int] | None:
    """nspam and nham from ``sa-learn --dump magic``; None unless it shows both as numbers."""
    out: dict[str, int] = {}
    for line in magic.splitlines():
        words = line.split()
        # "0.000  0  201  0  non-token data: nspam": the count is the third column
        if len(words) == 7 and words[4:6] == ["non-token", "data:"] and words[6] in BAYES_COUNTS:
            try:
                out[words[6]] = int(words[2])
            except ValueError:
                return None
    return out if len(out) == 2 else None


def bayes_state(prefix: str, gateway: str) -> dict[str, int] | None:
    """What the gateway's Bayes store has learnt (shared store: one gateway tells)."""
    try:
        res = subprocess.run(
            ["podman", "exec", prefix + gateway, "sa-learn", "--dump", "magic"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return bayes_counts(res.stdout) if res.returncode == 0 else None


def podman_py(prefix: str, host: str, script: Path, *args: str, **kw: Any) -> subprocess.Popen:
    """Start ``python3 - ARGS`` in a container with the script on stdin (first line)."""
    code = script.read_text()
    runner = f"import sys; exec(compile({code!r}, {script.name!r}, 'exec'))"
    return subprocess.Popen(
        ["podman", "exec", "-i", prefix + host, "python3", "-c", runner, *args],
        stdin=kw.get("stdin", subprocess.DEVNULL),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen, what: str, timeout: float = 600, stop: bool = False) -> Any:
    """Wait for a container script and parse its JSON; stop=True closes its stdin first."""
    out, err = proc.communicate(input="" if stop else None, timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed ({proc.returncode}): {err.strip()[-2000:]}")
    return json.loads(out)


def wait_drained(prefix: str, hosts: list[str], timeout: float) -> float:
    """Wait until no host has a queued message (or timeout); returns the seconds waited."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        counts = []
        for h in hosts:
            res = subprocess.run(
                [
                    "podman",
                    "exec",
                    prefix + h,
                    "sh",
                    "-c",
                    "ls /var/spool/mqueue/ 2>/dev/null | grep -c '^qf' || true",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            counts.append(int((res.stdout.strip() or "0").splitlines()[-1]))
        if sum(counts) == 0:
            break
        time.sleep(1)
    return time.time() - t0


def print_table(f: dict[str, Any], out: TextIO = sys.stdout) -> None:
    def fmt(v: Any) -> str:
        return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))

    print(
        f"== fleet benchmark: {f['duration_s']} s, {f['concurrency']} concurrent sessions", file=out
    )
    rows = [
        ("SMTP sessions (all gateways)", f["sessions"]),
        ("sessions per second (over the load window)", f["sessions_per_s"]),
        ("last session ended after the window (s)", f["finished_after_window_s"]),
        ("outcomes", ", ".join(f"{k} {v}" for k, v in sorted(f["outcomes"].items()))),
        ("mix", ", ".join(f"{k} {v}" for k, v in sorted(f["kinds"].items()))),
    ]
    for k, v in sorted(f["per_second"].items()):
        rows.append(
            (f"{k} per second (min/median/max)", f"{v['min']} / {v['median']} / {v['max']}")
        )
    rows += [
        ("messages accepted", f["accepted"]),
        ("delivered to a mailstore (fully scanned)", f["delivered"]),
        ("accepted but not delivered at the end", f["lost_or_late"]),
        ("delivered per second", f["delivered_per_s"]),
        ("latency p50 (s, send -> mailbox)", fmt(f["latency_p50_s"])),
        ("latency p99 (s)", fmt(f["latency_p99_s"])),
        ("latency max (s)", fmt(f["latency_max_s"])),
        (
            "to the mailstore p50 / p99 (s, send -> taken)",
            f"{fmt(f['handoff_p50_s'])} / {fmt(f['handoff_p99_s'])}",
        ),
        ("spamd CPU per accepted message (ms)", fmt(f["spamd_cpu_ms_per_accepted"])),
    ]
    if "bayes" in f:
        b = f["bayes"]
        rows.append(
            (
                "Bayes store at the start (spam / ham learnt)",
                "-" if b is None else f"{b['nspam']} / {b['nham']}",
            )
        )
    for name, v in f.get("steps", {}).items():
        rows.append(
            (
                f"SMTP step {name} (s, p50/p99/max, >1 s)",
                f"{fmt(v['p50'])} / {fmt(v['p99'])} / {fmt(v['max'])}, {v['slow']}",
            )
        )
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}", file=out)
    print("== per host (CPU s over the run; memory peaks MB)", file=out)
    for host, s in f["hosts"].items():
        q = max((d for _, d in s["queue"]), default=0)
        print(
            f"  {host}: container CPU {fmt(s['container_cpu_seconds'])} s, RSS peak "
            f"{s['rss_total_peak_mb']}, cgroup peak {fmt(s['cgroup_peak_mb'])} of "
            f"{fmt(s['cgroup_limit_mb'])}, max queue {q}",
            file=out,
        )
        top = sorted(s["cpu_seconds"].items(), key=lambda kv: -kv[1])
        print("     CPU: " + ", ".join(f"{k} {v}" for k, v in top if v > 0.05), file=out)
        mem = sorted(s["rss_peak_mb"].items(), key=lambda kv: -kv[1])
        print("     RSS: " + ", ".join(f"{k} {v}" for k, v in mem if v >= 1), file=out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prefix", default=os.environ.get("PASSERELLE_LAB_PREFIX", "lab-"))
    ap.add_argument("--net", default=os.environ.get("PASSERELLE_LAB_NET", "10.89.77"))
    ap.add_argument("--gateways", default="gw1,gw2")
    ap.add_argument("--rcpts", default="alice@static-a.test,bob@static-a.test,carol@static-b.test")
    ap.add_argument("--mailstores", default="mailstore1,mailstore2")
    ap.add_argument(
        "--sample",
        default="gw1,gw2,smtpx1,db1,mailstore1,mailstore2",
        help="hosts whose CPU, memory and queue are sampled",
    )
    ap.add_argument("--client", default="outside", help="host that runs the load generator")
    ap.add_argument("--duration", type=float, default=60)
    ap.add_argument("--concurrency", type=int, default=40)
    ap.add_argument("--messages", type=int, default=0, help="stop after this many sessions")
    ap.add_argument("--mix", default=None, help="e.g. greylist=55,retry=10,ham=18,spam=8,...")
    ap.add_argument(
        "--retry-after",
        type=float,
        default=25.0,
        help="seconds before a greylisted triplet is retried (> the lab's 20 s)",
    )
    ap.add_argument("--drain-timeout", type=float, default=180)
    ap.add_argument("--json", type=Path, help="write every figure and sample here")
    a = ap.parse_args(argv)
    sample_hosts = [h for h in a.sample.split(",") if h]
    mailstores = [h for h in a.mailstores.split(",") if h]
    # spamd's cost depends on what Bayes knows (it scores once 200 spam and 200 ham are learnt)
    bayes = bayes_state(a.prefix, a.gateways.split(",")[0])

    samplers = {
        h: podman_py(a.prefix, h, HERE / "sample.py", "1", stdin=subprocess.PIPE)
        for h in sample_hosts
    }
    gen_args = [
        "--servers",
        a.gateways,
        "--rcpts",
        a.rcpts,
        "--duration",
        str(a.duration),
        "--concurrency",
        str(a.concurrency),
        "--messages",
        str(a.messages),
        "--greylist-source",
        f"{a.net}.245",
        "--whitelisted-source",
        f"{a.net}.250",
        "--retry-after",
        str(a.retry_after),
    ]
    if a.mix:
        gen_args += ["--mix", a.mix]
    load = finish(
        podman_py(a.prefix, a.client, HERE / "loadgen.py", *gen_args),
        "load generator",
        timeout=a.duration + 600,
    )
    waited = wait_drained(a.prefix, [h for h in sample_hosts if h != "db1"], a.drain_timeout)
    samples = {}
    for h, p in samplers.items():
        samples[h] = finish(p, f"sampler on {h}", stop=True)
    delivered: dict[str, float] = {}
    received: dict[str, float] = {}
    for h in mailstores:
        got = finish(
            podman_py(a.prefix, h, HERE / "collect.py", str(load["start"])), f"collector on {h}"
        )
        delivered.update(got["delivered"])
        received.update(got["received"])
    f = figures(load, delivered, samples, received)
    f["drain_wait_s"] = round(waited, 1)
    f["bayes"] = bayes
    print_table(f)
    print(f"  (queues drained {f['drain_wait_s']} s after the load ended)")
    if a.json:
        a.json.write_text(
            json.dumps({"figures": f, "load": load, "delivered": delivered, "received": received})
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
