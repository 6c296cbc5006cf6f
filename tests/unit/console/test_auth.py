"""Console accounts, roles, sessions, CSRF and login rate limiting (clock passed in)."""

from __future__ import annotations

import base64
import hashlib

import pytest

from passerelle.console import auth
from passerelle.console.auth import (
    ITERATIONS_MIN,
    PERMISSIONS,
    AccountError,
    Accounts,
    HashFormatError,
    Login,
    Sessions,
    SlidingWindow,
    can,
    client_key,
    hash_password,
    parse_hash,
    verify,
)

T0 = 1_700_000_000.0
SECRET = b"s" * 32
FAST = ITERATIONS_MIN  # the cheapest cost a hash may have: keeps the tests fast


@pytest.fixture(scope="module")
def alice_hash():
    return hash_password("correct horse", FAST)


@pytest.fixture(scope="module")
def accounts(alice_hash):
    return Accounts.from_inventory(
        [
            {"name": "alice", "role": "admin", "password_hash": alice_hash},
            {"name": "victor", "role": "viewer", "password_hash": hash_password("viewer pw", FAST)},
        ]
    )


# -- password hashes -------------------------------------------------------------------------


def test_hash_and_verify(alice_hash):
    assert alice_hash.startswith(f"$pbkdf2-sha256${FAST}$")
    assert verify("correct horse", alice_hash)
    assert not verify("correct horsE", alice_hash)
    assert not verify("", alice_hash)
    assert not verify(None, alice_hash)
    assert not verify("x" * 5000, alice_hash)
    assert not verify("\udcff", alice_hash)
    assert hash_password("correct horse", FAST) != alice_hash  # salted


def test_hash_is_pbkdf2_sha256_as_passlib_writes_it():
    salt = bytes(range(16))
    encoded = hash_password("pw", FAST, salt=salt)
    _, scheme, rounds, salt_text, checksum_text = encoded.split("$")
    assert (scheme, rounds) == ("pbkdf2-sha256", str(FAST))
    assert "=" not in encoded and "+" not in encoded
    expected = hashlib.pbkdf2_hmac("sha256", b"pw", salt, FAST)
    assert base64.b64decode(checksum_text.replace(".", "+") + "=") == expected
    assert base64.b64decode(salt_text.replace(".", "+") + "==") == salt


def test_verify_reads_a_passlib_reference_hash():
    # passlib.hash.pbkdf2_sha256.hash("password", rounds=29000, salt=b"0123456789abcdef")
    salt = b"0123456789abcdef"
    checksum = hashlib.pbkdf2_hmac("sha256", b"password", salt, 29000)
    ab64 = lambda b: base64.b64encode(b).decode().rstrip("=").replace("+", ".")  # noqa: E731
    encoded = f"$pbkdf2-sha256$29000${ab64(salt)}${ab64(checksum)}"
    assert parse_hash(encoded).iterations == 29000
    assert verify("password", encoded)


GOOD = hash_password("x", ITERATIONS_MIN, salt=b"saltsalt")


@pytest.mark.parametrize(
    "bad",
    [
        None,
        42,
        "",
        "plaintext",
        "$1$abc$def",
        "$scrypt$ln=14$a$b",
        GOOD.replace("pbkdf2-sha256", "pbkdf2-sha1"),
        GOOD + "$extra",
        GOOD.replace(f"${ITERATIONS_MIN}$", "$abc$"),
        GOOD.replace(f"${ITERATIONS_MIN}$", "$0100000$"),
        GOOD.replace(f"${ITERATIONS_MIN}$", "$10$"),
        GOOD.replace(f"${ITERATIONS_MIN}$", "$999999999$"),
        GOOD[:-4],
        GOOD[:-1] + "!",
        GOOD.rsplit("$", 1)[0] + "$",
        "$pbkdf2-sha256$10000$c2FsdA$" + "A" * 43,  # salt too short
        "$" * 1000,
    ],
)
def test_malformed_hash_is_a_clear_error(bad):
    with pytest.raises(HashFormatError, match="password hash") as err:
        verify("x", bad)
    if isinstance(bad, str) and len(bad) > 20:
        assert bad not in str(err.value)  # never shown
    assert verify("x", GOOD)


def test_hash_password_refuses_bad_input():
    with pytest.raises(ValueError, match="password"):
        hash_password("")
    with pytest.raises(ValueError, match="iterations"):
        hash_password("x", 10)


# -- accounts and roles ----------------------------------------------------------------------


def test_authenticate(accounts):
    assert accounts.authenticate("alice", "correct horse").role == "admin"
    assert accounts.authenticate("alice", "wrong") is None
    assert accounts.authenticate("nobody", "correct horse") is None
    assert accounts.authenticate(None, "x") is None
    assert accounts.role_of("victor") == "viewer"
    assert accounts.role_of("nobody") is None


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ("alice", "must be a list"),
        (["alice"], "not a mapping"),
        ([{"name": "a b", "role": "admin", "password_hash": GOOD}], "account name"),
        ([{"name": "bob", "role": "root", "password_hash": GOOD}], "role must be"),
        ([{"name": "bob", "role": "admin", "password_hash": "secret"}], "'bob': password hash"),
        ([{"name": "bob", "role": "admin", "password_hash": GOOD, "x": 1}], "unknown keys x"),
        ([{"name": "bob", "role": "admin", "password_hash": GOOD}] * 2, "defined twice"),
    ],
)
def test_malformed_accounts_are_refused(items, message):
    with pytest.raises(AccountError, match=message) as err:
        Accounts.from_inventory(items)
    assert "secret" not in str(err.value)


def test_roles():
    for action in PERMISSIONS:
        assert can("admin", action)
    assert can("viewer", "view") and can("viewer", "export_rules")
    for action in ("release", "delete", "rescan", "outbreak", "rules", "whitelist", "unblock"):
        assert not can("viewer", action)
    assert not can("root", "view") and not can(None, "view") and not can("", "view")
    with pytest.raises(ValueError, match="unknown console action"):
        can("admin", "relaese")


# -- sessions and CSRF -----------------------------------------------------------------------


def test_session_round_trip_and_expiry():
    s = Sessions(SECRET, lifetime=3600)
    token, session = s.issue("alice", T0)
    assert s.check(token, T0 + 10) == session
    assert (session.account, session.issued, session.expires) == ("alice", T0, T0 + 3600)
    assert s.check(token, T0 + 3599.9) == session
    assert s.check(token, T0 + 3600) is None  # expired
    assert s.check(token, T0 - 3600) is None  # issued in the future (beyond the skew)
    assert s.issue("alice", T0)[1].sid != session.sid


def test_forged_and_malformed_tokens_are_refused():
    s = Sessions(SECRET)
    token, _ = s.issue("alice", T0)
    data, mac = token.split(".")
    payload = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
    forged = base64.urlsafe_b64encode(payload.replace(b"alice", b"admin")).decode().rstrip("=")
    longer = payload.replace(f"|{T0 + s.lifetime!r}|".encode(), b"|9999999999.0|")
    extended = base64.urlsafe_b64encode(longer).decode().rstrip("=")
    other = Sessions(b"o" * 32).issue("alice", T0)[0]
    for bad in (
        f"{forged}.{mac}",
        f"{extended}.{mac}",
        other,
        token + "A",
        token.replace(".", ""),
        token + ".x",
        "",
        None,
        "é.é",
        "a" * 5000,
        f"{data}.",
    ):
        assert s.check(bad, T0 + 1) is None, bad
    assert s.check(token, T0 + 1) is not None


def test_sessions_refuse_a_short_secret():
    with pytest.raises(ValueError, match="at least 32 bytes"):
        Sessions(b"short")
    with pytest.raises(ValueError, match="lifetime"):
        Sessions(SECRET, lifetime=0)


def test_csrf_token_is_bound_to_the_session():
    s = Sessions(SECRET)
    _, one = s.issue("alice", T0)
    _, two = s.issue("alice", T0)
    t1 = s.csrf_token(one)
    assert s.check_csrf(one, t1)
    assert not s.check_csrf(two, t1)  # another session of the same account
    assert not s.check_csrf(one, None)  # a POST without its token
    assert not s.check_csrf(one, "")
    assert not s.check_csrf(one, t1[:-1])
    assert not s.check_csrf(one, t1 + "é")
    assert not s.check_csrf(None, t1)
    assert not Sessions(b"o" * 32).check_csrf(one, t1)


# -- rate limiting ---------------------------------------------------------------------------


def test_sliding_window():
    w = SlidingWindow(3, 60.0)
    for i in range(3):
        assert w.retry_after("k", T0 + i) == 0
        w.hit("k", T0 + i)
    assert w.retry_after("k", T0 + 10) == pytest.approx(50.0)
    assert w.retry_after("k", T0 + 59.5) == pytest.approx(0.5)
    assert w.retry_after("k", T0 + 60) == 0  # the first hit left the window: 2 in it
    assert w.retry_after("other", T0 + 10) == 0
    w.clear("k")
    assert w.retry_after("k", T0 + 10) == 0


def test_sliding_window_memory_is_bounded():
    w = SlidingWindow(5, 60.0, max_keys=100)
    for i in range(10_000):
        w.hit(f"10.0.{i // 256}.{i % 256}", T0 + i * 0.001)
        assert len(w) <= 100
    assert all(len(q) <= 5 for q in w._events.values())
    for _ in range(50):
        w.hit("attacker", T0 + 20)
    assert len(w._events["attacker"]) == 5


def test_expired_keys_are_forgotten_first():
    w = SlidingWindow(2, 60.0, max_keys=3)
    w.hit("old", T0)
    w.hit("a", T0 + 100)
    w.hit("b", T0 + 100)
    w.hit("c", T0 + 100)
    assert set(w._events) == {"a", "b", "c"}


def test_client_key():
    assert client_key("192.0.2.7") == "192.0.2.7"
    assert client_key("2001:db8:1:2:3:4:5:6") == client_key("2001:db8:1:2:ffff::1")
    assert client_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert client_key("not an address") == client_key(None) == "invalid"


def test_login_rate_limited_per_account_and_per_client(accounts):
    login = Login(
        accounts,
        Sessions(SECRET),
        per_client=SlidingWindow(8, 300.0),
        per_account=SlidingWindow(3, 300.0),
    )
    for i in range(3):
        r = login.attempt("alice", "guess", "192.0.2.1", T0 + i)
        assert (r.ok, r.message) == (False, "wrong account name or password")
    # the account is locked for everyone, even with the right password
    r = login.attempt("alice", "correct horse", "198.51.100.9", T0 + 10)
    assert not r.ok and r.message.startswith("too many failed logins") and r.retry_after > 0
    assert r.token is None
    # another account from another client is not
    assert login.attempt("victor", "viewer pw", "198.51.100.9", T0 + 10).ok
    # the window slides: 300 s after the first failure, alice may try again
    ok = login.attempt("alice", "correct horse", "198.51.100.9", T0 + 301)
    assert ok.ok and ok.session.account == "alice"
    assert login.sessions.check(ok.token, T0 + 302) == ok.session
    # one client guessing many accounts is stopped by its own limit
    for i in range(5):
        login.attempt(f"user{i}", "guess", "203.0.113.5", T0 + 400)
    assert login.attempt("victor", "viewer pw", "203.0.113.5", T0 + 401).ok
    for i in range(3):
        login.attempt(f"user{i}b", "guess", "203.0.113.5", T0 + 400)
    r = login.attempt("victor", "viewer pw", "203.0.113.5", T0 + 401)
    assert not r.ok and "too many" in r.message


def test_unknown_account_message_is_the_wrong_password_message(accounts):
    login = Login(accounts, Sessions(SECRET))
    a = login.attempt("nobody", "x", "192.0.2.1", T0)
    b = login.attempt("alice", "x", "192.0.2.1", T0)
    assert a.message == b.message and not a.ok and not b.ok


def test_main_prints_a_hash_that_verifies(monkeypatch, capsys):
    answers = iter(["s3cret", "s3cret"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    monkeypatch.setattr(auth, "ITERATIONS", FAST)
    monkeypatch.setattr(auth.hash_password, "__defaults__", (FAST, None))
    assert auth.main([]) == 0
    assert verify("s3cret", capsys.readouterr().out.strip())
    answers = iter(["a", "b"])
    assert auth.main([]) == 1
