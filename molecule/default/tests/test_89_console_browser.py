"""The console in a real browser (issue 17): Debian's ``chromium``, headless, driven by Selenium
through Debian's ``chromedriver`` from the controller, against mon1's Apache over HTTPS and the
real fleet behind it. Each step is what a person on call does: fill the form, press the
button, read the page. Screenshots of the main pages are saved under ``docs/screenshots/``
(PASSERELLE_SCREENSHOTS overrides the folder; the README shows them).

Only the first .exe waits for the gateway side's timer (a message held shows in the console
within a minute); the other steps run a pass of it at once (``_sync_now``), as an operator
can with ``systemctl start passerelle-console-sync``.

The browser trusts mon1's certificate by its public key only (``--ignore-certificate-errors-
spki-list``), and only after Python has checked that certificate against the lab's CA.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import socket
import ssl
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from labsmtp import NET, PROJECT, mailbox_has, message, needs, podman_exec, smtp, wait_for_mail
from test_30_greylist import CONFIG as GREYLIST_CONFIG
from test_30_greylist import SOURCE, _assert_accepted, _assert_greylisted, _send, _sender
from test_40_antivirus import _send_exe_to_gw1, mime_message, new_tag, quarantined
from test_85_console import ADMIN, BASE, LAB_PKI, SYNC_TIMER, VIEWER

MON_ADDRESS = f"{NET}.61"  # mon1 (inventory/lab/hosts.yml: lab_ip_suffix 61)
ORIGIN = f"https://{MON_ADDRESS}"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
HISTORY_DEADLINE = 400  # s: the greylist report and history are read every 5 minutes
SHOTS = Path(os.environ.get("PASSERELLE_SCREENSHOTS", PROJECT / "docs" / "screenshots"))
SYNC_DEADLINE = 90  # s: the gateway side runs every minute
SYNC_SERVICE = "passerelle-console-sync.service"
GATEWAYS = ("gw1", "gw2")
WHITELIST_REFRESH = 100  # s: the milter reloads the whitelist table every 60 s (lab default)
TRACE_KINDS = ("greylist", "from", "antivirus", "spam", "sent")

pytestmark = needs("mon1", "gw1", "gw2", "db1", "mailstore1", "outside")


def _pinned_key() -> str:
    """The base64 SHA-256 of the public key of the certificate mon1's Apache serves, once
    Python has verified that certificate against the lab's CA (the name is an address here:
    the chain is what is checked, the key is what the browser is then told to trust)."""
    ctx = ssl.create_default_context(cafile=f"{LAB_PKI}/ca.crt")
    ctx.check_hostname = False
    with (
        socket.create_connection((MON_ADDRESS, 443), timeout=30) as raw,
        ctx.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    spki = (
        x509.load_der_x509_certificate(der)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture(scope="module")
def chrome() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for path in (CHROMIUM, CHROMEDRIVER):
        assert shutil.which(path), f"{path} missing: scripts/host-setup installs it"
    profile = tempfile.mkdtemp(prefix="passerelle-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root on the CI machine
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        f"--user-data-dir={profile}",
        f"--ignore-certificate-errors-spki-list={_pinned_key()}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


class Console:
    """The console as a person sees it in ``chrome``."""

    def __init__(self, driver: Any) -> None:
        self.d = driver

    def open(self, path: str) -> None:
        self.d.get(ORIGIN + BASE + path)

    @property
    def url(self) -> str:
        return str(self.d.current_url)

    def text(self) -> str:
        return str(self.d.find_element("tag name", "body").text)

    def html(self) -> str:
        return str(self.d.page_source)

    def fill(self, form: str, **fields: str) -> None:
        for name, value in fields.items():
            el = self.d.find_element("css selector", f"{form} [name='{name}']")
            if el.tag_name == "select":
                from selenium.common.exceptions import NoSuchElementException
                from selenium.webdriver.support.ui import Select

                try:
                    Select(el).select_by_value(value)
                except NoSuchElementException:  # an <option> without value: its text
                    Select(el).select_by_visible_text(value)
            else:
                el.clear()
                el.send_keys(value)

    def press(self, selector: str) -> None:
        """Click a button or link that loads a page, and wait for that page."""
        self._loads(lambda: self.d.find_element("css selector", selector).click())

    def _loads(self, action: Callable[[], object]) -> None:
        """Do ``action``, then wait until it has replaced the page and the new one is loaded."""
        from selenium.common.exceptions import WebDriverException

        page = self.d.find_element("tag name", "html")
        action()
        deadline = time.monotonic() + 60
        while True:
            try:
                page.is_enabled()  # raises once the old page is gone
            except WebDriverException:
                break
            assert time.monotonic() < deadline, "the page did not change within 60 s"
            time.sleep(0.1)
        while self.d.execute_script("return document.readyState") != "complete":
            assert time.monotonic() < deadline, "the page did not load within 60 s"
            time.sleep(0.1)

    def present(self, selector: str) -> bool:
        return bool(self.d.find_elements("css selector", selector))

    def log_in(self, account: tuple[str, str]) -> None:
        self.d.delete_all_cookies()
        self.open("/login")
        self.fill("form.login", name=account[0], password=account[1])
        self.press("form.login button[type=submit]")
        assert self.url.startswith(f"{ORIGIN}{BASE}/quarantine"), (self.url, self.text())

    def post_from_page(self, path: str, fields: dict[str, str]) -> tuple[int, str]:
        """A form POST made up by script on the current page (what a forged or hand-made
        request does: the console's CSP forbids a script's fetch): its HTTP status and text."""
        script = """
            const form = document.createElement('form');
            form.method = 'post';
            form.action = arguments[0];
            for (const [name, value] of Object.entries(arguments[1])) {
                const input = document.createElement('input');
                input.type = 'hidden'; input.name = name; input.value = value;
                form.appendChild(input);
            }
            document.body.appendChild(form);
            form.submit();
        """
        self._loads(lambda: self.d.execute_script(script, BASE + path, fields))
        status = self.d.execute_script(
            "return performance.getEntriesByType('navigation')[0].responseStatus"
        )
        return int(status), self.text()

    def csrf(self) -> str:
        return str(
            self.d.find_element("css selector", "form.logout [name='csrf']").get_attribute("value")
        )

    def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        assert self.d.save_screenshot(str(SHOTS / f"{name}.png")), name

    def until(
        self, what: str, reload: Callable[[], None], ok: Callable[[], bool], s: float
    ) -> None:
        deadline = time.monotonic() + s
        while True:
            reload()
            if ok():
                return
            assert time.monotonic() < deadline, f"{what}: not within {s:.0f} s\n{self.text()}"
            time.sleep(3)


@pytest.fixture
def console(chrome: Any) -> Console:
    return Console(chrome)


def _search(c: Console, sender: str) -> None:
    c.open("/quarantine")
    c.fill("form.search", sender=sender)
    c.press("form.search button[type=submit]")


def _sync_now(*hosts: str) -> None:
    """One pass of the gateway side on each host now (what its timer does every minute)."""
    for host in hosts:
        podman_exec(host, "systemctl", "start", SYNC_SERVICE, check=False)


def _delete_held(sender: str) -> None:
    for item in quarantined("gw1", sender):
        podman_exec("gw1", "passerelle", "quarantine", "delete", item["id"], check=False)


def test_a_session_logged_out_is_refused_even_with_its_old_cookie(console: Console):
    console.log_in(VIEWER)
    cookies = console.d.get_cookies()
    console.press("form.logout button[type=submit]")
    assert console.url == f"{ORIGIN}{BASE}/login", console.url
    for cookie in cookies:  # the cookie copied before the logout, put back
        console.d.add_cookie(cookie)
    console.open("/quarantine")
    assert console.url == f"{ORIGIN}{BASE}/login", (console.url, console.text())


def test_the_login_page_and_a_wrong_password(console: Console):
    console.d.delete_all_cookies()
    console.open("/quarantine")  # not logged in: sent to the login page
    assert console.url == f"{ORIGIN}{BASE}/login", console.url
    console.shot("login")
    console.fill("form.login", name=ADMIN[0], password="not-the-password")
    console.press("form.login button[type=submit]")
    assert "wrong account name or password" in console.text()
    assert console.url == f"{ORIGIN}{BASE}/login"


def test_an_exe_appears_in_the_quarantine_is_released_once_and_delivered_once(console: Console):
    assert podman_exec("gw1", "systemctl", "is-active", SYNC_TIMER).strip() == "active"
    tag, sender = _send_exe_to_gw1()
    try:
        (item,) = quarantined("gw1", sender)
        console.log_in(ADMIN)
        row = f"input[name='item'][value='gw1/{item['id']}']"
        console.until(
            "the .exe in the console's quarantine",
            lambda: _search(console, sender),
            lambda: console.present(row),
            SYNC_DEADLINE,
        )
        assert "rule" in console.text() and sender in console.text()
        console.shot("quarantine")

        console.press(f"a[href='{BASE}/quarantine/gw1/{item['id']}']")
        assert "invoice.exe" in console.text()  # its parts
        assert "executables" in console.text()  # the rule that held it
        console.shot("message")
        assert not mailbox_has("mailstore1", "alice", tag)
        console.press("form.actions button[value='release']")
        assert f"release of {item['id']} on gw1" in console.text(), console.text()
        rid = re.search(r"request #(\d+) filed", console.text())
        assert rid, console.text()

        # The gateway carries the request out once; the message reaches alice once.
        console.until(
            "the release request done",
            lambda: (_sync_now("gw1"), console.open(f"/requests/{rid.group(1)}")),
            lambda: console.present("td.status-done"),
            SYNC_DEADLINE,
        )
        console.shot("requests")
        wait_for_mail("mailstore1", "alice", tag)
        # A second release of the same message: refused with a clear message, nothing filed.
        console.open(f"/quarantine/gw1/{item['id']}")
        assert "released" in console.text()
        assert not console.present("form.actions button[value='release']")
        status, text = console.post_from_page(
            "/quarantine/action",
            {"csrf": console.csrf(), "action": "release", "item": f"gw1/{item['id']}"},
        )
        assert status == 409 and "already released" in text, (status, text)
        # After more passes of the gateway side, still one copy in alice's mailbox.
        _sync_now("gw1")
        _sync_now("gw1")
        mbox = podman_exec("mailstore1", "cat", "/var/mail/alice")
        subject = f"Subject: Passerelle antivirus test {tag}"
        assert len(re.findall(rf"^{re.escape(subject)}$", mbox, re.M)) == 1, "not exactly once"
    finally:
        _delete_held(sender)


def test_a_viewer_has_no_release_button_and_its_post_is_refused(console: Console):
    _tag, sender = _send_exe_to_gw1()
    try:
        (item,) = quarantined("gw1", sender)
        console.log_in(VIEWER)
        console.until(
            "the .exe in the viewer's quarantine page",
            lambda: (_sync_now("gw1"), _search(console, sender)),
            lambda: sender in console.text(),
            SYNC_DEADLINE,
        )
        assert "Release selected" not in console.html()
        console.open(f"/quarantine/gw1/{item['id']}")
        assert console.present("table.detail") and not console.present("form.actions")
        status, text = console.post_from_page(
            "/quarantine/action",
            {"csrf": console.csrf(), "action": "release", "item": f"gw1/{item['id']}"},
        )
        assert status == 403 and "a viewer cannot release" in text, (status, text)
        # An admin's POST without its form token is refused too.
        console.log_in(ADMIN)
        status, text = console.post_from_page(
            "/quarantine/action", {"action": "release", "item": f"gw1/{item['id']}"}
        )
        assert status == 403 and "security token" in text, (status, text)
        # Nothing was released.
        assert [i["id"] for i in quarantined("gw1", sender)] == [item["id"]]
        console.open("/audit")
        assert "csrf" in console.text() and "refused" in console.text()
        console.shot("audit")
    finally:
        _delete_held(sender)


RUNTIME_RULES = "/var/lib/passerelle/console-rules.json"  # antivirus_runtime_rules


def _runtime_rules_on_gw1() -> str:
    return podman_exec("gw1", "sh", "-c", f"cat {RUNTIME_RULES} 2>/dev/null || true")


def _send_iso_to_gw1(tag: str) -> str:
    sender = f"{tag}@internet.test"
    iso = b"\x00" * 64 + b"\x01CD001\x01" + tag.encode()  # an ISO 9660 volume descriptor
    text = mime_message(sender, "alice@static-a.test", tag, "disk.iso", iso)
    d = smtp("outside", "gw1", sender, ["alice@static-a.test"], data=text)
    assert d.last[0] == "eom" and d.last[1] == 250, d.transcript
    return sender


def _milter_pid() -> str:
    return podman_exec("gw1", "systemctl", "show", "-P", "MainPID", "passerelle-antivirus")


def test_a_runtime_rule_for_iso_added_in_the_browser_quarantines_an_iso(console: Console):
    """Added on the rules page: gateway-sync writes it to the milter's runtime rules file,
    the milter picks it up without a restart (it looks every 5 s) and an .iso from outside is
    quarantined; removed with its button, it is no longer in force."""
    name = f"lab_iso_{uuid.uuid4().hex[:8]}"
    senders: list[str] = []
    pid = _milter_pid()
    removed = False
    try:
        console.log_in(ADMIN)
        console.open("/rules")
        console.fill("form.rule", name=name, kind="attachment", extensions="iso")
        console.press("form.rule button[type=submit]")
        assert name in console.text().split("Runtime rules")[1], console.text()
        console.shot("rules")
        console.until(
            "the rule in gw1's runtime rules file",
            lambda: _sync_now("gw1"),
            lambda: name in _runtime_rules_on_gw1(),
            SYNC_DEADLINE,
        )
        mode = podman_exec("gw1", "stat", "-c", "%U:%G %a", RUNTIME_RULES).split()
        assert mode == ["root:passerelle", "640"], mode
        time.sleep(6)  # the milter looks at the file every 5 s
        sender = _send_iso_to_gw1(f"browser-iso-{uuid.uuid4().hex[:12]}")
        senders.append(sender)
        held = quarantined("gw1", sender)
        assert len(held) == 1, held
        assert held[0]["reason"] == "rule" and held[0]["detail"].startswith(name), held
        assert _milter_pid() == pid  # without a restart of the milter
        console.until(
            "the .iso in the console's quarantine",
            lambda: (_sync_now("gw1"), _search(console, sender)),
            lambda: sender in console.text(),
            SYNC_DEADLINE,
        )

        # Removed with its button: gone from gw1's file, no longer in force.
        console.open("/rules")
        console.press(
            f"form[action='{BASE}/rules/remove'] input[name='name'][value='{name}'] ~ button"
        )
        removed = True
        assert name not in console.text().split("Runtime rules")[1], console.text()
        console.until(
            "the rule gone from gw1's file",
            lambda: _sync_now("gw1"),
            lambda: name not in _runtime_rules_on_gw1(),
            SYNC_DEADLINE,
        )
        time.sleep(6)
        sender = _send_iso_to_gw1(f"browser-iso-{uuid.uuid4().hex[:12]}")
        senders.append(sender)
        assert quarantined("gw1", sender) == []
    finally:
        if not removed:
            _remove_rule_as_admin(console, name)
        for sender in senders:
            _delete_held(sender)


def _remove_rule_as_admin(c: Console, name: str) -> None:
    """Cleanup after a failure: the rule's Remove button, if the rule is still listed."""
    c.log_in(ADMIN)
    c.open("/rules")
    button = f"form[action='{BASE}/rules/remove'] input[name='name'][value='{name}'] ~ button"
    if c.present(button):
        c.press(button)


# -- outbreak mode, the greylist whitelist, the message trace: switched or filed in the
# browser, carried out by the gateways' side, then seen in the browser and in the mail flow.
def _gateway_row(c: Console, gateway: str) -> str:
    """The text of ``gateway``'s row in the current page's results table."""
    for row in c.d.find_elements("css selector", "table.results tbody tr"):
        cells = row.find_elements("tag name", "td")
        if cells and cells[0].text.strip() == gateway:
            return str(row.text)
    return ""


def _outbreak_on_both(c: Console, on: bool) -> bool:
    c.open("/outbreak")
    rows = [_gateway_row(c, gw).split() for gw in GATEWAYS]
    return all(len(r) > 2 and (("on" in r[2:]) if on else ("off" in r[2:])) for r in rows)


def test_outbreak_switched_in_the_browser_holds_a_pdf_then_releases_it(console: Console):
    tag = new_tag()
    sender = f"{tag}@internet.test"
    pdf = (
        b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
        b"trailer << /Root 1 0 R >>\n% " + tag.encode() + b"\n%%EOF\n"
    )
    try:
        console.log_in(ADMIN)
        console.open("/outbreak")
        console.press("form input[name='mode'][value='on'] ~ button")
        console.until(
            "outbreak mode on on both gateways",
            lambda: _sync_now(*GATEWAYS),
            lambda: _outbreak_on_both(console, True),
            SYNC_DEADLINE,
        )
        text = mime_message(
            sender, "alice@static-a.test", tag, "report.pdf", pdf, "application/pdf"
        )
        d = smtp("outside", "gw1", sender, ["alice@static-a.test"], data=text)
        assert d.last[0] == "eom" and d.last[1] == 250, d.transcript
        (item,) = quarantined("gw1", sender)
        assert item["reason"] == "outbreak", item
        console.until(
            "the PDF held by outbreak mode in the console",
            lambda: (_sync_now("gw1"), _search(console, sender)),
            lambda: console.present(f"input[name='item'][value='gw1/{item['id']}']"),
            SYNC_DEADLINE,
        )
        assert "outbreak" in console.text()
        console.open("/outbreak")
        assert "1" in _gateway_row(console, "gw1").split()[2:], _gateway_row(console, "gw1")
        console.shot("outbreak")
        time.sleep(2)
        assert not mailbox_has("mailstore1", "alice", tag)

        # Off: gw1 rescans what it held, the PDF is clean, it is released to alice.
        console.press("form input[name='mode'][value='off'] ~ button")
        console.until(
            "outbreak mode off on both gateways",
            lambda: _sync_now(*GATEWAYS),
            lambda: _outbreak_on_both(console, False),
            SYNC_DEADLINE,
        )
        mbox = wait_for_mail("mailstore1", "alice", tag)
        assert "report.pdf" in mbox
    finally:
        for gw in GATEWAYS:
            podman_exec(gw, "passerelle", "outbreak", "off", "--no-release", check=False)
        _delete_held(sender)
    assert "outbreak mode: off" in podman_exec("gw1", "passerelle", "outbreak", "status")


def _new_triplet_from_source(tag: str) -> Any:
    sender = _sender()
    return _send("gw1", sender, "alice@static-a.test", message(sender, "alice@static-a.test", tag))


def _request_done(c: Console, rid: str) -> bool:
    c.open(f"/requests/{rid}")
    assert not c.present("td.status-failed"), c.text()
    return c.present("td.status-done")


def _until_greylisting_answers(tag: str, greylisted: bool) -> None:
    """New triplets from .245 until one is greylisted (or accepted at once, when not
    ``greylisted``) within WHITELIST_REFRESH; any other answer fails at once."""
    end = time.monotonic() + WHITELIST_REFRESH
    n = 0
    while True:
        n += 1
        d = _new_triplet_from_source(f"{tag}-{n}")
        rcpt = d.reply("rcpt")
        accepted = rcpt is not None and rcpt[0] == 250
        if accepted != greylisted or time.monotonic() > end:
            break
        (_assert_accepted if greylisted else _assert_greylisted)(d)
        time.sleep(10)
    (_assert_greylisted if greylisted else _assert_accepted)(d)


def _file_and_wait(c: Console, button: str) -> str:
    """Press a button that files a request (the page it leads to names it: filed=N), run
    the gateway side until it is done; the request's id."""
    c.press(button)
    m = re.search(r"filed=(\d+)", c.url)
    assert m, (c.url, c.text())
    rid = m.group(1)
    c.until(
        f"request #{rid} done",
        lambda: _sync_now("gw1"),
        lambda: _request_done(c, rid),
        SYNC_DEADLINE,
    )
    return rid


def test_a_client_whitelisted_in_the_browser_is_no_longer_greylisted(console: Console):
    tag = f"browser-wl-{uuid.uuid4().hex[:10]}"
    # Before: a first-time triplet from .245 is greylisted.
    _assert_greylisted(_new_triplet_from_source(f"{tag}-before"))
    removed = ""
    try:
        console.log_in(ADMIN)
        console.open("/greylist")
        console.fill("form.rule", kind="client", entry=SOURCE, comment=f"molecule {tag}")
        _file_and_wait(console, "form.rule button[type=submit]")
        console.until(
            "the entry on the greylist page",
            lambda: console.open("/greylist"),
            lambda: f"client {SOURCE} molecule {tag}" in console.text(),
            30,
        )
        console.shot("greylist")
        # gw1's milter reloads the table every 60 s: each attempt is a new triplet; the first
        # one accepted is accepted at once, without a 451.
        _until_greylisting_answers(tag, greylisted=False)

        # Removed in the browser: carried out once.
        console.open("/greylist")
        removed = _file_and_wait(
            console,
            f"form[action='{BASE}/greylist/remove'] input[name='entry'][value='{SOURCE}'] ~ button",
        )
        assert "removed from the whitelist" in console.text()
        # Greylisted again once the milter has reloaded the table (the tests after this one
        # expect .245 to be greylisted).
        _until_greylisting_answers(f"{tag}-after", greylisted=True)

        # The day-by-day history: today's row (UTC) counts greylisted triplets (this test's,
        # test_30's), once a gateway has published a report read after them (every 5 min).
        today = time.strftime("%Y-%m-%d", time.gmtime())

        def delayed_today() -> int:
            rows = [
                str(r.text).split()
                for r in console.d.find_elements("css selector", "tr")
                if str(r.text).startswith(today + " ")
            ]
            return int(rows[0][1]) if rows and rows[0][1].isdigit() else 0

        console.until(
            "today's greylisted triplets in the greylist page's last 14 days",
            lambda: (_sync_now(*GATEWAYS), console.open("/greylist")),
            lambda: "Last 14 days" in console.text() and delayed_today() >= 1,
            HISTORY_DEADLINE,
        )
        heading = console.d.find_element("xpath", "//h2[starts-with(., 'Last ')]")
        console.d.execute_script("arguments[0].scrollIntoView()", heading)
        console.shot("greylist-history")
    finally:
        if not removed:
            podman_exec(
                "gw1",
                "passerelle",
                "greylist",
                "whitelist",
                "remove",
                SOURCE,
                "--kind",
                "client",
                "--config",
                GREYLIST_CONFIG,
                check=False,
            )


def _trace_rows(c: Console, kind: str) -> list[str]:
    return [str(r.text) for r in c.d.find_elements("css selector", f"tr.kind-{kind}")]


def test_the_trace_of_a_delivered_message_shows_its_path(console: Console):
    tag, text = message("dave@internet.test", "alice@static-a.test")
    d = smtp("outside", "gw1", "dave@internet.test", ["alice@static-a.test"], data=text)
    assert d.last[0] == "eom" and d.last[1] == 250, d.transcript
    wait_for_mail("mailstore1", "alice", tag)
    console.log_in(VIEWER)  # a viewer may read the trace

    def search() -> None:
        _sync_now("gw1")
        console.open("/trace")
        console.fill("form.search", message_id=f"<{tag}@internet.test>")
        console.press("form.search button[type=submit]")

    console.until(
        "every step of the message's path",
        search,
        lambda: all(_trace_rows(console, k) for k in TRACE_KINDS),
        SYNC_DEADLINE,
    )
    (received,) = _trace_rows(console, "from")
    assert "gw1" in received and f"[{NET}.250]" in received and "dave@internet.test" in received
    assert any("accepted" in r for r in _trace_rows(console, "greylist"))
    assert any("antivirus clean" in r for r in _trace_rows(console, "antivirus"))
    assert any("score=" in r for r in _trace_rows(console, "spam"))
    assert any(
        "gw1" in r and "alice@static-a.test" in r and "mailstore1" in r and "Sent" in r
        for r in _trace_rows(console, "sent")
    ), _trace_rows(console, "sent")
    html = console.html()
    assert html.index('class="kind-from"') < html.index('class="kind-sent"')  # in time order
    console.shot("trace")


def test_the_fleet_and_connection_guard_pages(console: Console):
    console.log_in(VIEWER)
    console.until(
        "a fresh report of both gateways with sendmail active",
        lambda: (_sync_now(*GATEWAYS), console.open("/fleet")),
        lambda: all(
            "sendmail: active" in _gateway_row(console, gw)
            and "stale" not in _gateway_row(console, gw)
            for gw in GATEWAYS
        ),
        SYNC_DEADLINE,
    )
    console.shot("fleet")
    console.open("/connguard")
    assert "Connection guard" in console.text()
    # gw1's last guard run (test_80_connwatch) published its clients over the thresholds.
    assert "Clients over the thresholds (last run at" in console.text(), console.text()
    assert not console.present(f"form[action='{BASE}/connguard/unblock']")  # a viewer
    console.shot("connguard")
