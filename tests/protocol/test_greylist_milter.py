"""The greylist milter driven over its unix socket with miltertest, SQLite and MariaDB."""

import re

import greylist_fixtures
import pytest
from milterclient import NO_REPLY_BITS, SKIP_BITS, MilterClient
from miltertest import constants as C

import hostile_headers
from passerelle.greylist.store import open_store

# fixtures shared with tests/unit/greylist (no conftest here: other areas own this folder)
MilterProcess = greylist_fixtures.MilterProcess
write_config = greylist_fixtures.write_config
greylist_mariadb = greylist_fixtures.greylist_mariadb
greylist_store_url = greylist_fixtures.greylist_store_url
greylist_milter = greylist_fixtures.greylist_milter


class Session(MilterClient):
    """A greylist session: the client's resolve status and AUTH name as sendmail's macros."""

    def __init__(self, path):
        super().__init__(path, timeout=10)

    def connect(self, ip, hostname=None, resolve="OK"):
        self.macro(C.SMFIC_CONNECT, **{"{client_resolve}": resolve})
        return super().connect(hostname or f"[{ip}]", ip, port=4321)

    def mail(self, sender, auth=None):
        if auth:
            self.macro(C.SMFIC_MAIL, **{"{auth_authen}": auth})
        return super().mail(f"<{sender}>")

    def rcpt(self, rcpt):
        return super().rcpt(f"<{rcpt}>")

    def headers(self, headers):
        """Send headers the way sendmail does: not at all when the milter asked for none."""
        for name, value in headers:
            r = self.header(name, value)
            assert r[0] == C.SMFIR_CONTINUE, r


def headers(eom_replies):
    return {r[1]["name"]: r[1]["value"] for r in eom_replies if r[0] == C.SMFIR_ADDHEADER}


def is_greylisted(reply):
    return (
        reply[0] == C.SMFIR_REPLYCODE
        and reply[1]["smtpcode"] == "451"
        and reply[1]["text"] == "4.7.1 greylisted, retry later"
    )


def backdate(url, seconds):
    s = open_store(url)
    s.execute(
        "UPDATE greylist SET first_seen = first_seen - ?, last_seen = last_seen - ?,"
        " expires = expires - ?",
        (seconds, seconds, seconds),
    )
    s.close()


def deliver(path, ip, sender, rcpts, hostname=None, resolve="OK", auth=None, hdrs=(), eoms=None):
    s = Session(path)
    try:
        s.connect(ip, hostname, resolve)
        assert s.mail(sender, auth)[0] == C.SMFIR_CONTINUE
        replies = [s.rcpt(r) for r in rcpts]
        s.headers(hdrs)
        eom = s.eom()
        if eoms is not None:
            eoms.extend(eom)
        assert eom[-1][0] == C.SMFIR_ACCEPT
        return replies, headers(eom)
    finally:
        s.close()


DELAYED = re.compile(r"^40m1[234]s \(241[234] s\) by gw1\.example\.org$")


def test_greylist_then_delayed_then_passed(greylist_milter):
    m = greylist_milter
    r, h = deliver(m.sock, "192.0.2.10", "alice@sender.example", ["bob@example.org"])
    assert is_greylisted(r[0]) and h == {}
    # retry too early: refused again
    r, _ = deliver(m.sock, "192.0.2.10", "alice@sender.example", ["bob@example.org"])
    assert is_greylisted(r[0])
    backdate(m.store_url, 2412)
    # the retry from another address of the same /24, with a re-tagged sender, passes
    r, h = deliver(m.sock, "192.0.2.99", "alice+retry7@sender.example", ["bob@example.org"])
    assert r[0][0] == C.SMFIR_CONTINUE
    assert DELAYED.match(h["X-Delayed"]), h
    r, h = deliver(m.sock, "192.0.2.10", "alice@sender.example", ["bob@example.org"])
    assert r[0][0] == C.SMFIR_CONTINUE and h == {}


def test_per_recipient_tempfail(greylist_milter):
    m = greylist_milter
    deliver(m.sock, "203.0.113.5", "a@x.example", ["one@example.org"])
    backdate(m.store_url, 3000)
    r, h = deliver(m.sock, "203.0.113.5", "a@x.example", ["one@example.org", "two@example.org"])
    assert r[0][0] == C.SMFIR_CONTINUE
    assert is_greylisted(r[1])
    assert h["X-Delayed"].startswith("50m")


@pytest.mark.parametrize(
    ("ip", "host", "resolve", "auth", "rcpt"),
    [
        ("198.51.100.7", None, "OK", None, "u@example.org"),  # whitelisted IP
        ("10.20.30.40", None, "OK", None, "u@example.org"),  # trusted network
        ("192.0.2.200", "smtp.mx.friendly.example", "OK", None, "u@example.org"),  # name
        ("192.0.2.201", None, "OK", "alice", "u@example.org"),  # authenticated
        ("192.0.2.202", None, "OK", None, "postmaster@example.org"),  # recipient exempt
    ],
)
def test_exemptions(greylist_milter, ip, host, resolve, auth, rcpt):
    r, h = deliver(greylist_milter.sock, ip, "x@y.example", [rcpt], host, resolve, auth)
    assert r[0][0] == C.SMFIR_CONTINUE and h == {}


def test_unverified_hostname_is_not_whitelisted(greylist_milter):
    r, _ = deliver(
        greylist_milter.sock,
        "192.0.2.203",
        "x@y.example",
        ["u@example.org"],
        "smtp.mx.friendly.example",
        "FAIL",
    )
    assert is_greylisted(r[0])


def test_8bit_quotes_and_long_local_parts(greylist_milter):
    m = greylist_milter
    senders = [
        "o'brien\"; DROP TABLE greylist;--@x.example",
        "caf\u00e9\\x@x.example",
        "l" * 1000 + "@x.example",
    ]
    for s in senders:
        r, _ = deliver(m.sock, "192.0.2.50", s, ["r@example.org"])
        assert is_greylisted(r[0]), s
    backdate(m.store_url, 2500)
    for s in senders:
        r, h = deliver(m.sock, "192.0.2.50", s, ["r@example.org"])
        assert r[0][0] == C.SMFIR_CONTINUE and "X-Delayed" in h, s
    st = open_store(m.store_url)
    assert st.count() == 3
    st.close()


def test_ipv6_client(greylist_milter):
    m = greylist_milter
    r, _ = deliver(m.sock, "2001:db8:1:2::25", "v6@x.example", ["r@example.org"])
    assert is_greylisted(r[0])
    backdate(m.store_url, 2500)
    r, h = deliver(m.sock, "2001:db8:1:2::26", "v6@x.example", ["r@example.org"])
    assert r[0][0] == C.SMFIR_CONTINUE and "X-Delayed" in h


@pytest.mark.parametrize("policy", ["accept", "tempfail"])
@pytest.mark.parametrize("kind", ["sqlite", "mariadb"])
def test_store_down(tmp_path, policy, kind):
    url = (
        "sqlite:////proc/no/such/dir/g.sqlite"
        if kind == "sqlite"
        else f"mysql://u:p@localhost/db?unix_socket={tmp_path}/nothing.sock"
    )
    sock = tmp_path / "gl.sock"
    cfg = write_config(tmp_path / "g.toml", url, sock, extra=f'on_store_error = "{policy}"')
    m = MilterProcess(cfg, sock)
    m.start()
    try:
        for _ in range(2):
            r, h = deliver(sock, "192.0.2.1", "a@b.example", ["r@example.org"])
            if policy == "accept":
                assert r[0][0] == C.SMFIR_CONTINUE
                assert h == {"X-Greylist": "skipped (store unavailable) by gw1.example.org"}
            else:
                assert r[0][0] == C.SMFIR_REPLYCODE and r[0][1]["smtpcode"] == "451"
                assert r[0][1]["text"].startswith("4.3.0 ")
    finally:
        m.stop()
    assert "store" in m.log.read_text()


FORGED = [pytest.param(c, h, id=c) for c, h in hostile_headers.forged_gateway_headers()]


def final_headers(sent, eom_replies):
    """The message's headers once sendmail applied the milter's end-of-message actions."""
    slots = [[n, v] for n, v in sent]
    for cmd, d in eom_replies:
        if cmd == C.SMFIR_ADDHEADER:
            slots.append([d["name"], d["value"]])
        elif cmd == C.SMFIR_CHGHEADER:
            same = [x for x in slots if x[0].lower() == d["name"].lower()]
            assert d["value"] == "" and 1 <= d["index"] <= len(same), d
            same[d["index"] - 1][1] = None  # sendmail keeps the slot until the end
    return [(n, v) for n, v in slots if v is not None]


def owned(final):
    names = {n.lower() for n in hostile_headers.GREYLIST_OWNED}
    return [(n, v) for n, v in final if n.lower() in names]


def test_greylist_milter_gets_headers_cheaply(greylist_milter):
    """Headers are negotiated (to find forgeries) without a reply each; the body is not."""
    with MilterClient(greylist_milter.sock, timeout=10) as client:
        flags = client.protocol
    assert not flags & C.SMFIP_NOHDRS
    assert flags & C.SMFIP_NR_HDR
    assert flags & C.SMFIP_NOBODY


@pytest.mark.parametrize(("case", "forged"), FORGED)
def test_forged_greylist_headers_are_removed_before_ours(greylist_milter, case, forged):
    m = greylist_milter
    ip = f"192.0.2.{100 + len(case)}"
    rcpt = f"{case}@example.org"
    deliver(m.sock, ip, "f@forger.example", [rcpt], hdrs=forged)
    backdate(m.store_url, 2500)
    eoms = []
    r, _h = deliver(m.sock, ip, "f@forger.example", [rcpt], hdrs=forged, eoms=eoms)
    assert r[0][0] == C.SMFIR_CONTINUE
    out = owned(final_headers(forged, eoms))
    assert len(out) == 1 and out[0][0] == "X-Delayed" and out[0][1].startswith("4"), out
    # deletions go from the last occurrence to the first, before the new header is added
    kinds = [cmd for cmd, _d in eoms if cmd in (C.SMFIR_CHGHEADER, C.SMFIR_ADDHEADER)]
    assert kinds[-1] == C.SMFIR_ADDHEADER and C.SMFIR_ADDHEADER not in kinds[:-1]
    for name in ("x-delayed", "x-greylist"):
        idx = [
            d["index"] for cmd, d in eoms if cmd == C.SMFIR_CHGHEADER and d["name"].lower() == name
        ]
        assert idx == sorted(idx, reverse=True)


@pytest.mark.parametrize(("case", "forged"), FORGED)
def test_forged_greylist_headers_are_removed_when_not_delayed(greylist_milter, case, forged):
    """Whitelisted client (and a passed triplet): no header of ours, and no forgery either."""
    eoms = []
    r, _h = deliver(
        greylist_milter.sock,
        "198.51.100.7",
        "x@y.example",
        ["u@example.org"],
        hdrs=forged,
        eoms=eoms,
    )
    assert r[0][0] == C.SMFIR_CONTINUE
    final = final_headers(forged, eoms)
    assert owned(final) == []
    # other headers untouched
    names = {n.lower() for n in hostile_headers.GREYLIST_OWNED}
    assert final == [(n, v) for n, v in forged if n.lower() not in names]


def test_forged_headers_removed_when_store_is_down(tmp_path):
    url = "sqlite:////proc/no/such/dir/g.sqlite"
    sock = tmp_path / "gl.sock"
    cfg = write_config(tmp_path / "g.toml", url, sock)
    m = MilterProcess(cfg, sock)
    m.start()
    forged = dict(hostile_headers.forged_gateway_headers())["mixed-case-repeated"]
    try:
        eoms = []
        deliver(sock, "192.0.2.1", "a@b.example", ["r@example.org"], hdrs=forged, eoms=eoms)
    finally:
        m.stop()
    assert owned(final_headers(forged, eoms)) == [
        ("X-Greylist", "skipped (store unavailable) by gw1.example.org")
    ]


def test_negotiates_only_the_steps_it_uses(greylist_milter):
    """Exactly these steps are skipped and these are sent without a reply: re-enabling a
    step (or waiting for a reply the milter never needs) fails here."""
    with MilterClient(greylist_milter.sock, timeout=10) as client:
        flags = client.protocol
    assert flags & SKIP_BITS == (
        C.SMFIP_NOHELO | C.SMFIP_NODATA | C.SMFIP_NOEOH | C.SMFIP_NOBODY | C.SMFIP_NOUNKNOWN
    ), hex(flags)
    # connect, MAIL and headers: no reply; RCPT (the decision) and end of message: answered
    assert flags & NO_REPLY_BITS == (C.SMFIP_NR_CONN | C.SMFIP_NR_MAIL | C.SMFIP_NR_HDR), hex(flags)


# -- a failing no-reply callback: the next answered step tempfails, the connection goes on -------
FAULT = "passerelle-test-fault"  # see faultymilter.py


def is_local_error(reply):
    return (
        reply[0] == C.SMFIR_REPLYCODE
        and reply[1]["smtpcode"] == "451"
        and reply[1]["text"].startswith("4.3.0 ")
    )


@pytest.fixture
def faulty_greylist(tmp_path):
    sock = tmp_path / "gl.sock"
    cfg = write_config(
        tmp_path / "greylist.toml",
        f"sqlite:///{tmp_path}/greylist.sqlite",
        sock,
        wl='recipients = ["postmaster@example.org"]',
    )
    m = MilterProcess(cfg, sock, fault="envfrom,header")
    m.start()
    try:
        yield m
    finally:
        m.stop()


def _normal_message(s):
    assert s.mail("alice@sender.example")[0] == C.SMFIR_CONTINUE
    assert s.rcpt("postmaster@example.org")[0] == C.SMFIR_CONTINUE
    s.headers([("Subject", "hello")])
    eom = s.eom()
    assert eom[-1][0] == C.SMFIR_ACCEPT, eom


def test_failing_noreply_header_tempfails_at_eom_then_next_message_passes(faulty_greylist):
    with Session(faulty_greylist.sock) as s:
        assert s.connect("192.0.2.10")[0] == C.SMFIR_CONTINUE
        assert s.mail("alice@sender.example")[0] == C.SMFIR_CONTINUE
        assert s.rcpt("postmaster@example.org")[0] == C.SMFIR_CONTINUE
        s.headers([("Subject", "hello"), (f"X-{FAULT}", "1"), ("To", "x@example.org")])
        eom = s.eom()
        assert is_local_error(eom[-1]), eom
        _normal_message(s)
    assert faulty_greylist.proc.poll() is None


def test_failing_noreply_mail_tempfails_at_rcpt_then_next_message_passes(faulty_greylist):
    with Session(faulty_greylist.sock) as s:
        assert s.connect("192.0.2.10")[0] == C.SMFIR_CONTINUE
        assert s.mail(f"bob@{FAULT}.example")[0] == C.SMFIR_CONTINUE
        r = s.rcpt("postmaster@example.org")
        assert is_local_error(r), r
        assert is_local_error(s.rcpt("other@example.org"))  # the whole message
        s.conn._send(C.SMFIC_ABORT)  # sendmail: no recipient left, RSET
        _normal_message(s)
    assert faulty_greylist.proc.poll() is None
