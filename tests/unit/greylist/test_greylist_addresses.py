import pytest

from passerelle.greylist.addresses import normalise_recipient, normalise_sender
from passerelle.greylist.network import client_group, parse_ip


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("<User@Example.ORG>", "User@example.org"),
        ("<>", ""),
        ("", ""),
        ("prvs=0123456789=user@example.org", "user@example.org"),
        ("PRVS=4123abcdef=user@Example.org", "user@example.org"),
        ("msprvs1=18123abcdefab=user@example.org", "user@example.org"),
        ("btv1==1234567890==user@example.org", "user@example.org"),
        ("SRS0=HHH=TT=orig.example=alice@forwarder.example", "alice@orig.example"),
        ("SRS0+xyz=AB=Orig.Example=alice@fwd.example", "alice@orig.example"),
        ("SRS1=HHH=fwd1.example==HHH=TT=orig.example=alice@fwd2.example", "alice@orig.example"),
        ("list-bounces+bob=example.net@lists.example.org", "list-bounces@lists.example.org"),
        ("bounce-12345-678@mail.example.com", "bounce-#-#@mail.example.com"),
        ("bounce-99999-1@mail.example.com", "bounce-#-#@mail.example.com"),
        ("user2024@example.org", "user2024@example.org"),
        ("noatsign", "noatsign"),
        ('"we@ird"@Example.org', '"we@ird"@example.org'),
    ],
)
def test_normalise_sender(raw, expected):
    assert normalise_sender(raw) == expected


def test_batv_and_verp_retries_match():
    a = normalise_sender("prvs=1111aaaaaa=bounce-1001@big.example")
    b = normalise_sender("prvs=2222bbbbbb=bounce-2002@big.example")
    assert a == b


def test_normalise_recipient_keeps_local_part():
    assert normalise_recipient("<Bob+x@Example.ORG>") == "Bob+x@example.org"


@pytest.mark.parametrize(
    ("ip", "v4", "v6", "group"),
    [
        ("192.0.2.77", 24, 64, "192.0.2.0/24"),
        ("192.0.2.77", 32, 64, "192.0.2.77/32"),
        ("192.0.2.77", 16, 64, "192.0.0.0/16"),
        ("2001:db8:1:2:3:4:5:6", 24, 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:2:3:4:5:6", 24, 128, "2001:db8:1:2:3:4:5:6/128"),
        ("IPv6:2001:db8::1", 24, 48, "2001:db8::/48"),
        ("::ffff:192.0.2.5", 24, 64, "192.0.2.0/24"),
        ("[198.51.100.3]", 24, 64, "198.51.100.0/24"),
        ("/var/run/sock", 24, 64, "/var/run/sock"),
    ],
)
def test_client_group(ip, v4, v6, group):
    assert client_group(ip, v4, v6) == group


def test_pool_neighbours_share_a_group():
    assert client_group("203.0.113.1") == client_group("203.0.113.254")
    assert client_group("203.0.113.1") != client_group("203.0.114.1")


def test_parse_ip_rejects_names():
    assert parse_ip("mx.example.org") is None
