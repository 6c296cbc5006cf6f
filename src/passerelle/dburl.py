"""Database URLs: ``sqlite:///relative`` / ``sqlite:////absolute`` and
``mysql://user:password@host[:port]/db[?unix_socket=/path]`` (user and password URL-quoted).

Read by the greylist store (``greylist.store``) and the connection guard's shared count
sink (``connwatch.sink``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


class StoreURLError(ValueError):
    """A store URL that cannot be used."""


@dataclass(frozen=True)
class StoreURL:
    scheme: str  # sqlite | mysql
    path: str = ""  # sqlite file
    user: str = ""
    password: str = ""
    host: str = "localhost"
    port: int = 3306
    database: str = ""
    unix_socket: str = ""

    def pymysql_args(self, timeout: float) -> dict[str, Any]:
        """PyMySQL's connect() arguments for this mysql:// URL, every wait bounded by timeout."""
        kw: dict[str, Any] = {
            "user": self.user,
            "password": self.password,
            "database": self.database,
            "connect_timeout": timeout,
            "read_timeout": timeout,
            "write_timeout": timeout,
            "autocommit": True,
            "charset": "utf8mb4",
        }
        if self.unix_socket:
            kw["unix_socket"] = self.unix_socket
        else:
            kw["host"] = self.host
            kw["port"] = self.port
        return kw

    def redacted(self) -> str:
        if self.scheme == "sqlite":
            return f"sqlite:///{self.path}"
        where = f"unix:{self.unix_socket}" if self.unix_socket else f"{self.host}:{self.port}"
        return f"mysql://{self.user}:***@{where}/{self.database}"


def parse_store_url(url: str) -> StoreURL:
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if not path:
            raise StoreURLError("sqlite URL needs a path: sqlite:////var/lib/x.sqlite")
        return StoreURL("sqlite", path=path)
    if url.startswith(("mysql://", "mariadb://")):
        parts = urlsplit(url)
        try:
            port = parts.port or 3306
        except ValueError:
            raise StoreURLError("bad port in mysql URL") from None
        db = unquote(parts.path.lstrip("/"))
        if not db or "/" in db:
            raise StoreURLError("mysql URL needs a database: mysql://user:pw@host/db")
        if not parts.username:
            raise StoreURLError("mysql URL needs a user: mysql://user:pw@host/db")
        query = parse_qs(parts.query)
        unknown = set(query) - {"unix_socket"}
        if unknown:
            raise StoreURLError(f"unknown mysql URL parameter {sorted(unknown)[0]!r}")
        sock = query.get("unix_socket", [""])[0]
        return StoreURL(
            "mysql",
            user=unquote(parts.username),
            password=unquote(parts.password or ""),
            host=parts.hostname or "localhost",
            port=port,
            database=db,
            unix_socket=sock,
        )
    raise StoreURLError(
        f"unsupported store URL {url.split(':', 1)[0]!r}: use sqlite:/// or mysql://"
    )
