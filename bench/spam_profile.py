"""Where SpamAssassin's time goes on a gateway, phase by phase and rule by rule.

    .venv/bin/python bench/spam_profile.py --host gw1 --messages 60 [--top 25]

Builds the fleet benchmark's scanned mix (``bench/fleet/loadgen.py``: ham, spam with GTUBE,
a 48 kB attachment; weights as in its default mix; a partner's sender, dated now), each with
the Received line a gateway adds, writes them as one mbox into the lab container
``$PASSERELLE_LAB_PREFIX<host>`` and runs the host's own SpamAssassin configuration over it
in one process (``spamassassin --mbox -t -D timing``, with the rule timing plugin of
``bench/spamassassin/PasserelleRuleTiming.pm`` loaded only for this run). Prints the mean
milliseconds per message of each phase of SpamAssassin's timing log (parse, metadata, each
priority of tests, Bayes...), then the rules that cost the most, summed over the run.
``--cf LINE`` (repeatable) adds a configuration line for this run only, to measure a change
before it goes into the role (e.g. ``--cf 'use_bayes 0'``).

``--spamd`` measures the running daemon instead, as the spam milter uses it: the same
messages sent one after another to the host's spamd (``SYMBOLS``, user ``passerelle``), and
spamd's CPU (its processes' user+system time, the children its parent reaped included) per
message (``bench/spamassassin/spamd_run.py``, run in the host).

``--ab LINE`` (repeatable) compares spamd without and with configuration lines, on the
same messages: ``--rounds`` rounds (4 by default) of a run without, then a run with the lines
(written to ``/etc/spamassassin/zz-passerelle-ab.cf``, which spamd reads after local.cf, and
checked by ``spamassassin --lint`` first), spamd restarted before each run and ``--warmup``
messages (20) sent before the counted ones. Prints each run, the mean, min and max of each
variant and the ratio of each round (with / without). The lines are taken away and spamd
restarted at the end, also when a run fails. On the 2-core lab VM the same spamd moved from
one minute to the next by up to 30 % (64-106 ms a message on 2026-12-05): compare alternated
rounds, never two single runs.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shlex
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "fleet"))

from loadgen import DEFAULT_MIX, build_message, parse_mix, partner_address  # noqa: E402

from passerelle.spam.marking import received_header  # noqa: E402

PLUGIN = HERE / "spamassassin" / "PasserelleRuleTiming.pm"
SPAMD_RUN = HERE / "spamassassin" / "spamd_run.py"
LAB_NET = os.environ.get("PASSERELLE_LAB_NET", "10.89.77")
# Paths inside the lab container (its own /tmp, written by root through podman exec).
MBOX = "/tmp/passerelle-profile.mbox"  # noqa: S108
PLUGIN_IN_HOST = "/tmp/PasserelleRuleTiming.pm"  # noqa: S108
SCANNED_KINDS = ("ham", "spam", "attach")
# spamd reads every *.cf of its configuration folder in name order: after local.cf.
AB_CF = "/etc/spamassassin/zz-passerelle-ab.cf"
# "dbg: timing: total 165 ms - init: 10 (6.1%), parse: 0.8 (0.5%), tests_pri_0: 90 (54%)"
TIMING_RE = re.compile(r"timing: total (?P<total>[\d.]+) ms - (?P<parts>.*)$")
PART_RE = re.compile(r"(?P<name>[\w\-:.]+): (?P<ms>[\d.]+)(?: \([\d.]+%\))?")


def scanned_mix(mix: str) -> list[tuple[str, int]]:
    """The kinds of the fleet mix that reach spamd, with their weights."""
    weights = parse_mix(mix)
    return [(k, weights[k]) for k in SCANNED_KINDS if weights.get(k)]


def build_mbox(count: int, mix: str, seed: int, now: float | None = None) -> str:
    """``count`` messages of the mix as the fleet benchmark sends them (a partner's sender,
    HELO client.bench.test from outside's address, dated ``now``), each with the Received line
    gw1's spam milter puts on top for spamd (``received_header``: envelope sender included),
    as one mbox."""
    now = time.time() if now is None else now
    rng = random.Random(seed)
    kinds = scanned_mix(mix)
    names = [k for k, _ in kinds]
    weights = [w for _, w in kinds]
    out = []
    for i in range(count):
        kind = rng.choices(names, weights)[0]
        msg_id = f"profile-{seed}-{i}"
        sender = partner_address(rng)
        # the Received line the spam milter puts on top for spamd, envelope sender included
        # (SpamAssassin's SPF check of the sender reads it)
        received = "Received: " + received_header(
            "client.bench.test",
            "outside",
            f"{LAB_NET}.250",
            "gw1.lab.passerelle.test",
            f"5B1K{i:06d}",
            now,
            sender,
        )
        received += "\n"
        body = build_message(kind, msg_id, sender, "alice@static-a.test", rng, now=now)
        # mbox: escape "From " at line starts of the message.
        text = received + body
        text = re.sub(r"(?m)^(>*From )", r">\1", text)
        out.append(f"From {sender} {time.asctime(time.gmtime(now))}\n{text}\n")
    return "".join(out)


def parse_timing(debug: str) -> tuple[int, dict[str, float]]:
    """Messages seen and the summed milliseconds of each timing phase (incl. ``total``)."""
    sums: dict[str, float] = defaultdict(float)
    n = 0
    for line in debug.splitlines():
        m = TIMING_RE.search(line)
        if not m:
            continue
        n += 1
        sums["total"] += float(m.group("total"))
        for p in PART_RE.finditer(m.group("parts")):
            sums[p.group("name")] += float(p.group("ms"))
    return n, dict(sums)


def parse_rules(tsv: str) -> list[tuple[str, str, int, float]]:
    rows = []
    for line in tsv.splitlines():
        parts = line.split("\t")
        if len(parts) == 4:
            rows.append((parts[0], parts[1], int(parts[2]), float(parts[3])))
    return sorted(rows, key=lambda r: r[3], reverse=True)


def podman(host: str, script: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", "exec", "-i", host, "sh", "-c", script],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )


def spamd_figures(r: subprocess.CompletedProcess[str]) -> tuple[int, float, float, int] | None:
    """Messages, CPU and wall seconds, and messages called spam, from the runner's line."""
    line = next((x for x in r.stdout.splitlines() if x.startswith("SPAMD ")), "")
    if not line:
        return None
    _, n, cpu, wall, spam = line.split()
    return int(n), float(cpu), float(wall), int(spam)


def spamd_line(host: str, fig: tuple[int, float, float, int]) -> str:
    count, cpu, wall, spam = fig
    return (
        f"{host} spamd: {count} messages one at a time, "
        f"{1000 * cpu / count:.1f} ms CPU/msg, {1000 * wall / count:.1f} ms wall/msg, "
        f"{spam} called spam"
    )


def run_spamd(
    host: str, warmup: int, run: Callable[..., subprocess.CompletedProcess[str]]
) -> tuple[int, float, float, int] | None:
    r = run(host, f"python3 - {MBOX} {warmup}", SPAMD_RUN.read_text())
    fig = spamd_figures(r)
    if fig is None:
        print(f"spamd run failed in {host}:\n{r.stdout}{r.stderr}", file=sys.stderr)
    return fig


def measure_spamd(host: str, a: argparse.Namespace) -> int:
    fig = run_spamd(host, 1, podman)
    if fig is None:
        return 1
    print(spamd_line(host, fig))
    return 0


def ab_plan(rounds: int) -> list[bool]:
    """Run order, False without the line, True with it: alternated, so that the machine's
    drift falls on both."""
    return [v for _ in range(rounds) for v in (False, True)]


def ab_summary(runs: list[tuple[bool, float]]) -> dict:
    """Each variant's runs, mean, min and max (ms per message), and each round's ratio of the
    run with the line to the run without it just before."""
    out: dict = {}
    for name, v in (("without", False), ("with", True)):
        ms = [x for w, x in runs if w is v]
        out[name] = {"runs": len(ms), "mean": statistics.fmean(ms), "min": min(ms), "max": max(ms)}
    ratios = [
        round(runs[i + 1][1] / runs[i][1], 3)
        for i in range(0, len(runs) - 1, 2)
        if runs[i][0] is False and runs[i + 1][0] is True
    ]
    out["ratios"] = ratios
    out["median_ratio"] = statistics.median(ratios)
    return out


def write_cf_script(lines: list[str] | None, path: str = AB_CF) -> str:
    """Shell that writes ``lines`` as the file's lines (``None``: removes the file)."""
    if lines is None:
        return f"rm -f {path}"
    quoted = " ".join(shlex.quote(x) for x in lines)
    return f"printf '%s\\n' {quoted} > {path} && chmod 0644 {path}"


def switch_script(lines: list[str] | None, path: str = AB_CF) -> str:
    """Put ``lines`` in spamd's configuration (or take them away), lint, restart spamd."""
    lint = ""
    if lines is not None:
        lint = (
            "if ! out=$(spamassassin --lint 2>&1); then "
            f'rm -f {path}; echo "$out" | tail -5; exit 3; fi; '
        )
    return (
        f"{write_cf_script(lines, path)} && {lint}"
        "systemctl reset-failed spamd 2>/dev/null; systemctl restart spamd"
    )


def run_ab(
    host: str,
    lines: list[str],
    rounds: int,
    warmup: int,
    run: Callable[..., subprocess.CompletedProcess[str]] = podman,
) -> int:
    runs: list[tuple[bool, float]] = []
    try:
        for with_line in ab_plan(rounds):
            r = run(host, switch_script(lines if with_line else None))
            if r.returncode != 0:
                print(f"cannot switch spamd in {host}:\n{r.stdout}{r.stderr}", file=sys.stderr)
                return 2 if with_line else 1
            fig = run_spamd(host, warmup, run)
            if fig is None:
                return 1
            runs.append((with_line, 1000 * fig[1] / fig[0]))
            print(f"{'with   ' if with_line else 'without'} {spamd_line(host, fig)}", flush=True)
    finally:
        run(host, switch_script(None))
    s = ab_summary(runs)
    print(f"\n{'variant':<8} {'runs':>4} {'mean':>7} {'min':>7} {'max':>7}  (spamd CPU ms/msg)")
    for name in ("without", "with"):
        v = s[name]
        print(f"{name:<8} {v['runs']:>4} {v['mean']:7.1f} {v['min']:7.1f} {v['max']:7.1f}")
    print(f"with / without, round by round: {s['ratios']}, median {s['median_ratio']:.3f}")
    print("lines: " + " | ".join(lines))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="gw1")
    ap.add_argument("--messages", type=int, default=60)
    ap.add_argument("--mix", default=DEFAULT_MIX)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--cf", action="append", default=[], help="extra config line, this run only")
    ap.add_argument("--spamd", action="store_true", help="measure the running spamd's CPU")
    ap.add_argument(
        "--ab", metavar="LINE", action="append", help="spamd without and with these config lines"
    )
    ap.add_argument("--rounds", type=int, default=4, help="--ab: rounds (a run of each)")
    ap.add_argument("--warmup", type=int, default=20, help="--ab: messages before each run")
    a = ap.parse_args(argv)
    host = os.environ.get("PASSERELLE_LAB_PREFIX", "lab-") + a.host
    if a.ab is not None and any("\n" in x or "\r" in x or not x.strip() for x in a.ab):
        print("--ab takes one configuration line each time", file=sys.stderr)
        return 2
    if a.ab is not None and a.cf:
        print(
            "--cf is for the one-process profile; with --ab give every line as --ab",
            file=sys.stderr,
        )
        return 2
    if a.rounds < 1 or a.warmup < 1:
        # the runner warms one spamd child at least
        print("--rounds must be at least 1 and --warmup at least 1", file=sys.stderr)
        return 2

    for path, text in (
        (MBOX, build_mbox(a.messages, a.mix, a.seed)),
        (PLUGIN_IN_HOST, PLUGIN.read_text()),
    ):
        r = podman(host, f"cat > {path}", text)
        if r.returncode != 0:
            print(f"cannot write {path} in {host}: {r.stderr.strip()}", file=sys.stderr)
            return 2
    if a.ab is not None:
        return run_ab(host, a.ab, a.rounds, a.warmup)
    if a.spamd:
        return measure_spamd(host, a)
    cf = [f"loadplugin PasserelleRuleTiming {PLUGIN_IN_HOST}", *a.cf]
    cf_args = " ".join("--cf=" + subprocess.list2cmdline([c]) for c in cf)
    script = (
        "rm -f /tmp/passerelle-rules.tsv; "
        "PASSERELLE_RULE_TIMING=/tmp/passerelle-rules.tsv "
        f"spamassassin --mbox -t -D timing {cf_args} < {MBOX} "
        "> /dev/null 2> /tmp/passerelle-profile.debug; echo rc=$?; "
        "grep -h 'timing: total' /tmp/passerelle-profile.debug; "
        "echo '--- rules'; cat /tmp/passerelle-rules.tsv"
    )
    r = podman(host, script)
    out, _, rules_tsv = r.stdout.partition("--- rules\n")
    n, sums = parse_timing(out)
    if n == 0:
        print(f"no timing line from spamassassin in {host}:\n{r.stdout}{r.stderr}", file=sys.stderr)
        return 1
    print(f"{host}: {n} messages ({', '.join(k for k, _ in scanned_mix(a.mix))}), extra cf: {a.cf}")
    print(f"{'phase':<34} {'ms/msg':>8} {'share':>6}")
    total = sums.get("total", 0.0)
    for name, ms in sorted(sums.items(), key=lambda kv: kv[1], reverse=True):
        share = 100 * ms / total if total else 0.0
        print(f"{name:<34} {ms / n:8.2f} {share:5.1f}%")
    rules = parse_rules(rules_tsv)
    by_type: dict[str, float] = defaultdict(float)
    for _, rtype, _, sec in rules:
        by_type[rtype] += sec
    print(
        "\nrule time by type (ms/msg): "
        + ", ".join(
            f"{t} {1000 * s / n:.2f}" for t, s in sorted(by_type.items(), key=lambda kv: -kv[1])
        )
    )
    print(f"\n{'rule':<34} {'type':<8} {'ms/msg':>8}")
    for name, rtype, _calls, sec in rules[: a.top]:
        print(f"{name:<34} {rtype:<8} {1000 * sec / n:8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
