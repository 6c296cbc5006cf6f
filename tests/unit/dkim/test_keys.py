"""DKIM keys: the public key a record publishes, read from PEM without any library, checked
against OpenSSL's and the RFC's values (tests/unit/dkim/dkim_fixtures.py); against the
cryptography library's own in tests/controller/test_dkim_signer.py (the controller's venv has
it, the package test venvs do not)."""

from __future__ import annotations

import base64
import textwrap

import pytest

from passerelle.dkim import keys
from passerelle.dkim.keys import DkimKeyError, load_private_key

from .dkim_fixtures import (
    EC_P256_PKCS8,
    ED25519_PUBLIC_HEX,
    ED25519_SECRET_HEX,
    RSA_512_PKCS1,
    RSA_1024_PKCS1,
    RSA_1024_SPKI_BASE64,
)


def _pem(label: str, der: bytes) -> str:
    body = "\n".join(textwrap.wrap(base64.b64encode(der).decode(), 64))
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----\n"


def _ed25519_pkcs8(secret_hex: str) -> str:
    # RFC 8410 7: SEQUENCE {INTEGER 0, SEQUENCE {OID 1.3.101.112}, OCTET STRING {OCTET STRING}}
    return _pem("PRIVATE KEY", bytes.fromhex("302e020100300506032b657004220420" + secret_hex))


def _pkcs1_to_pkcs8(pem: str) -> str:
    der = base64.b64decode("".join(pem.strip().splitlines()[1:-1]))
    algorithm = bytes.fromhex("300d06092a864886f70d0101010500")
    octets = b"\x04" + keys._der_length(len(der)) + der
    inner = b"\x02\x01\x00" + algorithm + octets
    return _pem("PRIVATE KEY", b"\x30" + keys._der_length(len(inner)) + inner)


def test_rsa_pkcs1_key_gives_openssls_public_key() -> None:
    key = load_private_key(RSA_1024_PKCS1)
    assert (key.algorithm, key.bits) == ("rsa", 1024)
    assert base64.b64encode(key.public).decode() == RSA_1024_SPKI_BASE64


def test_rsa_pkcs8_key_gives_the_same_public_key() -> None:
    key = load_private_key(_pkcs1_to_pkcs8(RSA_1024_PKCS1))
    assert base64.b64encode(key.public).decode() == RSA_1024_SPKI_BASE64


def test_ed25519_key_gives_the_rfc_8032_public_key() -> None:
    key = load_private_key(_ed25519_pkcs8(ED25519_SECRET_HEX))
    assert (key.algorithm, key.public.hex()) == ("ed25519", ED25519_PUBLIC_HEX)
    assert key.txt_value == (
        "v=DKIM1; k=ed25519; p=" + base64.b64encode(bytes.fromhex(ED25519_PUBLIC_HEX)).decode()
    )


def test_record_is_split_into_strings_of_255_characters() -> None:
    # a 2048-bit key's value is about 400 characters: two strings
    spki = b"\x30" * 294
    key = keys.PublicKey("rsa", 2048, spki)
    value = "v=DKIM1; k=rsa; p=" + base64.b64encode(spki).decode()
    record = keys.txt_record("Example.ORG", "sel2026", key)
    head, _, strings = record.partition(" IN TXT ")
    assert head == "sel2026._domainkey.example.org."
    parts = strings[1:-1].split('" "')
    assert "".join(parts) == value
    assert [len(p) for p in parts] == [255, len(value) - 255]
    assert keys.unbound_local_data("example.org", "sel2026", key) == (
        f"sel2026._domainkey.example.org. TXT {strings}"
    )


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "not a PEM private key"),
        ("hello", "not a PEM private key"),
        (RSA_512_PKCS1, "RSA key of 512 bits: DKIM needs 1024 at least"),
        (EC_P256_PKCS8, "not an RSA or Ed25519 key"),
        (_pem("PUBLIC KEY", base64.b64decode(RSA_1024_SPKI_BASE64)), "not a private key"),
        (_pem("CERTIFICATE", b"\x30\x00"), "not a private key (the PEM holds: CERTIFICATE)"),
        (_pem("ENCRYPTED PRIVATE KEY", b"\x30\x00"), "encrypted private key"),
        (_pem("OPENSSH PRIVATE KEY", b"openssh-key-v1\x00"), "DKIM signs with RSA or Ed25519"),
        (_pem("PRIVATE KEY", b"\x30\x03\x02\x01"), "truncated DER"),
        (_pem("RSA PRIVATE KEY", b"\x30\x03\x02\x01\x00"), "PKCS#1 needs 9 integers"),
        ("-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----", "bad base64"),
        (RSA_1024_PKCS1 + RSA_1024_PKCS1, "more than one private key"),
    ],
    ids=[
        "empty",
        "text",
        "rsa-512",
        "ec",
        "public",
        "certificate",
        "encrypted",
        "openssh",
        "truncated",
        "short-pkcs1",
        "base64",
        "two-keys",
    ],
)
def test_what_is_not_a_dkim_key_is_refused_with_the_reason(text: str, why: str) -> None:
    with pytest.raises(DkimKeyError, match=None) as info:
        load_private_key(text)
    assert why in str(info.value)


def test_a_corrupt_rsa_key_is_refused_and_not_echoed() -> None:
    lines = RSA_1024_PKCS1.strip().splitlines()
    der = bytearray(base64.b64decode("".join(lines[1:-1])))
    der[200] ^= 0x01  # inside d or p: no longer a consistent key
    pem = _pem("RSA PRIVATE KEY", bytes(der))
    with pytest.raises(DkimKeyError, match="not a consistent RSA private key") as info:
        load_private_key(pem)
    assert not any(line in str(info.value) for line in pem.splitlines()[1:-1])


def test_a_non_string_is_refused() -> None:
    with pytest.raises(DkimKeyError, match="expected PEM text"):
        load_private_key(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("selector", ["sel", "s2026-01", "A1"])
def test_selectors_that_are_one_label_pass(selector: str) -> None:
    assert keys.selector_problem(selector) is None


@pytest.mark.parametrize("selector", ["", "-a", "a-", "a.b", "a_b", "x" * 64, 7, None])
def test_selectors_that_are_not_one_label_fail(selector: object) -> None:
    assert "invalid selector" in (keys.selector_problem(selector) or "")
