import threading
import time

import pytest
from conftest import FakeClock

from passerelle.greylist.config import parse_config
from passerelle.greylist.engine import Greylister
from passerelle.greylist.store import open_store


def make(tmp_path, clock=None, **greylist):
    opts = {"store": f"sqlite:///{tmp_path}/g.sqlite", "hostname": "gw1.example.org"}
    opts.update(greylist)
    wl = opts.pop("whitelist", {})
    cfg = parse_config({"greylist": opts, "whitelist": wl})
    clock = clock or FakeClock()
    return Greylister(cfg, open_store(cfg.store_url, cfg.store_timeout), clock=clock), clock


@pytest.fixture
def eng(tmp_path):
    e, clock = make(tmp_path)
    yield e, clock
    e.close()


def test_full_cycle_with_header(eng):
    e, clock = eng
    c = e.client("192.0.2.10", "mx.sender.example", True)
    v = e.check(c, "<a@sender.example>", "<b@example.org>")
    assert not v.accept and v.reply == ("451", "4.7.1", "greylisted, retry later")
    clock.advance(2412)
    v = e.check(c, "<a@sender.example>", "<b@example.org>")
    assert v.accept and v.reason == "delayed" and v.delay == 2412
    assert e.delayed_header(v.delay) == ("X-Delayed", "40m12s (2412 s) by gw1.example.org")
    v = e.check(c, "<a@sender.example>", "<b@example.org>")
    assert v.accept and v.reason == "passed" and v.delay is None


def test_retry_from_same_network_and_retagged_sender_matches(eng):
    e, clock = eng
    v = e.check(e.client("203.0.113.5"), "prvs=1111aaaaaa=bounce-17@big.example", "u@example.org")
    assert not v.accept
    clock.advance(2400)
    v = e.check(e.client("203.0.113.99"), "prvs=2222bbbbbb=bounce-18@big.example", "u@example.org")
    assert v.accept and v.reason == "delayed"


def test_per_recipient_decisions(eng):
    e, clock = eng
    c = e.client("192.0.2.10")
    assert not e.check(c, "a@x.example", "one@example.org").accept
    clock.advance(3000)
    assert e.check(c, "a@x.example", "one@example.org").accept
    assert not e.check(c, "a@x.example", "two@example.org").accept


def test_whitelists_and_exemptions(tmp_path):
    e, _ = make(
        tmp_path,
        ipv4_prefix=32,
        whitelist={
            "clients": ["198.51.100.0/24", "mx.friendly.example"],
            "senders": ["@partner.example"],
            "recipients": ["postmaster@example.org"],
            "trusted_networks": ["10.0.0.0/8"],
        },
    )
    try:

        def check(
            ip, host=None, verified=False, sender="s@x.example", rcpt="r@example.org", auth=None
        ):
            c = e.client(ip, host, verified)
            return e.check(c, sender, rcpt, e.message_exemption(c, sender, auth))

        assert check("198.51.100.9").reason == "client"
        assert check("10.1.2.3").reason == "trusted"
        assert check("192.0.2.1", "a.mx.friendly.example", True).reason == "client"
        # unverified hostname: not trusted
        assert check("192.0.2.2", "mx.friendly.example", False).reason == "new"
        assert check("192.0.2.3", sender="x@partner.example").reason == "sender"
        assert check("192.0.2.4", rcpt="postmaster@example.org").reason == "recipient"
        assert check("192.0.2.5", auth="alice").reason == "auth"
        assert check("192.0.2.6").reason == "new"
        e.flush_counters()
        hits = dict(e.store.stats_since(0, "whitelisted"))
        assert hits["198.51.100.9 (client 198.51.100.0/24)"] == 1
        assert hits["192.0.2.1 a.mx.friendly.example (client mx.friendly.example)"] == 1
    finally:
        e.close()


def test_whitelist_table_is_merged(eng):
    e, clock = eng
    e.store.whitelist_add("client", "192.0.2.0/28", "partner", clock())
    e.store.whitelist_add("client", "not valid!", "", clock())
    assert e.check(e.client("192.0.2.3"), "a@b.example", "c@example.org").accept is False
    e.refresh_whitelist()
    assert e.check(e.client("192.0.2.3"), "a@b.example", "c@example.org").reason == "client"


def test_auto_whitelist_after_n_passes(tmp_path):
    e, clock = make(tmp_path, auto_whitelist_after=3)
    try:
        c = e.client("192.0.2.10")
        for i in range(3):
            assert not e.check(c, f"s{i}@x.example", "r@example.org").accept
        clock.advance(2400)
        for i in range(3):
            v = e.check(c, f"s{i}@x.example", "r@example.org")
            assert v.accept and v.reason == "delayed" and v.auto is False
        # a new triplet from the same network now skips greylisting
        v = e.check(e.client("192.0.2.77"), "new@y.example", "r@example.org")
        assert v.accept and v.reason == "auto" and v.auto is True
        # ... for pass_ttl after the last pass
        clock.advance(15 * 86400 + 1)
        v = e.check(e.client("192.0.2.77"), "new@y.example", "r@example.org")
        assert not v.accept
    finally:
        e.close()


def test_auto_whitelist_disabled(tmp_path):
    e, clock = make(tmp_path, auto_whitelist_after=0)
    try:
        c = e.client("192.0.2.10")
        for i in range(10):
            e.check(c, f"s{i}@x.example", "r@example.org")
        clock.advance(2400)
        for i in range(10):
            assert e.check(c, f"s{i}@x.example", "r@example.org").accept
        assert not e.check(c, "other@x.example", "r@example.org").accept
    finally:
        e.close()


class BrokenStore:
    def __init__(self, delay=0.0):
        self.delay = delay
        self.calls = 0

    def __getattr__(self, name):
        def f(*a, **k):
            self.calls += 1
            if self.delay:
                time.sleep(self.delay)
            raise ConnectionError("database is down")

        return f


@pytest.mark.parametrize("policy", ["accept", "tempfail"])
def test_store_down_policy(tmp_path, policy):
    cfg = parse_config(
        {"greylist": {"store": "sqlite:///x", "on_store_error": policy, "hostname": "gw1"}}
    )
    store = BrokenStore()
    e = Greylister(cfg, store)
    c = e.client("192.0.2.1")
    v = e.check(c, "a@b.example", "c@example.org")
    if policy == "accept":
        assert v.accept and v.skipped
        assert e.skipped_header() == ("X-Greylist", "skipped (store unavailable) by gw1")
    else:
        assert not v.accept and v.reply[0] == "451"
    # backing off: the next decisions do not touch the store
    calls = store.calls
    for _ in range(5):
        assert e.check(c, "a@b.example", "c@example.org").accept is (policy == "accept")
    assert store.calls == calls
    e._pool.shutdown(wait=False)


def test_slow_store_never_holds_a_decision_beyond_store_timeout():
    cfg = parse_config({"greylist": {"store": "sqlite:///x", "store_timeout": "1s"}})
    store = BrokenStore(delay=5)
    e = Greylister(cfg, store)
    t = time.monotonic()
    v = e.check(e.client("192.0.2.1"), "a@b.example", "c@example.org")
    elapsed = time.monotonic() - t
    assert v.accept and v.skipped
    assert elapsed < 1.5
    e._pool.shutdown(wait=False, cancel_futures=True)


def test_threads_share_the_engine(eng):
    e, _clock = eng
    c = e.client("192.0.2.10")
    errors = []

    def worker(n):
        try:
            for i in range(20):
                e.check(
                    c,
                    f"t{n}-{i}@x.example".translate(str.maketrans("0123456789", "abcdefghij")),
                    "r@example.org",
                )
        except Exception as exc:  # pragma: no cover
            errors.append(exc)

    ts = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    assert e.store.count() == 120
