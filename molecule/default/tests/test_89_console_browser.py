"""The console in a real browser (issue 17): Debian's ``chromium``, headless, driven by Selenium
through Debian's ``chromedriver`` from the controller, against mon1's Apache over HTTPS and the
real fleet behind it. Each step is what a person on call does: fill the form, press the
button, read the page. Screenshots of the main pages are saved under ``docs/screenshots/``
(PASSERELLE_SCREENSHOTS overrides the folder; the README shows them).

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
from labsmtp import NET, PROJECT, mailbox_has, needs, podman_exec, wait_for_mail
from test_40_antivirus import _send_exe_to_gw1, quarantined
from test_85_console import (
    ADMIN,
    BASE,
    LAB_PKI,
    SYNC_TIMER,
    VIEWER,
    _remove_rule,
    _runtime_rules_on_gw1,
    _send_iso_to_gw1,
)

MON_ADDRESS = f"{NET}.61"  # mon1 (inventory/lab/hosts.yml: lab_ip_suffix 61)
ORIGIN = f"https://{MON_ADDRESS}"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SHOTS = Path(os.environ.get("PASSERELLE_SCREENSHOTS", PROJECT / "docs" / "screenshots"))
SYNC_DEADLINE = 90  # s: the gateway side runs every minute
RULE_DEADLINE = 150  # s: as test_85 (gateway-sync every minute, the milter every 5 s)

pytestmark = needs("mon1", "gw1", "db1", "mailstore1", "outside")


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
                from selenium.webdriver.support.ui import Select

                Select(el).select_by_value(value)
            else:
                el.clear()
                el.send_keys(value)

    def press(self, selector: str) -> None:
        self.d.find_element("css selector", selector).click()

    def present(self, selector: str) -> bool:
        return bool(self.d.find_elements("css selector", selector))

    def log_in(self, account: tuple[str, str]) -> None:
        self.d.delete_all_cookies()
        self.open("/login")
        self.fill("form.login", name=account[0], password=account[1])
        self.press("form.login button[type=submit]")
        assert self.url.startswith(f"{ORIGIN}{BASE}/quarantine"), (self.url, self.text())

    def post_from_page(self, path: str, fields: dict[str, str]) -> tuple[int, str]:
        """A form POST made by script from the current page (what a forged or hand-made
        request does): its status and page text."""
        script = """
            const done = arguments[arguments.length - 1];
            fetch(arguments[0], {method: 'POST', body: new URLSearchParams(arguments[1]),
                                 redirect: 'manual', credentials: 'same-origin'})
              .then(r => r.text().then(t => done([r.status, t])))
              .catch(e => done([0, String(e)]));
        """
        status, text = self.d.execute_async_script(script, BASE + path, fields)
        return int(status), str(text)

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


def _wait_sync_pass_after(host: str, since: float) -> None:
    """Until the gateway side's service on ``host`` has finished a pass started after
    ``since`` (the timer's period is a minute)."""
    deadline = time.monotonic() + SYNC_DEADLINE
    while True:
        started = podman_exec(
            host, "systemctl", "show", "-P", "ExecMainStartTimestamp", "passerelle-console-sync"
        ).strip()
        state = podman_exec(host, "systemctl", "is-active", "passerelle-console-sync", check=False)
        stamp = podman_exec(host, "date", "-d", started, "+%s", check=False).strip()
        if stamp.isdigit() and int(stamp) > since and state.strip() != "activating":
            return
        assert time.monotonic() < deadline, f"no gateway-side pass on {host} after the release"
        time.sleep(3)


def _delete_held(sender: str) -> None:
    for item in quarantined("gw1", sender):
        podman_exec("gw1", "passerelle", "quarantine", "delete", item["id"], check=False)


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
            lambda: console.open(f"/requests/{rid.group(1)}"),
            lambda: console.present("td.status-done"),
            SYNC_DEADLINE,
        )
        console.shot("requests")
        wait_for_mail("mailstore1", "alice", tag)
        delivered = time.time()
        # A second release of the same message: refused with a clear message, nothing filed.
        console.open(f"/quarantine/gw1/{item['id']}")
        assert "released" in console.text()
        assert not console.present("form.actions button[value='release']")
        status, text = console.post_from_page(
            "/quarantine/action",
            {"csrf": console.csrf(), "action": "release", "item": f"gw1/{item['id']}"},
        )
        assert status == 409 and "already released" in text, (status, text)
        # Once more: after the gateway side's next pass, still one copy in alice's mailbox.
        _wait_sync_pass_after("gw1", delivered)
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
            lambda: _search(console, sender),
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


def test_a_runtime_rule_for_iso_added_in_the_browser_quarantines_an_iso(console: Console):
    name = f"lab_iso_{uuid.uuid4().hex[:8]}"
    senders: list[str] = []
    try:
        console.log_in(ADMIN)
        console.open("/rules")
        start = time.monotonic()
        console.fill("form.rule", name=name, kind="attachment", extensions="iso")
        console.press("form.rule button[type=submit]")
        assert name in console.text().split("Runtime rules")[1], console.text()
        console.shot("rules")
        # gateway-sync writes it to gw1's file, the milter looks at it every 5 s.
        while name not in _runtime_rules_on_gw1():
            assert time.monotonic() - start < RULE_DEADLINE - 10, "not on gw1 within 140 s"
            time.sleep(3)
        time.sleep(6)
        sender = _send_iso_to_gw1(f"browser-iso-{uuid.uuid4().hex[:12]}")
        senders.append(sender)
        held = quarantined("gw1", sender)
        assert len(held) == 1, held
        assert held[0]["reason"] == "rule" and held[0]["detail"].startswith(name), held
        console.until(
            "the .iso in the console's quarantine",
            lambda: _search(console, senders[-1]),
            lambda: senders[-1] in console.text(),
            SYNC_DEADLINE,
        )
    finally:
        _remove_rule(name)
        for sender in senders:
            _delete_held(sender)
