"""The console's greylist page (issue 17): the admin whitelists outside's greylisted address
(.245, the one test_30_greylist sends from) through the console; once a gateway has carried
out the request (passerelle-console-sync.timer) and gw1's milter has reloaded the whitelist
table (greylist_whitelist_refresh, 60 s), a first-time triplet from that address is accepted
at once, without the temporary failure. The entry is removed again through the console (and,
should that fail, with ``passerelle greylist whitelist remove`` on gw1) in a finally.

The console is reached as test_85_console does (``browse``: an HTTPS session run inside mon1),
greylisting is observed as test_30_greylist does (its helpers, imported).
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid

from labsmtp import message, needs, podman_exec
from test_30_greylist import CONFIG, SOURCE, _assert_accepted, _assert_greylisted, _send, _sender
from test_85_console import ADMIN, BASE, MON, SYNC_TIMER, browse

RCPT = "alice@static-a.test"
REQUEST_DEADLINE = 150  # s: gateway-sync runs every minute
REFRESH_DEADLINE = 100  # s: the milter reloads the whitelist table every 60 s (lab default)
_FILED = re.compile(r"filed=([0-9]+)")
_STATUS = re.compile(r'class="status-([a-z]+)"')


def _file(path: str, entry: str, comment: str = "") -> int:
    """POST a whitelist form as the admin; the id of the request filed."""
    _login, _page, posted = browse(
        ["LOGIN", *ADMIN],
        ["GET", f"{BASE}/greylist"],
        [
            "POST",
            f"{BASE}{path}",
            {"csrf": "{csrf}", "kind": "client", "entry": entry, "comment": comment},
        ],
    )
    assert posted["status"] == 303, posted
    m = _FILED.search(posted["location"])
    assert m, posted
    return int(m.group(1))


def _wait_done(rid: int, deadline: float = REQUEST_DEADLINE) -> dict:
    """The request's page once a gateway has carried it out (done or failed)."""
    end = time.monotonic() + deadline
    while True:
        _login, page = browse(["LOGIN", *ADMIN], ["GET", f"{BASE}/requests/{rid}"])
        assert page["status"] == 200, page
        m = _STATUS.search(page["body"])
        status = m.group(1) if m else ""
        if status in ("done", "failed") or time.monotonic() > end:
            break
        time.sleep(5)
    assert status == "done", (
        f"request #{rid} is {status or 'unknown'} after {deadline} s:\n" + (page["body"][-2000:])
    )
    return page


def _send_new_triplet(tag: str):
    sender = _sender()
    return _send("gw1", sender, RCPT, message(sender, RCPT, tag))


@needs(MON, "gw1", "db1")
def test_a_client_whitelisted_in_the_console_is_no_longer_greylisted():
    assert podman_exec("gw1", "systemctl", "is-active", SYNC_TIMER).strip() == "active"
    tag = f"console-wl-{uuid.uuid4().hex[:10]}"
    # Before: a first-time triplet from .245 is greylisted (the address is not whitelisted).
    _assert_greylisted(_send_new_triplet(f"{tag}-before"))
    added = removed = 0
    cleaned = False
    try:
        added = _file("/greylist/add", SOURCE, f"molecule {tag}")
        done = _wait_done(added)
        assert "added to the whitelist" in done["body"], done["body"][-2000:]
        # The page shows it: the gateway publishes the whitelist right after its requests,
        # in the same pass (a moment after the request is marked done).
        row = f"<td>client</td><td>{SOURCE}</td><td>molecule {tag}</td>"
        end = time.monotonic() + 30
        while True:
            (page,) = browse(["LOGIN", *ADMIN], ["GET", f"{BASE}/greylist"])[1:]
            if row in page["body"] or time.monotonic() > end:
                break
            time.sleep(3)
        assert row in page["body"], page["body"][-3000:]

        # gw1's milter reloads the table every 60 s: each attempt is a new (first-time)
        # triplet; the first one accepted is accepted at once, without a 451.
        end = time.monotonic() + REFRESH_DEADLINE
        n = 0
        while True:
            n += 1
            d = _send_new_triplet(f"{tag}-{n}")
            rcpt = d.reply("rcpt")
            if (rcpt is not None and rcpt[0] == 250) or time.monotonic() > end:
                break
            _assert_greylisted(d)  # anything else than greylisting is a failure of its own
            time.sleep(10)
        _assert_accepted(d)

        # Removed through the console: carried out once.
        removed = _file("/greylist/remove", SOURCE)
        done = _wait_done(removed)
        assert "removed from the whitelist" in done["body"], done["body"][-2000:]
        cleaned = True
    finally:
        if added and not cleaned:
            _cleanup(added, removed)


def _cleanup(added: int, removed: int) -> None:
    """Best effort, never raising over the test's own failure: let a pending add land first
    (else it would land after the cleanup), remove through the console (unless a removal was
    filed already), then on gw1 whatever happened to that."""
    with contextlib.suppress(AssertionError):
        _wait_done(added)
    with contextlib.suppress(AssertionError):
        _wait_done(removed or _file("/greylist/remove", SOURCE))
    podman_exec(
        "gw1",
        "passerelle",
        "greylist",
        "whitelist",
        "remove",
        SOURCE,
        "--kind",
        "client",
        "--config",
        CONFIG,
        check=False,
    )
