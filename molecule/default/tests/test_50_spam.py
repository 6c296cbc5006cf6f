"""Spam marking on the gateways: spamd and the spam milter in front of sendmail.

GTUBE is tagged HIGH, a clean message goes through unmarked, text that is only in a PNG is
read (OCR) and scored, forged spam headers from outside are dropped, spamd down still lets
mail through (accept policy, "not scanned"), and learning a corpus makes Bayes active.
"""

from __future__ import annotations

import base64
import email
import email.policy
import re
import shutil
import subprocess
import time
import uuid

import pytest
import testinfra
from labsmtp import (
    LAB_DOMAIN,
    NET,
    PREFIX,
    delivered_message,
    needs,
    podman_exec,
    present,
    smtp,
)

GATEWAYS = present("gw1", "gw2")
RCPT = "alice@static-a.test"
STORE, USER = "mailstore1", "alice"
SENDER = "dave@internet.test"
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
TAG = "[MESSAGE MARQUE SPAM]"
OCR_PHRASE = "PASSERELLE OCR TEST PHRASE"  # scored 6 by a lab rule (inventory spam.yml)
SPAMD_PING = (
    "import socket,sys\n"
    "s=socket.create_connection(('127.0.0.1',783),2)\n"
    "s.sendall(b'PING SPAMC/1.5\\r\\n\\r\\n')\n"
    "sys.exit(0 if b'PONG' in s.recv(100) else 1)\n"
)


# Runs inside a gateway: ask spamd which rules a message hits (SYMBOLS, the milter's user).
SPAMD_SYMBOLS = (
    "import socket,sys\n"
    "m=('From: Dave <dave@internet.test>\\r\\nTo: alice@static-a.test\\r\\n'\n"
    "   'Subject: winner\\r\\nMessage-ID: <bayes-probe@internet.test>\\r\\n\\r\\n'\n"
    "   + sys.argv[1] + '\\r\\n').encode()\n"
    "s=socket.create_connection(('127.0.0.1',783),30)\n"
    "s.sendall(b'SYMBOLS SPAMC/1.5\\r\\nContent-length: %d\\r\\nUser: passerelle\\r\\n\\r\\n'"
    " % len(m) + m)\n"
    "s.shutdown(socket.SHUT_WR)\n"
    "out=b''\n"
    "while True:\n"
    "    b=s.recv(4096)\n"
    "    if not b: break\n"
    "    out+=b\n"
    "print(out.decode())\n"
)


def _present(host: str) -> bool:
    return subprocess.run(["podman", "container", "exists", PREFIX + host]).returncode == 0


@pytest.fixture(params=GATEWAYS)
def gateway(request):
    if not _present(request.param):
        pytest.skip(f"{PREFIX}{request.param} is not in this lab")
    return request.param


@pytest.fixture(params=GATEWAYS)
def gw_host(request):
    if not _present(request.param):
        pytest.skip(f"{PREFIX}{request.param} is not in this lab")
    return testinfra.get_host(f"podman://{PREFIX}{request.param}")


def _text(subject_word: str, body: str, extra_headers: str = "") -> tuple[str, str]:
    tag = f"spam-{subject_word}-{uuid.uuid4().hex[:10]}"
    date = email.utils.formatdate(localtime=False)
    return tag, (
        f"From: Dave <{SENDER}>\nTo: Alice <{RCPT}>\nSubject: {subject_word} {tag}\n"
        f"Date: {date}\nMessage-ID: <{tag}@internet.test>\n{extra_headers}"
        f"MIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\n\n{body}\n{tag}\n"
    )


def _deliver(gateway: str, text: str, tag: str) -> email.message.EmailMessage:
    d = smtp("outside", gateway, SENDER, [RCPT], data=text)
    assert d.last[0] == "eom" and d.last[1] == 250, d.transcript
    return delivered_message(STORE, USER, tag)


def _spamd_up(gateway: str, timeout: float = 300) -> None:
    # A bound, not a duration: spamd answers within seconds on a quiet host, but a start that
    # parses every rule file took more than 90 s on a slow 2-core VM running the three
    # scenarios at once (CI, 2026-12-03; spamd answered the next test's queries).
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = subprocess.run(
            ["podman", "exec", PREFIX + gateway, "python3", "-c", SPAMD_PING],
            capture_output=True,
        )
        if r.returncode == 0:
            return
        time.sleep(1)
    raise AssertionError(f"spamd on {gateway} does not answer PING")


# --- services -------------------------------------------------------------------------------


def test_spamd_and_milter_running(gw_host):
    for unit in ("spamd", "passerelle-spam"):
        svc = gw_host.service(unit)
        assert svc.is_running, unit
        assert svc.is_enabled, unit
    assert gw_host.socket("tcp://127.0.0.1:783").is_listening
    sock = gw_host.file("/run/passerelle/spam.sock")
    assert sock.is_socket
    assert gw_host.process.filter(user="passerelle", comm="passerelle")


def test_units_restart_on_failure(gw_host):
    for unit in ("spamd", "passerelle-spam"):
        out = gw_host.check_output(f"systemctl show -p Restart --value {unit}")
        assert out.strip() == "on-failure", unit


def test_spamd_keeps_its_configuration_between_messages(gw_host):
    # Issue 21: spamd put its whole configuration back after every message (~14 ms of CPU a
    # message) though it reads no user's settings; the role's plugin, loaded through spamd's
    # --cf, makes that restore a no-op (tests/protocol/test_spamd_keep_config.py).
    plugin = "/etc/spamassassin/PasserelleSpamdKeepConfig.pm"
    assert gw_host.file(plugin).is_file
    argv = gw_host.check_output("systemctl show -p ExecStart --value spamd")
    assert f"--cf=loadplugin PasserelleSpamdKeepConfig {plugin}" in argv
    pid = gw_host.check_output("systemctl show -p MainPID --value spamd").strip()
    log = gw_host.check_output(f"journalctl _PID={pid} -o cat --no-pager")
    assert "passerelle: spamd keeps its configuration between messages" in log


def test_spam_milter_is_last_in_sendmail(gw_host):
    cf = gw_host.file("/etc/mail/sendmail.cf").content_string
    line = next(x for x in cf.splitlines() if x.startswith("O InputMailFilters="))
    assert line.split("=", 1)[1].split(",")[-1].strip() == "spam"
    assert "Xspam, S=unix:/run/passerelle/spam.sock" in cf


def test_configs_pass_their_checks(gw_host):
    gw_host.run_expect([0], "passerelle spam check-config /etc/passerelle/spam.toml")
    gw_host.run_expect(
        [0], "/usr/local/sbin/passerelle-spamassassin-check /etc/spamassassin/local.cf"
    )


# --- marking --------------------------------------------------------------------------------


def test_gtube_is_tagged_high(gateway):
    tag, text = _text("Offer", f"Buy now.\n{GTUBE}\n")
    msg = _deliver(gateway, text, tag)
    assert msg["Subject"].startswith(TAG), msg["Subject"]
    assert msg["Subject"].count(TAG) == 1
    assert msg["X-status"] == "HIGH"
    assert "GTUBE" in str(msg["X-Spam-Status"])
    assert float(msg["X-Spam-Score"]) > 5


def test_clean_message_is_not_marked(gateway):
    tag, text = _text(
        "Minutes",
        "Hello Alice,\n\nthe minutes of Tuesday's meeting are on the shared drive.\n"
        "See you on Thursday.\n\nDave\n",
    )
    msg = _deliver(gateway, text, tag)
    assert TAG not in msg["Subject"]
    assert msg["X-status"] is None, msg["X-Spam-Status"]
    assert msg["X-Spam-Score"] is not None  # it was scanned
    assert "not scanned" not in str(msg["X-Spam-Status"])


EICAR = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


def _spamd_checked(gateway: str, message_id: str) -> bool:
    """spamd logs "checking message <Message-ID>" for every message it is asked to scan."""
    log = podman_exec(gateway, "journalctl", "-u", "spamd", "--no-pager", "-o", "cat")
    return f"checking message <{message_id}>" in log


def test_message_refused_by_the_antivirus_never_reaches_spamd(gateway):
    # The antivirus milter runs before the spam milter; sendmail stops at the first milter
    # that refuses at end of data, so a virus costs no SpamAssassin time.
    virus_tag, virus = _text("Invoice", f"Please see below.\n{EICAR}\n")
    d = smtp("outside", gateway, SENDER, [RCPT], data=virus)
    assert d.last[0] == "eom" and 500 <= d.last[1] < 600, d.transcript
    clean_tag, clean = _text("Agenda", "Hello Alice,\n\nthe agenda is attached below.\n")
    _deliver(gateway, clean, clean_tag)  # sent after the virus: once delivered, spamd logged
    assert _spamd_checked(gateway, f"{clean_tag}@internet.test")
    assert not _spamd_checked(gateway, f"{virus_tag}@internet.test")


def test_forged_spam_headers_from_outside_are_removed(gateway):
    tag, text = _text(
        "Hello",
        "Just a short note about lunch.\n",
        extra_headers="X-status: LOW\nX-Spam-Score: -99.0\nX-Spam-Status: No, forged\n",
    )
    msg = _deliver(gateway, text, tag)
    assert msg.get_all("X-status") is None
    assert msg.get_all("X-Spam-Score") != ["-99.0"]
    assert len(msg.get_all("X-Spam-Score") or []) == 1
    assert "forged" not in str(msg.get_all("X-Spam-Status"))


def _ocr_png() -> bytes:
    convert = shutil.which("convert", path="/usr/bin") or "convert"
    return subprocess.run(
        [
            convert,
            "-size",
            "1200x160",
            "xc:white",
            "-font",
            "DejaVu-Sans",
            "-pointsize",
            "56",
            "-fill",
            "black",
            "-annotate",
            "+30+100",
            OCR_PHRASE,
            "png:-",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout


def test_text_inside_a_png_is_scored(gateway):
    png = _ocr_png()
    tag = f"spam-ocr-{uuid.uuid4().hex[:10]}"
    b64 = base64.encodebytes(png).decode()
    text = (
        f"From: <{SENDER}>\nTo: <{RCPT}>\nSubject: Picture {tag}\n"
        f"Date: {email.utils.formatdate()}\nMessage-ID: <{tag}@internet.test>\n"
        'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="b1"\n\n'
        "--b1\nContent-Type: text/plain; charset=us-ascii\n\n"
        f"Here is the picture.\n{tag}\n"
        '--b1\nContent-Type: image/png; name="picture.png"\n'
        "Content-Transfer-Encoding: base64\n"
        'Content-Disposition: attachment; filename="picture.png"\n\n'
        f"{b64}--b1--\n"
    )
    msg = _deliver(gateway, text, tag)
    assert "PASSERELLE_OCR_TEST" in str(msg["X-Spam-Status"]), msg["X-Spam-Status"]
    assert msg["X-status"] == "HIGH"
    assert msg["Subject"].startswith(TAG)
    # the delivered message is unchanged: the picture is the one sent, no OCR text added
    parts = [p for p in msg.walk() if p.get_content_type() == "image/png"]
    assert len(parts) == 1 and parts[0].get_content() == png
    assert OCR_PHRASE not in msg.as_string()


def test_spamd_down_mail_still_flows_not_scanned(gateway):
    podman_exec(gateway, "systemctl", "stop", "spamd")
    try:
        tag, text = _text("Report", f"Quarterly figures attached later.\n{GTUBE}\n")
        msg = _deliver(gateway, text, tag)
        assert "not scanned" in str(msg["X-Spam-Status"]), msg["X-Spam-Status"]
        assert msg["X-status"] is None
        assert TAG not in msg["Subject"]
    finally:
        podman_exec(gateway, "systemctl", "start", "spamd")
        _spamd_up(gateway)


# --- Bayes (runs last: it changes what spamd knows) -----------------------------------------

HAM_WORDS = [
    "meeting",
    "agenda",
    "minutes",
    "budget",
    "review",
    "project",
    "schedule",
    "colleague",
    "lunch",
    "seminar",
    "report",
    "thesis",
    "library",
    "lecture",
    "timetable",
    "committee",
    "draft",
    "deadline",
    "coffee",
    "office",
    "printer",
]
SPAM_WORDS = [
    "casino",
    "jackpot",
    "lottery",
    "winner",
    "viagra",
    "pharmacy",
    "discount",
    "bitcoin",
    "investment",
    "guaranteed",
    "millions",
    "inheritance",
    "prince",
    "crypto",
    "bonus",
    "refinance",
    "rolex",
    "replica",
    "unclaimed",
    "prize",
]
CORPUS = 200


def _corpus_script(kind: str, words: list[str], n: int, root: str) -> str:
    return (
        "import os, random\n"
        f"random.seed({kind!r})\n"
        f"words = {words!r}\n"
        f"d = {root!r} + '/{kind}'\n"
        "for sub in ('cur', 'new', 'tmp'):\n"
        "    os.makedirs(os.path.join(d, sub), exist_ok=True)\n"
        f"for i in range({n}):\n"
        "    body = ' '.join(random.choice(words) for _ in range(120))\n"
        # Same header shape in ham and spam (the test mail's), so only the words differ.
        # As the gateway holds mail from the internet: its Received line from outside on top,
        # so the relay is in ham and spam alike (autolearn sees the test mail's relay too).
        f"    m = ('Received: from client.internet.test (outside.{LAB_DOMAIN} [{NET}.250]) '\n"
        f"         'by gw1.{LAB_DOMAIN} with ESMTP id C{{0}}; Fri, 27 Nov 2026 10:00:00 -0000\\n'\n"
        f"         'From: Dave <dave@internet.test>\\nTo: Alice <alice@static-a.test>\\n'\n"
        "         'Date: Fri, 27 Nov 2026 10:00:00 -0000\\nMIME-Version: 1.0\\n'\n"
        "         'Content-Type: text/plain; charset=us-ascii\\n'\n"
        f"         'Subject: {kind} ' + ' '.join(random.sample(words, 3)) + '\\n'\n"
        f"         'Message-ID: <{kind}-{{0}}@corpus.test>\\n\\n').format(i) + body + '\\n'\n"
        f"    open(os.path.join(d, 'new', '{kind}-%05d' % i), 'w').write(m)\n"
    )


def _bayes_counts(gateway: str) -> dict[str, int]:
    magic = podman_exec(
        gateway, "runuser", "-u", "debian-spamd", "--", "sa-learn", "--dump", "magic"
    )
    counts = {}
    for line in magic.splitlines():
        f = line.split()
        # "0.000  0  200  0  non-token data: nspam"
        if len(f) >= 4 and f[-1] in ("nspam", "nham"):
            counts[f[-1]] = int(f[2])
    return counts


def test_bayes_store_is_the_shared_sql_one(gw_host):
    cf = gw_host.file("/etc/spamassassin/local.cf").content_string
    assert "bayes_store_module Mail::SpamAssassin::BayesStore::MySQL" in cf
    assert "host=db1" in cf and "bayes_sql_override_username passerelle" in cf


@pytest.fixture(scope="module")
def corpus_learned_on_gw1():
    """Learn 200 ham and 200 spam once, on gw1 only: the SQL store is shared."""
    gateway = GATEWAYS[0]
    if not _present(gateway):
        pytest.skip(f"{PREFIX}{gateway} is not in this lab")
    root = "/var/tmp/passerelle-corpus"
    podman_exec(gateway, "rm", "-rf", root)
    podman_exec(gateway, "python3", "-c", _corpus_script("ham", HAM_WORDS, CORPUS, root))
    podman_exec(gateway, "python3", "-c", _corpus_script("spam", SPAM_WORDS, CORPUS, root))
    podman_exec(gateway, "chmod", "-R", "a+rX", root)
    try:
        out = podman_exec(
            gateway,
            "runuser",
            "-u",
            "debian-spamd",
            "--",
            "passerelle",
            "spam",
            "learn",
            "--ham",
            f"{root}/ham",
            "--spam",
            f"{root}/spam",
        )
    finally:
        podman_exec(gateway, "rm", "-rf", root)
    return out


def test_learning_a_corpus_on_one_gateway_makes_bayes_active_on_all(corpus_learned_on_gw1, gateway):
    out = corpus_learned_on_gw1
    assert f"{CORPUS} messages learned as ham, 0 failed" in out, out
    assert f"{CORPUS} messages learned as spam, 0 failed" in out, out
    counts = _bayes_counts(gateway)
    assert counts.get("nspam", 0) >= CORPUS and counts.get("nham", 0) >= CORPUS, counts
    # Mail through this gateway is scored with Bayes (a BAYES_ rule only fires once 200 ham
    # and 200 spam are learned: here they were learned on gw1, into the shared store).
    tag, text = _text("Winner", "\n".join(" ".join(SPAM_WORDS[i : i + 8]) for i in range(0, 20, 4)))
    msg = _deliver(gateway, text, tag)
    assert re.search(r"\bBAYES_\d+\b", str(msg["X-Spam-Status"])), msg["X-Spam-Status"]
    # And this gateway's spamd puts a message in the spam corpus' words on the spam side
    # (asked directly: the test mail's own relay is also in the ham autolearn took from the
    # earlier tests, which pulls a delivered message's Bayes score back to the middle).
    symbols = podman_exec(gateway, "python3", "-c", SPAMD_SYMBOLS, " ".join(SPAM_WORDS))
    # BAYES_60 and above: the spam side (probability > 0.6; 0.5 is "no idea").
    assert re.search(r"\bBAYES_(60|80|95|99|999)\b", symbols), symbols


LEARN_SPAM = "spam@learn.test"


def _forward(tag: str, n: int) -> str:
    inner = (
        f"From: Prize <prize@lottery.test>\nTo: alice@static-a.test\nSubject: You won {tag}\n"
        f"Message-ID: <{tag}-inner-{n}@lottery.test>\n\n" + " ".join(SPAM_WORDS) + f"\n{tag}\n"
    )
    return (
        f"From: Alice <alice@static-a.test>\nTo: {LEARN_SPAM}\nSubject: Fwd: missed spam {tag}\n"
        f"Message-ID: <{tag}-fwd-{n}@static-a.test>\nMIME-Version: 1.0\n"
        'Content-Type: multipart/mixed; boundary="fwd"\n\n'
        "--fwd\nContent-Type: text/plain\n\nThis one got through.\n"
        "--fwd\nContent-Type: message/rfc822\n\n" + inner + "\n--fwd--\n"
    )


@needs("gw2")
def test_forwarded_spam_is_learned_from_trusted_clients_only(corpus_learned_on_gw1):
    """A user's forward to the spam-learning address teaches Bayes; one from outside cannot."""
    gateway, other = GATEWAYS
    box = "passerelle-learn-spam"
    before = _bayes_counts(other).get("nspam", 0)
    tag = f"learn-{uuid.uuid4().hex[:10]}"
    # mailstore1 is in the organisation's network (trusted); outside is the internet.
    for n, client in enumerate(("mailstore1", "outside")):
        d = smtp(client, gateway, "alice@static-a.test", [LEARN_SPAM], data=_forward(tag, n))
        assert d.last[0] == "eom" and d.last[1] == 250, d.transcript
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        mbox = podman_exec(gateway, "sh", "-c", f"cat /var/mail/{box} 2>/dev/null || true")
        if mbox.count(f"Message-ID: <{tag}-fwd-") == 2:
            break
        time.sleep(1)
    else:
        raise AssertionError(f"the two forwards did not reach /var/mail/{box} on {gateway}")
    # What the timer runs, run now.
    podman_exec(gateway, "systemctl", "start", "passerelle-spam-learn.service")
    log = podman_exec(
        gateway, "journalctl", "-u", "passerelle-spam-learn.service", "-o", "cat", "--no-pager"
    )
    assert "1 messages learned, 1 from untrusted clients dropped; done" in log, log
    assert "from untrusted client" in log and ".250" in log, log
    # Learned into the shared store: the other gateway counts it too. The mbox is consumed.
    assert _bayes_counts(other).get("nspam", 0) == before + 1
    left = podman_exec(gateway, "sh", "-c", f"ls /var/mail/ | grep -c {box} || true")
    assert left.strip() == "0", left


def test_the_internet_client_is_not_trusted_by_spamassassin(gateway):
    """outside (10.x, like the whole lab) is a client from the internet, not a trusted relay:
    SpamAssassin sees it through the milter's Received line and trusted_networks."""
    tag, text = _text("Hello", "Nothing special in here, just a note about lunch.")
    msg = _deliver(gateway, text, tag)
    status = str(msg["X-Spam-Status"])
    assert "ALL_TRUSTED" not in status and "NO_RELAYS" not in status, status
