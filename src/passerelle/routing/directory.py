"""The real directory lookup for ``passerelle route``: python-ldap, the gateway's settings;
the connection and error text every user of the directory shares."""

from __future__ import annotations

from typing import Any

from passerelle.routing.config import LdapSettings
from passerelle.routing.route import DirectoryUnavailable, Entry, Lookup


def _first(attrs: dict[str, list[bytes]], name: str) -> str | None:
    for key, values in attrs.items():
        if key.lower() == name.lower() and values:
            return values[0].decode("utf-8", "replace")
    return None


def open_connection(uri: str, timeout: int, ldap_module: Any = None) -> Any:
    """A python-ldap connection to ``uri`` (not bound yet): LDAPv3, no referral chasing,
    ``timeout`` seconds to connect (network) and for each operation. TLS: an ``ldaps://``
    URI, the CA from the system's store (``/etc/ldap/ldap.conf`` TLS_CACERT). Shared by
    every user of the directory (routing, the console's login)."""
    if ldap_module is None:
        import ldap as ldap_module  # python-ldap (python3-ldap on the hosts)
    conn = ldap_module.initialize(uri)
    conn.set_option(ldap_module.OPT_NETWORK_TIMEOUT, timeout)
    conn.set_option(ldap_module.OPT_TIMEOUT, timeout)
    conn.set_option(ldap_module.OPT_REFERRALS, 0)
    conn.protocol_version = 3
    return conn


def error_text(exc: BaseException) -> str:
    """What an LDAP error says (python-ldap's ``desc`` and ``info``), without a traceback."""
    info = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
    text = str(info.get("desc", exc))
    if info.get("info"):
        text += f": {info['info']}"
    return text


def make_lookup(settings: LdapSettings, ldap_module: Any = None) -> Lookup:
    """A lookup that searches ``(&(objectClass=C)(search_attribute=ADDRESS))`` under base.

    The same filter, attributes and bind as the gateway's sendmail maps. Any LDAP error
    (server down, timeout, bind refused) is DirectoryUnavailable: sendmail queues then.
    """
    if ldap_module is None:
        import ldap as ldap_module  # python-ldap (python3-ldap on the hosts)
    import ldap.filter

    password = settings.read_password()

    def lookup(address: str) -> list[Entry]:
        flt = ldap.filter.filter_format(
            f"(&(objectClass={settings.object_class})({settings.search_attribute}=%s))",
            [address],
        )
        try:
            conn = open_connection(settings.uri, settings.timeout, ldap_module)
            conn.simple_bind_s(settings.bind_dn, password)
            try:
                results = conn.search_st(
                    settings.base,
                    ldap_module.SCOPE_SUBTREE,
                    flt,
                    [settings.host_attribute, settings.address_attribute],
                    timeout=settings.timeout,
                )
            finally:
                conn.unbind_s()
        except ldap_module.NO_SUCH_OBJECT:
            return []
        except ldap_module.LDAPError as exc:
            raise DirectoryUnavailable(f"{settings.uri}: {error_text(exc)}") from None
        return [
            Entry(
                dn=dn,
                mail_host=_first(attrs, settings.host_attribute),
                routing_address=_first(attrs, settings.address_attribute),
            )
            for dn, attrs in results
            if dn  # skip search references
        ]

    return lookup
