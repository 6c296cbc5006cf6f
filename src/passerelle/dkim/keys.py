"""DKIM private keys, read without any library: PEM, then DER (PKCS#1 ``RSA PRIVATE KEY`` or
PKCS#8 ``PRIVATE KEY``), RSA of 1024 bits or more (RFC 8301) or Ed25519 (RFC 8463).

``load_private_key(pem)`` returns the public half a DNS record publishes (``PublicKey``) or
raises ``DkimKeyError`` saying what is wrong; a message never holds the key's text.
``txt_record(domain, selector, key)`` is the zone-file line, ``unbound_local_data(...)`` the
same record as unbound's ``local-data`` wants it; both split the value into strings of 255
characters at most (RFC 1035 character-strings). ``selector_problem`` checks a selector.

Standard library only: ``filter_plugins/passerelle_dkim.py`` loads this file by its path on
the controller (``_passerelle_load.dkim_keys()``), and the ``passerelle`` command imports it on
Python 3.9 and newer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

MIN_RSA_BITS = 1024  # RFC 8301 3.2: signers MUST use at least 1024 bits (SHOULD 2048)
MAX_RSA_BITS = 8192
MAX_PEM_CHARS = 65536
TXT_STRING_MAX = 255

_RSA_OID = bytes.fromhex("2a864886f70d010101")  # 1.2.840.113549.1.1.1 rsaEncryption
_ED25519_OID = bytes.fromhex("2b6570")  # 1.3.101.112 id-Ed25519
_PEM = re.compile(
    r"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----",
    re.DOTALL,
)
_SELECTOR_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


class DkimKeyError(ValueError):
    """A key that cannot sign DKIM mail; the message says why (never the key's text)."""


@dataclass(frozen=True)
class PublicKey:
    """What a DKIM key record publishes: ``k=`` and ``p=`` (RFC 6376 3.6.1)."""

    algorithm: str  # "rsa" or "ed25519"
    bits: int
    public: bytes  # rsa: SubjectPublicKeyInfo DER; ed25519: the 32-byte key (RFC 8463)

    @property
    def txt_value(self) -> str:
        p = base64.b64encode(self.public).decode("ascii")
        return f"v=DKIM1; k={self.algorithm}; p={p}"


# -- DER, the few shapes a private key uses --------------------------------------------------
def _tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of the value, end of the value) of the element at ``pos``."""
    if pos + 2 > len(data):
        raise DkimKeyError("truncated DER")
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise DkimKeyError("bad DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise DkimKeyError("truncated DER")
    return tag, pos, pos + length


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    out = []
    pos = start
    while pos < end:
        tag, s, e = _tlv(data, pos)
        if e > end:
            raise DkimKeyError("bad DER nesting")
        out.append((tag, s, e))
        pos = e
    return out


def _sequence(data: bytes) -> list[tuple[int, int, int]]:
    tag, s, e = _tlv(data, 0)
    if tag != 0x30 or e != len(data):
        raise DkimKeyError("not a DER SEQUENCE")
    return _children(data, s, e)


def _integer(data: bytes, item: tuple[int, int, int]) -> int:
    tag, s, e = item
    if tag != 0x02 or s == e:
        raise DkimKeyError("expected an INTEGER")
    return int.from_bytes(data[s:e], "big", signed=True)


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _der(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + _der_length(len(value)) + value


def _der_integer(n: int) -> bytes:
    raw = n.to_bytes(n.bit_length() // 8 + 1, "big")  # one leading zero bit: positive
    return _der(0x02, raw)


# -- RSA ----------------------------------------------------------------------------------------
def _rsa_from_pkcs1(der: bytes) -> PublicKey:
    items = _sequence(der)
    if len(items) < 9:
        raise DkimKeyError("not an RSA private key (PKCS#1 needs 9 integers)")
    version, n, e, d, p, q = (_integer(der, i) for i in items[:6])
    if version not in (0, 1):
        raise DkimKeyError(f"unknown RSA key version {version}")
    bits = n.bit_length()
    if n <= 0 or e < 3 or e % 2 == 0 or d <= 0 or p * q != n:
        raise DkimKeyError("not a consistent RSA private key (n is not p x q)")
    if bits > MAX_RSA_BITS:
        raise DkimKeyError(f"RSA key of {bits} bits: more than {MAX_RSA_BITS}")
    if pow(pow(2, e, n), d, n) != 2:
        raise DkimKeyError("not a consistent RSA private key (d does not invert e)")
    if bits < MIN_RSA_BITS:
        raise DkimKeyError(
            f"RSA key of {bits} bits: DKIM needs {MIN_RSA_BITS} at least (RFC 8301; 2048 advised)"
        )
    rsa_public = _der(0x30, _der_integer(n) + _der_integer(e))
    algorithm = _der(0x30, _der(0x06, _RSA_OID) + b"\x05\x00")
    spki = _der(0x30, algorithm + _der(0x03, b"\x00" + rsa_public))
    return PublicKey("rsa", bits, spki)


# -- Ed25519 (RFC 8032 5.1.5: the public key of a 32-byte secret) ---------------------------
_P = 2**255 - 19
_D = -121665 * pow(121666, _P - 2, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)
_Point = tuple[int, int, int, int]


def _ed_add(a: _Point, b: _Point) -> _Point:
    p1 = (a[1] - a[0]) * (b[1] - b[0]) % _P
    p2 = (a[1] + a[0]) * (b[1] + b[0]) % _P
    c = 2 * a[3] * b[3] * _D % _P
    dd = 2 * a[2] * b[2] % _P
    e, f, g, h = p2 - p1, dd - c, dd + c, p2 + p1
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _ed_base() -> _Point:
    y = 4 * pow(5, _P - 2, _P) % _P
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P) % _P
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P:
        x = x * _SQRT_M1 % _P
    if x & 1:
        x = _P - x
    return (x, y, 1, x * y % _P)


def ed25519_public_key(secret: bytes) -> bytes:
    """The 32-byte Ed25519 public key of a 32-byte secret (RFC 8032 5.1.5)."""
    if len(secret) != 32:
        raise DkimKeyError("an Ed25519 private key is 32 bytes")
    h = hashlib.sha512(secret).digest()
    s = int.from_bytes(h[:32], "little")
    s &= (1 << 254) - 8
    s |= 1 << 254
    q: _Point = (0, 1, 1, 0)
    point = _ed_base()
    while s:
        if s & 1:
            q = _ed_add(q, point)
        point = _ed_add(point, point)
        s >>= 1
    zinv = pow(q[2], _P - 2, _P)
    x, y = q[0] * zinv % _P, q[1] * zinv % _P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


# -- PKCS#8 -----------------------------------------------------------------------------------
def _from_pkcs8(der: bytes) -> PublicKey:
    items = _sequence(der)
    if len(items) < 3 or items[1][0] != 0x30 or items[2][0] != 0x04:
        raise DkimKeyError("not a PKCS#8 private key")
    if _integer(der, items[0]) not in (0, 1):
        raise DkimKeyError("unknown PKCS#8 version")
    algorithm = _children(der, items[1][1], items[1][2])
    if not algorithm or algorithm[0][0] != 0x06:
        raise DkimKeyError("not a PKCS#8 private key (no algorithm)")
    oid = der[algorithm[0][1] : algorithm[0][2]]
    inner = der[items[2][1] : items[2][2]]
    if oid == _RSA_OID:
        return _rsa_from_pkcs1(inner)
    if oid == _ED25519_OID:
        tag, s, e = _tlv(inner, 0)
        if tag != 0x04 or e != len(inner):
            raise DkimKeyError("not an Ed25519 private key")
        return PublicKey("ed25519", 256, ed25519_public_key(inner[s:e]))
    raise DkimKeyError("not an RSA or Ed25519 key (DKIM signs with rsa-sha256 or ed25519-sha256)")


def load_private_key(pem: str) -> PublicKey:
    """The public half of a PEM private key, checked (see the module's docstring)."""
    if not isinstance(pem, str):
        raise DkimKeyError(f"expected PEM text, got {type(pem).__name__}")
    if len(pem) > MAX_PEM_CHARS:
        raise DkimKeyError(f"longer than {MAX_PEM_CHARS} characters: not one key")
    blocks = [(m.group(1), m.group(2)) for m in _PEM.finditer(pem.strip())]
    if not blocks:
        raise DkimKeyError("not a PEM private key (expected -----BEGIN PRIVATE KEY----- ...)")
    keys = [(label, body) for label, body in blocks if label.endswith("PRIVATE KEY")]
    if not keys:
        found = ", ".join(sorted({label for label, _ in blocks}))
        raise DkimKeyError(f"not a private key (the PEM holds: {found})")
    if len(keys) > 1:
        raise DkimKeyError("more than one private key in the PEM text")
    label, body = keys[0]
    if label == "ENCRYPTED PRIVATE KEY" or "ENCRYPTED" in body.split("\n\n")[0]:
        raise DkimKeyError("an encrypted private key: the signer needs it unencrypted")
    if label not in ("PRIVATE KEY", "RSA PRIVATE KEY"):
        raise DkimKeyError(
            f"a {label.title()} (-----BEGIN {label}-----): DKIM signs with RSA or Ed25519"
        )
    try:
        der = base64.b64decode("".join(body.split()), validate=True)
    except (binascii.Error, ValueError):
        raise DkimKeyError("not a PEM private key (bad base64)") from None
    return _rsa_from_pkcs1(der) if label == "RSA PRIVATE KEY" else _from_pkcs8(der)


# -- names and records ------------------------------------------------------------------------
def selector_problem(selector: object) -> str | None:
    """Why ``selector`` is not a DKIM selector here (one DNS label: letters, digits and
    hyphens, 1-63 characters, no hyphen first or last), or None."""
    if not isinstance(selector, str) or not _SELECTOR_LABEL.match(selector):
        return f"invalid selector {selector!r} (one DNS label: letters, digits, hyphens)"
    return None


def txt_strings(value: str, size: int = TXT_STRING_MAX) -> list[str]:
    """``value`` cut into DNS character-strings of ``size`` characters at most."""
    return [value[i : i + size] for i in range(0, len(value), size)] or [""]


def record_name(domain: str, selector: str) -> str:
    return f"{selector}._domainkey.{domain.lower()}."


def _quoted(value: str) -> str:
    return " ".join(f'"{s}"' for s in txt_strings(value))


def txt_record(domain: str, selector: str, key: PublicKey) -> str:
    """The zone-file line: ``sel._domainkey.example.org. IN TXT "v=DKIM1; ..." "..."``."""
    return f"{record_name(domain, selector)} IN TXT {_quoted(key.txt_value)}"


def unbound_local_data(domain: str, selector: str, key: PublicKey) -> str:
    """The same record as unbound's ``local-data`` value (without the outer quotes)."""
    return f"{record_name(domain, selector)} TXT {_quoted(key.txt_value)}"
