import pytest

from passerelle.spam.config import Tiers
from passerelle.spam.marking import (
    HeaderEdit,
    ScanResult,
    apply_edits,
    decode_subject,
    format_score,
    marking_edits,
    not_scanned_edits,
    sanitise,
    spam_status_value,
    subject_edit,
    tier,
)

TAG = "[MESSAGE MARQUE SPAM]"
T = Tiers()


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        (-2.0, None),
        (0.0, None),
        (3.0, None),
        (3.01, "LOW"),
        (4.0, "LOW"),
        (4.01, "MEDIUM"),
        (5.0, "MEDIUM"),
        (5.01, "HIGH"),
        (1000.0, "HIGH"),
    ],
)
def test_tier_boundaries(score, expected):
    assert tier(score, T) == expected


def test_tiers_configurable():
    t = Tiers(high=8.0, medium=6.0, low=1.0)
    assert tier(8.0, t) == "MEDIUM"
    assert tier(8.1, t) == "HIGH"
    assert tier(1.0, t) is None
    assert tier(1.1, t) == "LOW"


@pytest.mark.parametrize(
    ("score", "text"),
    [(5.2, "5.2"), (5.0, "5.0"), (5.01, "5.01"), (-0.1, "-0.1"), (1000, "1000.0")],
)
def test_format_score(score, text):
    assert format_score(score) == text


def headers(subject=None, *extra):
    h = [("From", "a@example.org"), ("To", "b@example.com")]
    if subject is not None:
        h.append(("Subject", subject))
    return h + list(extra)


def final(h, result, tiers=T):
    return apply_edits(h, marking_edits(h, result, tiers, "gw1"))


def get(h, name):
    return [v for n, v in h if n.lower() == name.lower()]


def test_subject_tagged_once():
    assert subject_edit(headers("Hello"), TAG) == HeaderEdit("change", "Subject", f"{TAG} Hello", 1)
    assert subject_edit(headers(f"{TAG} Hello"), TAG) is None
    assert subject_edit(headers(f"  {TAG} Hello"), TAG) is None


def test_missing_subject_gets_tag_only():
    assert subject_edit(headers(), TAG) == HeaderEdit("add", "Subject", TAG)
    out = final(headers(), ScanResult(9.0, 5.0, True, ("X",)))
    assert get(out, "Subject") == [TAG]


def test_empty_subject_gets_tag_only():
    assert subject_edit(headers(""), TAG) == HeaderEdit("change", "Subject", TAG, 1)


def test_encoded_subject_already_tagged_is_not_tagged_again():
    enc = "=?UTF-8?B?W01FU1NBR0UgTUFSUVVFIFNQQU1dIETDqWrDoCB2dQ==?="
    assert decode_subject(enc) == f"{TAG} Déjà vu"
    assert subject_edit(headers(enc), TAG) is None
    q = "=?iso-8859-1?Q?[MESSAGE_MARQUE_SPAM]_R=E9union?="
    assert subject_edit(headers(q), TAG) is None


def test_encoded_subject_untagged_gets_prefix_before_encoded_word():
    enc = "=?UTF-8?B?RMOpasOgIHZ1?="
    edit = subject_edit(headers(enc), TAG)
    assert edit.value == f"{TAG} {enc}"
    assert decode_subject(edit.value) == f"{TAG} Déjà vu"


def test_folded_encoded_subject():
    enc = "=?UTF-8?Q?=5BMESSAGE_MARQUE?=\n\t=?UTF-8?Q?_SPAM=5D_offre?="
    assert subject_edit(headers(enc), TAG) is None


def test_malformed_encoded_subject_does_not_crash():
    edit = subject_edit(headers("=?bogus-charset?Q?abc?="), TAG)
    assert edit.value.startswith(TAG)


def test_first_subject_changed_when_several():
    h = [("Subject", "one"), ("subject", "two")]
    assert subject_edit(h, TAG) == HeaderEdit("change", "Subject", f"{TAG} one", 1)


def test_sanitise_deletes_last_occurrence_first_case_insensitive():
    h = [
        ("X-Spam-Status", "Yes"),
        ("Received", "x"),
        ("x-status", "HIGH"),
        ("x-spam-status", "No"),
        ("X-STATUS", "LOW"),
        ("X-Spam-Flag", "YES"),
        ("X-Statusbar", "keep"),
    ]
    edits = sanitise(h, ["X-status", "X-Spam-*"])
    assert [(e.name.lower(), e.index) for e in edits] == [
        ("x-spam-flag", 1),
        ("x-status", 2),
        ("x-spam-status", 2),
        ("x-status", 1),
        ("x-spam-status", 1),
    ]
    assert all(e.is_delete for e in edits)
    assert apply_edits(h, edits) == [("Received", "x"), ("X-Statusbar", "keep")]


def test_forward_order_would_be_wrong_under_sendmail_semantics():
    # the simulator counts deleted headers like sendmail does: index 1 twice misses one
    h = [("X-Spam-Status", "a"), ("X-Spam-Status", "b")]
    wrong = [HeaderEdit("change", "X-Spam-Status", "", 1)] * 2
    assert apply_edits(h, wrong) == [("X-Spam-Status", "b")]
    assert apply_edits(h, sanitise(h, ["X-Spam-*"])) == []


def test_marking_high_replaces_outside_headers():
    h = headers("Offer", ("X-status", "LOW"), ("X-Spam-Score", "-5"), ("X-Spam-Status", "No"))
    out = final(h, ScanResult(7.3, 5.0, True, ("GTUBE", "MISSING_DATE")))
    assert get(out, "Subject") == [f"{TAG} Offer"]
    assert get(out, "X-status") == ["HIGH"]
    assert get(out, "X-Spam-Score") == ["7.3"]
    assert get(out, "X-Spam-Status") == ["Yes, score=7.3 required=5.0 tests=GTUBE,MISSING_DATE"]
    assert get(out, "X-Spam-Checker") == ["gw1"]


@pytest.mark.parametrize(
    ("score", "status", "tagged"),
    [
        (3.0, None, False),
        (3.01, "LOW", False),
        (4.0, "LOW", False),
        (4.01, "MEDIUM", False),
        (5.0, "MEDIUM", False),
        (5.01, "HIGH", True),
    ],
)
def test_marking_at_boundaries(score, status, tagged):
    out = final(headers("Hi"), ScanResult(score, 5.0, score >= 5.0, ()))
    assert get(out, "X-status") == ([status] if status else [])
    assert get(out, "Subject") == ([f"{TAG} Hi"] if tagged else ["Hi"])
    assert get(out, "X-Spam-Score") == [format_score(score)]


def test_marking_custom_names():
    t = Tiers(
        subject_tag="***SPAM***",
        status_header="X-Level",
        score_header="X-Score",
        spam_status_header="X-Verdict",
        checker_header="",
        strip_headers=("X-Level",),
    )
    h = headers("Hi", ("X-Level", "LOW"))
    out = final(h, ScanResult(6.0, 5.0, True, ()), t)
    assert get(out, "Subject") == ["***SPAM*** Hi"]
    assert get(out, "X-Level") == ["HIGH"]
    assert get(out, "X-Score") == ["6.0"]
    assert get(out, "X-Verdict") == ["Yes, score=6.0 required=5.0 tests=none"]
    assert get(out, "X-Spam-Checker") == []


def test_long_rule_list_is_folded():
    rules = tuple(f"SOME_LONG_RULE_NAME_{i}" for i in range(20))
    v = spam_status_value(ScanResult(6.0, 5.0, True, rules))
    lines = v.split("\n")
    assert len(lines) > 1
    assert all(len(x) <= 78 for x in lines)
    assert all(x.startswith("\t") for x in lines[1:])
    assert v.replace("\n\t", "").endswith(",".join(rules))


def test_not_scanned_edits():
    h = headers("Hi", ("X-Spam-Status", "No"), ("X-status", "LOW"))
    out = apply_edits(h, not_scanned_edits(h, "spamd unavailable", T, ""))
    assert get(out, "X-Spam-Status") == ["not scanned (spamd unavailable)"]
    assert get(out, "X-status") == []
    assert get(out, "Subject") == ["Hi"]


def test_received_header_with_and_without_reverse_dns():
    from passerelle.spam.marking import received_header

    when = 1795773600.0  # 2026-11-27 10:00:00 UTC
    assert received_header(
        "mx.client.test", "mx.client.test", "192.0.2.7", "gw1.lab", "5AR1", when
    ) == (
        "from mx.client.test (mx.client.test [192.0.2.7]) by gw1.lab with ESMTP id 5AR1; "
        "Fri, 27 Nov 2026 10:00:00 -0000"
    )
    assert received_header("helo", "[2001:db8::7]", "2001:db8::7", "gw1", "Q", when).startswith(
        "from helo ([2001:db8::7]) by gw1 "
    )


def test_received_header_carries_the_envelope_sender_for_spf():
    from passerelle.spam.marking import received_header

    when = 1795773600.0
    v = received_header("h", "", "192.0.2.7", "gw1", "Q", when, "<dave@internet.test>")
    assert v.startswith(
        "from h ([192.0.2.7]) by gw1 with ESMTP id Q (envelope-from <dave@internet.test>); "
    )
    assert "(envelope-from <>); " in received_header("h", "", "192.0.2.7", "gw1", "Q", when, "")
    assert "envelope-from" not in received_header("h", "", "192.0.2.7", "gw1", "Q", when)
    forged = received_header("h", "", "1.2.3.4", "gw1", "Q", when, "<a>\r\nX-status: LOW <b@c>")
    assert "\n" not in forged and "\r" not in forged
    assert "(envelope-from <a???X-status:?LOW??b@c>); " in forged


def test_received_header_never_carries_client_line_breaks_or_spaces():
    from passerelle.spam.marking import received_header

    v = received_header("evil\r\nX-status: LOW", "", "", "", "", 0.0)
    assert "\n" not in v and "\r" not in v
    assert v.startswith("from evil??X-status:?LOW ([0.0.0.0]) by localhost with ESMTP id unknown; ")


def test_output_headers_are_owned_even_when_strip_headers_forgets_them():
    """Every header the milter writes is removed from incoming mail, whatever strip_headers
    says: a forged X-Score would otherwise sit above the real one."""
    t = Tiers(status_header="X-Level", score_header="X-Score", strip_headers=())
    h = headers("Hi", ("X-Score", "-100"), ("x-level", "LOW"), ("X-Spam-Checker", "forged"))
    out = final(h, ScanResult(6.0, 5.0, True, ()), t)
    assert get(out, "X-Score") == ["6.0"]
    assert get(out, "X-Level") == ["HIGH"]
    assert get(out, "X-Spam-Checker") == ["gw1"]
