"""Connection guard on gw1: fed a mail log with one client at 600 and one at 3000 sessions in
the last hour (and a whitelisted one at 3000), the hourly run alerts for the first (syslog,
mail to the admins, Nagios status), blocks the second (refused at connect), never blocks the
whitelisted one, and lifts the block by itself after its expiry."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta

import pytest
from labsmtp import NET, message, podman_exec, smtp, wait_for_mail

ALERTED = f"{NET}.246"  # 600 sessions: alert only
BLOCKED = f"{NET}.247"  # 3000 sessions: blocked (outside holds this address)
WHITELISTED = f"{NET}.13"  # 3000 sessions, inside the fleet's network: never blocked
MARK = "connwatch-test.example"
CONFIG = "/etc/passerelle/connwatch.toml"

# Runs on gw1: append realistic sendmail sessions (one daemon child pid each), spread over
# the last 50 minutes, in the traditional syslog format rsyslog writes.
FEED = r"""
import sys, time
clients = [(sys.argv[1], 600), (sys.argv[2], 3000), (sys.argv[3], 3000)]
now = time.time()
plan = [ip for ip, n in clients for _ in range(n)]
lines = []
for i, ip in enumerate(plan):
    ts = now - 3000 + i * (2900 / len(plan))
    stamp = time.strftime("%b %e %H:%M:%S", time.localtime(ts))
    pid = 20000 + i
    qid = "5AR%06dT" % i
    lines.append(
        f"{stamp} gw1 sm-mta[{pid}]: {qid}: from=<news{i}@MARK>, size=1234, class=0, "
        f"nrcpts=1, msgid=<{i}@MARK>, proto=ESMTP, daemon=MTA, relay=mx{i % 7}.MARK [{ip}]"
    )
    lines.append(
        f"{stamp} gw1 sm-mta[{pid}]: {qid}: to=<alice@static-a.test>, delay=00:00:01, "
        "mailer=esmtp, pri=120, relay=mailstore1. [10.0.0.51], dsn=2.0.0, stat=Sent (ok)"
    )
with open("/var/log/mail.log", "a") as fh:
    fh.write("\n".join(lines) + "\n")
""".replace("MARK", MARK)


UNFEED = r"""
import sys
with open("/var/log/mail.log", "r+") as fh:
    keep = [line for line in fh if sys.argv[1] not in line]
    fh.seek(0)
    fh.truncate()
    fh.writelines(keep)
"""


def connwatch(*args: str) -> str:
    return podman_exec("gw1", "passerelle", "connwatch", *args, "--config", CONFIG)


def blocked_ips() -> list[str]:
    return [b["ip"] for b in json.loads(connwatch("blocks", "--format", "json"))]


def status_line() -> str:
    return podman_exec("gw1", "cat", "/var/lib/passerelle-status/connwatch.status").strip()


@pytest.fixture(scope="module")
def fed():
    podman_exec("gw1", "python3", "-c", FEED, ALERTED, BLOCKED, WHITELISTED)
    yield
    # Leave gw1 as it was: synthetic lines out of the log, a fresh run, no block left.
    # (in place: rsyslog keeps the file open)
    podman_exec("gw1", "python3", "-c", UNFEED, MARK)
    if BLOCKED in blocked_ips():
        connwatch("unblock", BLOCKED)
    podman_exec("gw1", "systemctl", "start", "passerelle-connwatch.service")


def test_sendmail_logs_reach_the_mail_log():
    # rsyslog writes sendmail's lines where the guard reads them.
    _tag, text = message("dave@internet.test", "alice@static-a.test")
    smtp("outside", "gw1", "dave@internet.test", ["alice@static-a.test"], data=text)
    out = podman_exec(
        "gw1", "sh", "-c", f"tail -n 200 /var/log/mail.log | grep -c 'sm-mta.*{NET}.250'"
    )
    assert int(out.strip()) >= 1


def test_hourly_run_alerts_and_blocks(fed):
    # The timer's unit, as it runs every hour.
    podman_exec("gw1", "systemctl", "start", "passerelle-connwatch.service")
    assert blocked_ips() == [BLOCKED]
    line = status_line()
    assert line.startswith("CRITICAL"), line
    # (a real session or two of the other tests may add to the synthetic counts)
    assert re.search(rf"blocked {re.escape(BLOCKED)} \(300\d/1h\)", line), line
    assert re.search(rf"{re.escape(ALERTED)} \(60\d/1h\)", line), line
    assert re.search(rf"{re.escape(WHITELISTED)} \(300\d/1h, whitelisted\)", line), line
    # The counts went through the shared database (sink mariadb on db1), not local only.
    assert "local counts used" not in line, line
    log = podman_exec("gw1", "journalctl", "-t", "passerelle-connwatch", "--no-pager", "-n", "50")
    assert re.search(rf"{re.escape(ALERTED)} made 60\d connections", log), log
    assert re.search(rf"{re.escape(BLOCKED)} made 300\d connections .*: blocked", log), log
    # The admins' mail reaches their mailbox through the fleet.
    mbox = wait_for_mail("mailstore1", "postmaster-lab", f"{BLOCKED}", timeout=120)
    assert "[connwatch] gw1 inbound: CRITICAL" in mbox
    assert f"{ALERTED}" in mbox


def test_blocked_client_refused_at_connect(fed):
    _tag, text = message("dave@internet.test", "alice@static-a.test")
    d = smtp("outside", "gw1", "dave@internet.test", ["alice@static-a.test"], text, BLOCKED)
    assert any(500 <= c < 600 for _, c, _ in d.steps), d.transcript
    assert "Too many connections" in d.transcript, d.transcript
    # Others still pass (outside's main address).
    _tag, text = message("dave@internet.test", "alice@static-a.test")
    d = smtp("outside", "gw1", "dave@internet.test", ["alice@static-a.test"], text)
    assert d.last[:2] == ("eom", 250), d.transcript


def test_nagios_sees_the_block(fed):
    # What Nagios asks gw1's NRPE agent, from mon1.
    out = podman_exec(
        "mon1", "/usr/lib/nagios/plugins/check_nrpe", "-H", "gw1", "-c", "connwatch", check=False
    )
    assert out.startswith("CONNWATCH CRITICAL"), out


def test_block_expires_by_itself(fed):
    later = (datetime.now().astimezone() + timedelta(hours=25)).isoformat(timespec="seconds")
    out = connwatch("run", "--now", later)
    assert out.startswith("OK"), out
    assert blocked_ips() == []
    _tag, text = message("dave@internet.test", "alice@static-a.test")
    d = smtp("outside", "gw1", "dave@internet.test", ["alice@static-a.test"], text, BLOCKED)
    assert "Too many connections" not in d.transcript, d.transcript
    assert d.reply("banner")[0] == 220, d.transcript


def test_operator_unblock(fed):
    podman_exec("gw1", "systemctl", "start", "passerelle-connwatch.service")
    assert blocked_ips() == [BLOCKED]
    assert f"{BLOCKED} unblocked" in connwatch("unblock", BLOCKED)
    assert blocked_ips() == []
    _tag, text = message("dave@internet.test", "alice@static-a.test")
    d = smtp("outside", "gw1", "dave@internet.test", ["alice@static-a.test"], text, BLOCKED)
    assert "Too many connections" not in d.transcript, d.transcript


def test_counts_are_shared_through_the_greylist_database(fed):
    """gw1 published its counts to db1 (connwatch_counts), where every gateway sums them."""
    cfg = podman_exec("gw1", "cat", CONFIG)
    assert 'sink = "mariadb"' in cfg and "@db1:3306/greylist" in cfg
    assert podman_exec("gw1", "stat", "-c", "%a", CONFIG).strip() == "600"
    podman_exec("gw1", "systemctl", "start", "passerelle-connwatch.service")
    n = podman_exec(
        "db1", "mysql", "-N", "-e", "SELECT COUNT(*) FROM greylist.connwatch_counts"
    ).strip()
    assert int(n) > 0, n
