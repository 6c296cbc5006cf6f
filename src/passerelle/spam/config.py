"""The ``[spam]`` configuration file, validated with clear errors.

Example (every key with its default)::

    [spam]
    socket = "unix:/run/passerelle/spam.sock"   # milter socket, sendmail syntax
    spamd = ["127.0.0.1:783"]                  # tried in order: "host:port", "unix:/path"
    connect_timeout = "2s"                     # per spamd host
    timeout = "30s"                            # per spamd host, whole exchange
    max_size = 512000                          # bytes; bigger messages: the first max_size scanned
    on_error = "accept"                        # or "tempfail" when no spamd answers
    hostname = ""                              # for X-Spam-Checker; "" = this host's name
    user = "passerelle"                        # spamc "User:" (Bayes/user prefs owner)
    milter_timeout = "10m"                     # libmilter's I/O timeout toward sendmail
    log_level = "info"

    [spam.tiers]
    high = 5.0          # score >  high:            subject tag + X-status: HIGH
    medium = 4.0        # medium < score <= high:   X-status: MEDIUM
    low = 3.0           # low < score <= medium:    X-status: LOW; score <= low: nothing
    subject_tag = "[MESSAGE MARQUE SPAM]"
    status_header = "X-status"
    score_header = "X-Spam-Score"
    spam_status_header = "X-Spam-Status"
    checker_header = "X-Spam-Checker"          # "" to leave it out
    partial_header = "X-Spam-Partial"          # on messages scanned on their first max_size
    strip_headers = ["X-status", "X-Spam-*"]   # removed from incoming mail ("*" = prefix),
                                               # with every *_header above in any case

    [spam.ocr]
    enabled = false
    tesseract = "/usr/bin/tesseract"
    languages = "eng"
    max_images = 5
    max_image_size = 2000000
    timeout = "10s"           # per image
    total_timeout = "20s"     # all images of one message
"""

from __future__ import annotations

import socket as _socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from passerelle.config import ConfigError, Section, load_toml


@dataclass(frozen=True)
class Tiers:
    high: float = 5.0
    medium: float = 4.0
    low: float = 3.0
    subject_tag: str = "[MESSAGE MARQUE SPAM]"
    status_header: str = "X-status"
    score_header: str = "X-Spam-Score"
    spam_status_header: str = "X-Spam-Status"
    checker_header: str = "X-Spam-Checker"
    partial_header: str = "X-Spam-Partial"
    strip_headers: tuple[str, ...] = ("X-status", "X-Spam-*")


@dataclass(frozen=True)
class OcrConfig:
    enabled: bool = False
    tesseract: str = "/usr/bin/tesseract"
    languages: str = "eng"
    max_images: int = 5
    max_image_size: int = 2_000_000
    timeout: float = 10.0
    total_timeout: float = 20.0


@dataclass(frozen=True)
class SpamConfig:
    socket: str = "unix:/run/passerelle/spam.sock"
    spamd: tuple[str, ...] = ("127.0.0.1:783",)
    connect_timeout: float = 2.0
    timeout: float = 30.0
    max_size: int = 512_000
    on_error: str = "accept"
    hostname: str = field(default_factory=_socket.gethostname)
    user: str = "passerelle"
    milter_timeout: int = 600
    log_level: str = "info"
    tiers: Tiers = field(default_factory=Tiers)
    ocr: OcrConfig = field(default_factory=OcrConfig)


_HEADER_OK = set("!\"#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _header_name(sec: Section, name: str, default: str, allow_empty: bool = False) -> str:
    v = sec.str(name, default)
    if v == "" and allow_empty:
        return v
    if not v or not set(v) <= _HEADER_OK:
        raise ConfigError(sec._key(name), f"not a valid header name: {v!r}")
    return v


def check_spamd_address(addr: str) -> None:
    """Raise ValueError unless ``addr`` is ``host:port``, ``[v6]:port`` or ``unix:/path``."""
    if addr.startswith("unix:"):
        if not addr[5:].startswith("/"):
            raise ValueError(f"unix socket path must be absolute: {addr!r}")
        return
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port or unix:/path, got {addr!r}")


def parse_config(data: dict[str, Any], source: str | None = None) -> SpamConfig:
    """Build a SpamConfig from a parsed TOML document; errors name the key."""
    try:
        root = Section(data)
        spam = root.table("spam")
        root.finish()
        hosts = spam.str_list("spamd", ["127.0.0.1:783"])
        if not hosts:
            raise ConfigError("spam.spamd", "needs at least one spamd address")
        for h in hosts:
            try:
                check_spamd_address(h)
            except ValueError as exc:
                raise ConfigError("spam.spamd", str(exc)) from None
        sock = spam.str("socket", "unix:/run/passerelle/spam.sock")
        if not sock.startswith(("unix:", "local:", "inet:", "inet6:")):
            raise ConfigError("spam.socket", f"expected unix:/path or inet:port@host, got {sock!r}")
        connect_timeout = spam.duration("connect_timeout", "2s")
        timeout = spam.duration("timeout", "30s")
        for key, v in (("connect_timeout", connect_timeout), ("timeout", timeout)):
            if v <= 0:
                raise ConfigError(f"spam.{key}", "must be more than 0s")
        t = spam.table("tiers")
        tiers = Tiers(
            high=t.float("high", 5.0),
            medium=t.float("medium", 4.0),
            low=t.float("low", 3.0),
            subject_tag=t.str("subject_tag", "[MESSAGE MARQUE SPAM]"),
            status_header=_header_name(t, "status_header", "X-status"),
            score_header=_header_name(t, "score_header", "X-Spam-Score"),
            spam_status_header=_header_name(t, "spam_status_header", "X-Spam-Status"),
            checker_header=_header_name(t, "checker_header", "X-Spam-Checker", True),
            partial_header=_header_name(t, "partial_header", "X-Spam-Partial"),
            strip_headers=tuple(t.str_list("strip_headers", ["X-status", "X-Spam-*"])),
        )
        if not tiers.low <= tiers.medium <= tiers.high:
            raise ConfigError("spam.tiers", "thresholds must satisfy low <= medium <= high")
        if not tiers.subject_tag.strip() or "\n" in tiers.subject_tag:
            raise ConfigError("spam.tiers.subject_tag", "must be a non-empty single line")
        t.finish()
        o = spam.table("ocr")
        ocr = OcrConfig(
            enabled=o.bool("enabled", False),
            tesseract=o.str("tesseract", "/usr/bin/tesseract"),
            languages=o.str("languages", "eng"),
            max_images=o.int("max_images", 5, minimum=0, maximum=100),
            max_image_size=o.int("max_image_size", 2_000_000, minimum=1),
            timeout=float(o.duration("timeout", "10s")),
            total_timeout=float(o.duration("total_timeout", "20s")),
        )
        o.finish()
        cfg = SpamConfig(
            socket=sock,
            spamd=tuple(hosts),
            connect_timeout=float(connect_timeout),
            timeout=float(timeout),
            max_size=spam.int("max_size", 512_000, minimum=1),
            on_error=spam.str("on_error", "accept", choices=("accept", "tempfail")),
            hostname=spam.str("hostname", "") or _socket.gethostname(),
            user=spam.str("user", "passerelle"),
            milter_timeout=spam.duration("milter_timeout", "10m"),
            log_level=spam.str("log_level", "info", choices=("debug", "info", "warning", "error")),
            tiers=tiers,
            ocr=ocr,
        )
        spam.finish()
        return cfg
    except ConfigError as exc:
        if exc.source is None and source is not None:
            raise ConfigError(exc.key, exc.message, source) from None
        raise


def load_config(path: str | Path) -> SpamConfig:
    return parse_config(load_toml(path), str(path))
