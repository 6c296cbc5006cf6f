"""The web console's LDAP login (issue 17): names that are not local accounts log in against
the lab's slapd on ldap1 (passerelle_ldap), over HTTPS on mon1 as test_85_console does.

Lab people and groups (inventory/lab/group_vars/ldap.yml, all/console.yml): lea is in
console-admins (admin), leo in console-viewers (viewer), noa in neither (refused). A wrong
password and a user in no group get the wrong-password message; with slapd stopped, an LDAP
login is a 503 with the form again while the local admin still logs in. The audit log names
an LDAP account ``NAME (ldap)``. A session's groups are read again every ``[ldap] recheck``
(the lab's: 30 s, group_vars/all/console.yml): a group changed in slapd changes the role of a
session already open, or ends it.
"""

from __future__ import annotations

import html
import json
import time

from labsmtp import needs, podman_exec
from test_60_ldap import _start_slapd, _stop_slapd
from test_85_console import ADMIN, BASE, MON, browse

LDAP = "ldap1"
LEA = ("lea", "lab-ldap-lea-not-a-secret")  # console-admins
LEO = ("leo", "lab-ldap-leo-not-a-secret")  # console-viewers
NOA = ("noa", "lab-ldap-noa-not-a-secret")  # in no console group
WRONG = "wrong account name or password"
PEOPLE = "ou=people,dc=lab,dc=passerelle,dc=test"
ADMINS = "cn=console-admins,ou=groups,dc=lab,dc=passerelle,dc=test"
VIEWERS = "cn=console-viewers,ou=groups,dc=lab,dc=passerelle,dc=test"
RECHECK = 30  # console_ldap_recheck in the lab (group_vars/all/console.yml)


@needs(MON)
def test_console_config_has_the_directory_and_its_secret_is_private():
    config = podman_exec(MON, "cat", "/etc/passerelle/console.toml")
    assert "\n[ldap]\n" in config, config
    assert 'uri = "ldap://ldap1"' in config, config
    assert 'admin_group = "cn=console-admins,ou=groups,dc=lab,dc=passerelle,dc=test"' in config
    secret = "/etc/passerelle/console-ldap.secret"
    mode = podman_exec(MON, "stat", "-c", "%U:%G %a", secret).split()
    assert mode == ["root:passerelle-console", "640"], mode
    podman_exec(MON, "passerelle", "console", "check-config", "/etc/passerelle/console.toml")
    assert podman_exec(MON, "python3", "-c", "import ldap; print('ok')").strip() == "ok"


@needs(MON, LDAP)
def test_ldap_admin_logs_in_as_an_admin():
    login, page = browse(["LOGIN", *LEA], ["GET", f"{BASE}/quarantine"])
    assert login["status"] == 303, login
    assert login["location"].endswith(f"{BASE}/quarantine"), login
    assert page["status"] == 200, page
    assert "lea (admin, LDAP)" in page["body"], page["body"][-2000:]
    assert "Release selected" in page["body"]  # an admin's page has the actions


@needs(MON, LDAP)
def test_ldap_viewer_logs_in_as_a_viewer_and_cannot_act():
    login, page, rules, post = browse(
        ["LOGIN", *LEO],
        ["GET", f"{BASE}/quarantine"],
        ["GET", f"{BASE}/rules"],
        [
            "POST",
            f"{BASE}/rules/add",
            {
                "csrf": "{csrf}",
                "name": "ldap-viewer-rule",
                "kind": "header",
                "header": "Subject",
                "pattern": "x",
                "action": "quarantine",
            },
        ],
    )
    assert login["status"] == 303, login
    assert page["status"] == 200 and "leo (viewer, LDAP)" in page["body"], page
    assert "Release selected" not in page["body"]
    assert rules["status"] == 200, rules
    assert post["status"] == 403, post


@needs(MON, LDAP)
def test_wrong_ldap_password_and_a_user_in_no_group_are_refused():
    wrong, nogroup = browse(["LOGIN", LEA[0], "not-the-password"], ["LOGIN", *NOA])
    for r in (wrong, nogroup):
        assert r["status"] == 401, r
        assert WRONG in r["body"], r
    # A name built to widen the search filter logs nobody in (not an account name; the
    # filter would escape it anyway, RFC 4515: the unit tests).
    (star,) = browse(["LOGIN", "*", LEA[1]])
    assert star["status"] == 401 and WRONG in star["body"], star


@needs(MON, LDAP)
def test_audit_log_names_the_ldap_account():
    steps = browse(["LOGIN", *LEO], ["GET", f"{BASE}/audit"])
    assert steps[0]["status"] == 303, steps[0]
    audit = html.unescape(steps[1]["body"])
    assert "leo (ldap)" in audit, audit[-3000:]


@needs(MON, LDAP)
def test_directory_down_is_503_and_local_accounts_still_log_in():
    _stop_slapd()
    try:
        down, local = browse(["LOGIN", *LEA], ["LOGIN", *ADMIN])
    finally:
        _start_slapd()
    assert down["status"] == 503, down
    assert "directory is unavailable" in down["body"], down
    assert 'name="password"' in down["body"]  # the form again
    assert local["status"] == 303, local
    # The directory back: the LDAP login works again at once.
    (again,) = browse(["LOGIN", *LEA])
    assert again["status"] == 303, again
    journal = podman_exec(MON, "journalctl", "-t", "passerelle-console", "-n", "200", "--no-pager")
    assert "directory unavailable" in journal, journal[-3000:]


def _set_members(group: str, *uids: str) -> None:
    """Replace ``group``'s members in slapd (as root over ldapi, as the slapd role does)."""
    members = "".join(f"member: uid={u},{PEOPLE}\n" for u in uids)
    ldif = f"dn: {group}\nchangetype: modify\nreplace: member\n{members}"
    podman_exec(LDAP, "ldapmodify", "-Q", "-Y", "EXTERNAL", "-H", "ldapi:///", stdin=ldif)


def _open_session(account: tuple[str, str]) -> dict[str, str]:
    login, jar = browse(["LOGIN", *account], ["JAR"])
    assert login["status"] == 303, login
    return json.loads(jar["body"])


@needs(MON, LDAP)
def test_open_sessions_follow_the_directory_groups():
    # leo (viewer) and lea (admin) log in; then, in slapd, leo joins console-admins and lea
    # leaves it. Within one recheck interval their open sessions follow: leo's pages are an
    # admin's, lea's session is over (back to the login page, the cookie dropped); both in
    # the audit log. The groups are put back whatever happens.
    leo, lea = _open_session(LEO), _open_session(LEA)
    changed = time.monotonic()
    try:
        _set_members(ADMINS, LEO[0])
        time.sleep(max(0.0, RECHECK + 2 - (time.monotonic() - changed)))
        leo_page, leo_jar = browse(["GET", f"{BASE}/quarantine"], ["JAR"], jar=leo)
        lea_page, lea_jar = browse(["GET", f"{BASE}/quarantine"], ["JAR"], jar=lea)
    finally:
        _set_members(ADMINS, LEA[0])
        _set_members(VIEWERS, LEO[0])
    assert leo_page["status"] == 200, leo_page
    assert "leo (admin, LDAP)" in leo_page["body"], leo_page["body"][-2000:]
    assert "Release selected" in leo_page["body"]  # the admin's actions, in the same session
    assert lea_page["status"] == 303, lea_page
    assert lea_page["location"].endswith(f"{BASE}/login"), lea_page
    assert json.loads(lea_jar["body"]) == {}, lea_jar  # the ended session's cookie cleared
    assert json.loads(leo_jar["body"]) == leo, leo_jar  # the same session carries on
    (audit,) = browse(["LOGIN", *ADMIN], ["GET", f"{BASE}/audit"])[1:]
    rows = html.unescape(audit["body"]).split("<tr")
    assert any(
        "leo (ldap)" in r and "ldap_role" in r and "role viewer -> admin" in r for r in rows
    ), rows[:20]
    assert any("lea (ldap)" in r and "session_end" in r for r in rows), rows[:20]
