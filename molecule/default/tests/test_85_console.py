"""The web console (role console): served by mon1's Apache over HTTPS at /console/, the lab's
admin logs in and searches the quarantine, a .exe sent from outside through gw1 appears in it
once the gateway's side has run (passerelle-console-sync.timer, every minute), and the lab's
viewer cannot release it.

The HTTPS client runs inside mon1 (as test_70_nagios's does), trusts the lab's CA only (given
on stdin) and follows no redirect: each step's status, Location and page are checked. Lab
accounts: inventory/lab/group_vars/all/console.yml.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid

from labsmtp import needs, podman_exec, smtp
from test_40_antivirus import _send_exe_to_gw1, mime_message, quarantined

MON = "mon1"
BASE = "/console"
ADMIN = ("admin", "lab-console-admin-not-a-secret")
VIEWER = ("viewer", "lab-console-viewer-not-a-secret")
SYNC_TIMER = "passerelle-console-sync.timer"
# The lab's CA, made on the controller by playbooks/lab/pki.yml (as in test_70_nagios).
LAB_PKI = os.environ.get("PASSERELLE_LAB_PKI", os.path.expanduser("~/.cache/passerelle-lab/pki"))

# Runs inside mon1: one browser session (its cookies kept), steps given as JSON on stdin:
#   ["GET", path] | ["POST", path, {field: value or [values]}] | ["LOGIN", name, password]
# A POST field "{csrf}" takes the form token of the last page seen. Prints one result per
# step: {status, location, body}.
CLIENT = r"""
import http.client, json, re, ssl, sys, urllib.parse
a = json.loads(sys.stdin.read())
ctx = ssl.create_default_context(cadata=a["ca"])
jar = {}
last = {"body": ""}

def call(method, path, fields=None):
    c = http.client.HTTPSConnection("127.0.0.1", 443, timeout=60, context=ctx)
    headers = {}
    if jar:
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in jar.items())
    body = None
    if fields is not None:
        m = re.search(r'name="csrf" value="([^"]*)"', last["body"])
        fields = {k: (m.group(1) if m else "") if v == "{csrf}" else v for k, v in fields.items()}
        body = urllib.parse.urlencode(fields, doseq=True)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    c.request(method, path, body=body, headers=headers)
    r = c.getresponse()
    for k, v in r.getheaders():
        if k.lower() == "set-cookie":
            name, _, rest = v.partition("=")
            if "Max-Age=0" in v:
                jar.pop(name, None)
            else:
                jar[name] = rest.split(";", 1)[0]
    text = r.read().decode("utf-8", "replace")
    c.close()
    last["body"] = text
    return {"status": r.status, "location": r.getheader("Location", ""), "body": text}

out = []
for step in a["steps"]:
    if step[0] == "LOGIN":
        form = call("GET", a["base"] + "/login")
        m = re.search(r'name="token" value="([^"]*)"', form["body"])
        fields = {"token": m.group(1) if m else "", "name": step[1], "password": step[2]}
        out.append(call("POST", a["base"] + "/login", fields))
    elif step[0] == "GET":
        out.append(call("GET", step[1]))
    else:
        out.append(call("POST", step[1], step[2]))
print(json.dumps(out))
"""


def _ca() -> str:
    with open(f"{LAB_PKI}/ca.crt") as fh:
        return fh.read()


def browse(*steps: list) -> list[dict]:
    """Run ``steps`` in one session on mon1; one {status, location, body} per step."""
    args = {"ca": _ca(), "base": BASE, "steps": [list(s) for s in steps]}
    return json.loads(podman_exec(MON, "python3", "-c", CLIENT, stdin=json.dumps(args)))


# -- the service and its place behind Apache ----------------------------------------------
@needs(MON)
def test_console_runs_on_loopback_only():
    assert podman_exec(MON, "systemctl", "is-active", "passerelle-console").strip() == "active"
    podman_exec(MON, "passerelle", "console", "check-config", "/etc/passerelle/console.toml")
    listening = podman_exec(MON, "ss", "-Hltn", "sport = :8025")
    assert "127.0.0.1:8025" in listening, listening
    assert "0.0.0.0:8025" not in listening and "*:8025" not in listening, listening
    # Its secret and accounts are not readable by everyone.
    for path in ("/etc/passerelle/console.secret", "/etc/passerelle/console-accounts.toml"):
        mode = podman_exec(MON, "stat", "-c", "%U:%G %a", path).split()
        assert mode == ["root:passerelle-console", "640"], (path, mode)


@needs(MON)
def test_login_page_answers_through_apache_over_https():
    (page,) = browse(["GET", f"{BASE}/login"])
    assert page["status"] == 200, page
    assert 'name="token"' in page["body"] and 'name="password"' in page["body"]
    # The form posts to the console's path behind Apache.
    assert f'action="{BASE}/login"' in page["body"]


@needs(MON)
def test_console_is_not_served_over_plain_http():
    probe = (
        "import http.client; c = http.client.HTTPConnection('127.0.0.1', 80, timeout=30); "
        f"c.request('GET', '{BASE}/login'); r = c.getresponse(); "
        "print(r.status); print(r.getheader('Location', ''))"
    )
    status, location = podman_exec(MON, "python3", "-c", probe).split()
    assert (status, location) == ("301", f"https://127.0.0.1{BASE}/login")


# -- accounts and roles -----------------------------------------------------------------------
@needs(MON)
def test_admin_logs_in_and_sees_the_quarantine():
    login, page = browse(["LOGIN", *ADMIN], ["GET", f"{BASE}/quarantine"])
    assert login["status"] == 303, login
    assert login["location"].endswith(f"{BASE}/quarantine"), login
    assert page["status"] == 200, page
    assert "Release selected" in page["body"]  # an admin's page has the actions


@needs(MON)
def test_wrong_password_is_refused():
    (login,) = browse(["LOGIN", ADMIN[0], "not-the-password"])
    assert login["status"] == 401, login
    assert "wrong account name or password" in login["body"]


@needs(MON, "gw1", "db1")
def test_exe_from_outside_appears_in_the_console_and_the_viewer_cannot_release_it():
    assert podman_exec("gw1", "systemctl", "is-active", SYNC_TIMER).strip() == "active"
    _tag, sender = _send_exe_to_gw1()
    try:
        items = quarantined("gw1", sender)
        assert len(items) == 1, items
        qid = items[0]["id"]
        search = f"{BASE}/quarantine?sender={sender}"
        # The gateway's side runs every minute: the message is in the console within 90 s.
        deadline = time.monotonic() + 90
        while True:
            _login, page = browse(["LOGIN", *ADMIN], ["GET", search])
            assert page["status"] == 200, page
            if f'value="gw1/{qid}"' in page["body"] or time.monotonic() > deadline:
                break
            time.sleep(5)
        assert f'value="gw1/{qid}"' in page["body"], "not in the console's quarantine within 90 s"
        assert sender in page["body"]
        row = re.search(
            rf"<tr>(?:(?!</tr>).)*gw1/{re.escape(qid)}(?:(?!</tr>).)*</tr>", page["body"], re.S
        )
        assert row and "<td>rule</td>" in row.group(0), row  # held by a content rule

        # The viewer sees it, without the release button, and its POST is refused.
        _login, seen, release = browse(
            ["LOGIN", *VIEWER],
            ["GET", search],
            [
                "POST",
                f"{BASE}/quarantine/action",
                {"csrf": "{csrf}", "action": "release", "item": f"gw1/{qid}"},
            ],
        )
        assert seen["status"] == 200 and sender in seen["body"], seen
        assert "Release selected" not in seen["body"]
        assert release["status"] == 403, release
        assert "a viewer cannot release" in release["body"]
        # An admin's POST without its form token is refused too.
        _login, no_token = browse(
            ["LOGIN", *ADMIN],
            ["POST", f"{BASE}/quarantine/action", {"action": "release", "item": f"gw1/{qid}"}],
        )
        assert no_token["status"] == 403, no_token
        # Nothing was released: the message is still held on gw1, no request was filed.
        assert [i["id"] for i in quarantined("gw1", sender)] == [qid]
        (requests,) = browse(["LOGIN", *ADMIN], ["GET", f"{BASE}/requests"])[1:]
        assert f"gw1/{qid}" not in requests["body"] and qid not in requests["body"]
    finally:
        for item in quarantined("gw1", sender):
            podman_exec("gw1", "passerelle", "quarantine", "delete", item["id"], check=False)


# -- content rules at runtime ---------------------------------------------------------------
RUNTIME_RULES = "/var/lib/passerelle/console-rules.json"  # antivirus_runtime_rules
RULE_DEADLINE = 150  # s: gateway-sync every minute, the milter looks every 5 s


def _runtime_rules_on_gw1() -> str:
    return podman_exec("gw1", "sh", "-c", f"cat {RUNTIME_RULES} 2>/dev/null || true")


def _send_iso_to_gw1(tag: str) -> str:
    sender = f"{tag}@internet.test"
    iso = b"\x00" * 64 + b"\x01CD001\x01" + tag.encode()  # an ISO 9660 volume descriptor
    text = mime_message(sender, "alice@static-a.test", tag, "disk.iso", iso)
    d = smtp("outside", "gw1", sender, ["alice@static-a.test"], data=text)
    assert d.last[0] == "eom" and d.last[1] == 250, d.transcript
    return sender


def _remove_rule(name: str) -> dict:
    return browse(
        ["LOGIN", *ADMIN],
        ["GET", f"{BASE}/rules"],
        ["POST", f"{BASE}/rules/remove", {"csrf": "{csrf}", "name": name}],
    )[2]


@needs(MON, "gw1", "db1")
def test_a_runtime_rule_added_in_the_console_quarantines_iso_within_150_s():
    """The admin adds a rule for .iso attachments on the rules page: within 150 s (gateway-sync
    writes it to the milter's runtime rules file, the milter picks it up without a restart) an
    .iso from outside is quarantined on gw1; removed, it is no longer in force."""
    assert podman_exec("gw1", "systemctl", "is-active", SYNC_TIMER).strip() == "active"
    name = f"lab_iso_{uuid.uuid4().hex[:8]}"
    senders: list[str] = []
    milter_pid = podman_exec("gw1", "systemctl", "show", "-P", "MainPID", "passerelle-antivirus")
    try:
        start = time.monotonic()
        _login, _page, added, page = browse(
            ["LOGIN", *ADMIN],
            ["GET", f"{BASE}/rules"],
            [
                "POST",
                f"{BASE}/rules/add",
                {
                    "csrf": "{csrf}",
                    "name": name,
                    "kind": "attachment",
                    "extensions": "iso",
                    "types": "",
                    "archives": "on",
                    "action": "quarantine",
                },
            ],
            ["GET", f"{BASE}/rules"],
        )
        assert added["status"] == 303, added
        assert f">{name}<" in page["body"].split("Runtime rules")[1], page["body"]
        # gateway-sync (every minute) writes it to the milter's file...
        while name not in _runtime_rules_on_gw1():
            assert time.monotonic() - start < RULE_DEADLINE - 10, "not on gw1 within 140 s"
            time.sleep(3)
        mode = podman_exec("gw1", "stat", "-c", "%U:%G %a", RUNTIME_RULES).split()
        assert mode == ["root:passerelle", "640"], mode
        # ...the milter looks at it every 5 s.
        time.sleep(6)
        sender = _send_iso_to_gw1(f"console-iso-{uuid.uuid4().hex[:12]}")
        senders.append(sender)
        items = quarantined("gw1", sender)
        assert len(items) == 1, items
        assert items[0]["reason"] == "rule" and items[0]["detail"].startswith(name), items
        assert time.monotonic() - start < RULE_DEADLINE
        # without a restart of the milter
        assert (
            podman_exec("gw1", "systemctl", "show", "-P", "MainPID", "passerelle-antivirus")
            == milter_pid
        )

        # Removed: gone from the file within the next passes, and no longer in force.
        removed = _remove_rule(name)
        assert removed["status"] == 303, removed
        deadline = time.monotonic() + 90
        while name in _runtime_rules_on_gw1():
            assert time.monotonic() < deadline, "the removed rule is still on gw1 after 90 s"
            time.sleep(3)
        time.sleep(6)
        sender = _send_iso_to_gw1(f"console-iso-{uuid.uuid4().hex[:12]}")
        senders.append(sender)
        assert quarantined("gw1", sender) == []
    finally:
        _remove_rule(name)  # refused (400) when already removed: nothing to undo
        for sender in senders:
            for item in quarantined("gw1", sender):
                podman_exec("gw1", "passerelle", "quarantine", "delete", item["id"], check=False)
