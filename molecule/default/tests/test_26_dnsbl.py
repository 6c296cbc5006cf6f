"""DNS-based checks (README "DNS blocklists and network tests"), all on the lab's own zones
(inventory/lab/group_vars/all/dns.yml), answered by each gateway's unbound:

* the lab resolver serves the records (a listed address, a listed URL domain, SPF of
  internet.test, TXT quotes intact);
* sendmail refuses a client on the lab blocklist at connect with the configured text
  (outside's .241), and lets a listed client that is whitelisted in (outside's .242, in the
  greylist whitelist);
* SpamAssassin's network tests score a message from .242 claiming internet.test (whose SPF
  allows .250 only, and whose DMARC policy is p=reject) with a link to the listed domain:
  SPF_FAIL, DMARC_REJECT, LAB_URIBL, LAB_DNSBL; the same message from .250 passes SPF, so
  DMARC too, and hits no lab blocklist rule.

outside holds .241 and .242 (inventory/lab/host_vars/outside.yml, playbooks/lab/create.yml).
"""

from __future__ import annotations

import email
import email.policy
import uuid

import pytest
from labsmtp import NET, delivered_message, mailbox_has, podman_exec, present, smtp, wait_for_mail

LISTED = f"{NET}.241"  # on the lab blocklist, not whitelisted: refused at connect
LISTED_WHITELISTED = f"{NET}.242"  # on the lab blocklist, in the greylist whitelist
MAIN = f"{NET}.250"  # outside's main address: the only one internet.test's SPF allows
ZONE = "bl.lab.passerelle.test"
URI_ZONE = "uribl.lab.passerelle.test"
REFUSAL = "is listed at the lab blocklist"  # sendmail_dnsbl's message in the lab
SENDER = "dave@internet.test"
RCPT = "alice@static-a.test"
STORE, USER = "mailstore1", "alice"

# Runs inside a gateway: the TXT records of a name, asked to the local unbound (Net::DNS
# comes with SpamAssassin).
TXT = (
    "use Net::DNS; my $r = Net::DNS::Resolver->new(nameservers => ['127.0.0.1'], recurse => 1);"
    " my $p = $r->query($ARGV[0], 'TXT') or exit 2;"
    " print join('', $_->txtdata), qq{\\n} for grep { $_->type eq 'TXT' } $p->answer;"
)


@pytest.fixture(params=present("gw1", "gw2"))
def gateway(request):
    return request.param


def _reversed(address: str) -> str:
    return ".".join(reversed(address.split(".")))


def _a_records(host: str, name: str) -> list[str]:
    out = podman_exec(host, "getent", "ahostsv4", name, check=False)
    return sorted({line.split()[0] for line in out.splitlines() if line.strip()})


def _text(subject: str, body: str) -> tuple[str, str]:
    tag = f"dnsbl-{uuid.uuid4().hex[:10]}"
    date = email.utils.formatdate(localtime=False)
    return tag, (
        f"From: Dave <{SENDER}>\nTo: Alice <{RCPT}>\nSubject: {subject} {tag}\n"
        f"Date: {date}\nMessage-ID: <{tag}@internet.test>\nMIME-Version: 1.0\n"
        f"Content-Type: text/plain; charset=us-ascii\n\n{body}\n{tag}\n"
    )


def _delivered(tag: str) -> email.message.EmailMessage:
    return delivered_message(STORE, USER, tag)


def _rules(msg: email.message.EmailMessage) -> set[str]:
    status = " ".join(str(msg["X-Spam-Status"] or "").split())
    assert "tests=" in status, status
    return {r.strip() for r in status.split("tests=", 1)[1].split(",") if r.strip()}


# --- the lab resolver ---------------------------------------------------------------------


def test_the_lab_resolver_answers_the_blocklist_records(gateway):
    for address in (LISTED, LISTED_WHITELISTED):
        assert _a_records(gateway, f"{_reversed(address)}.{ZONE}") == ["127.0.0.2"], address
    assert _a_records(gateway, f"listed-url.test.{URI_ZONE}") == ["127.0.0.2"]
    # not listed: no answer (the zone is answered locally, NXDOMAIN)
    assert _a_records(gateway, f"{_reversed(MAIN)}.{ZONE}") == []


def test_the_lab_resolver_serves_the_spf_and_dmarc_records_with_their_quotes(gateway):
    out = podman_exec(gateway, "perl", "-e", TXT, "internet.test")
    assert out.splitlines() == [f"v=spf1 ip4:{MAIN} -all"], out
    out = podman_exec(gateway, "perl", "-e", TXT, "_dmarc.internet.test")
    assert out.splitlines() == ["v=DMARC1; p=reject"], out


# --- sendmail at connect ------------------------------------------------------------------


def test_a_listed_client_is_refused_at_connect_with_the_configured_text(gateway):
    tag, text = _text("listed", "Hello.")
    d = smtp("outside", gateway, SENDER, [RCPT], data=text, source=LISTED)
    refusals = [(c, m) for _, c, m in d.steps if 500 <= c < 600]
    assert refusals, d.transcript
    code, msg = refusals[0]
    assert code == 550, d.transcript
    assert f"5.7.1 Client {LISTED} {REFUSAL}" in " ".join(msg.split()), d.transcript
    # refused before any message: nothing got in
    assert d.reply("data") is None, d.transcript
    assert not mailbox_has(STORE, USER, tag)


def test_a_whitelisted_client_on_the_blocklist_is_let_in(gateway):
    # .242 is listed (test above) but in the greylist whitelist: no lookup, no refusal.
    tag, text = _text("whitelisted", "Hello.")
    d = smtp("outside", gateway, SENDER, [RCPT], data=text, source=LISTED_WHITELISTED)
    assert REFUSAL not in d.transcript, d.transcript
    assert d.last[:2] == ("eom", 250), d.transcript
    wait_for_mail(STORE, USER, tag, timeout=120)


# --- SpamAssassin's network tests ---------------------------------------------------------


def test_listed_url_failing_spf_and_listed_client_get_their_rules(gateway):
    body = "Our offer: http://www.listed-url.test/offer"
    tag, text = _text("offer", body)
    d = smtp("outside", gateway, SENDER, [RCPT], data=text, source=LISTED_WHITELISTED)
    assert d.last[:2] == ("eom", 250), d.transcript
    rules = _rules(_delivered(tag))
    assert "SPF_FAIL" in rules, rules
    # neither SPF nor a DKIM signature aligns with the From: domain, which says p=reject
    assert "DMARC_REJECT" in rules, rules
    assert "DMARC_PASS" not in rules, rules
    assert "LAB_URIBL" in rules, rules
    assert "LAB_DNSBL" in rules, rules


def test_the_same_message_from_the_allowed_address_passes_spf_and_dmarc(gateway):
    # Control: from outside's main address, which internet.test's SPF allows and no lab list
    # holds, the link is still listed but the client rules do not hit.
    tag, text = _text("offer", "Our offer: http://www.listed-url.test/offer")
    d = smtp("outside", gateway, SENDER, [RCPT], data=text, source=MAIN)
    assert d.last[:2] == ("eom", 250), d.transcript
    rules = _rules(_delivered(tag))
    assert "SPF_PASS" in rules, rules
    assert "SPF_FAIL" not in rules, rules
    assert "DMARC_PASS" in rules, rules  # SPF passes for the From: domain: aligned
    assert "DMARC_REJECT" not in rules, rules
    assert "LAB_DNSBL" not in rules, rules
    assert "LAB_URIBL" in rules, rules
