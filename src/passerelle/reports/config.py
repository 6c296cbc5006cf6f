"""``/etc/passerelle/ops.toml``: metrics, status screen and daily report of one host.

Every key with its default (``passerelle ops check-config FILE`` validates it)::

    [ops]
    hostname = "<hostname>"
    logs = ["/var/log/mail.log"]            # mail logs (with their rotations)
    queue_dirs = ["/var/spool/mqueue", "/var/spool/mqueue-client"]
    units = ["sendmail", "passerelle-greylist", "passerelle-antivirus", "passerelle-spam",
             "spamd", "clamav-daemon", "clamav-freshclam", "mariadb"]  # shown if installed
    signature_dir = "/var/lib/clamav"       # age of the newest signature file
    connwatch_state = "/var/lib/passerelle/connwatch.json"
    log_level = "info"

    [metrics]
    textfile_dir = "/var/lib/prometheus/node-exporter"   # node_exporter textfile collector
    file = "passerelle.prom"
    state = "/var/lib/passerelle/metrics.json"           # log offset and counters
    first_read_max = 268435456              # bytes of an existing log read on the first run

    [report]
    output_dir = "/var/lib/passerelle/reports"           # YYYY-MM-DD.html
    mail_to = []                            # admins; empty: kept on disk only
    mail_from = "root"
    mail_command = ["/usr/sbin/sendmail", "-oi", "-t"]
    top_clients = 20
    suggest_min_passes = 3                  # whitelist suggestion: groups that came back
    suggest_min_ratio = 0.9                 # at least this often after being delayed
    keep_days = 400                         # older reports are deleted
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from passerelle.config import ConfigError, Section, load_toml, naming_file

DEFAULT_CONFIG = "/etc/passerelle/ops.toml"
DEFAULT_UNITS = (
    "sendmail",
    "passerelle-greylist",
    "passerelle-antivirus",
    "passerelle-spam",
    "spamd",
    "clamav-daemon",
    "clamav-freshclam",
    "mariadb",
)


@dataclass(frozen=True)
class MetricsConfig:
    textfile_dir: str = "/var/lib/prometheus/node-exporter"
    file: str = "passerelle.prom"
    state: str = "/var/lib/passerelle/metrics.json"
    first_read_max: int = 256 << 20


@dataclass(frozen=True)
class ReportConfig:
    output_dir: str = "/var/lib/passerelle/reports"
    mail_to: tuple[str, ...] = ()
    mail_from: str = "root"
    mail_command: tuple[str, ...] = ("/usr/sbin/sendmail", "-oi", "-t")
    top_clients: int = 20
    suggest_min_passes: int = 3
    suggest_min_ratio: float = 0.9
    keep_days: int = 400


@dataclass(frozen=True)
class OpsConfig:
    hostname: str = ""
    logs: tuple[str, ...] = ("/var/log/mail.log",)
    queue_dirs: tuple[str, ...] = ("/var/spool/mqueue", "/var/spool/mqueue-client")
    units: tuple[str, ...] = DEFAULT_UNITS
    signature_dir: str = "/var/lib/clamav"
    connwatch_state: str = "/var/lib/passerelle/connwatch.json"
    log_level: str = "info"
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    report: ReportConfig = field(default_factory=ReportConfig)


def _abs(key: str, value: str) -> str:
    if not value.startswith("/"):
        raise ConfigError(key, f"must be an absolute path, got {value!r}")
    return value


def parse_config(data: dict[str, Any], source: str | None = None) -> OpsConfig:
    with naming_file(source):
        top = Section(data)
        o = top.table("ops")
        d = OpsConfig()
        logs = [_abs("ops.logs", p) for p in o.str_list("logs", list(d.logs))]
        if not logs:
            raise ConfigError("ops.logs", "needs at least one log file")
        queue_dirs = [
            _abs("ops.queue_dirs", p) for p in o.str_list("queue_dirs", list(d.queue_dirs))
        ]
        units = o.str_list("units", list(d.units))
        for u in units:
            if not u or "/" in u or " " in u:
                raise ConfigError("ops.units", f"not a systemd unit name: {u!r}")
        m = top.table("metrics")
        dm = MetricsConfig()
        fname = m.str("file", dm.file)
        if "/" in fname or not fname.endswith(".prom"):
            raise ConfigError("metrics.file", f"must be a file name ending in .prom, got {fname!r}")
        metrics = MetricsConfig(
            textfile_dir=_abs("metrics.textfile_dir", m.str("textfile_dir", dm.textfile_dir)),
            file=fname,
            state=_abs("metrics.state", m.str("state", dm.state)),
            first_read_max=m.int("first_read_max", dm.first_read_max, minimum=0),
        )
        r = top.table("report")
        dr = ReportConfig()
        mail_to = r.str_list("mail_to", [])
        for addr in mail_to:
            if "@" not in addr and addr != "root":
                raise ConfigError("report.mail_to", f"not a mail address: {addr!r}")
        mail_command = r.str_list("mail_command", list(dr.mail_command))
        if not mail_command:
            raise ConfigError("report.mail_command", "must not be empty")
        ratio = r.float("suggest_min_ratio", dr.suggest_min_ratio)
        if not 0 < ratio <= 1:
            raise ConfigError("report.suggest_min_ratio", f"must be in (0, 1], got {ratio}")
        report = ReportConfig(
            output_dir=_abs("report.output_dir", r.str("output_dir", dr.output_dir)),
            mail_to=tuple(mail_to),
            mail_from=r.str("mail_from", dr.mail_from),
            mail_command=tuple(mail_command),
            top_clients=r.int("top_clients", dr.top_clients, minimum=1, maximum=1000),
            suggest_min_passes=r.int("suggest_min_passes", dr.suggest_min_passes, minimum=1),
            suggest_min_ratio=ratio,
            keep_days=r.int("keep_days", dr.keep_days, minimum=1),
        )
        cfg = OpsConfig(
            hostname=o.str("hostname", "") or socket.gethostname(),
            logs=tuple(logs),
            queue_dirs=tuple(queue_dirs),
            units=tuple(units),
            signature_dir=_abs("ops.signature_dir", o.str("signature_dir", d.signature_dir)),
            connwatch_state=_abs(
                "ops.connwatch_state", o.str("connwatch_state", d.connwatch_state)
            ),
            log_level=o.str("log_level", d.log_level, choices=("debug", "info", "warning")),
            metrics=metrics,
            report=report,
        )
        for s in (o, m, r, top):
            s.finish()
    return cfg


def load_config(path: str | Path) -> OpsConfig:
    return parse_config(load_toml(path), str(path))
