"""The antivirus milter's configuration (``[antivirus]`` table of a TOML file)."""

from __future__ import annotations

import re
import socket as _socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from passerelle.config import ConfigError, Section, load_toml

ACTIONS = ("reject", "quarantine", "strip")
KNOWN_TYPES = (
    "pe",
    "elf",
    "macho",
    "zip",
    "rar",
    "7z",
    "gzip",
    "bzip2",
    "xz",
    "tar",
    "pdf",
    "ole",
    "ooxml",
    "script",
)
UNINSPECTABLE_ACTIONS = ("quarantine", "reject", "tempfail", "accept")
DEFAULT_PATH = "/etc/passerelle/antivirus.toml"


@dataclass(frozen=True)
class Rule:
    """A content rule: either a header pattern or attachment extensions / detected types."""

    name: str
    action: str
    header: str | None = None
    pattern: re.Pattern[str] | None = None
    extensions: frozenset[str] = frozenset()
    types: frozenset[str] = frozenset()
    archives: bool = True  # also look inside zip archives

    @property
    def is_header_rule(self) -> bool:
        return self.header is not None


@dataclass(frozen=True)
class ArchiveLimits:
    max_depth: int = 3
    max_members: int = 1000
    max_total_size: int = 100 * 1024 * 1024
    action: str = "quarantine"  # action of the built-in ``oversized_archive`` rule
    # An archive inside an archive is held in memory to be opened: at most this many bytes.
    max_nested_size: int = 32 * 1024 * 1024


@dataclass(frozen=True)
class MimeLimits:
    max_depth: int = 20
    action: str = "quarantine"  # action of the built-in ``mime_too_deep`` rule
    # More MIME parts than this (counted on the raw bytes before any parsing, and again
    # while walking, attached messages included): too costly to inspect.
    max_parts: int = 1000


@dataclass(frozen=True)
class OutbreakConfig:
    auto: bool = False
    window: int = 600
    threshold: float = 0.2
    min_messages: int = 50


@dataclass(frozen=True)
class AntivirusConfig:
    socket: str = "unix:/run/passerelle/antivirus.sock"
    clamd: tuple[str, ...] = ("unix:/run/clamav/clamd.ctl",)
    connect_timeout: int = 2
    timeout: int = 60
    max_size: int = 25 * 1024 * 1024
    on_error: str = "tempfail"
    on_virus: str = "reject"
    on_oversize: str = "reject"
    direction: str = "inbound"
    hostname: str = field(default_factory=_socket.gethostname)
    quarantine_dir: str = "/var/spool/passerelle/quarantine"
    outbreak_state: str = "/var/lib/passerelle/outbreak.json"
    signature_dir: str = "/var/lib/clamav"
    # -odi: delivered before sendmail returns (no background child for a oneshot unit to kill)
    release_command: tuple[str, ...] = ("/usr/sbin/sendmail", "-Am", "-oi", "-odi")
    milter_timeout: int = 600
    log_level: str = "info"
    # Content the rules cannot open (unreadable, encrypted or unsupported archive, attached
    # message that cannot be decoded, too costly to inspect, clamd stopped at its limits,
    # an error while inspecting a part): quarantine, reject, tempfail or accept.
    uninspectable_action: str = "quarantine"
    # Budget of the rules' inspection of one message (seconds of the milter thread's CPU).
    inspect_time_budget: float = 2.0
    rules: tuple[Rule, ...] = ()
    # The console's runtime rules (written by its gateway side), loaded on top of ``rules``
    # and looked at every ``runtime_rules_interval`` seconds; "" = none.
    runtime_rules: str = ""
    runtime_rules_interval: int = 5
    archives: ArchiveLimits = ArchiveLimits()
    mime: MimeLimits = MimeLimits()
    outbreak: OutbreakConfig = OutbreakConfig()


def _endpoint_ok(spec: str) -> bool:
    if spec.startswith("unix:"):
        return len(spec) > 5
    if spec.startswith("/"):
        return True
    host, sep, port = spec.rpartition(":")
    return bool(sep and host and port.isdigit() and 0 < int(port) < 65536)


def _rule(data: Any, key: str) -> Rule:
    sec = Section(data, key)
    name = sec.str("name")
    action = sec.str("action", "quarantine", choices=ACTIONS)
    header = sec.str("header") if sec.has("header") else None
    pattern = None
    if header is not None:
        text = sec.str("pattern")
        try:
            pattern = re.compile(text)
        except re.error as exc:
            raise ConfigError(f"{key}.pattern", f"invalid regular expression: {exc}") from None
        if action == "strip":
            raise ConfigError(f"{key}.action", "strip applies to attachments, not to headers")
    elif sec.has("pattern"):
        raise ConfigError(f"{key}.pattern", "needs header")
    exts = frozenset(e.lower().lstrip(".") for e in sec.str_list("extensions"))
    types = frozenset(t.lower() for t in sec.str_list("types"))
    for t in sorted(types):
        if t not in KNOWN_TYPES:
            raise ConfigError(
                f"{key}.types", f"unknown type {t!r}; known: {', '.join(KNOWN_TYPES)}"
            )
    if header is not None and (exts or types):
        raise ConfigError(key, "a rule is either a header rule or an attachment rule")
    if header is None and not (exts or types):
        raise ConfigError(key, "needs header+pattern, extensions or types")
    archives = sec.bool("archives", True)
    sec.finish()
    return Rule(name, action, header, pattern, exts, types, archives)


def parse_config(data: dict[str, Any], source: str | None = None) -> AntivirusConfig:
    """Validate the ``[antivirus]`` table; errors name the offending key."""
    try:
        root = Section(data)
        sec = root.table("antivirus")
        root.finish()
        d = AntivirusConfig()
        clamd = sec.str_list("clamd", list(d.clamd))
        if not clamd:
            raise ConfigError("antivirus.clamd", "needs at least one clamd address")
        for spec in clamd:
            if not _endpoint_ok(spec):
                raise ConfigError(
                    "antivirus.clamd", f"bad address {spec!r} (unix:/path or host:port)"
                )
        release = sec.str_list("release_command", list(d.release_command))
        if not release:
            raise ConfigError("antivirus.release_command", "must not be empty")
        rules_data = sec._get("rules", [])
        if not isinstance(rules_data, list):
            raise ConfigError("antivirus.rules", "must be an array of tables ([[antivirus.rules]])")
        rules = tuple(_rule(r, f"antivirus.rules[{i}]") for i, r in enumerate(rules_data))
        names = [r.name for r in rules]
        for n in names:
            if names.count(n) > 1:
                raise ConfigError("antivirus.rules", f"duplicate rule name {n!r}")
        ar = sec.table("archives")
        archives = ArchiveLimits(
            max_depth=ar.int("max_depth", 3, minimum=0, maximum=20),
            max_members=ar.int("max_members", 1000, minimum=1),
            max_total_size=ar.int("max_total_size", 100 * 1024 * 1024, minimum=1),
            action=ar.str("action", "quarantine", choices=("reject", "quarantine")),
            max_nested_size=ar.int("max_nested_size", 32 * 1024 * 1024, minimum=1024),
        )
        ar.finish()
        mi = sec.table("mime")
        mime = MimeLimits(
            max_depth=mi.int("max_depth", 20, minimum=1, maximum=100),
            action=mi.str("action", "quarantine", choices=("reject", "quarantine")),
            max_parts=mi.int("max_parts", 1000, minimum=1),
        )
        mi.finish()
        ob = sec.table("outbreak")
        threshold = ob.float("threshold", 0.2)
        if not 0.0 < threshold <= 1.0:
            raise ConfigError("antivirus.outbreak.threshold", "must be in (0, 1]")
        outbreak = OutbreakConfig(
            auto=ob.bool("auto", False),
            window=ob.duration("window", "10m"),
            threshold=threshold,
            min_messages=ob.int("min_messages", 50, minimum=1),
        )
        ob.finish()
        cfg = AntivirusConfig(
            socket=sec.str("socket", d.socket),
            clamd=tuple(clamd),
            connect_timeout=sec.duration("connect_timeout", "2s"),
            timeout=sec.duration("timeout", "60s"),
            max_size=sec.int("max_size", d.max_size, minimum=1),
            on_error=sec.str("on_error", "tempfail", choices=("tempfail", "accept")),
            on_virus=sec.str("on_virus", "reject", choices=("reject", "quarantine")),
            on_oversize=sec.str("on_oversize", "reject", choices=("reject", "tempfail", "accept")),
            direction=sec.str("direction", "inbound", choices=("inbound", "outbound")),
            hostname=sec.str("hostname", d.hostname),
            quarantine_dir=sec.str("quarantine_dir", d.quarantine_dir),
            outbreak_state=sec.str("outbreak_state", d.outbreak_state),
            signature_dir=sec.str("signature_dir", d.signature_dir),
            release_command=tuple(release),
            milter_timeout=sec.duration("milter_timeout", "600s"),
            log_level=sec.str("log_level", "info", choices=("debug", "info", "warning", "error")),
            uninspectable_action=sec.str(
                "uninspectable_action", "quarantine", choices=UNINSPECTABLE_ACTIONS
            ),
            inspect_time_budget=sec.duration("inspect_time_budget", "2s"),
            rules=rules,
            runtime_rules=sec.str("runtime_rules", ""),
            runtime_rules_interval=sec.duration("runtime_rules_interval", "5s"),
            archives=archives,
            mime=mime,
            outbreak=outbreak,
        )
        sec.finish()
        if cfg.connect_timeout < 1 or cfg.timeout < 1:
            raise ConfigError("antivirus.timeout", "timeouts must be at least 1s")
        if cfg.runtime_rules and not cfg.runtime_rules.startswith("/"):
            raise ConfigError("antivirus.runtime_rules", "an absolute path (or empty: none)")
        if not 1 <= cfg.runtime_rules_interval <= 60:
            raise ConfigError("antivirus.runtime_rules_interval", "must be between 1s and 60s")
        if not 1 <= cfg.inspect_time_budget <= 60:
            raise ConfigError("antivirus.inspect_time_budget", "must be between 1s and 60s")
        return cfg
    except ConfigError as exc:
        if source and not exc.source:
            raise ConfigError(exc.key, exc.message, source) from None
        raise


def load_config(path: str | Path) -> AntivirusConfig:
    return parse_config(load_toml(path), str(path))
