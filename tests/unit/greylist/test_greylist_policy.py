import hashlib

import pytest

from passerelle.greylist.policy import (
    PASSED,
    PENDING,
    Record,
    Timing,
    auto_whitelisted,
    evaluate,
    triplet_key,
)

T = Timing(min_delay=2400, pending_ttl=15 * 3600, pass_ttl=15 * 86400)
T0 = 1_000_000.0


def first() -> Record:
    out = evaluate(None, T0, T)
    assert not out.accept and out.reason == "new"
    assert out.record.state == PENDING and out.record.first_seen == T0
    return out.record


def test_unknown_triplet_is_greylisted_with_a_pending_record():
    rec = first()
    assert rec.attempts == 1 and rec.passes == 0


@pytest.mark.parametrize(
    ("age", "accept", "reason"),
    [
        (0, False, "early"),
        (2399, False, "early"),
        (2399.999, False, "early"),
        (2400, True, "delayed"),
        (2401, True, "delayed"),
        (15 * 3600 - 1, True, "delayed"),
        (15 * 3600, True, "delayed"),
        (15 * 3600 + 0.001, False, "restart"),
        (15 * 3600 + 1, False, "restart"),
    ],
)
def test_pending_boundaries(age, accept, reason):
    out = evaluate(first(), T0 + age, T)
    assert out.accept is accept
    assert out.reason == reason
    if reason == "delayed":
        assert out.delay == pytest.approx(age)
        assert out.record.state == PASSED and out.record.passed_at == T0 + age
    else:
        assert out.delay is None


def test_early_retry_counts_attempts_and_keeps_first_seen():
    rec = evaluate(first(), T0 + 60, T).record
    assert rec.attempts == 2 and rec.first_seen == T0 and rec.version == 1


def test_restart_after_pending_ttl_starts_over():
    out = evaluate(first(), T0 + 16 * 3600, T)
    assert out.record.first_seen == T0 + 16 * 3600
    assert out.record.attempts == 1 and out.record.state == PENDING
    # and the next retry must again wait min_delay from the new start
    assert not evaluate(out.record, T0 + 16 * 3600 + 2399, T).accept


def passed_at(t: float) -> Record:
    out = evaluate(first(), t, T)
    assert out.accept
    return out.record


@pytest.mark.parametrize(
    ("since_last", "accept"),
    [(0, True), (86400, True), (15 * 86400 - 1, True), (15 * 86400, True), (15 * 86400 + 1, False)],
)
def test_pass_ttl_boundaries(since_last, accept):
    rec = passed_at(T0 + 3000)
    out = evaluate(rec, T0 + 3000 + since_last, T)
    assert out.accept is accept
    if accept:
        assert out.reason == "passed" and out.delay is None  # no X-Delayed once passed
    else:
        assert out.reason == "restart" and out.record.state == PENDING


def test_pass_is_refreshed_by_each_use():
    rec = passed_at(T0 + 3000)
    t = T0 + 3000
    for _ in range(5):
        t += 14 * 86400
        out = evaluate(rec, t, T)
        assert out.accept and out.reason == "passed"
        rec = out.record
        assert rec.last_seen == t
    assert rec.passes == 6
    assert rec.expires(T) == t + T.pass_ttl


def test_expires():
    rec = first()
    assert rec.expires(T) == T0 + T.pending_ttl


def test_triplet_key_is_unambiguous_and_fixed_size():
    a = triplet_key("1.2.3.0/24", "ab", "c")
    b = triplet_key("1.2.3.0/24", "a", "bc")
    assert a != b and len(a) == 16
    assert triplet_key("x", "\udcff@x", "y") != triplet_key("x", "\udcfe@x", "y")
    assert len(triplet_key("x", "a" * 5000 + "@x", "y")) == 16


def test_auto_whitelisted():
    assert auto_whitelisted(5, 100.0, 100.0, 5)
    assert not auto_whitelisted(4, 100.0, 50.0, 5)
    assert not auto_whitelisted(5, 100.0, 100.1, 5)
    assert not auto_whitelisted(50, 100.0, 50.0, 0)


def test_triplet_key_never_changes():
    # The key of every stored record: a new way of computing it must give the same bytes
    # (SHA-256 over each part's 4-byte big-endian length and UTF-8/surrogateescape bytes).
    assert triplet_key("192.0.2.0/24", "sender@example.net", "rcpt@example.org").hex() == (
        "5c39c73c2cac4cec820cb9e1831f4b36"
    )
    assert triplet_key("2001:db8::/64", "\udcff@x", "").hex() == "8910f7176e03307752f525025107bd71"
    for client, sender, rcpt in [("g", "", ""), ("g", "é@x", "r@y"), ("", "a" * 300, "b")]:
        h = hashlib.sha256()
        for part in (client, sender, rcpt):
            b = part.encode("utf-8", "surrogateescape")
            h.update(len(b).to_bytes(4, "big") + b)
        assert triplet_key(client, sender, rcpt) == h.digest()[:16]


def test_each_transition_gives_the_whole_record():
    # every field of the stored record, kept or changed, for each reason
    pending = Record(PENDING, T0, T0 + 60, None, 3, 0, 7)
    assert evaluate(pending, T0 + 120, T).record == Record(PENDING, T0, T0 + 120, None, 4, 0, 8)
    assert evaluate(pending, T0 + 3000, T).record == Record(
        PASSED, T0, T0 + 3000, T0 + 3000, 3, 1, 8
    )
    late = T0 + T.pending_ttl + 1
    assert evaluate(pending, late, T).record == Record(PENDING, late, late, None, 1, 0, 8)
    passed = Record(PASSED, T0, T0 + 5000, T0 + 3000, 3, 4, 9)
    assert evaluate(passed, T0 + 4000, T).record == Record(
        PASSED, T0, T0 + 5000, T0 + 3000, 3, 5, 10
    )
    gone = T0 + 5000 + T.pass_ttl + 1
    assert evaluate(passed, gone, T).record == Record(PENDING, gone, gone, None, 1, 0, 10)
