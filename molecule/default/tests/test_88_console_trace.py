"""The console's message trace (/trace): a message sent from outside through gw1 to alice is
found by its Message-ID once gw1's side has shipped its mail log (passerelle-console-sync,
every minute), with its path: gw1's reception from outside, the greylist, antivirus and spam
verdicts, and the delivery to mailstore1; a greylisted attempt from outside's .245 is found
by its sender, as not queued.

The browser session and the lab accounts are test_85_console's (a client run inside mon1).
"""

from __future__ import annotations

import re
import time
import uuid
from urllib.parse import urlencode

from labsmtp import NET, message, needs, podman_exec, smtp, wait_for_mail
from test_85_console import ADMIN, BASE, MON, SYNC_TIMER, VIEWER, browse

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
        login, page = browse(["LOGIN", *account], ["GET", path])
        assert login["status"] == 303, login
        assert page["status"] == 200, page
        if all(_rows(page["body"], k) for k in until) or time.monotonic() > deadline:
            return page["body"]
        time.sleep(5)


@needs(MON, "gw1", "db1", "mailstore1")
def test_a_delivered_message_is_traced_by_its_message_id():
    assert podman_exec("gw1", "systemctl", "is-active", SYNC_TIMER).strip() == "active"
    tag, text = message("dave@internet.test", "alice@static-a.test")
    d = smtp("outside", "gw1", "dave@internet.test", ["alice@static-a.test"], data=text)
    assert d.last[0] == "eom" and d.last[1] == 250, d.transcript
    wait_for_mail("mailstore1", "alice", tag)

    body = _trace(ADMIN, {"message_id": f"<{tag}@internet.test>"}, KINDS)
    missing = [k for k in KINDS if not _rows(body, k)]
    assert not missing, (
        f"no {missing} step for {tag} within {DEADLINE} s; gateway-sync:\n{_sync_journal()}"
    )
    assert f"{tag}@internet.test" in body
    # gw1 received it from outside (its main address, greylist-whitelisted)
    (received,) = _rows(body, "from")
    assert "<td>gw1</td>" in received and f"[{NET}.250]" in received, received
    assert "dave@internet.test" in received
    # the verdicts: greylist exemption, clean, a spam score
    assert any("accepted" in r and f"{NET}.250" in r for r in _rows(body, "greylist"))
    assert any("antivirus clean" in r for r in _rows(body, "antivirus"))
    assert any("score=" in r for r in _rows(body, "spam"))
    # delivered to alice on mailstore1 by gw1
    sent = _rows(body, "sent")
    assert any(
        "<td>gw1</td>" in r and "alice@static-a.test" in r and "mailstore1" in r and "Sent" in r
        for r in sent
    ), sent
    # the path in time order: reception before delivery
    assert body.index('class="kind-from"') < body.index('class="kind-sent"')

    # a viewer sees the same trace
    (_login, seen) = browse(
        ["LOGIN", *VIEWER],
        ["GET", f"{BASE}/trace?{urlencode({'message_id': f'{tag}@internet.test'})}"],
    )
    assert seen["status"] == 200 and _rows(seen["body"], "sent"), seen


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
