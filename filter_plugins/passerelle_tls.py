# Copyright: Passerelle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Checks of a host's TLS certificate and key (sendmail's STARTTLS, the Nagios web UI's), run
on the controller before any host is touched (``playbooks/validate.yml``).

``certificate | passerelle_tls_credentials(private_key, name='sendmail_tls_certificate',
key_name='sendmail_tls_private_key', host=inventory_hostname)`` takes the PEM contents given
in the inventory (the key from the vault) and returns ``{"enabled": False}`` when both are
empty (no TLS), or ``{"enabled": True, "subject": ..., "not_after": "YYYY-MM-DDTHH:MM:SSZ"}``
when they are usable: the certificate (the first one of the chain) is PEM, valid now, and its
public key is the key's. Anything else raises ``AnsibleFilterError`` naming the variable
(after ``host: `` when a host is given) and what is wrong; the key's text never appears in a
message. The same rules serve sendmail's pair and the Nagios web UI's
(``nagios_tls_certificate``, ``nagios_tls_private_key``).

Needs the ``cryptography`` library on the controller (constraints.txt pins it; Ansible's
own dependencies include it).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from typing import Any

from ansible.errors import AnsibleFilterError

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
except ImportError:  # pragma: no cover - reported when the filter is used
    x509 = None  # type: ignore[assignment]
    serialization = None  # type: ignore[assignment]

_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----\s+[A-Za-z0-9+/=\s]+?-----END CERTIFICATE-----")


def _text(value: Any, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise AnsibleFilterError(f"{what}: expected PEM text, got {type(value).__name__}")
    return value.strip()


def passerelle_tls_credentials(
    certificate: Any,
    private_key: Any,
    name: str = "sendmail_tls_certificate",
    key_name: str = "sendmail_tls_private_key",
    now: datetime.datetime | None = None,
    host: str = "",
) -> dict[str, Any]:
    """Check a PEM certificate chain and its private key (see the module's docstring).

    ``now`` (timezone-aware) is the clock, for the tests; default: the current UTC time.
    ``host``, when given, starts every error message (``host: name ...``).
    """
    try:
        return _credentials(certificate, private_key, name, key_name, now)
    except AnsibleFilterError as exc:
        if not host:
            raise
        raise AnsibleFilterError(f"{host}: {exc.message}") from None


def _credentials(
    certificate: Any,
    private_key: Any,
    name: str,
    key_name: str,
    now: datetime.datetime | None,
) -> dict[str, Any]:
    cert_text = _text(certificate, name)
    key_text = _text(private_key, key_name)
    if not cert_text and not key_text:
        return {"enabled": False}
    if not cert_text:
        raise AnsibleFilterError(f"{name} is empty but {key_name} is set: set both or neither")
    if not key_text:
        raise AnsibleFilterError(f"{key_name} is empty but {name} is set: set both or neither")
    if x509 is None or serialization is None:
        raise AnsibleFilterError(
            f"{name}: checking a certificate needs the Python library cryptography on the "
            "controller (pip install -r requirements-controller.txt)"
        )
    blocks = _PEM_CERT.findall(cert_text)
    if not blocks:
        raise AnsibleFilterError(
            f"{name} is not a PEM certificate (expected -----BEGIN CERTIFICATE----- ...)"
        )
    try:
        chain = [x509.load_pem_x509_certificate(b.encode("ascii")) for b in blocks]
    except ValueError as exc:
        raise AnsibleFilterError(f"{name} is not a valid PEM certificate: {exc}") from None
    leaf = chain[0]
    try:
        key = serialization.load_pem_private_key(key_text.encode("ascii", "replace"), None)
    except (ValueError, TypeError, UnicodeError):
        # never the key's text in the message
        raise AnsibleFilterError(
            f"{key_name} is not an unencrypted PEM private key (-----BEGIN PRIVATE KEY----- ...)"
        ) from None
    subject = leaf.subject.rfc4514_string()
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, pub) != leaf.public_key().public_bytes(der, pub):
        raise AnsibleFilterError(
            f"{name} ({subject}) does not match {key_name}: the key is not this certificate's"
        )
    clock = now or datetime.datetime.now(datetime.UTC)
    not_before = leaf.not_valid_before_utc
    not_after = leaf.not_valid_after_utc
    if clock >= not_after:
        raise AnsibleFilterError(f"{name} ({subject}) expired on {not_after:%Y-%m-%d %H:%M:%S} UTC")
    if clock < not_before:
        raise AnsibleFilterError(
            f"{name} ({subject}) is not valid before {not_before:%Y-%m-%d %H:%M:%S} UTC"
        )
    return {
        "enabled": True,
        "subject": subject,
        "not_after": f"{not_after:%Y-%m-%dT%H:%M:%SZ}",
    }


class FilterModule:
    """Passerelle TLS credential checks."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {"passerelle_tls_credentials": passerelle_tls_credentials}
