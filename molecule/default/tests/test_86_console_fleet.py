"""The console's fleet status and outbreak pages (issue 17): every gateway's gateway-sync pass
(passerelle-console-sync.timer, every minute) reports its status to the console's database;
the lab's admin, logged in over HTTPS through mon1's Apache as in test_85_console, sees gw1
and gw2 with a fresh report and sendmail active, and outbreak mode off on both. The lab's
viewer sees the outbreak page without its switches, and its POST is refused.

Nothing here switches outbreak mode (test_40_antivirus leaves it off; a switch would change
the mail flow the other tests see): the switch is unit-tested (tests/unit/console).
"""

from __future__ import annotations

import re
import time

from labsmtp import PREFIX, container_run, needs, podman_exec
from test_85_console import ADMIN, BASE, MON, SYNC_TIMER, VIEWER, browse

GATEWAYS = ("gw1", "gw2")
REPORT_DEADLINE = 150  # s: gateway-sync every minute; a report is stale after 3 minutes


def _row(page: str, gateway: str) -> str:
    """The table row of ``gateway`` (its first cell is the gateway's name), "" if none."""
    m = re.search(rf"<tr[^>]*>\s*<td>{re.escape(gateway)}</td>(?:(?!</tr>).)*</tr>", page, re.S)
    return m.group(0) if m else ""


def _fresh(row: str) -> bool:
    return bool(row) and "(stale)" not in row and "sendmail: active" in row


@needs(MON, *GATEWAYS)
def test_fleet_lists_both_gateways_with_a_fresh_report_and_sendmail_active():
    for gw in GATEWAYS:
        assert podman_exec(gw, "systemctl", "is-active", SYNC_TIMER).strip() == "active"
    deadline = time.monotonic() + REPORT_DEADLINE
    while True:
        login, page = browse(["LOGIN", *ADMIN], ["GET", f"{BASE}/fleet"])
        assert login["status"] == 303, login
        assert page["status"] == 200, page
        rows = {gw: _row(page["body"], gw) for gw in GATEWAYS}
        if all(_fresh(r) for r in rows.values()) or time.monotonic() > deadline:
            break
        time.sleep(10)
    for gw, row in rows.items():
        assert row, f"{gw} not on the fleet page within {REPORT_DEADLINE} s: {page['body']}"
        assert "(stale)" not in row, row
        assert "sendmail: active" in row, row
        assert "unknown: ops config" not in row, row  # ops.toml (role ops_reports) was read
    # both pages are in the navigation
    assert f'href="{BASE}/fleet"' in page["body"] and f'href="{BASE}/outbreak"' in page["body"]


def _check_console(*extra: str) -> tuple[int, str]:
    """``passerelle check console`` on mon1 as NRPE runs it (root, through sudo there)."""
    res = container_run(PREFIX + MON, ["/usr/local/bin/passerelle", "check", "console", *extra])
    return res.returncode, res.stdout.decode("utf-8", "replace").strip()


@needs(MON, *GATEWAYS)
def test_the_console_nagios_check_judges_the_real_console():
    for gw in GATEWAYS:
        podman_exec(gw, "systemctl", "start", "passerelle-console-sync.service")
    rc, out = _check_console()
    assert rc == 0, out
    assert out.startswith("CONSOLE OK - answering; 2 gateway(s) reporting"), out
    # The same reports judged with a one-second "stale": both gateways named, WARNING. The
    # gateways' timers (minutely, both at :00) may file a report within the second before a
    # check: that gateway is then rightly fresh, and the check is asked again 2 s later.
    for _attempt in range(3):
        time.sleep(2)
        rc, out = _check_console("--stale", "1s")
        if "from gw1, gw2" in out:
            break
    assert rc == 1, out
    assert "no report for over 1 s from gw1, gw2" in out, out
    podman_exec(MON, "systemctl", "stop", "passerelle-console.service")
    try:
        rc, out = _check_console()
        assert rc == 2, out
        assert "CONSOLE CRITICAL - the console does not answer its login page" in out, out
    finally:
        podman_exec(MON, "systemctl", "start", "passerelle-console.service")
    # Type=notify: started means answering; the deadline covers a slow, loaded machine.
    deadline = time.monotonic() + 60
    while (rc := _check_console()[0]) != 0 and time.monotonic() < deadline:
        time.sleep(1)
    assert rc == 0, _check_console()[1]


@needs(MON, *GATEWAYS)
def test_outbreak_page_shows_both_gateways_off():
    # A report made now: the last one may predate the end of test_40's outbreak test.
    for gw in GATEWAYS:
        podman_exec(gw, "systemctl", "start", "passerelle-console-sync.service")
    deadline = time.monotonic() + REPORT_DEADLINE
    while True:
        _login, page = browse(["LOGIN", *ADMIN], ["GET", f"{BASE}/outbreak"])
        assert page["status"] == 200, page
        rows = {gw: _row(page["body"], gw) for gw in GATEWAYS}
        if all(rows.values()) or time.monotonic() > deadline:
            break
        time.sleep(10)
    for gw, row in rows.items():
        assert row, f"{gw} not on the outbreak page: {page['body']}"
        assert "<td>off</td>" in row, row
    # an admin has the two switches
    assert page["body"].count(f'action="{BASE}/outbreak/switch"') == 2
    assert f'href="{BASE}/quarantine?reason=outbreak&amp;state=held"' in page["body"]


@needs(MON)
def test_the_viewer_has_no_outbreak_switch_and_its_post_is_refused():
    _login, page, switch = browse(
        ["LOGIN", *VIEWER],
        ["GET", f"{BASE}/outbreak"],
        ["POST", f"{BASE}/outbreak/switch", {"csrf": "{csrf}", "mode": "on"}],
    )
    if switch["status"] != 403:  # never expected: switch it back off before failing
        browse(
            ["LOGIN", *ADMIN],
            ["GET", f"{BASE}/outbreak"],
            ["POST", f"{BASE}/outbreak/switch", {"csrf": "{csrf}", "mode": "off"}],
        )
    assert switch["status"] == 403, switch
    assert page["status"] == 200, page
    assert "/outbreak/switch" not in page["body"]
    assert "a viewer cannot switch outbreak mode" in switch["body"]
