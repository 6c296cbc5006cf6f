"""Operations on the mail hosts: Prometheus metrics, ``passerelle status``, daily report.

The metrics textfile exists on gw1 and smtpx1 with a queue gauge; the greylist and spam
counters move after a mail goes through gw1; the timer writes the file by itself;
``passerelle status`` names the daemons; ``passerelle report daily`` writes the HTML page
and mails it (through gw1's own sendmail) to a mailbox of the lab.
"""

from __future__ import annotations

import re
import subprocess
import time
from datetime import UTC, datetime

import pytest
from labsmtp import PREFIX, message, podman_exec, smtp, wait_for_mail

PROM = "/var/lib/prometheus/node-exporter/passerelle.prom"
CONFIG = "/etc/passerelle/ops.toml"
SENDER, RCPT = "dave@internet.test", "alice@static-a.test"
STORE, USER = "mailstore1", "alice"


def _present(host: str) -> bool:
    return subprocess.run(["podman", "container", "exists", PREFIX + host]).returncode == 0


def _need(*hosts: str) -> None:
    for h in hosts:
        if not _present(h):
            pytest.skip(f"{PREFIX}{h} is not in this lab")


def _metrics(host: str) -> dict[str, float]:
    podman_exec(host, "passerelle", "metrics", "write", "--config", CONFIG)
    text = podman_exec(host, "cat", PROM)
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def _send(tag_text: tuple[str, str], timeout: float = 240) -> None:
    """Send from outside through gw1; retried while gw1 refuses (RefuseLA on a busy host)."""
    _, text = tag_text
    deadline = time.monotonic() + timeout
    while True:
        d = smtp("outside", "gw1", SENDER, [RCPT], data=text)
        if d.last[0] == "eom" and d.last[1] == 250:
            return
        if time.monotonic() > deadline:
            raise AssertionError(d.transcript)
        time.sleep(10)


def _sum(m: dict[str, float], family: str) -> float:
    return sum(v for k, v in m.items() if k.startswith(family + "{"))


@pytest.mark.parametrize("host", ["gw1", "smtpx1"])
def test_config_checked_and_timers_running(host):
    _need(host)
    assert podman_exec(host, "passerelle", "ops", "check-config", CONFIG).strip() == f"{CONFIG}: OK"
    for timer in ("passerelle-metrics.timer", "passerelle-report.timer"):
        assert podman_exec(host, "systemctl", "is-enabled", timer).strip() == "enabled"
        assert podman_exec(host, "systemctl", "is-active", timer).strip() == "active"


@pytest.mark.parametrize("host", ["gw1", "smtpx1"])
def test_metrics_file_has_a_queue_gauge(host):
    _need(host)
    m = _metrics(host)
    assert 'passerelle_mail_queue_messages{queue="/var/spool/mqueue"}' in m
    assert m["passerelle_metrics_errors"] == 0
    text = podman_exec(host, "cat", PROM)
    assert "# TYPE passerelle_greylist_decisions_total counter" in text
    assert "# TYPE passerelle_mail_queue_messages gauge" in text


def test_the_timer_writes_the_file_by_itself():
    _need("gw1")
    before = float(podman_exec("gw1", "stat", "-c", "%Y", PROM).strip() or 0)
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        mtime = float(podman_exec("gw1", "stat", "-c", "%Y", PROM).strip())
        if mtime > before:
            break
        time.sleep(5)
    else:
        raise AssertionError("passerelle-metrics.timer did not rewrite the metrics in 150 s")
    assert podman_exec("gw1", "stat", "-c", "%a", PROM).strip() == "644"


def test_greylist_and_spam_counters_move_after_a_mail():
    _need("gw1", "outside", STORE)
    m0 = _metrics("gw1")
    tag, text = message(SENDER, RCPT, body="Metrics test.")
    _send((tag, text))
    wait_for_mail(STORE, USER, tag, timeout=120)
    deadline = time.monotonic() + 60
    while True:
        m1 = _metrics("gw1")
        grey = _sum(m1, "passerelle_greylist_decisions_total") - _sum(
            m0, "passerelle_greylist_decisions_total"
        )
        spam = _sum(m1, "passerelle_spam_messages_total") - _sum(
            m0, "passerelle_spam_messages_total"
        )
        av = _sum(m1, "passerelle_antivirus_messages_total") - _sum(
            m0, "passerelle_antivirus_messages_total"
        )
        if grey >= 1 and spam >= 1 and av >= 1:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"counters did not move: greylist +{grey}, spam +{spam}, av +{av}")
        time.sleep(2)
    # outside's main address is whitelisted in the lab: the decision is "client"
    assert m1['passerelle_greylist_decisions_total{reason="client"}'] >= 1


def test_status_names_the_daemons():
    _need("gw1")
    res = subprocess.run(
        ["podman", "exec", PREFIX + "gw1", "passerelle", "status"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = res.stdout
    assert res.returncode in (0, 1), res.stdout + res.stderr  # 2: a daemon is down
    for unit in (
        "sendmail",
        "passerelle-greylist",
        "passerelle-antivirus",
        "passerelle-spam",
        "spamd",
        "clamav-daemon",
    ):
        assert re.search(rf"^  ok   {re.escape(unit)} +active", out, re.M), out
    assert "mariadb" not in out  # not installed on a gateway: left out
    assert re.search(r"^queue: +\d+ message", out, re.M), out
    assert re.search(r"^signatures: updated .* ago", out, re.M), out
    assert re.search(r"^today: +greylist [1-9]\d* decision", out, re.M), out


def test_daily_report_written_and_mailed():
    _need("gw1", STORE)
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    out = podman_exec(
        "gw1",
        "passerelle",
        "report",
        "daily",
        "--config",
        CONFIG,
        "--date",
        today,
        "--output",
        "/tmp/reports",
        "--mail",
        RCPT,
    )
    assert out.strip() == f"/tmp/reports/{today}.html mailed to {RCPT}"
    page = podman_exec("gw1", "cat", f"/tmp/reports/{today}.html")
    assert page.startswith("<!DOCTYPE html>") and "<svg " in page
    assert f"Passerelle daily report: gw1, {today}" in page
    assert "<script" not in page
    # The local submission goes through gw1's MTA, which refuses connections while the host's
    # load is above RefuseLA (a busy test machine): flush the submission queue until it is in.
    deadline = time.monotonic() + 300
    while True:
        try:
            box = wait_for_mail(STORE, USER, f"daily report gw1 {today}", timeout=15)
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            podman_exec("gw1", "sendmail", "-Ac", "-q", check=False)
    assert "multipart/alternative" in box
