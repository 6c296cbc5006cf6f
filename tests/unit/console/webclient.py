"""A small in-test client for the console's WSGI application: environ dicts built by hand,
Set-Cookie read back into a cookie jar, the CSRF token taken from the page's HTML."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from urllib.parse import urlencode

_CSRF = re.compile(r'name="csrf" value="([^"]*)"')
_LOGIN_TOKEN = re.compile(r'name="token" value="([^"]*)"')


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    text: str

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def set_cookies(self) -> list[str]:
        return [v for k, v in self.headers if k.lower() == "set-cookie"]

    def cookie(self, name: str) -> str | None:
        """The Set-Cookie header for ``name`` (None when the reply sets no such cookie)."""
        found = [v for v in self.set_cookies() if v.split("=", 1)[0] == name]
        assert len(found) <= 1, f"{name} set twice: {found}"
        return found[0] if found else None

    def csrf(self) -> str:
        m = _CSRF.search(self.text)
        assert m, "no CSRF token in the page"
        return m.group(1)


@dataclass
class Client:
    app: object
    client: str = "192.0.2.10"
    cookies: dict[str, str] = field(default_factory=dict)

    def request(self, method: str, path: str, form=None, query=None, headers=None) -> Reply:
        body = urlencode(form or [], doseq=True).encode() if method == "POST" else b""
        environ = {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "QUERY_STRING": urlencode(query or {}, doseq=True),
            "REMOTE_ADDR": self.client,
            "CONTENT_TYPE": "application/x-www-form-urlencoded",
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
            "SERVER_NAME": "console.test",
            "SERVER_PORT": "443",
            "wsgi.url_scheme": "https",
        }
        if self.cookies:
            environ["HTTP_COOKIE"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        environ.update(headers or {})
        got: dict = {}

        def start_response(status, hdrs):
            got["status"], got["headers"] = status, hdrs

        chunks = self.app(environ, start_response)
        reply = Reply(int(got["status"].split()[0]), got["headers"], b"".join(chunks).decode())
        for cookie in reply.set_cookies():
            name, _, rest = cookie.partition("=")
            value = rest.split(";")[0]
            if "Max-Age=0" in cookie:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return reply

    def get(self, path: str, **query) -> Reply:
        return self.request("GET", path, query=query)

    def post(self, path: str, form=None) -> Reply:
        return self.request("POST", path, form=form)

    def login(self, name: str, password: str) -> Reply:
        page = self.get("/login")
        token = _LOGIN_TOKEN.search(page.text).group(1)
        return self.post("/login", {"token": token, "name": name, "password": password})
