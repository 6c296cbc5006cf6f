"""The console's HTTP plumbing on plain WSGI: a request read from its environ (query, form,
cookies, client address), a response (status, headers, body), cookies written with the
attributes a session cookie needs. No framework: the standard library only."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs

BODY_MAX = 256 * 1024  # bytes of a form
FIELDS_MAX = 2100  # fields of a form (a bulk action names up to 1000 messages)
SECURITY_HEADERS = (
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self';"
        " frame-ancestors 'none'; base-uri 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),
)


class BadRequest(ValueError):
    """A request that cannot be read (oversized or malformed body); ``status`` to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _parse(text: str) -> dict[str, list[str]]:
    try:
        return parse_qs(text, keep_blank_values=True, max_num_fields=FIELDS_MAX)
    except ValueError:
        raise BadRequest("too many form fields", 413) from None


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    form: dict[str, list[str]]
    cookies: dict[str, str]
    client: str

    def arg(self, name: str, default: str = "") -> str:
        values = self.query.get(name)
        return values[0] if values else default

    def field(self, name: str, default: str = "") -> str:
        values = self.form.get(name)
        return values[0] if values else default

    def fields(self, name: str) -> list[str]:
        return list(self.form.get(name, ()))


def client_address(environ: Mapping[str, Any], trusted_proxies: Iterable[str]) -> str:
    """The client's address: REMOTE_ADDR, or the last X-Forwarded-For entry when the peer is
    one of ``trusted_proxies`` (the Apache in front); an unreadable value is ``invalid``."""
    peer = str(environ.get("REMOTE_ADDR", ""))
    if peer in set(trusted_proxies):
        forwarded = str(environ.get("HTTP_X_FORWARDED_FOR", ""))
        last = forwarded.split(",")[-1].strip() if forwarded else ""
        if last:
            peer = last
    try:
        return str(ipaddress.ip_address(peer))
    except ValueError:
        return "invalid"


def read_request(environ: Mapping[str, Any], trusted_proxies: Iterable[str] = ()) -> Request:
    """The request in ``environ``; ``BadRequest`` for an oversized or unreadable body."""
    method = str(environ.get("REQUEST_METHOD", "GET")).upper()
    raw_path = str(environ.get("PATH_INFO", "/")) or "/"
    try:  # PEP 3333: PATH_INFO is latin-1 decoded bytes
        path = raw_path.encode("latin-1").decode("utf-8")
    except (UnicodeDecodeError, UnicodeEncodeError):
        raise BadRequest("the path is not UTF-8") from None
    query = _parse(str(environ.get("QUERY_STRING", "")))
    form: dict[str, list[str]] = {}
    if method == "POST":
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise BadRequest("bad Content-Length") from None
        if length < 0:
            raise BadRequest("bad Content-Length")
        if length > BODY_MAX:
            raise BadRequest("the form is too large", 413)
        ctype = str(environ.get("CONTENT_TYPE", "")).split(";")[0].strip().lower()
        body = environ["wsgi.input"].read(length) if length else b""
        if body and ctype != "application/x-www-form-urlencoded":
            raise BadRequest("forms are sent as application/x-www-form-urlencoded", 415)
        try:
            form = _parse(body.decode("utf-8"))
        except UnicodeDecodeError:
            raise BadRequest("the form is not UTF-8") from None
    cookies: dict[str, str] = {}
    header = str(environ.get("HTTP_COOKIE", ""))
    if header:
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(header)
        except CookieError:
            jar = SimpleCookie()
        cookies = {k: m.value for k, m in jar.items()}
    return Request(method, path, query, form, cookies, client_address(environ, trusted_proxies))


def cookie_header(
    name: str, value: str, max_age: int | None, path: str = "/", secure: bool = True
) -> tuple[str, str]:
    """A Set-Cookie header: HttpOnly, SameSite=Strict, Secure (the console is behind TLS);
    ``max_age`` 0 removes the cookie, None makes it last as long as the browser."""
    parts = [f"{name}={value}", f"Path={path}", "HttpOnly", "SameSite=Strict"]
    if secure:
        parts.append("Secure")
    if max_age is not None:
        parts.append(f"Max-Age={max(0, int(max_age))}")
    return ("Set-Cookie", "; ".join(parts))


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    cache: bool = False  # pages are never cached (they carry tokens and mail data)

    def status_line(self) -> str:
        try:
            return f"{self.status} {HTTPStatus(self.status).phrase}"
        except ValueError:
            return f"{self.status} Unknown"

    def all_headers(self) -> list[tuple[str, str]]:
        out = [("Content-Type", self.content_type), ("Content-Length", str(len(self.body)))]
        out.append(("Cache-Control", "max-age=3600" if self.cache else "no-store"))
        out.extend(SECURITY_HEADERS)
        out.extend(self.headers)
        return out


def redirect(location: str, headers: Sequence[tuple[str, str]] = ()) -> Response:
    """303 See Other to a path of this application (never to an address from input)."""
    if not location.startswith("/") or location.startswith("//"):
        location = "/"
    return Response(303, b"", "text/plain; charset=utf-8", [("Location", location), *headers])
