"""Greylisting on this scenario's gateways after the upgrade, through real sendmail.

Their greylist is in SQLite (no greylist_db host), where ``passerelle.milterloop`` serves the
milter instead of libmilter (the default and trixie scenarios keep theirs in MariaDB, on
libmilter). From outside's .245 (not whitelisted, like test_30 of the default scenario): a
first attempt refused ``451 4.7.1``, an early retry refused again, the retry after the delay
accepted with our ``X-Delayed`` header and without the forged one the client sent.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "default" / "tests"))
import tomllib
from labsmtp import message, podman_exec, wait_for_mail
from test_30_greylist import (
    _assert_accepted,
    _assert_greylisted,
    _duration,
    _headers_of,
    _send,
    _sender,
)


def test_a_first_attempt_is_greylisted_and_its_retry_delayed_on_sqlite():
    cfg = tomllib.loads(podman_exec("gw1", "cat", "/etc/passerelle/greylist.toml"))
    assert cfg["greylist"]["store"].startswith("sqlite:///")
    min_delay = _duration(cfg["greylist"]["min_delay"])
    sender, rcpt = _sender(), "alice@static-a.test"
    tag, text = message(sender, rcpt)
    forged = text.replace("\n\n", "\nX-Delayed: forged by the client\n\n", 1)
    assert forged != text
    first = time.monotonic()
    _assert_greylisted(_send("gw1", sender, rcpt, (tag, forged)))
    _assert_greylisted(_send("gw1", sender, rcpt, (tag, forged)))
    time.sleep(max(0.0, first + min_delay + 2 - time.monotonic()))
    _assert_accepted(_send("gw1", sender, rcpt, (tag, forged)))
    headers = _headers_of(wait_for_mail("mailstore1", "alice", tag), tag)
    delayed = [line for line in headers.split("\n") if line.startswith("X-Delayed:")]
    assert len(delayed) == 1, headers
    assert "by gw1.lab.passerelle.test" in delayed[0], headers
