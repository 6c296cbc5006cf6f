"""The shared owned-header helper: what both milters strip before adding their own."""

import hostile_headers
from passerelle.greylist.engine import OWNED_HEADERS
from passerelle.milterheaders import HeaderEdit, OwnedHeaders, apply, encodable, strip_edits


def test_counts_per_name_case_insensitively_and_deletes_last_first():
    h = [("x-delayed", "1"), ("Subject", "s"), ("X-DELAYED", "2"), ("X-Greylist", "g")]
    o = OwnedHeaders(("X-Delayed", "X-Greylist"))
    for name, _v in h:
        o.see(name)
    assert o.deletions() == [
        HeaderEdit("change", "X-Greylist", "", 1),
        HeaderEdit("change", "X-DELAYED", "", 2),
        HeaderEdit("change", "x-delayed", "", 1),
    ]
    o.reset()
    assert o.deletions() == []


def test_prefix_patterns():
    h = [("X-Spam-Flag", "YES"), ("X-Spammy", "no"), ("X-status", "LOW"), ("X-Spam-Flag", "x")]
    edits = strip_edits(h, ("X-status", "X-Spam-*"))
    assert [(e.name, e.index) for e in edits] == [
        ("X-Spam-Flag", 2),
        ("X-status", 1),
        ("X-Spam-Flag", 1),
    ]


def test_corpus_forgeries_of_greylist_headers_are_all_found():
    assert {n.lower() for n in OWNED_HEADERS} == {n.lower() for n in hostile_headers.GREYLIST_OWNED}
    for _case, headers in hostile_headers.forged_gateway_headers():
        forged = [n for n, _v in headers if n.lower() in {x.lower() for x in OWNED_HEADERS}]
        assert len(strip_edits(headers, OWNED_HEADERS)) == len(forged)


def test_apply_in_order_with_8bit_values():
    calls = []

    class M:
        def addheader(self, name, value):
            calls.append(("add", name, value))

        def chgheader(self, name, index, value):
            calls.append(("chg", name, index, value))

    bad = b"caf\xe9".decode("utf-8", "surrogateescape")
    apply(M(), [HeaderEdit("change", "X-Delayed", "", 2), HeaderEdit("add", "X-Delayed", bad)])
    assert calls == [("chg", "X-Delayed", 2, ""), ("add", "X-Delayed", "caf\ufffd")]
    assert encodable("ok") == "ok"
