"""The backup configuration, ``/etc/passerelle/backup.toml`` (role ``backup``)::

[backup]
directory = "/var/backups/passerelle"  # one folder per backup, root only (0700)
keep_days = 14                  # backups of the 14 most recent days that have one
host = "gw1"                    # recorded in each manifest (default: the host name)
# The database host: databases dumped (mariadb-dump --single-transaction), and how the
# tools reach the server (root through the unix socket unless a defaults file says else).
databases = ["greylist", "spamassassin"]
mariadb_defaults_file = ""      # --defaults-extra-file (user, password, socket)
dump_command = "mariadb-dump"
client_command = "mariadb"
# Gateways and relays: the quarantine named by the antivirus config, the embedded
# greylist store named by the greylist config (when it is SQLite); "" = none.
antivirus_config = "/etc/passerelle/antivirus.toml"
greylist_config = "/etc/passerelle/greylist.toml"

[backup.folders]                # other folders archived as they are: label = path
config = "/etc/passerelle"
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field
from pathlib import Path

from passerelle.config import ConfigError, Section, load_toml, naming_file

DEFAULT_PATH = "/etc/passerelle/backup.toml"
_LABEL = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
_DB = re.compile(r"^[A-Za-z0-9_$]{1,64}$")


@dataclass(frozen=True)
class BackupConfig:
    directory: str = "/var/backups/passerelle"
    keep_days: int = 14
    host: str = ""
    databases: tuple[str, ...] = ()
    mariadb_defaults_file: str = ""
    dump_command: str = "mariadb-dump"
    client_command: str = "mariadb"
    antivirus_config: str = ""
    greylist_config: str = ""
    folders: dict[str, str] = field(default_factory=dict)

    @property
    def host_name(self) -> str:
        return self.host or socket.gethostname().split(".")[0]


def _absolute(key: str, value: str, empty_ok: bool = True) -> str:
    if value == "" and empty_ok:
        return value
    if not value.startswith("/") or "\0" in value:
        raise ConfigError(key, f"must be an absolute path, got {value!r}")
    return value


def parse_config(data: dict[str, object]) -> BackupConfig:
    top = Section(data)
    b = top.table("backup")
    directory = _absolute("backup.directory", b.str("directory", BackupConfig.directory), False)
    if Path(directory) == Path("/"):
        raise ConfigError("backup.directory", "must not be /")
    databases = b.str_list("databases", [])
    for db in databases:
        if not _DB.match(db):
            raise ConfigError("backup.databases", f"not a database name: {db!r}")
    if len(set(databases)) != len(databases):
        raise ConfigError("backup.databases", "a database is listed twice")
    folders_sec = b.table("folders")
    folders = {}
    for label in sorted(data.get("backup", {}).get("folders", {}) or {}):  # type: ignore[union-attr]
        if not _LABEL.match(label) or label == "quarantine":
            raise ConfigError(f"backup.folders.{label}", "not a usable label (quarantine is taken)")
        folders[label] = _absolute(f"backup.folders.{label}", folders_sec.str(label), False)
    folders_sec.finish()
    cfg = BackupConfig(
        directory=directory,
        keep_days=b.int("keep_days", 14, minimum=1, maximum=3650),
        host=b.str("host", ""),
        databases=tuple(databases),
        mariadb_defaults_file=_absolute(
            "backup.mariadb_defaults_file", b.str("mariadb_defaults_file", "")
        ),
        dump_command=b.str("dump_command", "mariadb-dump"),
        client_command=b.str("client_command", "mariadb"),
        antivirus_config=_absolute("backup.antivirus_config", b.str("antivirus_config", "")),
        greylist_config=_absolute("backup.greylist_config", b.str("greylist_config", "")),
        folders=folders,
    )
    for key in ("dump_command", "client_command"):
        if not getattr(cfg, key).strip():
            raise ConfigError(f"backup.{key}", "must not be empty")
    b.finish()
    top.finish()
    return cfg


def load_config(path: str = DEFAULT_PATH) -> BackupConfig:
    with naming_file(path):
        return parse_config(load_toml(path))
