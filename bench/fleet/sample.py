"""Sampler, run *inside* a lab host (python3 standard library only) until its stdin closes.

Every --interval seconds: the mail queue depth (qf files under /var/spool/mqueue*), each
daemon's resident memory (sum over its processes) and the container's cgroup memory. At the
end: each daemon's CPU seconds over the run (utime + stime of its processes, plus what reaped
children left in their parent's cutime/cstime; what the container's init reaped, the orphans,
apart), the container's CPU (cpuacct), the peaks.
Prints one JSON document.
"""

from __future__ import annotations

import glob
import json
import os
import select
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
CG = "/sys/fs/cgroup"
ORPHANS = 0  # no process has pid 0: the key of what init reaped


def daemon_of(comm: str, cmdline: str) -> str:
    """Which daemon a process belongs to, from its name and command line."""
    if "passerelle" in cmdline:
        for name in ("greylist", "antivirus", "spam", "connwatch"):
            if f" {name}" in cmdline:
                return f"milter-{name}" if name != "connwatch" else "connwatch"
        return "passerelle"
    if comm.startswith("sendmail") or cmdline.startswith("sendmail:"):
        return "sendmail"
    for name in ("spamd", "clamd", "freshclam", "mariadbd", "slapd", "mail.local", "procmail"):
        # spamd's parent is "perl ... /usr/sbin/spamd": it reaps the children (their CPU).
        if (
            name in comm
            or cmdline.startswith(name)
            or any(tok.endswith(f"/{name}") for tok in cmdline.split(" "))
        ):
            return name
    return "other"


def processes(proc: str = "/proc") -> dict[int, tuple[str, int, int]]:
    """pid -> (daemon, cpu ticks incl. reaped children, rss bytes); ORPHANS -> init's reaped."""
    out: dict[int, tuple[str, int, int]] = {}
    me = str(os.getpid())
    for d in os.listdir(proc):
        if not d.isdigit() or d == me:  # not the sampler itself (its code names the daemons)
            continue
        try:
            with open(f"{proc}/{d}/stat") as f:
                stat = f.read()
            with open(f"{proc}/{d}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        # fields[11..14] = utime stime cutime cstime; fields[21] = rss pages
        if d == "1":
            # The container's init reaps the orphans: processes whose parent exited first
            # (sendmail's background deliveries, forked by an SMTP session that has ended).
            # What they leave in its cutime/cstime is theirs, not init's: counted apart.
            out[ORPHANS] = ("orphans", sum(int(x) for x in fields[13:15]), 0)
            ticks = sum(int(x) for x in fields[11:13])
        else:
            ticks = sum(int(x) for x in fields[11:15])
        out[int(d)] = (daemon_of(comm, cmd), ticks, int(fields[21]) * PAGE)
    return out


def read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def cgroup_memory() -> dict[str, int | None]:
    for base in (f"{CG}/memory", CG):  # cgroup v1, then v2
        usage = read_int(f"{base}/memory.usage_in_bytes") or read_int(f"{base}/memory.current")
        if usage is not None:
            limit = read_int(f"{base}/memory.limit_in_bytes") or read_int(f"{base}/memory.max")
            peak = read_int(f"{base}/memory.max_usage_in_bytes") or read_int(f"{base}/memory.peak")
            rss = None
            try:
                with open(f"{base}/memory.stat") as f:
                    stat = dict(line.split() for line in f if len(line.split()) == 2)
                rss = int(stat.get("total_rss", stat.get("rss", stat.get("anon", 0))))
            except OSError:
                pass
            return {"usage": usage, "limit": limit, "peak": peak, "rss": rss}
    return {"usage": None, "limit": None, "peak": None, "rss": None}


def cpu_ns() -> int | None:
    v = read_int(f"{CG}/cpuacct/cpuacct.usage") or read_int(f"{CG}/cpu,cpuacct/cpuacct.usage")
    if v is not None:
        return v
    try:
        with open(f"{CG}/cpu.stat") as f:
            for line in f:
                if line.startswith("usage_usec"):
                    return int(line.split()[1]) * 1000
    except OSError:
        pass
    return None


def queue_depth() -> int:
    return len(glob.glob("/var/spool/mqueue*/qf*")) + len(glob.glob("/var/spool/mqueue*/*/qf*"))


def cpu_by_daemon(
    first: dict[int, tuple[str, int, int]], last: dict[int, tuple[str, int, int]]
) -> dict[str, float]:
    """CPU seconds per daemon between two snapshots (ticks include reaped children's).

    A process already running at the first snapshot and reaped before the last one shows up
    in its parent's cutime with its whole life: the part before the first snapshot is taken
    off again (spamd's and sendmail's children are reaped by a parent of the same daemon).
    """
    cpu: dict[str, float] = {}
    for pid, (daemon, ticks, _) in last.items():
        before = first[pid][1] if pid in first and first[pid][0] == daemon else 0
        cpu[daemon] = cpu.get(daemon, 0.0) + (ticks - before) / TICK
    for pid, (daemon, ticks, _) in first.items():
        if pid not in last:
            cpu[daemon] = cpu.get(daemon, 0.0) - ticks / TICK
    return {k: max(0.0, v) for k, v in cpu.items()}


def main() -> int:
    interval = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    t0 = time.time()
    first = processes()
    cpu0 = cpu_ns()
    queue: list[list[float]] = []
    rss_peak: dict[str, int] = {}
    rss_total_peak = 0
    cg_rss_peak = 0
    cg_limit = None
    last = first
    while True:
        now = time.time()
        procs = processes()
        last = procs
        per: dict[str, int] = {}
        for pid, (daemon, _, rss) in procs.items():
            if pid != ORPHANS:
                per[daemon] = per.get(daemon, 0) + rss
        for daemon, rss in per.items():
            rss_peak[daemon] = max(rss_peak.get(daemon, 0), rss)
        rss_total_peak = max(rss_total_peak, sum(per.values()))
        cg = cgroup_memory()
        cg_limit = cg["limit"]
        cg_rss_peak = max(cg_rss_peak, cg["rss"] or 0)
        queue.append([round(now - t0, 2), queue_depth()])
        ready, _, _ = select.select([sys.stdin], [], [], interval)
        if ready and not sys.stdin.readline():
            break
    cpu = cpu_by_daemon(first, last)
    cpu1 = cpu_ns()
    cg = cgroup_memory()
    mb = 1024 * 1024
    json.dump(
        {
            "seconds": round(time.time() - t0, 2),
            "queue": queue,
            "cpu_seconds": {k: round(v, 2) for k, v in sorted(cpu.items())},
            "container_cpu_seconds": None if cpu0 is None or cpu1 is None else (cpu1 - cpu0) / 1e9,
            "rss_peak_mb": {k: round(v / mb, 1) for k, v in sorted(rss_peak.items())},
            "rss_total_peak_mb": round(rss_total_peak / mb, 1),
            "cgroup_rss_peak_mb": round(cg_rss_peak / mb, 1),
            "cgroup_peak_mb": None if cg["peak"] is None else round(cg["peak"] / mb, 1),
            "cgroup_limit_mb": None
            if cg_limit is None or cg_limit > 1 << 50
            else round(cg_limit / mb, 1),
        },
        sys.stdout,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
