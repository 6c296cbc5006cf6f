"""Shared helpers for the validated TOML configuration files of Passerelle's daemons.

Each area (greylist, spam, antivirus, ...) defines its own dataclass and uses these helpers so
that every error names the file and the offending key, the way ``check-config`` reports it.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from passerelle.durations import DurationError, parse_duration

# The package's one TOML reader (the tests import it from here): the standard library's from
# Python 3.11, its backport tomli (the same API; python3-tomli on the hosts) on EL 9's 3.9.
if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


class ConfigError(ValueError):
    """A configuration problem; ``key`` is the dotted name of the offending setting."""

    def __init__(self, key: str, message: str, source: str | None = None) -> None:
        self.key = key
        self.message = message
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key}: {message}" if key else f"{where}{message}")


@contextlib.contextmanager
def naming_file(source: str | None) -> Iterator[None]:
    """A ConfigError raised inside that names no file is raised again naming ``source``."""
    try:
        yield
    except ConfigError as exc:
        if source and exc.source is None:
            raise ConfigError(exc.key, exc.message, source) from None
        raise


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file; a missing file or a syntax error becomes a ConfigError."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("", "file not found", str(p)) from None
    except PermissionError:
        raise ConfigError("", "permission denied", str(p)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"not valid TOML: {exc}", str(p)) from None


class Section:
    """Typed access to one table of a config, remembering which keys were used.

    ``finish()`` raises on keys nobody asked for, so a typo (``min_dealy``) is an error
    instead of a silently ignored setting.
    """

    def __init__(self, data: Mapping[str, Any] | None, prefix: str = "") -> None:
        if data is not None and not isinstance(data, Mapping):
            raise ConfigError(prefix, "must be a table")
        self._data: Mapping[str, Any] = data or {}
        self._prefix = prefix
        self._used: set[str] = set()

    def _key(self, name: str) -> str:
        return f"{self._prefix}.{name}" if self._prefix else name

    def _get(self, name: str, default: Any) -> Any:
        self._used.add(name)
        return self._data.get(name, default)

    def has(self, name: str) -> bool:
        return name in self._data

    def str(self, name: str, default: str | None = None, choices: tuple[str, ...] = ()) -> str:
        v = self._get(name, default)
        if v is None:
            raise ConfigError(self._key(name), "is required")
        if not isinstance(v, str):
            raise ConfigError(self._key(name), f"must be a string, got {v!r}")
        if choices and v not in choices:
            raise ConfigError(self._key(name), f"must be one of {', '.join(choices)}; got {v!r}")
        return v

    def int(
        self,
        name: str,
        default: int | None = None,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int:
        v = self._get(name, default)
        if v is None:
            raise ConfigError(self._key(name), "is required")
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(self._key(name), f"must be an integer, got {v!r}")
        if minimum is not None and v < minimum:
            raise ConfigError(self._key(name), f"must be >= {minimum}, got {v}")
        if maximum is not None and v > maximum:
            raise ConfigError(self._key(name), f"must be <= {maximum}, got {v}")
        return v

    def float(self, name: str, default: float | None = None) -> float:
        v = self._get(name, default)
        if v is None:
            raise ConfigError(self._key(name), "is required")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(self._key(name), f"must be a number, got {v!r}")
        return float(v)

    def bool(self, name: str, default: bool | None = None) -> bool:
        v = self._get(name, default)
        if not isinstance(v, bool):
            raise ConfigError(self._key(name), f"must be true or false, got {v!r}")
        return v

    def duration(self, name: str, default: str | int | None = None) -> int:
        v = self._get(name, default)
        if v is None:
            raise ConfigError(self._key(name), "is required")
        try:
            return parse_duration(v)
        except DurationError as exc:
            raise ConfigError(self._key(name), str(exc)) from None

    def str_list(self, name: str, default: list[str] | None = None) -> list[str]:
        v = self._get(name, default if default is not None else [])
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise ConfigError(self._key(name), f"must be a list of strings, got {v!r}")
        return list(v)

    def table(self, name: str) -> Section:
        v = self._get(name, None)
        return Section(v, self._key(name))

    def finish(self) -> None:
        unknown = sorted(set(self._data) - self._used)
        if unknown:
            raise ConfigError(self._key(unknown[0]), "unknown setting")


_Config = TypeVar("_Config")


def load_for_command(path: str, loader: Callable[[str], _Config]) -> _Config | None:
    """The configuration a subcommand runs with, or None once the error is printed
    (``error: FILE: key: message`` on stderr; the command then exits 1, no traceback)."""
    try:
        return loader(path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def check_config_command(path: str, loader: Callable[[str], object]) -> int:
    """The ``check-config FILE`` subcommand every area has (Ansible's ``validate:``).

    Prints ``FILE: OK`` and returns 0, or prints the error naming the file and key and
    returns 1.
    """
    try:
        loader(path)
    except ConfigError as exc:
        print(str(exc) if exc.source else f"{path}: {exc}", file=sys.stderr)
        return 1
    print(f"{path}: OK")
    return 0
