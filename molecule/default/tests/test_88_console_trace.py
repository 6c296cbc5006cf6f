"""The console's message trace (/trace): a greylisted attempt from outside's .245 is found by
its sender, as not queued, once gw1's side has shipped its mail log (one pass of
passerelle-console-sync run at once, as its timer does every minute); a search without a term
is refused. The path of a delivered message is followed in the browser
(test_89_console_browser.py).

The browser session and the lab accounts are test_85_console's (a client run inside mon1).
"""

from __future__ import annotations

import re
import time
import uuid
from urllib.parse import urlencode

from labsmtp import NET, message, needs, podman_exec, smtp
from test_85_console import ADMIN, BASE, MON, browse

DEADLINE = 150  # s: gateway-sync every minute, plus the pass itself
SYNC_SERVICE = "passerelle-console-sync.service"
KINDS = ("greylist", "from", "antivirus", "spam", "sent")


def _rows(body: str, kind: str) -> list[str]:
    return re.findall(rf'<tr class="kind-{kind}">(.*?)</tr>', body, re.S)


def _sync_journal() -> str:
    return podman_exec(
        "gw1", "journalctl", "-u", SYNC_SERVICE, "-n", "20", "--no-pager", check=False
    )


def _trace(account: tuple[str, str], query: dict[str, str], until: tuple[str, ...]) -> str:
    """The /trace page for ``query`` once it shows a row of each kind in ``until`` (or the
    last page seen when DEADLINE passed)."""
    path = f"{BASE}/trace?{urlencode(query)}"
    deadline = time.monotonic() + DEADLINE
    while True:
        podman_exec("gw1", "systemctl", "start", SYNC_SERVICE, check=False)  # one pass now
        login, page = browse(["LOGIN", *account], ["GET", path])
        assert login["status"] == 303, login
        assert page["status"] == 200, page
        if all(_rows(page["body"], k) for k in until) or time.monotonic() > deadline:
            return page["body"]
        time.sleep(5)


@needs(MON, "gw1", "db1")
def test_a_greylisted_attempt_is_traced_by_its_sender():
    sender = f"trace-{uuid.uuid4().hex[:12]}@internet.test"
    _tag, text = message(sender, "alice@static-a.test")
    d = smtp("outside", "gw1", sender, ["alice@static-a.test"], data=text, source=f"{NET}.245")
    reply = d.reply("rcpt")
    assert reply is not None and reply[0] == 451, d.transcript  # greylisted, not queued

    body = _trace(ADMIN, {"sender": sender}, ("greylist",))
    rows = _rows(body, "greylist")
    assert rows, f"no greylist step for {sender} within {DEADLINE} s:\n{_sync_journal()}"
    assert any("greylisted" in r and f"{NET}.245" in r and "reason=new" in r for r in rows), rows
    assert "Not queued" in body


@needs(MON)
def test_trace_refuses_a_search_without_a_term():
    (_login, page) = browse(["LOGIN", *ADMIN], ["GET", f"{BASE}/trace?sender=&recipient="])
    assert page["status"] == 400 and "at least one" in page["body"], page
