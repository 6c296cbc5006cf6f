"""Envelope address normalisation for greylisting.

The sender is normalised so that retries from big senders, which re-tag every attempt, map to
the same triplet:

- angle brackets removed, the domain lowercased (local parts stay as they are);
- BATV (``prvs=TAG=user@``, ``msprvs1=TAG=user@``, ``btv1==TAG==user@``) unwrapped;
- SRS (``SRS0=HASH=TT=domain=user@fwd``, ``SRS1=HASH=fwd==HASH=TT=domain=user@fwd2``)
  unwrapped to the original ``user@domain``;
- VERP-like extensions: ``+tag`` removed, standalone numbers replaced by ``#``
  (``bounce-12345@`` and ``bounce-67890@`` become ``bounce-#@``).
"""

from __future__ import annotations

import re

_BATV = re.compile(r"^(?:prvs|msprvs1|msprvs)=[^=@]+=(.+)$", re.IGNORECASE)
_BTV1 = re.compile(r"^btv1==[^=@]+==(.+)$", re.IGNORECASE)
_SRS0 = re.compile(r"^srs0[=+-][^=@]*=[^=@]*=([^=@]+)=(.+)$", re.IGNORECASE)
_SRS1 = re.compile(r"^srs1[=+-][^=@]*=[^=@]*=[=+-][^=@]*=[^=@]*=([^=@]+)=(.+)$", re.IGNORECASE)
_NUMBER = re.compile(r"\b\d+\b")


def strip_brackets(addr: str) -> str:
    """``<user@dom>`` -> ``user@dom``; surrounding blanks removed."""
    a = addr.strip()
    if a.startswith("<") and a.endswith(">"):
        a = a[1:-1].strip()
    return a


def split_address(addr: str) -> tuple[str, str]:
    """Split on the last ``@`` (quoted local parts may contain ``@``); domain lowercased."""
    local, sep, domain = addr.rpartition("@")
    if not sep:
        return addr, ""
    return local, domain.lower()


def normalise_recipient(addr: str) -> str:
    """Recipient: brackets removed, domain lowercased."""
    local, domain = split_address(strip_brackets(addr))
    return f"{local}@{domain}" if domain else local


def normalise_sender(addr: str) -> str:
    """Sender normalised as described in the module docstring; ``<>`` gives ``""``."""
    a = strip_brackets(addr)
    if not a:
        return ""
    local, domain = split_address(a)
    if not domain:
        return local
    if "=" in local:  # every SRS and BATV form has one; most senders have none
        m = _SRS1.match(local) or _SRS0.match(local)
        if m:
            domain, local = m.group(1).lower(), m.group(2)
        m = _BATV.match(local) or _BTV1.match(local)
        if m:
            local = m.group(1)
    if "+" in local and not local.startswith('"'):
        local = local.split("+", 1)[0] or local
    local = _NUMBER.sub("#", local)
    return f"{local}@{domain}"


def address_domain(addr: str) -> str:
    """Lowercased domain of an address (``""`` when none)."""
    return split_address(strip_brackets(addr))[1]
