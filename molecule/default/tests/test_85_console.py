"""The web console (role console): served by mon1's Apache over HTTPS at /console/, the lab's
admin logs in and sees the quarantine, a wrong password is refused, the service listens on
loopback only and is not served over plain HTTP. What a person does in the console (the
quarantine, release, rules, outbreak mode, whitelist, trace) is in the browser test,
test_89_console_browser.py.

The HTTPS client runs inside mon1 (as test_70_nagios's does), trusts the lab's CA only (given
on stdin) and follows no redirect: each step's status, Location and page are checked. Lab
accounts: inventory/lab/group_vars/all/console.yml.
"""

from __future__ import annotations

import json
import os

from labsmtp import needs, podman_exec

MON = "mon1"
BASE = "/console"
ADMIN = ("admin", "lab-console-admin-not-a-secret")
VIEWER = ("viewer", "lab-console-viewer-not-a-secret")
SYNC_TIMER = "passerelle-console-sync.timer"
# The lab's CA, made on the controller by playbooks/lab/pki.yml (as in test_70_nagios).
LAB_PKI = os.environ.get("PASSERELLE_LAB_PKI", os.path.expanduser("~/.cache/passerelle-lab/pki"))

# Runs inside mon1: one browser session (its cookies kept), steps given as JSON on stdin:
#   ["GET", path] | ["POST", path, {field: value or [values]}] | ["LOGIN", name, password]
#   | ["JAR"] (the cookies held now, as JSON in "body": a later browse(jar=...) resumes them)
# A POST field "{csrf}" takes the form token of the last page seen. Prints one result per
# step: {status, location, body}.
CLIENT = r"""
import http.client, json, re, ssl, sys, urllib.parse
a = json.loads(sys.stdin.read())
ctx = ssl.create_default_context(cadata=a["ca"])
jar = dict(a["jar"])
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
    elif step[0] == "JAR":
        out.append({"status": 0, "location": "", "body": json.dumps(jar)})
    else:
        out.append(call("POST", step[1], step[2]))
print(json.dumps(out))
"""


def _ca() -> str:
    with open(f"{LAB_PKI}/ca.crt") as fh:
        return fh.read()


def browse(*steps: list, jar: dict[str, str] | None = None) -> list[dict]:
    """Run ``steps`` in one session on mon1 (starting with the cookies ``jar``, from an
    earlier ``["JAR"]`` step); one {status, location, body} per step."""
    args = {"ca": _ca(), "base": BASE, "steps": [list(s) for s in steps], "jar": jar or {}}
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
