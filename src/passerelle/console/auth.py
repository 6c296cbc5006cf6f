"""Console accounts, roles, sessions, CSRF tokens and login rate limiting (pure logic).

- Password hashes come from the inventory (vault). The scheme is PBKDF2-SHA256 (in every
  Python's ``hashlib``), written as passlib writes it, so either tool makes one:
  ``$pbkdf2-sha256$<iterations>$<salt>$<checksum>`` (salt and checksum in passlib's base64:
  ``./`` alphabet, no padding). ``hash_password`` makes one, ``verify`` checks a password in
  constant time; a malformed hash is a ``HashFormatError`` that never shows the hash.
- Two roles: ``admin`` acts, ``viewer`` reads (``can``).
- Sessions are signed tokens (HMAC-SHA256 with a key derived from the server secret) that
  carry the account, when they were issued, when they expire, a random session id and where
  the account comes from: ``local`` (the inventory's), whose role is looked up in the
  accounts at each request, so a removed account or a changed role takes effect at once; or
  ``ldap`` (the organisation's directory, ``ldapauth.py``), whose role, read from its groups
  at login, is carried in the signed token; the console keeps it server-side and reads the
  groups again every ``[ldap] recheck`` (``session_store.recheck``). A logged-out session
  is revoked server-side (``session_store.SessionStore``).
- A CSRF token is the HMAC of the session id (another derived key): bound to the session,
  checked with ``compare_digest``.
- Logins are rate limited per client address (IPv6 by /64) and per account name, over a
  sliding window, with a bounded number of keys. A name that is not a local account is
  checked against the directory when there is one (``Login(directory=...)``): local accounts
  always win, so an admin logs in while the directory is down; the directory's refusals
  count in the same limits, and a directory that does not answer is ``DirectoryUnavailable``.

Every time is passed in (``now``): nothing here reads the clock.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import re
import secrets
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

SCHEME = "pbkdf2-sha256"
ITERATIONS = 600_000  # OWASP's figure for PBKDF2-HMAC-SHA256 (2023)
ITERATIONS_MIN = 10_000  # a hash with fewer is refused (too cheap to guess)
ITERATIONS_MAX = 10_000_000  # and with more (one login would hold a worker for seconds)
SALT_BYTES = 16
CHECKSUM_BYTES = 32
PASSWORD_MAX = 4096  # characters; longer is refused without hashing
SECRET_MIN = 32  # bytes of the server secret
SESSION_LIFETIME = 8 * 3600.0
CLOCK_SKEW = 60.0  # a token issued this far in the future is still accepted
TOKEN_MAX = 1024

ROLES = ("admin", "viewer")
# What each role may do; an action missing here is a bug of the caller (ValueError).
PERMISSIONS: dict[str, frozenset[str]] = {
    "view": frozenset(ROLES),  # every page, the request results, the audit log
    "export_rules": frozenset(ROLES),
    "release": frozenset({"admin"}),
    "delete": frozenset({"admin"}),
    "rescan": frozenset({"admin"}),
    "outbreak": frozenset({"admin"}),
    "rules": frozenset({"admin"}),
    "whitelist": frozenset({"admin"}),
    "unblock": frozenset({"admin"}),
}

_ACCOUNT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_AB64 = re.compile(r"[A-Za-z0-9./]+")
_ROUNDS = re.compile(r"[1-9][0-9]{0,9}")
_B64URL = re.compile(r"[A-Za-z0-9_-]+")


class HashFormatError(ValueError):
    """A password hash is not one this code reads (the message never contains the hash)."""


class AccountError(ValueError):
    """The inventory's accounts are malformed (the message names the account, not its hash)."""


class DirectoryUnavailable(Exception):
    """The directory did not answer a login (down, timeout, service bind refused); the
    message says why, for the log and the audit row (never shown to the person logging in)."""


SOURCES = ("local", "ldap")


# -- password hashes -----------------------------------------------------------------------


def _ab64_encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=").replace("+", ".")


def _ab64_decode(text: str) -> bytes:
    if not _AB64.fullmatch(text) or len(text) % 4 == 1:
        raise HashFormatError("password hash: salt or checksum is not base64")
    try:
        return base64.b64decode(text.replace(".", "+") + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise HashFormatError("password hash: salt or checksum is not base64") from None


@dataclass(frozen=True)
class PasswordHash:
    iterations: int
    salt: bytes
    checksum: bytes


def parse_hash(encoded: object) -> PasswordHash:
    """Read ``$pbkdf2-sha256$<iterations>$<salt>$<checksum>``; ``HashFormatError`` else."""
    if not isinstance(encoded, str) or len(encoded) > 512:
        raise HashFormatError(f"password hash: expected ${SCHEME}$<iterations>$<salt>$<checksum>")
    parts = encoded.split("$")
    if len(parts) != 5 or parts[0] != "" or parts[1] != SCHEME:
        raise HashFormatError(f"password hash: expected ${SCHEME}$<iterations>$<salt>$<checksum>")
    if not _ROUNDS.fullmatch(parts[2]):
        raise HashFormatError("password hash: iterations is not a number")
    iterations = int(parts[2])
    if not ITERATIONS_MIN <= iterations <= ITERATIONS_MAX:
        raise HashFormatError(
            f"password hash: iterations must be between {ITERATIONS_MIN} and {ITERATIONS_MAX}"
        )
    salt = _ab64_decode(parts[3])
    checksum = _ab64_decode(parts[4])
    if not 8 <= len(salt) <= 64:
        raise HashFormatError("password hash: the salt must be 8 to 64 bytes")
    if len(checksum) != CHECKSUM_BYTES:
        raise HashFormatError(f"password hash: the checksum must be {CHECKSUM_BYTES} bytes")
    return PasswordHash(iterations, salt, checksum)


def _derive(password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)


def hash_password(password: str, iterations: int = ITERATIONS, salt: bytes | None = None) -> str:
    """The hash an operator puts in the inventory (vault) for an account."""
    if not isinstance(password, str) or not password or len(password) > PASSWORD_MAX:
        raise ValueError(f"a password is 1 to {PASSWORD_MAX} characters")
    if not ITERATIONS_MIN <= iterations <= ITERATIONS_MAX:
        raise ValueError(f"iterations must be between {ITERATIONS_MIN} and {ITERATIONS_MAX}")
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    checksum = _derive(password, salt, iterations)
    return f"${SCHEME}${iterations}${_ab64_encode(salt)}${_ab64_encode(checksum)}"


def verify(password: object, encoded: str | PasswordHash) -> bool:
    """True when ``password`` matches; constant-time comparison. A malformed hash raises
    ``HashFormatError``; a password that is not text, empty or too long is simply wrong."""
    h = encoded if isinstance(encoded, PasswordHash) else parse_hash(encoded)
    if not isinstance(password, str) or not password or len(password) > PASSWORD_MAX:
        return False
    try:
        derived = _derive(password, h.salt, h.iterations)
    except UnicodeEncodeError:  # lone surrogates: not a password anyone could type
        return False
    return hmac.compare_digest(derived, h.checksum)


# -- accounts and roles --------------------------------------------------------------------


def can(role: str | None, action: str) -> bool:
    """May ``role`` do ``action``? Unknown roles may do nothing; an unknown action is a bug."""
    allowed = PERMISSIONS.get(action)
    if allowed is None:
        raise ValueError(f"unknown console action {action!r}")
    return role in allowed


@dataclass(frozen=True)
class Account:
    name: str
    role: str
    password: PasswordHash


def check_account_name(name: object) -> str:
    if not isinstance(name, str) or not _ACCOUNT.fullmatch(name):
        raise AccountError("account name: 1 to 64 letters, digits, '.', '_', '@' or '-'")
    return name


class Accounts:
    """The inventory's local accounts: ``[{name, role, password_hash}, ...]``."""

    def __init__(self, accounts: Iterable[Account]) -> None:
        self._by_name: dict[str, Account] = {}
        for a in accounts:
            if a.name in self._by_name:
                raise AccountError(f"account {a.name!r} is defined twice")
            self._by_name[a.name] = a
        self._dummy = parse_hash(hash_password(secrets.token_hex(16), self._cost()))

    def _cost(self) -> int:
        costs = [a.password.iterations for a in self._by_name.values()]
        return max(costs) if costs else ITERATIONS

    @classmethod
    def from_inventory(cls, items: object) -> Accounts:
        if not isinstance(items, (list, tuple)):
            raise AccountError("accounts must be a list of {name, role, password_hash}")
        out = []
        for i, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise AccountError(f"account #{i + 1} is not a mapping")
            unknown = set(item) - {"name", "role", "password_hash"}
            if unknown:
                raise AccountError(f"account #{i + 1}: unknown keys {', '.join(sorted(unknown))}")
            name = check_account_name(item.get("name"))
            role = item.get("role")
            if role not in ROLES:
                raise AccountError(f"account {name!r}: role must be one of {', '.join(ROLES)}")
            try:
                pw = parse_hash(item.get("password_hash"))
            except HashFormatError as exc:
                raise AccountError(f"account {name!r}: {exc}") from None
            out.append(Account(name, str(role), pw))
        return cls(out)

    def get(self, name: str) -> Account | None:
        return self._by_name.get(name)

    def role_of(self, name: str) -> str | None:
        a = self._by_name.get(name)
        return None if a is None else a.role

    def authenticate(self, name: object, password: object) -> Account | None:
        """The account when the password matches; an unknown name costs the same time."""
        account = self._by_name.get(name) if isinstance(name, str) else None
        if account is None:
            verify(password, self._dummy)
            return None
        return account if verify(password, account.password) else None


# -- sessions and CSRF ---------------------------------------------------------------------


@dataclass(frozen=True)
class Session:
    account: str
    issued: float
    expires: float
    sid: str  # random session id (hex), what the CSRF token is bound to
    source: str = "local"  # local: the inventory's account; ldap: the directory's
    role: str = ""  # an ldap session's role (from its groups at login); "" for local


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64url(text: str) -> bytes | None:
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        return None
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


class Sessions:
    """Issue and check session tokens and their CSRF tokens with the server secret."""

    def __init__(self, secret: bytes, lifetime: float = SESSION_LIFETIME) -> None:
        if not isinstance(secret, bytes) or len(secret) < SECRET_MIN:
            raise ValueError(f"the console's secret must be at least {SECRET_MIN} bytes")
        if lifetime <= 0:
            raise ValueError("session lifetime must be positive")
        self.lifetime = lifetime
        self._session_key = hmac.new(secret, b"passerelle console session v1", "sha256").digest()
        self._csrf_key = hmac.new(secret, b"passerelle console csrf v1", "sha256").digest()

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._session_key, payload, "sha256").digest()

    def issue(
        self, account: str, now: float, source: str = "local", role: str = ""
    ) -> tuple[str, Session]:
        """A new session for ``account`` (after a successful login): (token, session).
        ``source`` ``ldap`` carries the ``role`` the directory's groups gave."""
        if source not in SOURCES:
            raise ValueError(f"unknown account source {source!r}")
        if (source == "ldap") != (role in ROLES):
            raise ValueError("an ldap session carries its role, a local one none")
        session = Session(
            check_account_name(account),
            float(now),
            float(now) + self.lifetime,
            secrets.token_hex(16),
            source,
            role,
        )
        payload = (
            f"v2|{session.account}|{session.issued!r}|{session.expires!r}|{session.sid}"
            f"|{session.source}|{session.role}"
        )
        data = payload.encode("ascii")
        return f"{_b64url(data)}.{_b64url(self._mac(data))}", session

    def check(self, token: object, now: float) -> Session | None:
        """The session of a token, or None: forged, malformed, expired or issued in the future."""
        if not isinstance(token, str) or len(token) > TOKEN_MAX or token.count(".") != 1:
            return None
        data_text, mac_text = token.split(".")
        data, mac = _unb64url(data_text), _unb64url(mac_text)
        if data is None or mac is None or not hmac.compare_digest(mac, self._mac(data)):
            return None
        try:
            fields = data.decode("ascii").split("|")
            if fields[0] == "v1" and len(fields) == 5:  # issued before LDAP logins: local
                fields += ["local", ""]
            version, account, issued, expires, sid, source, role = fields
            session = Session(account, float(issued), float(expires), sid, source, role)
        except ValueError:  # signed by us, so only an older format could land here
            return None
        if version not in ("v1", "v2") or source not in SOURCES:
            return None
        if (source == "ldap") != (role in ROLES):
            return None
        if not session.issued - CLOCK_SKEW <= now < session.expires:
            return None
        return session

    def csrf_token(self, session: Session) -> str:
        """The token every form of this session carries."""
        mac = hmac.new(self._csrf_key, session.sid.encode("ascii"), "sha256").digest()
        return _b64url(mac)

    def check_csrf(self, session: Session | None, token: object) -> bool:
        if session is None or not isinstance(token, str) or len(token) > 128:
            return False
        if not token.isascii():
            return False
        return hmac.compare_digest(token.encode("ascii"), self.csrf_token(session).encode("ascii"))


# -- login rate limiting -----------------------------------------------------------------


class SlidingWindow:
    """At most ``limit`` events per key in any ``window`` seconds; at most ``max_keys`` keys
    kept (the least recently seen are forgotten first, after those whose events expired)."""

    def __init__(self, limit: int, window: float, max_keys: int = 10_000) -> None:
        if limit < 1 or window <= 0 or max_keys < 1:
            raise ValueError("limit, window and max_keys must be positive")
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._events: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._events)

    def _prune(self, key: str, now: float) -> deque[float] | None:
        q = self._events.get(key)
        if q is None:
            return None
        while q and q[0] <= now - self.window:
            q.popleft()
        if not q:
            del self._events[key]
            return None
        return q

    def retry_after(self, key: str, now: float) -> float:
        """Seconds before ``key`` may try again (0: now)."""
        q = self._prune(key, now)
        if q is None or len(q) < self.limit:
            return 0.0
        return max(0.0, q[0] + self.window - now)

    def hit(self, key: str, now: float) -> None:
        q = self._prune(key, now)
        if q is None:
            q = self._events[key] = deque(maxlen=self.limit)
        q.append(now)
        self._events.move_to_end(key)
        if len(self._events) > self.max_keys:
            self._evict(now)

    def _evict(self, now: float) -> None:
        for key in list(self._events)[: max(1, len(self._events) // 10)]:
            self._prune(key, now)  # those whose events all expired go first
        while len(self._events) > self.max_keys:
            self._events.popitem(last=False)

    def clear(self, key: str) -> None:
        self._events.pop(key, None)


def client_key(address: object) -> str:
    """The rate-limit key of a client address: IPv4 as is, IPv6 by /64."""
    try:
        ip = ipaddress.ip_address(str(address).strip())
    except ValueError:
        return "invalid"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def account_key(name: object) -> str:
    return str(name).casefold()[:128]


@dataclass(frozen=True)
class LoginResult:
    ok: bool
    message: str  # for the login page: never tells whether the account exists
    token: str | None = None
    session: Session | None = None
    retry_after: float = 0.0
    unavailable: bool = False  # the directory did not answer (the page says so: 503)
    detail: str = ""  # why, for the log and the audit row only


WRONG = "wrong account name or password"
UNAVAILABLE = "the directory is unavailable: try again in a moment (local accounts still log in)"


class DirectoryUser(Protocol):
    """What a directory says about a login it accepted (``ldapauth.LdapUser``)."""

    name: str
    role: str


class Directory(Protocol):
    """A directory that checks logins (``ldapauth.LdapAuthenticator``) and, every
    ``recheck`` seconds, an LDAP session's groups."""

    @property
    def recheck(self) -> float:
        """Seconds between two reads of an LDAP session's groups."""

    def authenticate(self, name: str, password: object) -> DirectoryUser | None:
        """The user when the password is right and a group gives a role, else None;
        ``DirectoryUnavailable`` when the directory does not answer."""

    def role_of(self, name: str) -> DirectoryUser | None:
        """The user now (its role from its groups), None when gone or in no console group;
        ``DirectoryUnavailable`` when the directory does not answer."""


class Login:
    """The login form's logic: rate limits, password check (local account, else the
    directory when there is one), session."""

    def __init__(
        self,
        accounts: Accounts,
        sessions: Sessions,
        per_client: SlidingWindow | None = None,
        per_account: SlidingWindow | None = None,
        directory: Directory | None = None,
    ) -> None:
        self.accounts = accounts
        self.sessions = sessions
        # "is None", not "or": an empty SlidingWindow is falsy (it has a length)
        self.per_client = SlidingWindow(20, 300.0) if per_client is None else per_client
        self.per_account = SlidingWindow(5, 300.0) if per_account is None else per_account
        self.directory = directory

    def _refused(self, ck: str, ak: str, now: float) -> LoginResult:
        self.per_client.hit(ck, now)
        self.per_account.hit(ak, now)
        return LoginResult(False, WRONG)

    def attempt(self, name: object, password: object, client: object, now: float) -> LoginResult:
        ck, ak = client_key(client), account_key(name)
        wait = max(self.per_client.retry_after(ck, now), self.per_account.retry_after(ak, now))
        if wait > 0:
            return LoginResult(
                False, f"too many failed logins: try again in {int(wait) + 1} s", retry_after=wait
            )
        local = isinstance(name, str) and self.accounts.get(name) is not None
        if local or self.directory is None:
            account = self.accounts.authenticate(name, password)
            if account is None:
                return self._refused(ck, ak, now)
            self.per_account.clear(ak)
            token, session = self.sessions.issue(account.name, now)
            return LoginResult(True, "", token, session)
        if not isinstance(name, str) or not _ACCOUNT.fullmatch(name):
            return self._refused(ck, ak, now)  # not a name a session can carry
        try:
            user = self.directory.authenticate(name, password)
        except DirectoryUnavailable as exc:
            # The client's limit only: a dead directory must not lock the account out.
            self.per_client.hit(ck, now)
            return LoginResult(False, UNAVAILABLE, unavailable=True, detail=str(exc))
        if user is None or user.role not in ROLES:
            return self._refused(ck, ak, now)
        self.per_account.clear(ak)
        token, session = self.sessions.issue(name, now, "ldap", user.role)
        return LoginResult(True, "", token, session)


def main(argv: list[str] | None = None) -> int:
    """``python -m passerelle.console.auth``: print the hash of a password read twice."""
    import getpass

    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Again: "):
        print("the passwords differ")
        return 1
    try:
        print(hash_password(first))
    except ValueError as exc:
        print(exc)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
