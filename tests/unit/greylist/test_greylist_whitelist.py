import ipaddress

import pytest

from passerelle.greylist.whitelist import AddressList, ClientList, Whitelist, WhitelistError


def ip(s):
    return ipaddress.ip_address(s)


def test_client_list_ips_networks_names():
    cl = ClientList()
    for e in [
        "192.0.2.7",
        "198.51.100.0/24",
        "2001:db8::/32",
        "mx.example.org",
        ".example.net",
        "10.1.1.1/32",
    ]:
        cl.add(e)
    assert cl.match(ip("192.0.2.7"), None) == "192.0.2.7"
    assert cl.match(ip("192.0.2.8"), None) is None
    assert cl.match(ip("198.51.100.200"), None) == "198.51.100.0/24"
    assert cl.match(ip("198.51.101.1"), None) is None
    assert cl.match(ip("2001:db8:ffff::1"), None) == "2001:db8::/32"
    assert cl.match(ip("10.1.1.1"), None) == "10.1.1.1"
    assert cl.match(None, "mx.example.org") == "mx.example.org"
    assert cl.match(None, "MX.Example.Org.") == "mx.example.org"
    assert cl.match(None, "a.mx.example.org") == "mx.example.org"
    assert cl.match(None, "notmx.example.org") is None
    # ".example.net": below only
    assert cl.match(None, "smtp.example.net") == ".example.net"
    assert cl.match(None, "example.net") is None
    assert cl.match(None, "badexample.net") is None


@pytest.mark.parametrize("bad", ["", "10.0.0.0/33", "999.1.1.1/8", "bad host", "a..b", "x" * 300])
def test_client_list_rejects_bad_entries(bad):
    with pytest.raises(WhitelistError):
        ClientList().add(bad)


def test_address_list():
    al = AddressList()
    for e in ["Boss@Example.org", "@lists.example.com", "partner.example"]:
        al.add(e)
    assert al.match("<boss@EXAMPLE.org>") == "boss@example.org"
    assert al.match("other@example.org") is None
    assert al.match("x@lists.example.com") == "@lists.example.com"
    assert al.match("x@sub.lists.example.com") is None
    assert al.match("x@partner.example") == "partner.example"
    assert al.match("x@deep.sub.partner.example") == "partner.example"
    assert al.match("x@notpartner.example") is None
    assert al.match("<>") is None


def test_whitelist_kinds():
    wl = Whitelist()
    wl.add("trusted", "10.0.0.0/8")
    wl.add("recipient", "postmaster@example.org")
    assert wl.trusted.match(ip("10.2.3.4"), None)
    assert wl.recipients.match("postmaster@example.org")
    with pytest.raises(WhitelistError):
        wl.add("nope", "x")
    bad = wl.extend([("client", "ok.example"), ("client", "10.0.0.0/99")], strict=False)
    assert len(bad) == 1 and "10.0.0.0/99" in bad[0]
